//! The reconciler as a service (`fleetgate watch`): the loop that runs the operations on every
//! new commit and on a timer, its lease (one active reconciler per shard), and its HTTP
//! surface (/status, /metrics, the push webhook).
//!
//! May import the operations and every stage; never the CLI.

pub mod lease;
pub mod watch;
