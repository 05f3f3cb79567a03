//! `fleetgate release`: rollback holds lifted, so the watch daemon rolls the accounts
//! forward again; through the one hold fan-out ([`crate::ops::holds`]).

use crate::execute::Stamp;
use crate::ops::holds::set_holds;
use crate::target::{AccountRef, FanOut, Target, TargetError};

/// One entry per account looked at, sorted by name.
#[derive(Debug)]
pub struct ReleaseReport {
    pub results: Vec<(String, Result<bool, TargetError>)>,
}

impl ReleaseReport {
    /// Accounts whose hold was lifted.
    pub fn released(&self) -> impl Iterator<Item = &str> {
        self.results
            .iter()
            .filter(|(_, r)| matches!(r, Ok(true)))
            .map(|(n, _)| n.as_str())
    }

    pub fn failures(&self) -> impl Iterator<Item = &TargetError> {
        self.results.iter().filter_map(|(_, r)| r.as_ref().err())
    }
}

/// Lifts the holds of `accounts`.
pub async fn release(
    target: &dyn Target,
    fan: &FanOut<'_>,
    accounts: &[AccountRef],
    stamp: &Stamp,
) -> ReleaseReport {
    let mut results = set_holds(target, fan, "release", accounts, None, stamp).await;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    ReleaseReport { results }
}
