//! `current.json`, the pointer of DESIGN.md's deployed-state layout: which bundle an account
//! runs and how it got there. The reconciler writes it (by compare-and-swap, after the bundle);
//! the gateway polls it.

use serde::{Deserialize, Serialize};

use crate::Digest;

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
}
