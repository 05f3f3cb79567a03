//! The watch daemon's settings (the command line's).

use std::path::PathBuf;
use std::time::Duration;

use crate::ops::pipeline::Shard;
use crate::target::connect::{Access, TargetSpec};

/// The daemon's settings (the command line's).
#[derive(Debug, Clone)]
pub struct Settings {
    pub repo: String,
    pub branch: String,
    pub cache_dir: PathBuf,
    pub target: TargetSpec,
    /// Endpoint, role name and request timeout (`--endpoint-url`, `--role-name`,
    /// `--request-timeout`).
    pub access: Access,
    /// How often the remote is fetched when no webhook comes.
    pub poll_interval: Duration,
    /// How often drift is checked [default: fleet.yaml's drift.interval].
    pub drift_interval: Option<Duration>,
    pub shard: Option<Shard>,
    /// Who this daemon is, in the lease and in the pointers it writes.
    pub identity: String,
    pub lease_ttl: Duration,
    /// The hub's state bucket for the lease with `--target aws` [default: fleet.yaml's
    /// stateBucket].
    pub state_bucket: Option<String>,
    /// The webhook's HMAC secret; without one, `/webhook` is off (404).
    pub webhook_secret: Option<Vec<u8>>,
    pub concurrency: Option<usize>,
    pub account_timeout: Duration,
    /// Longest wait after repeated errors.
    pub max_backoff: Duration,
    /// Caps every wave's bake time (`fleetgate up`); `None`: fleet.yaml's bakes.
    pub max_bake: Option<Duration>,
}
