//! Locating the PostgreSQL server binaries.

use std::path::{Path, PathBuf};

use crate::HarnessError;

/// Environment variable naming the directory with `postgres` and `initdb`.
const PG_BIN_DIR_ENV: &str = "PG_BIN_DIR";
/// Preferred location (Debian/Ubuntu package `postgresql-15`).
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Parent of the per-version directories on Debian/Ubuntu.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The directory holding the PostgreSQL server programs.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Finds the binaries: `$PG_BIN_DIR` if set (and only that), else
    /// `/usr/lib/postgresql/15/bin`, else the highest-numbered
    /// `/usr/lib/postgresql/*/bin` that has `postgres` and `initdb`.
    pub(crate) fn locate() -> Result<Binaries, HarnessError> {
        match std::env::var_os(PG_BIN_DIR_ENV) {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                if has_server_binaries(&dir) {
                    Ok(Binaries { dir })
                } else {
                    Err(HarnessError::BinariesMissing {
                        searched: vec![dir],
                    })
                }
            }
            _ => locate_in(Path::new(DEFAULT_BIN_DIR), Path::new(DEBIAN_ROOT)),
        }
    }

    /// Uses `dir` as the binary directory without checking it (tests).
    #[cfg(test)]
    pub(crate) fn from_dir(dir: PathBuf) -> Binaries {
        Binaries { dir }
    }

    /// Path of one program in the binary directory.
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Search without consulting the environment (separate for testing).
fn locate_in(default_dir: &Path, root: &Path) -> Result<Binaries, HarnessError> {
    let mut searched = vec![default_dir.to_path_buf()];
    if has_server_binaries(default_dir) {
        return Ok(Binaries {
            dir: default_dir.to_path_buf(),
        });
    }

    let mut candidates: Vec<(Vec<u64>, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(parse_version) else {
                continue;
            };
            candidates.push((version, entry.path().join("bin")));
        }
    }
    // Highest version first.
    candidates.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, dir) in candidates {
        if dir == default_dir {
            continue;
        }
        if has_server_binaries(&dir) {
            return Ok(Binaries { dir });
        }
        searched.push(dir);
    }
    if searched.len() == 1 {
        searched.push(root.join("*").join("bin"));
    }
    Err(HarnessError::BinariesMissing { searched })
}

/// Parses a version directory name such as `15` or `9.6`.
fn parse_version(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// Whether `dir` contains both `postgres` and `initdb`.
fn has_server_binaries(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("abc"), None);
        assert!(parse_version("16").unwrap() > parse_version("9.6").unwrap());
    }

    #[test]
    fn picks_highest_version_with_both_binaries() {
        let root = std::env::temp_dir().join(format!(
            "pg-harness-bintest-{}-{}",
            std::process::id(),
            line!()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for (version, complete) in [("13", true), ("16", true), ("17", false), ("x", true)] {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
            if complete {
                std::fs::write(bin.join("initdb"), "").unwrap();
            }
        }
        let found = locate_in(&root.join("15").join("bin"), &root).unwrap();
        assert_eq!(found.dir, root.join("16").join("bin"));

        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = locate_in(&empty.join("15").join("bin"), &empty).unwrap_err();
        match err {
            HarnessError::BinariesMissing { searched } => assert_eq!(searched.len(), 2),
            other => panic!("unexpected {other:?}"),
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
