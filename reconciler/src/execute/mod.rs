//! Stage 5, executing a plan: the rollout [`rollout::Executor`] writes bundles and pointers
//! wave by wave through a [`crate::target::Target`], waits for gateways to report healthy
//! ([`health`], the gate's pure decisions), and stops or rolls back on failure; its
//! [`report`] is what the CLI prints and the daemon serves.
//!
//! May import: config, plan, target, clock. Never the operations, the CLI or the daemon.

pub mod health;
pub mod report;
pub mod rollout;

/// Who applies and when, recorded in every pointer written.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub applied_by: String,
    /// RFC 3339, UTC.
    pub applied_at: String,
}
