//! The stand-in servers the harness can start: what each is, where its binary is installed,
//! how it is started and how it says it is ready.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::HarnessError;

/// A MongoDB-wire server the harness starts itself when no external server or Docker engine
/// is available ([`Lane::StandIn`](crate::mongo::Lane::StandIn)).
///
/// Chosen with [`StandIn::SELECT_ENV`] (`DATASTORE_TEST_MONGODB_STAND_IN`); the default is
/// [`StandIn::SecantusDb`], the one with change streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StandIn {
    /// [SecantusDB](https://pypi.org/project/secantusdb/) 0.7.0b3: a single-node replica set
    /// on WiredTiger with transactions (snapshot isolation), change streams, resume tokens and
    /// pre-images. Installed from PyPI into a Python venv under `target/secantusdb`. Its
    /// post-images are the document as it is when the event is read (see `provider-mongo`).
    SecantusDb,
    /// [jongodb](https://www.npmjs.com/package/@jongodb/memory-server-bin-linux-x64-gnu)
    /// 0.1.6: an in-memory subset of MongoDB without change streams, whose transactions do not
    /// isolate concurrent writers. Installed from npm into `target/jongodb`.
    Jongodb,
}

impl StandIn {
    /// Environment variable selecting the stand-in: `secantusdb` (the default) or `jongodb`.
    pub const SELECT_ENV: &'static str = "DATASTORE_TEST_MONGODB_STAND_IN";

    /// Every stand-in, the default first.
    pub const ALL: [StandIn; 2] = [StandIn::SecantusDb, StandIn::Jongodb];

    /// The stand-in chosen by [`StandIn::SELECT_ENV`]; unset or empty means
    /// [`StandIn::SecantusDb`]. Any other value is [`HarnessError::InvalidStandIn`].
    pub fn from_env() -> Result<StandIn, HarnessError> {
        Self::from_value(std::env::var_os(Self::SELECT_ENV))
    }

    fn from_value(value: Option<OsString>) -> Result<StandIn, HarnessError> {
        let value = value.map(|v| v.to_string_lossy().trim().to_ascii_lowercase());
        match value.as_deref() {
            None | Some("") => Ok(StandIn::SecantusDb),
            Some(name) => StandIn::ALL
                .into_iter()
                .find(|k| k.name() == name)
                .ok_or_else(|| HarnessError::InvalidStandIn(name.to_owned())),
        }
    }

    /// The name used in [`StandIn::SELECT_ENV`]: `secantusdb` or `jongodb`.
    pub fn name(self) -> &'static str {
        match self {
            StandIn::SecantusDb => "secantusdb",
            StandIn::Jongodb => "jongodb",
        }
    }

    /// The package (with its exact version) that holds the server.
    pub fn package(self) -> &'static str {
        match self {
            StandIn::SecantusDb => "secantusdb==0.7.0b3",
            StandIn::Jongodb => "@jongodb/memory-server-bin-linux-x64-gnu@0.1.6",
        }
    }

    /// Shell command, run from the workspace root, that installs the server where
    /// [`StandIn::default_binary`] looks (`cargo xtask test` runs it when the binary is
    /// missing).
    pub fn install_command(self) -> &'static str {
        match self {
            StandIn::SecantusDb => {
                "python3 -m venv target/secantusdb && \
                 target/secantusdb/bin/pip install secantusdb==0.7.0b3"
            }
            StandIn::Jongodb => {
                "npm install --prefix target/jongodb @jongodb/memory-server-bin-linux-x64-gnu@0.1.6"
            }
        }
    }

    /// Environment variable with the path of the server's binary, used instead of
    /// [`StandIn::default_binary`] when set and non-empty.
    pub fn bin_env(self) -> &'static str {
        match self {
            StandIn::SecantusDb => "SECANTUSD_BIN",
            StandIn::Jongodb => "JONGODB_BIN",
        }
    }

    /// Where [`StandIn::install_command`] puts the binary:
    /// `<workspace>/target/secantusdb/bin/secantusd-py` or
    /// `<workspace>/target/jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb`,
    /// the workspace being the parent of this crate's directory at compile time.
    pub fn default_binary(self) -> PathBuf {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = manifest_dir.parent().unwrap_or(manifest_dir).join("target");
        match self {
            StandIn::SecantusDb => target.join("secantusdb/bin/secantusd-py"),
            StandIn::Jongodb => target
                .join("jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb"),
        }
    }

    /// The binary: [`StandIn::bin_env`]'s path if set, else [`StandIn::default_binary`];
    /// [`HarnessError::StandInMissing`] (whose message gives the install command) when the
    /// file does not exist. The harness never installs anything itself.
    pub fn locate(self) -> Result<PathBuf, HarnessError> {
        self.locate_from(std::env::var_os(self.bin_env()).map(PathBuf::from))
    }

    pub(crate) fn locate_from(self, from_env: Option<PathBuf>) -> Result<PathBuf, HarnessError> {
        let (path, from_env) = match from_env {
            Some(path) if !path.as_os_str().is_empty() => (path, true),
            _ => (self.default_binary(), false),
        };
        if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::StandInMissing {
                kind: self,
                path,
                from_env,
            })
        }
    }

    /// Arguments: loopback, a free port, and for SecantusDB an in-memory store (removed when
    /// it stops).
    pub(crate) fn args(self) -> &'static [&'static str] {
        match self {
            StandIn::SecantusDb => &[
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--storage-path",
                ":memory:",
            ],
            StandIn::Jongodb => &[
                "--host=127.0.0.1",
                "--port=0",
                "--topology-profile=singleNodeReplicaSet",
            ],
        }
    }

    /// What the server prints once it accepts connections (for error messages).
    pub(crate) fn ready_line(self) -> &'static str {
        match self {
            StandIn::SecantusDb => "`secantus listening on 127.0.0.1:PORT`",
            StandIn::Jongodb => "`JONGODB_URI=…`",
        }
    }

    /// The server's URI if `line` (of its stdout or stderr) is its ready line.
    pub(crate) fn ready_uri(self, line: &str) -> Option<String> {
        match self {
            StandIn::SecantusDb => {
                let (_, address) = line.trim().rsplit_once("secantus listening on ")?;
                let (host, port) = address.trim().rsplit_once(':')?;
                let port: u16 = port.parse().ok()?;
                Some(format!("mongodb://{host}:{port}/?replicaSet=secantus"))
            }
            StandIn::Jongodb => crate::mongo::uri::parse_ready_line(line).map(str::to_owned),
        }
    }
}

