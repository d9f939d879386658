//! The Docker lane (cargo feature `docker`): a throwaway `postgres:15` container started with
//! [`testcontainers`](https://docs.rs/testcontainers), for machines without the PostgreSQL
//! server binaries. Compiled where this crate is built (`cargo xtask test` checks the feature);
//! no Docker engine runs there, so only the lane's choice is tested.

use std::fmt;
use std::process::Child;

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ImageExt};

use crate::HarnessError;

/// The image tag the lane runs.
pub(crate) const TAG: &str = "15";

/// A running `postgres:15` container; dropping it removes the container.
pub(crate) struct DockerPostgres {
    admin_url: String,
    container: Option<Container<Postgres>>,
    /// Removes the container if this process exits without dropping `self` (a `static`).
    watchdog: Option<Child>,
}

impl DockerPostgres {
    /// Starts the container and waits until it accepts connections.
    pub(crate) fn start() -> Result<DockerPostgres, HarnessError> {
        let failed = |what: &str, e: &dyn fmt::Display| HarnessError::StartFailed {
            message: format!("docker postgres:{TAG}: {what}"),
            log_tail: e.to_string(),
        };
        let container = Postgres::default()
            .with_tag(TAG)
            .start()
            .map_err(|e| failed("the container did not start", &e))?;
        let port = container
            .get_host_port_ipv4(5432)
            .map_err(|e| failed("no host port for 5432", &e))?;
        let watchdog = harness_process::docker::remove_on_exit(container.id())
            .map_err(|e| failed("spawning the Docker container watchdog (`sh`) failed", &e))?;
        Ok(DockerPostgres {
            admin_url: format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres"),
            container: Some(container),
            watchdog: Some(watchdog),
        })
    }

    /// The maintenance database's URL (user and password `postgres`).
    pub(crate) fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for DockerPostgres {
    fn drop(&mut self) {
        drop(self.container.take());
        if let Some(watchdog) = self.watchdog.take() {
            harness_process::docker::stop_watchdog(watchdog);
        }
    }
}

impl fmt::Debug for DockerPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerPostgres")
            .field(
                "container",
                &self.container.as_ref().map(|c| c.id().to_owned()),
            )
            .finish()
    }
}
