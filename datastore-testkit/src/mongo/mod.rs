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
//! 2. **Docker** ([`Lane::Docker`]), in builds with the cargo feature
//!    `docker`: when a Docker engine answers `docker info` within a few
//!    seconds, a throwaway `mongo:7` single-node replica set started through
//!    [`testcontainers`](https://docs.rs/testcontainers)
//!    (`mongodb://127.0.0.1:PORT/?replicaSet=rs&directConnection=true`).
//!    Set `DATASTORE_TEST_MONGODB_NO_DOCKER=1` ([`TestMongo::NO_DOCKER_ENV`])
//!    to skip this lane.
//! 3. **Stand-in** ([`Lane::StandIn`]): otherwise a server the harness
//!    starts itself on `127.0.0.1` ([`StandInServer`]), chosen by
//!    `DATASTORE_TEST_MONGODB_STAND_IN` ([`StandIn::SELECT_ENV`]):
//!    - `secantusdb` (the default): [SecantusDB](https://pypi.org/project/secantusdb/)
//!      0.7.0b3, a single-node replica set on WiredTiger with transactions,
//!      change streams and pre-images, from PyPI;
//!    - `jongodb`: the [jongodb](https://www.npmjs.com/package/@jongodb/memory-server-bin-linux-x64-gnu)
//!      in-memory subset of MongoDB (no change streams, transactions that do
//!      not isolate), from npm.
//!
//!    [`TestMongo::stand_in`] tells tests which one runs.
//!
//! [`TestMongo::shared`] gives one lazily started instance per process, and
//! [`unique_database_name`] a fresh database name per test, so tests can share
//! the server without seeing each other's data.
//!
//! # Installing the stand-ins
//!
//! The harness never installs anything itself; `cargo xtask test` does when
//! a binary is missing. By hand, from the workspace root
//! ([`StandIn::install_command`]):
//!
//! ```text
//! python3 -m venv target/secantusdb && target/secantusdb/bin/pip install secantusdb==0.7.0b3
//! npm install --prefix target/jongodb @jongodb/memory-server-bin-linux-x64-gnu@0.1.6
//! ```
//!
//! (Debian's `python3` needs its `python3-venv` package for the first.)
//! `SECANTUSD_BIN` / `JONGODB_BIN` ([`StandIn::bin_env`]) point at a binary
//! installed elsewhere. A missing binary is reported as
//! [`HarnessError::StandInMissing`](crate::HarnessError::StandInMissing), whose message contains the command.
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
//! Without the `docker` feature the crate only uses `std` (plus the `sh`,
//! `kill` and `sleep` commands).
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> Result<(), datastore_testkit::HarnessError> {
//! let mongo = datastore_testkit::mongo::TestMongo::shared()?;
//! let database = datastore_testkit::mongo::unique_database_name("outbox_test");
//! eprintln!("running against the {}", mongo.lane());
//! // Connect a MongoDB client to `mongo.uri()` and use `database` in it.
//! assert!(mongo.uri().starts_with("mongodb"));
//! # let _ = database;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "docker")]
mod docker;
mod kind;
mod names;
mod process;
mod stand_in;
mod test_target;
mod uri;

pub use kind::StandIn;
pub use names::unique_database_name;
pub use stand_in::StandInServer;
pub use test_target::{Lane, TestMongo};
