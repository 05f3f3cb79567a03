//! The reconciler as a service (`fleetgate watch`): the loop ([`watch`]) that runs one
//! [`pass`] on every new commit and on a timer through the same reconcile path as the CLI,
//! its lease (one active reconciler per shard, [`lease`]), and its HTTP surface
//! (/status, /metrics, the push webhook: [`http`]).
//!
//! May import the operations and every stage; never the CLI.

pub mod http;
pub mod leader;
pub mod lease;
pub mod pass;
pub mod settings;
pub mod watch;
