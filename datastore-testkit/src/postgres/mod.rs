//! Throwaway PostgreSQL servers for tests, the conformance suite, the demo
//! CLI and benchmarks.
//!
//! Two entry points:
//!
//! * [`PgServer`] starts a private PostgreSQL cluster (initdb + postgres) in a
//!   fresh temporary directory, listening on `127.0.0.1` on a free port, with
//!   `trust` authentication for the `postgres` user. Dropping it stops the
//!   server and deletes the directory.
//! * [`TestPostgres`] is what tests should use: it honours the environment
//!   variable [`TestPostgres::ENV`] (`DATASTORE_TEST_POSTGRES_URL`) that points
//!   at an external server, and otherwise starts a [`PgServer`].
//!   [`TestPostgres::shared`] gives one lazily started instance per process.
//!
//! Servers are started through a small `sh` watchdog that stops PostgreSQL
//! (and deletes the directory) within about a second after the owning process
//! exits, so even a killed test binary or a `static` that is never dropped
//! does not leak a running server.
//!
//! The crate only uses `std`. It needs the PostgreSQL server binaries
//! (`initdb`, `postgres`, `pg_isready`); see [`HarnessError::BinariesMissing`](crate::HarnessError::BinariesMissing).
//! When running as root the server is run as the `postgres` OS user through
//! `runuser`, because PostgreSQL refuses to run as root.
//!
//! ```no_run
//! # fn main() -> Result<(), datastore_testkit::HarnessError> {
//! let pg = datastore_testkit::postgres::TestPostgres::shared()?;
//! let url = pg.url_for("my_test_db");
//! assert!(url.ends_with("/my_test_db"));
//! # Ok(())
//! # }
//! ```

mod binaries;
#[cfg(feature = "docker")]
mod docker;
mod process;
mod server;
mod test_target;
#[cfg(feature = "tls")]
pub mod tls;
mod url;

pub use server::PgServer;
pub use test_target::TestPostgres;
