//! Child-process helpers both kinds of test server use,
//! built on `std` and standard shell tools only (no libc): signals, liveness checks, output
//! tails and command descriptions for error messages; [`docker`] for the Docker lanes.

pub mod docker;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sends `signal` (a name such as `TERM`, `INT`, `KILL`) to `target` (a pid, or `-PGID` for a
/// process group) with the shell's `kill`. Errors are ignored.
pub fn send_signal(signal: &str, target: &str) {
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
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: `pid (comm) state …`; comm may contain spaces or parens.
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(stat[end + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The pids whose parent is `pid` (from `/proc`; empty where it cannot be read).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid …`: the ppid is the second field after comm.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Polls until process `pid` is gone (or a zombie) or `timeout` passes; returns whether it is
/// gone.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !process_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of `text`.
pub fn text_tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut tail = all[start..].join("\n");
    if !tail.is_empty() {
        tail.push('\n');
    }
    tail
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
pub fn file_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => text_tail(&String::from_utf8_lossy(&bytes), lines),
        Err(_) => String::new(),
    }
}

/// Human-readable form of a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(
        cmd.get_args()
            .map(|a: &OsStr| a.to_string_lossy().into_owned()),
    );
    parts.join(" ")
}

/// Test support: runs `test` of the current test binary (an `#[ignore]`d test that starts a
/// server and reports it) in a child process with `envs`, waits for the child to exit
/// successfully, and returns the fields of the line it printed after `WATCHDOG-CHILD `.
#[cfg(test)]
pub(crate) fn run_watchdog_child(test: &str, envs: &[(&str, &OsStr)]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped());
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the child test");
    let stdout = child.stdout.take().expect("its stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect();
    // libtest prints `test … ... ` on the same line before the report.
    let line = lines
        .iter()
        .find_map(|l| l.find("WATCHDOG-CHILD ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("child did not report its server: {lines:#?}"));
    assert!(child.wait().expect("the child's status").success());
    line.split(' ').skip(1).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
        assert!(!wait_gone(std::process::id(), Duration::from_millis(50)));
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(text_tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(text_tail("a", 5), "a\n");
        assert_eq!(text_tail("", 5), "");
        assert_eq!(file_tail(Path::new("/nonexistent/x"), 3), "");
    }

    #[test]
    fn describe_joins_program_and_arguments() {
        let mut cmd = Command::new("echo");
        cmd.args(["a", "b c"]);
        assert_eq!(describe(&cmd), "echo a b c");
    }
}
