//! The Docker lane (cargo feature `docker`): a throwaway `mongo:7` single-node replica set
//! started with [`testcontainers`](https://docs.rs/testcontainers) (its `mongo` module runs
//! `mongod --replSet rs` and `rs.initiate()`).
//!
//! No Docker engine runs where this crate is built and tested, so the lane is compiled there
//! (`cargo xtask test` lints the feature) but only its choice is tested.

use crate::process::docker::Started;
use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::testcontainers::ImageExt;

use crate::HarnessError;

/// The image tag the lane runs.
const TAG: &str = "7";

/// A running `mongo:7` container; dropping it removes the container.
#[derive(Debug)]
pub(crate) struct DockerMongo {
    uri: String,
    _container: Started<Mongo>,
}

impl DockerMongo {
    /// Starts the container and waits until its replica set has a primary.
    pub(crate) fn start() -> Result<DockerMongo, HarnessError> {
        let (container, port) =
            Started::start(Mongo::repl_set().with_tag(TAG), 27017).map_err(|(what, why)| {
                HarnessError::start_failed(
                    crate::Server::Mongo,
                    format!("docker mongo:{TAG}: {what}"),
                    why,
                )
            })?;
        Ok(DockerMongo {
            // The member is known by the container's host name: connect to it directly.
            uri: format!("mongodb://127.0.0.1:{port}/?replicaSet=rs&directConnection=true"),
            _container: container,
        })
    }

    /// The connection URI (`mongodb://127.0.0.1:PORT/?replicaSet=rs&directConnection=true`).
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }
}
