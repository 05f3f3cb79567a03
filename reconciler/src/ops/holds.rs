//! Rollback holds: the one fan-out that sets or lifts them (`fleetgate rollback` on accounts
//! already at the rollback's bundle, `fleetgate release`, and the daemon when the branch
//! has moved past a hold).

use crate::execute::Stamp;
use crate::target::{AccountRef, FanOut, Hold, Target, TargetError};

/// Sets (`Some`) or lifts (`None`) the hold on every account's pointer, each by
/// compare-and-swap, keeping its bundle. One result per account: whether anything was
/// written (`false`: no pointer, or the hold was already so).
pub async fn set_holds<'a>(
    target: &dyn Target,
    fan: &FanOut<'_>,
    what: &str,
    accounts: impl IntoIterator<Item = &'a AccountRef>,
    hold: Option<&Hold>,
    stamp: &Stamp,
) -> Vec<(String, Result<bool, TargetError>)> {
    fan.run(what, accounts, |a| a, |a| set_hold(target, a, hold, stamp))
        .await
}

/// Sets or lifts the hold on an account's pointer, by compare-and-swap, keeping its bundle.
/// Whether anything was written (`false`: no pointer, or the hold is already so).
async fn set_hold(
    target: &dyn Target,
    account: &AccountRef,
    hold: Option<&Hold>,
    stamp: &Stamp,
) -> Result<bool, TargetError> {
    let Some((mut pointer, etag)) = target.read_pointer(account).await? else {
        return Ok(false);
    };
    if pointer.hold.as_ref() == hold {
        return Ok(false);
    }
    pointer.hold = hold.cloned();
    pointer.applied_by = stamp.applied_by.clone();
    pointer.applied_at = stamp.applied_at.clone();
    target.write_pointer(account, &pointer, Some(&etag)).await?;
    Ok(true)
}
