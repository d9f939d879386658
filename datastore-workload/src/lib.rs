//! # datastore-workload
//!
//! NVSentinel workloads, for the `datastore demo` and the benchmarks: synthetic health events
//! ([`synth`]), the flow simulation over change streams ([`flow`]), latency percentiles
//! ([`measure`]) and the throwaway servers they run on ([`embedded`]). Not published, and
//! never linked by a production build of the `datastore` command (its `demo` feature off).

#![warn(missing_docs)]

pub mod embedded;
pub mod flow;
pub mod measure;
pub mod synth;
