//! The gateway's status report, `status/<instance>.json`: what a gateway instance writes next
//! to the pointer and the reconciler's rollout reads for its health gate.
//!
//! Imports [`crate::digest`] only.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// `status/<instance>.json`: what one gateway instance serves and how it is doing, for the
/// rollout's health gate. Counts start at zero when a bundle is swapped in, so they describe
/// the bundle named by `digest` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance: String,
    pub ready: bool,
    pub account: Option<String>,
    pub digest: Option<Digest>,
    pub commit: Option<String>,
    /// When the served bundle was swapped in (RFC 3339).
    pub since: Option<String>,
    pub requests_2xx: u64,
    pub requests_3xx: u64,
    pub requests_4xx: u64,
    pub requests_5xx: u64,
    pub upstream_errors: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub last_reload_error: Option<String>,
    pub last_reload_error_at: Option<String>,
    /// The served bundle's secret references that could not be read, each with why (the
    /// reference and the error, never a value); tried again at every poll.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_failures: Vec<String>,
    /// When the account was decommissioned (RFC 3339), while the gateway answers 410 for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommissioned_at: Option<String>,
    /// When this report was written (RFC 3339).
    pub written_at: String,
}