impl fmt::Display for StandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StandIn::SecantusDb => "SecantusDB",
            StandIn::Jongodb => "jongodb",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_by_name_secantusdb_by_default() {
        assert_eq!(StandIn::from_value(None).unwrap(), StandIn::SecantusDb);
        assert_eq!(
            StandIn::from_value(Some(" ".into())).unwrap(),
            StandIn::SecantusDb
        );
        assert_eq!(
            StandIn::from_value(Some("JongoDB".into())).unwrap(),
            StandIn::Jongodb
        );
        let err = StandIn::from_value(Some("mongod".into())).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DATASTORE_TEST_MONGODB_STAND_IN"), "{text}");
        assert!(
            text.contains("secantusdb") && text.contains("jongodb"),
            "{text}"
        );
    }

    #[test]
    fn ready_lines() {
        let secantus = StandIn::SecantusDb;
        assert_eq!(
            secantus
                .ready_uri("2026-12-01 23:59:14,400 INFO secantus.server: secantus listening on 127.0.0.1:44877\n")
                .as_deref(),
            Some("mongodb://127.0.0.1:44877/?replicaSet=secantus")
        );
        assert_eq!(secantus.ready_uri("INFO secantus.server: starting"), None);
        assert_eq!(
            secantus.ready_uri("secantus listening on 127.0.0.1:x"),
            None
        );
        assert_eq!(
            StandIn::Jongodb
                .ready_uri("JONGODB_URI=mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0")
                .as_deref(),
            Some("mongodb://127.0.0.1:38291/test?replicaSet=jongodb-rs0")
        );
    }

    #[test]
    fn default_binaries_are_under_workspace_target() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert!(workspace.join("Cargo.toml").is_file());
        assert_eq!(
            StandIn::SecantusDb.default_binary(),
            workspace.join("target/secantusdb/bin/secantusd-py")
        );
        assert_eq!(
            StandIn::Jongodb.default_binary(),
            workspace.join(
                "target/jongodb/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb"
            )
        );
        for kind in StandIn::ALL {
            assert!(kind.install_command().contains(kind.package()));
        }
    }

    #[test]
    fn locate_reports_the_path_it_checked() {
        let missing = PathBuf::from("/nonexistent/mongo-harness/server");
        for kind in StandIn::ALL {
            match kind.locate_from(Some(missing.clone())) {
                Err(HarnessError::StandInMissing {
                    kind: k,
                    path,
                    from_env,
                }) => {
                    assert_eq!((k, path, from_env), (kind, missing.clone(), true));
                }
                other => panic!("unexpected {other:?}"),
            }
            // An empty variable means "not set".
            match kind.locate_from(Some(PathBuf::new())) {
                Ok(path) => assert_eq!(path, kind.default_binary()),
                Err(HarnessError::StandInMissing { path, from_env, .. }) => {
                    assert_eq!(path, kind.default_binary());
                    assert!(!from_env);
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }
}
