//! What the `datastore` command shares with its benchmarks (the `datastore-bench` crate): the
//! NVSentinel flow simulation, synthetic health events, the throwaway servers, latency
//! percentiles, the importer and the error type. Internal to this workspace (neither crate is published).

#![warn(missing_docs)]

pub mod error;
pub mod flow;
pub mod import;
pub mod logging;
pub mod measure;
pub mod output;
pub mod server;
pub mod synth;
