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
/// a second after this process exits.
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
#[cfg(feature = "docker")]
fn stop_watchdog(mut watchdog: Child) {
    crate::process::send_signal("KILL", &format!("-{}", watchdog.id()));
    let _ = watchdog.kill();
    let _ = watchdog.wait();
}

/// A container started through `testcontainers` (cargo feature `docker`), removed when
/// dropped, or by a [`remove_on_exit`] watchdog when the process exits without dropping it.
#[cfg(feature = "docker")]
pub struct Started<I: testcontainers::Image> {
    container: Option<testcontainers::Container<I>>,
    watchdog: Option<Child>,
}

#[cfg(feature = "docker")]
impl<I: testcontainers::Image> Started<I> {
    /// Starts `request` and returns it with the host port mapped to the container's `port`;
    /// the error says which step failed, and why.
    pub fn start(
        request: impl testcontainers::runners::SyncRunner<I>,
        port: u16,
    ) -> Result<(Started<I>, u16), (&'static str, String)> {
        let container = request
            .start()
            .map_err(|e| ("the container did not start", e.to_string()))?;
        let host_port = container
            .get_host_port_ipv4(port)
            .map_err(|e| ("the container's port is not mapped", e.to_string()))?;
        let watchdog = remove_on_exit(container.id()).map_err(|e| {
            (
                "spawning the container watchdog (`sh`) failed",
                e.to_string(),
            )
        })?;
        let started = Started {
            container: Some(container),
            watchdog: Some(watchdog),
        };
        Ok((started, host_port))
    }
}

#[cfg(feature = "docker")]
impl<I: testcontainers::Image> Drop for Started<I> {
    fn drop(&mut self) {
        // Dropping the container removes it; then the watchdog has nothing left to do.
        drop(self.container.take());
        if let Some(watchdog) = self.watchdog.take() {
            stop_watchdog(watchdog);
        }
    }
}

#[cfg(feature = "docker")]
impl<I: testcontainers::Image> std::fmt::Debug for Started<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.container.as_ref().map(|c| c.id().to_owned());
        f.debug_struct("Started").field("container", &id).finish()
    }
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
