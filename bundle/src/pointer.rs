//! `current.json`, the pointer of the deployed-state layout (docs/architecture.md): which bundle an account
//! runs and how it got there. The reconciler writes it (by compare-and-swap, after the bundle);
//! the gateway polls it.
//!
//! Imports [`crate::digest`] only.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// `current.json`: which bundle an account runs, and how it got there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pointer {
    pub digest: Digest,
    /// The commit that produced the bundle (absent when applied from a plain directory).
    #[serde(default)]
    pub commit: Option<String>,
    /// The digest this pointer replaced.
    #[serde(default)]
    pub previous: Option<Digest>,
    pub applied_by: String,
    /// RFC 3339, UTC.
    pub applied_at: String,
    /// Set by `fleetgate rollback --to`: the account stays on this bundle, and the watch
    /// daemon does not roll it forward, until a newer commit lands on the tracked branch or
    /// `fleetgate release` lifts it. The gateway ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// Set when the account was decommissioned (its file removed from git, approved in
    /// fleet.yaml's `offboarding.decommission`): gateways answer every request with 410 and
    /// issue no token. `digest` stays the last bundle served, so `fleetgate rollback` can
    /// bring the account back until it is erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommissioned: Option<Decommissioned>,
}

/// A decommission: who approved it in which commit, when it was applied, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decommissioned {
    /// RFC 3339, UTC: when the tombstone was written (erasure's grace period counts from it).
    pub at: String,
    pub by: String,
    /// The commit whose fleet.yaml approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The tenant, as fleet.yaml's approval names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Why, as fleet.yaml's approval says it (a contract end, an erasure request's ticket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Pointer {
    /// Whether this pointer is a tombstone: the account is decommissioned.
    pub fn is_tombstone(&self) -> bool {
        self.decommissioned.is_some()
    }
}

/// A rollback hold: who pinned the account to its bundle, when, why, and which head of the
/// tracked branch it holds against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub by: String,
    /// RFC 3339, UTC.
    pub at: String,
    pub reason: String,
    /// The commit (or digest) the account was rolled back to, as the operator named it.
    pub to: String,
    /// The tracked branch's head when the hold was taken: the hold stands while the branch
    /// is still there, and ends when a newer commit (the revert) lands.
    #[serde(default)]
    pub branch_head: Option<String>,
}
