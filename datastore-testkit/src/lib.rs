//! # datastore-testkit
//!
//! The test servers of the workspace, in one crate: what the conformance suite, the provider
//! tests, the benchmarks and the demo run against. Never part of the product.
//!
//! - [`postgres`]: throwaway PostgreSQL 15 clusters ([`postgres::PgServer`]) and the server
//!   tests use ([`postgres::TestPostgres`]: an external one named by
//!   `DATASTORE_TEST_POSTGRES_URL`, else Docker with the feature `docker`, else a local
//!   cluster); feature `tls`: a server set up for certificate authentication.
//! - [`mongo`]: a MongoDB replica set for tests ([`mongo::TestMongo`]: an external one, else
//!   Docker's `mongo:7` with the feature `docker`, else a stand-in server, SecantusDB or
//!   jongodb).
//!
//! Both share one error type ([`HarnessError`]), one way of holding a shared server per
//! process, the child-process helpers and the watchdogs ([`process`]) that stop a server
//! (or remove a container) within about a second after the owning process exits, so that
//! even a killed test binary leaks nothing.

#![warn(missing_docs)]

mod error;
mod lane;
pub mod mongo;
pub mod postgres;
pub mod process;
mod shared;
mod url;

pub use error::{HarnessError, Server};
