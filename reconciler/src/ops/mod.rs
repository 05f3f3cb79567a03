//! The operations (apply, rollback, release, drift, history), each composed from the pipeline
//! stages and returning a report value; the CLI prints reports, the daemon runs the same
//! operations in a loop.
//!
//! May import every stage; never the CLI or the daemon.

pub mod drift;
pub mod pipeline;
