//! Small process helpers built on `std` and standard shell tools only
//! (no libc): effective uid, signals, liveness checks, running as `postgres`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::HarnessError;

/// OS user the server runs as when the harness runs as root.
pub(crate) const POSTGRES_OS_USER: &str = "postgres";

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

/// Sends `signal` (a name such as `INT`, `KILL`) to `target` (a pid, or
/// `-PGID` for a process group) with the shell's `kill`. Errors are ignored.
pub(crate) fn send_signal(signal: &str, target: &str) {
    let _ = Command::new("sh")
        .args(["-c", "kill -s \"$1\" -- \"$2\" 2>/dev/null", "sh"])
        .arg(signal)
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether process `pid` exists and is not a zombie.
pub(crate) fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: `pid (comm) state …`; comm may contain spaces or parens.
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(stat[end + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub(crate) fn file_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => text_tail(&String::from_utf8_lossy(&bytes), lines),
        Err(_) => String::new(),
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn text_tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut tail = all[start..].join("\n");
    if !tail.is_empty() {
        tail.push('\n');
    }
    tail
}

/// Human-readable form of a command line for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(
        cmd.get_args()
            .map(|a: &OsStr| a.to_string_lossy().into_owned()),
    );
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(text_tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(text_tail("a", 5), "a\n");
        assert_eq!(text_tail("", 5), "");
    }

    #[test]
    fn root_detection_matches_id() {
        let out = Command::new("id").arg("-u").output().unwrap();
        let euid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(running_as_root(), euid == "0");
    }
}
