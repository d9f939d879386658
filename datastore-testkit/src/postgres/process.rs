//! Small process helpers built on `std` and standard shell tools only
//! (no libc): effective uid, signals, liveness checks, running as `postgres`.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::HarnessError;

/// OS user the server runs as when the harness runs as root.
pub(crate) const POSTGRES_OS_USER: &str = "postgres";

pub(crate) use crate::process::{
    children_of, describe, file_tail, process_alive, send_signal, text_tail,
};

/// Whether the effective uid of this process is 0 (read from
/// `/proc/self/status`: the second field of the `Uid:` line).
pub(crate) fn running_as_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .map(|euid| euid == "0")
        .unwrap_or(false)
}

/// Builds a command for `program`, run through `runuser -u postgres --` when
/// `as_postgres` is set.
pub(crate) fn command_as(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", POSTGRES_OS_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Gives the `postgres` OS user ownership of `dir` (`chown -R`).
pub(crate) fn chown_to_postgres(dir: &Path) -> Result<(), HarnessError> {
    let output = Command::new("chown")
        .arg("-R")
        .arg(format!("{POSTGRES_OS_USER}:{POSTGRES_OS_USER}"))
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| HarnessError::io("running `chown` (needed when running as root)", e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::start_failed(
            crate::Server::Postgres,
            format!(
                "`chown -R postgres:postgres {}` failed ({}); running as root requires an OS \
                 user named `postgres` (the Debian package `postgresql` creates it)",
                dir.display(),
                output.status
            ),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_detection_matches_id() {
        let out = Command::new("id").arg("-u").output().unwrap();
        let euid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(running_as_root(), euid == "0");
    }
}
