//! Reading every account's deployed state at once, through the fan-out.

use fleetgate_bundle::Digest;

use crate::target::fanout::FanOut;
use crate::target::store::{AccountRef, Observed, Target, TargetError};

/// Reads every account's deployed state, [`FanOut::concurrency`] at a time, each within the
/// per-account timeout. One account's failure is that account's [`Observed::Unreachable`],
/// never the others'.
///
/// With `wanted`, an account whose pointer already names its wanted digest is
/// [`Observed::Current`] without its bundle being read: one request fewer per unchanged
/// account, which is most of them in a plan.
pub async fn observe(
    target: &dyn Target,
    accounts: &[AccountRef],
    wanted: Option<&std::collections::BTreeMap<String, Digest>>,
    fan: &FanOut<'_>,
) -> std::collections::BTreeMap<String, Observed> {
    each(fan, accounts, |a| {
        observe_one(target, a, wanted.and_then(|w| w.get(&a.name)))
    })
    .await
}

/// Runs `step` for every account through the fan-out: each account's state, or its failure
/// as [`Observed::Unreachable`].
async fn each<'a, F>(
    fan: &FanOut<'_>,
    accounts: &'a [AccountRef],
    step: impl Fn(&'a AccountRef) -> F,
) -> std::collections::BTreeMap<String, Observed>
where
    F: Future<Output = Result<Observed, TargetError>>,
{
    fan.run("observe", accounts.iter(), |a| a, step)
        .await
        .into_iter()
        .map(|(name, r)| (name, r.unwrap_or_else(|e| Observed::from_error(&e))))
        .collect()
}

/// How much of one account's deployed state to read.
#[derive(Debug, Clone, Copy)]
pub enum Read<'a> {
    /// The pointer and the bundle it names ([`Observed::Deployed`]).
    Bundle,
    /// The pointer, and the bundle unless the pointer names this digest
    /// ([`Observed::Current`]).
    Unless(&'a Digest),
    /// The pointer only ([`Observed::Current`] at this digest, [`Observed::Pointed`]
    /// elsewhere).
    PointerOnly(&'a Digest),
}

/// Reads one account's deployed state.
pub async fn observe_account(
    target: &dyn Target,
    account: &AccountRef,
    read: Read<'_>,
) -> Result<Observed, TargetError> {
    match read {
        Read::Bundle => observe_one(target, account, None).await,
        Read::Unless(d) => observe_one(target, account, Some(d)).await,
        Read::PointerOnly(wanted) => Ok(match target.read_pointer(account).await? {
            None => Observed::New,
            Some((pointer, etag)) if &pointer.digest == wanted => {
                Observed::Current { pointer, etag }
            }
            Some((pointer, etag)) => Observed::Pointed { pointer, etag },
        }),
    }
}

async fn observe_one(
    target: &dyn Target,
    account: &AccountRef,
    wanted: Option<&Digest>,
) -> Result<Observed, TargetError> {
    let Some((pointer, etag)) = target.read_pointer(account).await? else {
        return Ok(Observed::New);
    };
    if wanted == Some(&pointer.digest) {
        return Ok(Observed::Current { pointer, etag });
    }
    match target.read_bundle(account, &pointer.digest).await? {
        Some(bundle) => Ok(Observed::Deployed {
            pointer,
            etag,
            bundle: Box::new(bundle),
        }),
        None => Err(TargetError::MissingBundle {
            account: account.name.clone(),
            digest: pointer.digest,
        }),
    }
}

/// Reads every account's pointer and the bundle it names, and checks the bundle against its
/// digest (a tampered or missing one is that account's [`Observed::Unreachable`]); keeps
/// the pointer only ([`Observed::Pointed`]), so checking 10,000 accounts does not hold
/// 10,000 bundles. What drift needs.
pub async fn observe_checked(
    target: &dyn Target,
    accounts: &[AccountRef],
    fan: &FanOut<'_>,
) -> std::collections::BTreeMap<String, Observed> {
    each(fan, accounts, |a| async move {
        Ok(match observe_one(target, a, None).await? {
            Observed::Deployed { pointer, etag, .. } => Observed::Pointed { pointer, etag },
            other => other,
        })
    })
    .await
}

/// Reads every account's pointer and nothing else: [`Observed::Current`] where it names the
/// wanted digest, [`Observed::Pointed`] elsewhere. One request per account (AssumeRole
/// aside): what a rollback needs, which shows no diff and checks the bundle it moves each
/// pointer to when it moves it.
pub async fn observe_pointers(
    target: &dyn Target,
    accounts: &[AccountRef],
    wanted: &std::collections::BTreeMap<String, Digest>,
    fan: &FanOut<'_>,
) -> std::collections::BTreeMap<String, Observed> {
    each(fan, accounts, |a| async move {
        match wanted.get(&a.name) {
            Some(w) => observe_account(target, a, Read::PointerOnly(w)).await,
            // Nothing is wanted there: any pointer is elsewhere.
            None => Ok(match target.read_pointer(a).await? {
                None => Observed::New,
                Some((pointer, etag)) => Observed::Pointed { pointer, etag },
            }),
        }
    })
    .await
}
