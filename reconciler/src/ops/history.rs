//! `fleetgate history`: an account's pointers, newest first, each with its commit's
//! subject when git still has it.

use crate::git::history::History;
use crate::target::{AccountRef, Pointer, Target, TargetError};

/// One pointer of the history.
#[derive(Debug, Clone)]
pub struct Entry {
    pub pointer: Pointer,
    /// The subject line of the commit the pointer records, when the repo has it.
    pub subject: Option<String>,
}

/// The account's last `limit` pointers, newest first.
pub async fn history(
    repo: &dyn History,
    target: &dyn Target,
    account: &AccountRef,
    limit: usize,
) -> Result<Vec<Entry>, TargetError> {
    let pointers = target.pointer_history(account, limit).await?;
    Ok(pointers
        .into_iter()
        .map(|pointer| Entry {
            subject: pointer.commit.as_deref().and_then(|c| repo.summary(c)),
            pointer,
        })
        .collect())
}
