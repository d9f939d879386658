//! What `cargo xtask test` and `cargo xtask demo` install before they run, so that a fresh
//! Debian machine needs no third command: the PostgreSQL server and the tools the tests use,
//! from Debian's packages (as root, or through sudo). The MongoDB stand-in comes from PyPI or
//! npm (`Xtask::ensure_mongo_stand_in`). Each install first says what it installs and why;
//! where nothing can be installed, the message says exactly what to install.

use std::process::{Command, Stdio};

use crate::run_step;

/// A Debian package a run needs, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Package {
    pub(crate) name: &'static str,
    pub(crate) why: &'static str,
}

/// The PostgreSQL server (`datastore-testkit` starts throwaway servers from its binaries).
pub(crate) const POSTGRESQL: Package = Package {
    name: "postgresql",
    why: "the PostgreSQL server the tests and the demo start (throwaway servers under target/)",
};
/// `socat`, the TLS proxy of the MongoDB client-certificate test.
pub(crate) const SOCAT: Package = Package {
    name: "socat",
    why: "the TLS proxy in front of the MongoDB stand-in in the client-certificate test",
};
/// Python's venv module, which the SecantusDB stand-in is installed into.
pub(crate) const PYTHON_VENV: Package = Package {
    name: "python3-venv",
    why: "the Python venv the SecantusDB MongoDB stand-in is installed into (from PyPI)",
};

/// How packages can be installed on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Installer {
    /// We are root: `apt-get` directly.
    Root,
    /// `sudo` works without a password prompt.
    Sudo,
    /// Neither; the reason, for the message.
    Unavailable(&'static str),
}

impl Installer {
    /// Looks at this machine.
    pub(crate) fn detect() -> Installer {
        if !succeeds(Command::new("apt-get").arg("--version")) {
            return Installer::Unavailable("no apt-get: not a Debian-like system");
        }
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        if root {
            Installer::Root
        } else if succeeds(Command::new("sudo").args(["-n", "true"])) {
            Installer::Sudo
        } else {
            Installer::Unavailable("not root, and sudo is missing or asks for a password")
        }
    }

    /// The commands that install `packages`, or the message saying what to install by hand.
    pub(crate) fn commands(&self, packages: &[Package]) -> Result<Vec<Command>, String> {
        let names: Vec<&str> = packages.iter().map(|p| p.name).collect();
        let prefix: &[&str] = match self {
            Installer::Root => &[],
            Installer::Sudo => &["sudo"],
            Installer::Unavailable(reason) => return Err(manual(&names, reason)),
        };
        let command = |args: &[&str]| {
            let mut all: Vec<&str> = prefix.to_vec();
            all.extend(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            all.extend(args);
            let mut cmd = Command::new(all[0]);
            cmd.args(&all[1..]);
            cmd
        };
        let mut install = vec!["install", "-y", "--no-install-recommends"];
        install.extend(&names);
        Ok(vec![command(&["update"]), command(&install)])
    }
}

/// Installs `packages` (nothing when empty), saying first what and why.
pub(crate) fn ensure(packages: &[Package]) -> Result<(), u8> {
    if packages.is_empty() {
        return Ok(());
    }
    let commands = Installer::detect().commands(packages).map_err(|message| {
        eprintln!("{message}");
        1
    })?;
    println!("==> installing Debian packages this run needs:");
    for p in packages {
        println!("    {:<14} {}", p.name, p.why);
    }
    for cmd in commands {
        run_step(cmd)?;
    }
    Ok(())
}

/// What to run by hand when this run cannot install.
fn manual(names: &[&str], reason: &str) -> String {
    let list = names.join(" ");
    format!(
        "xtask: this run needs the Debian packages {list}, and cannot install them ({reason}).\n\
         Install them, then run this command again:\n\
         \n    sudo apt-get install -y {list}\n\n\
         (or, for PostgreSQL, point PG_BIN_DIR at its server binaries or \
         DATASTORE_TEST_POSTGRES_URL at a server; for MongoDB, DATASTORE_TEST_MONGODB_URI at a \
         replica set)"
    )
}

/// Whether `cmd` runs and exits 0 (its output discarded).
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(cmd: &Command) -> Vec<String> {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn root_installs_directly_and_sudo_through_sudo() {
        let root = Installer::Root.commands(&[POSTGRESQL, SOCAT]).unwrap();
        assert_eq!(
            argv(&root[1]),
            [
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                "postgresql",
                "socat"
            ]
        );
        assert_eq!(argv(&root[0])[2..], ["apt-get", "update"]);
        let sudo = Installer::Sudo.commands(&[POSTGRESQL]).unwrap();
        assert_eq!(argv(&sudo[0])[..2], ["sudo", "env"]);
    }

    #[test]
    fn without_root_or_sudo_the_message_says_what_to_install() {
        let message = Installer::Unavailable("not root")
            .commands(&[POSTGRESQL, PYTHON_VENV])
            .unwrap_err();
        assert!(
            message.contains("sudo apt-get install -y postgresql python3-venv"),
            "{message}"
        );
        assert!(message.contains("not root"), "{message}");
    }
}
