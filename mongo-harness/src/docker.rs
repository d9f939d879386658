//! The Docker lane: a throwaway `mongo:7` container run as a single-node
//! replica set.
//!
//! No Docker engine is available where this crate was written, so this file
//! is kept deliberately small; only its pure helpers are unit-tested.

use std::fmt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{self, Captured};
use crate::HarnessError;

/// The image the Docker lane runs.
pub(crate) const IMAGE: &str = "mongo:7";
/// How long `docker info` may take before the engine counts as unreachable.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `docker run` may take (it may have to pull the image).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long other `docker` commands may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the replica set may take to get a writable primary.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Shell watchdog: `$1` owner pid, `$2` container id. Removes the container
/// within about a second after the owner process has gone away.
const WATCHDOG_SCRIPT: &str = r#"owner=$1; id=$2
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
docker rm -f "$id" >/dev/null 2>&1
"#;

/// `rs.initiate` for the container's single member.
const INITIATE_JS: &str = r#"rs.initiate({_id:"rs0",members:[{_id:0,host:"127.0.0.1:27017"}]})"#;
/// Prints `true` once the member is a writable primary.
const IS_PRIMARY_JS: &str = "db.hello().isWritablePrimary";

/// Whether a Docker engine answers `docker info` (exit status 0 and a server
/// version) within a few seconds. A missing `docker` client, an unreachable
/// engine or a hang all give `false`, silently.
pub(crate) fn engine_available() -> bool {
    let mut cmd = Command::new("docker");
    cmd.args(["info", "--format", "{{.ServerVersion}}"]);
    matches!(
        process::run_with_timeout(&mut cmd, INFO_TIMEOUT),
        Ok(Some(out)) if out.status.success() && !out.stdout.trim().is_empty()
    )
}

/// A running `mongo:7` container; dropping it removes the container
/// (`docker rm -f`).
pub(crate) struct DockerMongo {
    id: String,
    uri: String,
    /// Removes the container if this process dies without dropping `self`.
    watchdog: Option<Child>,
}

impl DockerMongo {
    /// Runs the container, initiates the replica set and waits (at most
    /// 60 s) until the member is a writable primary.
    pub(crate) fn start() -> Result<DockerMongo, HarnessError> {
        let run = docker(
            &[
                "run",
                "-d",
                "--rm",
                "-p",
                "127.0.0.1::27017",
                IMAGE,
                "--replSet",
                "rs0",
                "--bind_ip_all",
            ],
            RUN_TIMEOUT,
        )?;
        let id = run.stdout.lines().last().unwrap_or("").trim().to_string();
        if id.is_empty() {
            return Err(failed("`docker run` printed no container id", &run));
        }
        // From here on, dropping `mongo` removes the container.
        let mut mongo = DockerMongo {
            id,
            uri: String::new(),
            watchdog: None,
        };
        mongo.watchdog = Some(spawn_watchdog(&mongo.id)?);

        let ports = docker(&["port", &mongo.id, "27017/tcp"], COMMAND_TIMEOUT)?;
        let port = parse_docker_port(&ports.stdout)
            .ok_or_else(|| failed("`docker port` printed no host port", &ports))?;
        mongo.wait_writable_primary()?;
        mongo.uri = format!("mongodb://127.0.0.1:{port}/?replicaSet=rs0&directConnection=true");
        Ok(mongo)
    }

