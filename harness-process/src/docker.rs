//! What both harnesses' Docker lanes need besides `testcontainers`: whether an engine answers,
//! and a watchdog that removes a container once the owning process is gone (a container held
//! by a `static` is never dropped).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `docker info` may take before the engine counts as unreachable.
pub const ENGINE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Shell watchdog: `$1` owner pid, `$2` container id.
const WATCHDOG_SCRIPT: &str = r#"owner=$1; id=$2
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
docker rm -f "$id" >/dev/null 2>&1
"#;

/// Whether a Docker engine answers `docker info` with a server version within
/// [`ENGINE_CHECK_TIMEOUT`]. A missing client, an unreachable engine or a hang all give false,
/// silently.
pub fn engine_available() -> bool {
    let child = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let deadline = Instant::now() + ENGINE_CHECK_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
                }
                return status.success() && !out.trim().is_empty();
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Starts a watchdog (its own process group) that runs `docker rm -f <container>` within about
/// a second after this process exits. Kill it (its group) when the container is removed
/// otherwise.
pub fn remove_on_exit(container: &str) -> std::io::Result<Child> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("harness-docker-watchdog")
        .arg(std::process::id().to_string())
        .arg(container)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
}

/// Stops a watchdog of [`remove_on_exit`] (and its `sleep`).
pub fn stop_watchdog(mut watchdog: Child) {
    crate::send_signal("KILL", &format!("-{}", watchdog.id()));
    let _ = watchdog.kill();
    let _ = watchdog.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_check_is_bounded_and_silent() {
        // Passes with or without an engine; only checks the bound.
        let started = Instant::now();
        let available = engine_available();
        eprintln!(
            "docker engine available: {available} ({:?})",
            started.elapsed()
        );
        assert!(started.elapsed() < ENGINE_CHECK_TIMEOUT + Duration::from_secs(2));
    }
}
