//! # datastore-tools
//!
//! What the `datastore` command and its benchmarks (the `datastore-bench` crate) share: the
//! importer ([`import`]), the error type of the commands ([`error`]), `--log` handling
//! ([`logging`]) and writing output ([`output`]). Internal to this workspace (not published);
//! it links no test-server code.

#![warn(missing_docs)]

pub mod error;
pub mod import;
pub mod logging;
pub mod output;