    /// The connection URI
    /// (`mongodb://127.0.0.1:PORT/?replicaSet=rs0&directConnection=true`).
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// Initiates the replica set (retrying while `mongod` is still starting)
    /// and polls until `db.hello().isWritablePrimary` is `true`.
    fn wait_writable_primary(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut initiated = false;
        loop {
            let script = if initiated {
                IS_PRIMARY_JS
            } else {
                INITIATE_JS
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let out = self.mongosh(script, remaining.max(Duration::from_secs(1)))?;
            let last = match out {
                Some(out) => {
                    let text = format!("{}{}", out.stdout, out.stderr);
                    if !initiated {
                        initiated = out.status.success() || text.contains("AlreadyInitialized");
                    } else if out.status.success() && out.stdout.trim() == "true" {
                        return Ok(());
                    }
                    text
                }
                None => "mongosh timed out".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::start_failed(
                    format!(
                        "docker {IMAGE}: container {} did not {} within {} s",
                        self.id,
                        if initiated {
                            "become a writable primary"
                        } else {
                            "accept rs.initiate"
                        },
                        READY_TIMEOUT.as_secs()
                    ),
                    process::text_tail(&last, 40),
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs `mongosh --quiet --eval SCRIPT` in the container; `None` on
    /// timeout.
    fn mongosh(&self, script: &str, timeout: Duration) -> Result<Option<Captured>, HarnessError> {
        let mut cmd = Command::new("docker");
        cmd.args(["exec", &self.id, "mongosh", "--quiet", "--eval", script]);
        process::run_with_timeout(&mut cmd, timeout.min(COMMAND_TIMEOUT))
            .map_err(|e| HarnessError::io(format!("running `{}`", process::describe(&cmd)), e))
    }
}

impl Drop for DockerMongo {
    fn drop(&mut self) {
        let mut rm = Command::new("docker");
        rm.args(["rm", "-f", &self.id]);
        let _ = process::run_with_timeout(&mut rm, COMMAND_TIMEOUT);
        if let Some(mut watchdog) = self.watchdog.take() {
            process::send_signal("KILL", &format!("-{}", watchdog.id()));
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl fmt::Debug for DockerMongo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerMongo")
            .field("container", &self.id)
            .field("uri", &self.uri)
            .finish()
    }
}

/// Starts the watchdog for container `id` in its own process group.
fn spawn_watchdog(id: &str) -> Result<Child, HarnessError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("mongo-harness-docker-watchdog")
        .arg(std::process::id().to_string())
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
        .map_err(|e| HarnessError::io("spawning the Docker container watchdog (`sh`)", e))
}

/// Runs `docker ARGS`; an error unless it exits successfully in time.
fn docker(args: &[&str], timeout: Duration) -> Result<Captured, HarnessError> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    let what = process::describe(&cmd);
    match process::run_with_timeout(&mut cmd, timeout) {
        Ok(Some(out)) if out.status.success() => Ok(out),
        Ok(Some(out)) => Err(failed(format!("`{what}` failed ({})", out.status), &out)),
        Ok(None) => Err(HarnessError::start_failed(
            format!(
                "docker {IMAGE}: `{what}` did not finish within {} s",
                timeout.as_secs()
            ),
            String::new(),
        )),
        Err(e) => Err(HarnessError::io(format!("running `{what}`"), e)),
    }
}

/// A [`HarnessError::StartFailed`] for the Docker lane with `out`'s output.
fn failed(message: impl fmt::Display, out: &Captured) -> HarnessError {
    HarnessError::start_failed(
        format!("docker {IMAGE}: {message}"),
        format!("{}{}", out.stdout, out.stderr),
    )
}

/// The host port in `docker port` output such as `127.0.0.1:49153` (one
/// binding per line; the first parseable one wins).
fn parse_docker_port(output: &str) -> Option<u16> {
    output
        .lines()
        .find_map(|line| line.trim().rsplit_once(':')?.1.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_port_output() {
        assert_eq!(parse_docker_port("127.0.0.1:49153\n"), Some(49153));
        assert_eq!(
            parse_docker_port("0.0.0.0:32768\n[::]:32768\n"),
            Some(32768)
        );
        assert_eq!(parse_docker_port("[::1]:1234"), Some(1234));
        assert_eq!(parse_docker_port(""), None);
        assert_eq!(parse_docker_port("Error: No public port"), None);
    }

    #[test]
    fn engine_check_is_fast_and_silent() {
        // Passes with or without a Docker engine; only checks the bound.
        let started = Instant::now();
        let available = engine_available();
        eprintln!(
            "docker engine available: {available} (checked in {:?})",
            started.elapsed()
        );
        assert!(started.elapsed() < INFO_TIMEOUT + Duration::from_secs(2));
    }
}
