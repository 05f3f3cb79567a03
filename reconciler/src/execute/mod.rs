//! Stage 5, executing a plan: the rollout [`rollout::Executor`] writes bundles and pointers
//! wave by wave through a [`crate::target::Target`], waits for gateways to report healthy, and
//! stops or rolls back on failure.
//!
//! May import: config, render, plan, target. Never the CLI or the daemon.

pub mod rollout;
