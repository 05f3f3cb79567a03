//! `fleetgate bootstrap`: each selected account's config store created when missing.

use crate::target::{AccountRef, Bootstrapped, FanOut, Target, TargetError};

/// One entry per account, sorted by name.
#[derive(Debug)]
pub struct BootstrapReport {
    pub results: Vec<(String, Result<Bootstrapped, TargetError>)>,
}

pub async fn bootstrap(
    target: &dyn Target,
    fan: &FanOut<'_>,
    accounts: &[AccountRef],
) -> BootstrapReport {
    let mut results = fan
        .run("bootstrap", accounts.iter(), |a| a, |a| target.bootstrap(a))
        .await;
    results.sort_by(|a, b| a.0.cmp(&b.0));
    BootstrapReport { results }
}
