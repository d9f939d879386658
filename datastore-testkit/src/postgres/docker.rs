//! The Docker lane (cargo feature `docker`): a throwaway `postgres:15` container started with
//! [`testcontainers`](https://docs.rs/testcontainers), for machines without the PostgreSQL
//! server binaries. Compiled where this crate is built (`cargo xtask test` lints the feature);
//! no Docker engine runs there, so only the lane's choice is tested.

use crate::process::docker::Started;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::ImageExt;

use crate::HarnessError;

/// The image tag the lane runs.
const TAG: &str = "15";

/// A running `postgres:15` container; dropping it removes the container.
#[derive(Debug)]
pub(crate) struct DockerPostgres {
    admin_url: String,
    _container: Started<Postgres>,
}

impl DockerPostgres {
    /// Starts the container and waits until it accepts connections.
    pub(crate) fn start() -> Result<DockerPostgres, HarnessError> {
        let (container, port) =
            Started::start(Postgres::default().with_tag(TAG), 5432).map_err(|(what, why)| {
                HarnessError::start_failed(
                    crate::Server::Postgres,
                    format!("docker postgres:{TAG}: {what}"),
                    why,
                )
            })?;
        Ok(DockerPostgres {
            admin_url: format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres"),
            _container: container,
        })
    }

    /// The maintenance database's URL (user and password `postgres`).
    pub(crate) fn admin_url(&self) -> &str {
        &self.admin_url
    }
}
