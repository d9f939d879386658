//! MongoDB servers for tests, the conformance suite and demos.
//!
//! [`TestMongo`] gives tests the URI of a MongoDB **replica set** (so
//! transactions and change streams are available), taken from the first of
//! three lanes that applies ([`TestMongo::from_env_or_start`]):
//!
//! 1. **External** ([`Lane::External`]): the environment variable
//!    `DATASTORE_TEST_MONGODB_URI` ([`TestMongo::URI_ENV`]) or, when that is
//!    unset or empty, `MONGODB_URI`. The URI is used as is and nothing is
//!    started; it should name a replica set whose user may create and drop
//!    databases.
//! 2. **Docker** ([`Lane::Docker`]): when a Docker engine answers
//!    `docker info` within a few seconds, a throwaway `mongo:7` container is
//!    run as the single-node replica set `rs0` on a free `127.0.0.1` port
//!    (`mongodb://127.0.0.1:PORT/?replicaSet=rs0&directConnection=true`).
//!    Set `DATASTORE_TEST_MONGODB_NO_DOCKER=1` ([`TestMongo::NO_DOCKER_ENV`])
//!    to skip this lane.
//! 3. **Stand-in** ([`Lane::StandIn`]): otherwise the
//!    [jongodb](https://www.npmjs.com/package/@jongodb/memory-server-bin-linux-x64-gnu)
//!    stand-in, an in-memory server speaking the MongoDB wire protocol,
//!    started as a single-node replica set ([`StandInServer`]). It implements
//!    a subset of MongoDB; [`TestMongo::is_stand_in`] lets tests skip what it
//!    does not support.
//!
//! [`TestMongo::shared`] gives one lazily started instance per process, and
//! [`unique_database_name`] a fresh database name per test, so tests can share
//! the server without seeing each other's data.
//!
//! # Installing the stand-in
//!
//! The harness never runs `npm` itself. The stand-in is a self-contained
//! binary (Linux x86-64, glibc) in the npm package
//! `@jongodb/memory-server-bin-linux-x64-gnu@0.1.6`; install it once from the
//! workspace root with
//!
//! ```text
//! npm install --prefix target/jongodb @jongodb/memory-server-bin-linux-x64-gnu@0.1.6
//! ```
//!
//! ([`StandInServer::INSTALL_COMMAND`]), or point `JONGODB_BIN`
//! ([`StandInServer::BIN_ENV`]) at a `jongodb` binary installed elsewhere. A
//! missing binary is reported as [`HarnessError::StandInMissing`], whose
//! message contains that command.
//!
//! # Cleanup
//!
//! Started servers are owned by a small `sh` watchdog that stops the stand-in
//! (SIGTERM, SIGKILL after 5 s) or removes the container (`docker rm -f`)
//! within about a second after the owning process exits. So even a killed
//! test binary, or the `static` behind [`TestMongo::shared`] (which is never
//! dropped), does not leak a running server. Dropping a [`TestMongo`] or
//! [`StandInServer`] stops its server right away.
//!
//! The crate only uses `std` (plus the `sh`, `kill` and `sleep` commands,
//! and `docker` for the Docker lane).
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> Result<(), mongo_harness::HarnessError> {
//! let mongo = mongo_harness::TestMongo::shared()?;
//! let database = mongo_harness::unique_database_name("outbox_test");
//! eprintln!("running against the {}", mongo.lane());
//! // Connect a MongoDB client to `mongo.uri()` and use `database` in it.
//! assert!(mongo.uri().starts_with("mongodb"));
//! # let _ = database;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod docker;
mod error;
mod names;
mod process;
mod stand_in;
mod test_target;
mod uri;

pub use error::HarnessError;
pub use names::unique_database_name;
pub use stand_in::StandInServer;
pub use test_target::{Lane, TestMongo};
