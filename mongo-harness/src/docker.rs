//! The Docker lane (cargo feature `docker`): a throwaway `mongo:7` single-node replica set
//! started with [`testcontainers`](https://docs.rs/testcontainers) (its `mongo` module runs
//! `mongod --replSet rs` and `rs.initiate()`).
//!
//! No Docker engine runs where this crate is built and tested, so the lane is compiled there
//! (`cargo xtask test` checks the feature) but only its choice is tested.

use std::fmt;
use std::process::Child;

use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ImageExt};

use crate::HarnessError;

/// The image tag the lane runs.
pub(crate) const TAG: &str = "7";

/// A running `mongo:7` container; dropping it removes the container.
pub(crate) struct DockerMongo {
    uri: String,
    container: Option<Container<Mongo>>,
    /// Removes the container if this process exits without dropping `self` (a `static`).
    watchdog: Option<Child>,
}

impl DockerMongo {
    /// Starts the container and waits until its replica set has a primary.
    pub(crate) fn start() -> Result<DockerMongo, HarnessError> {
        let failed = |what: &str, e: &dyn fmt::Display| {
            HarnessError::start_failed(format!("docker mongo:{TAG}: {what}"), e.to_string())
        };
        let container = Mongo::repl_set()
            .with_tag(TAG)
            .start()
            .map_err(|e| failed("the container did not start", &e))?;
        let port = container
            .get_host_port_ipv4(27017)
            .map_err(|e| failed("no host port for 27017", &e))?;
        let watchdog = harness_process::docker::remove_on_exit(container.id())
            .map_err(|e| HarnessError::io("spawning the Docker container watchdog (`sh`)", e))?;
        Ok(DockerMongo {
            // The member is known by the container's host name: connect to it directly.
            uri: format!("mongodb://127.0.0.1:{port}/?replicaSet=rs&directConnection=true"),
            container: Some(container),
            watchdog: Some(watchdog),
        })
    }

    /// The connection URI (`mongodb://127.0.0.1:PORT/?replicaSet=rs&directConnection=true`).
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }
}

impl Drop for DockerMongo {
    fn drop(&mut self) {
        // Dropping the container removes it; then the watchdog has nothing left to do.
        drop(self.container.take());
        if let Some(watchdog) = self.watchdog.take() {
            harness_process::docker::stop_watchdog(watchdog);
        }
    }
}

impl fmt::Debug for DockerMongo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerMongo")
            .field(
                "container",
                &self.container.as_ref().map(|c| c.id().to_owned()),
            )
            .field("uri", &self.uri)
            .finish()
    }
}
