//! Erasure: every stored object version under a decommissioned account's prefix (bundles,
//! every version of the pointer, history, gateway status reports) deleted for good, with a
//! receipt in the hub's state store saying what was deleted, when, by whom, and which commit
//! decommissioned the account.
//!
//! Refused for an account that is not approved for decommission in fleet.yaml (or is still
//! in `accounts/`), whose pointer is not a tombstone, whose grace period has not passed, or
//! whose gateways still report. Idempotent (a complete receipt and nothing stored: nothing to
//! do) and resumable: the receipt is written `in-progress`, with every key found, before the
//! first deletion, and a rerun finishes what a killed one left.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::target::{AccountRef, StoredObject, Target, TargetError};

/// The version of the receipt document.
pub const RECEIPT_FORMAT_VERSION: u32 = 1;

/// What an erasure did: the proof an erasure request asks for. It names the account and
/// its tenant by id, and the keys deleted (digests, instance names): no tenant data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub format_version: u32,
    pub account: String,
    pub account_id: String,
    pub tenant: String,
    /// `in-progress` until every object is gone, then `complete`.
    pub status: String,
    /// Where the objects were (`s3://bucket/prefix/` or a directory).
    pub location: String,
    /// The tombstone's record: when, by whom and in which commit the account was
    /// decommissioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommissioned_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommissioned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommission_commit: Option<String>,
    pub erased_by: String,
    /// RFC 3339.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Object versions deleted (delete markers included), by kind: bundle, pointer, history,
    /// status, other.
    pub deleted: BTreeMap<String, usize>,
    /// Every key deleted, relative to the account's prefix.
    pub keys: Vec<String>,
    /// The versions found and deleted, so a resumed run counts what a killed one did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<StoredObject>,
}

/// Where receipts are kept: the hub's state bucket, or the `file://` fleet's `.fleetgate`.
#[async_trait::async_trait]
pub trait ReceiptStore: Send + Sync {
    fn location(&self, account: &str) -> String;
    async fn read(&self, account: &str) -> Result<Option<Receipt>, String>;
    async fn write(&self, receipt: &Receipt) -> Result<(), String>;
}

/// Why an account is not erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("{0}: not erased: {1}")]
    Refused(String, String),
    #[error("{0}")]
    Target(#[from] TargetError),
    #[error("{0}: the receipt cannot be kept: {1}")]
    Receipt(String, String),
}

/// What erase is asked, besides the account.
#[derive(Debug)]
pub struct EraseRequest<'a> {
    pub account: &'a AccountRef,
    pub tenant: &'a str,
    /// fleet.yaml's `offboarding.gracePeriod`.
    pub grace: Duration,
    /// Status reports newer than this mean a gateway still runs (fleet.yaml's
    /// `rollout.reportMaxAge`).
    pub report_max_age: Duration,
    pub now: SystemTime,
    pub by: &'a str,
}

/// What became of an erasure.
#[derive(Debug)]
pub enum Erased {
    /// Done now (or finished after a killed run): the receipt.
    Now(Receipt),
    /// Done before; nothing was stored any more: the receipt as it was.
    Already(Receipt),
}

fn kind_of(key: &str) -> &'static str {
    if key.starts_with("bundles/") {
        "bundle"
    } else if key == "current.json" {
        "pointer"
    } else if key.starts_with("history") {
        "history"
    } else if key.starts_with("status/") {
        "status"
    } else {
        "other"
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Erases one account (see the module's documentation).
pub async fn erase(
    target: &dyn Target,
    store: &dyn ReceiptStore,
    req: &EraseRequest<'_>,
) -> Result<Erased, EraseError> {
    let account = req.account;
    let name = account.name.clone();
    let refuse = |why: String| EraseError::Refused(name.clone(), why);
    let receipt = store
        .read(&account.name)
        .await
        .map_err(|e| EraseError::Receipt(name.clone(), e))?;
    let pointer = target.read_pointer(account).await?;
    // The tombstone checked here is the only pointer erase ever deletes under: before every
    // round it is read again, and anything else (a rollback that brought the account back,
    // a new deployment) stops the erasure.
    let checked = pointer.as_ref().map(|(_, etag)| etag.clone());
    let location = match target.location() {
        l if l.starts_with("file://") => format!("{l}/{}/", account.name),
        _ => format!("s3://{}/{}/", account.bucket, account.prefix),
    };
    let mut receipt = match (pointer, receipt) {
        (Some((p, _)), receipt) => {
            let Some(tomb) = p.decommissioned.clone() else {
                return Err(refuse(
                    "its pointer is not a tombstone: it is still served. Apply its decommission first".into(),
                ));
            };
            let at = humantime::parse_rfc3339(&tomb.at).map_err(|_| {
                refuse(format!(
                    "its tombstone's time {:?} is not RFC 3339",
                    tomb.at
                ))
            })?;
            let until = at + req.grace;
            if req.now < until {
                return Err(refuse(format!(
                    "decommissioned at {}: its grace period (fleet.yaml's offboarding.gracePeriod, {}) ends at {}; a rollback is possible until then",
                    tomb.at,
                    humantime::format_duration(req.grace),
                    rfc3339(until)
                )));
            }
            let fresh: Vec<String> = target
                .read_statuses(account)
                .await?
                .into_iter()
                .filter(|r| {
                    humantime::parse_rfc3339(&r.written_at)
                        .ok()
                        .and_then(|w| req.now.duration_since(w).ok())
                        .is_none_or(|age| age < req.report_max_age)
                })
                .map(|r| r.instance)
                .collect();
            if !fresh.is_empty() {
                return Err(refuse(format!(
                    "gateways still run in the account and report ({}): stop them first (docs/operator.md, \"Offboarding a customer\"), or their reports would be written again",
                    fresh.join(", ")
                )));
            }
            match receipt {
                // A receipt of this very decommission: a run to finish, or one finished whose
                // objects came back (a late status report).
                Some(r)
                    if r.account_id == account.id
                        && r.location == location
                        && r.decommissioned_at.as_deref() == Some(tomb.at.as_str()) =>
                {
                    r
                }
                Some(r) => {
                    return Err(refuse(format!(
                        "a receipt of another erasure of this name is kept at {} (account {}, decommissioned at {}): it is proof of that erasure and is not overwritten; move it aside first",
                        store.location(&account.name),
                        r.account_id,
                        r.decommissioned_at.as_deref().unwrap_or("-")
                    )));
                }
                None => Receipt {
                    format_version: RECEIPT_FORMAT_VERSION,
                    account: account.name.clone(),
                    account_id: account.id.clone(),
                    tenant: req.tenant.to_string(),
                    status: "in-progress".into(),
                    location: location.clone(),
                    decommissioned_at: Some(tomb.at.clone()),
                    decommissioned_by: Some(tomb.by.clone()),
                    decommission_commit: tomb.commit.clone(),
                    erased_by: req.by.to_string(),
                    started_at: rfc3339(req.now),
                    finished_at: None,
                    deleted: BTreeMap::new(),
                    keys: Vec::new(),
                    versions: Vec::new(),
                },
            }
        }
        // The pointer is deleted last: no pointer and a receipt of this very account is a
        // run to finish, or one finished.
        (None, Some(r)) if r.account_id == account.id && r.location == location => r,
        (None, Some(r)) => {
            return Err(refuse(format!(
                "its pointer is gone and the receipt at {} is of another account ({} at {})",
                store.location(&account.name),
                r.account_id,
                r.location
            )));
        }
        (None, None) => {
            return Err(refuse(
                "nothing is stored for it and no receipt exists: it was never deployed here, or another store was erased".into(),
            ));
        }
    };

    let mut found = target.list_stored(account).await?;
    if found.is_empty() && receipt.status == "complete" {
        return Ok(Erased::Already(receipt));
    }
    // Rounds: a status report or version written while deleting is found by the next list.
    for _ in 0..5 {
        if found.is_empty() {
            break;
        }
        let known: BTreeSet<StoredObject> = receipt.versions.iter().cloned().collect();
        receipt
            .versions
            .extend(found.iter().filter(|o| !known.contains(*o)).cloned());
        receipt.status = "in-progress".into();
        store
            .write(&receipt)
            .await
            .map_err(|e| EraseError::Receipt(name.clone(), e))?;
        // The pointer's versions last: while it exists the account reads as decommissioned.
        let (pointer, rest): (Vec<StoredObject>, Vec<StoredObject>) =
            found.into_iter().partition(|o| o.key == "current.json");
        still_the_tombstone(target, account, checked.as_ref()).await?;
        target.delete_stored(account, &rest).await?;
        still_the_tombstone(target, account, checked.as_ref()).await?;
        target.delete_stored(account, &pointer).await?;
        found = target.list_stored(account).await?;
    }
    if !found.is_empty() {
        return Err(refuse(format!(
            "{} object versions are still written under its prefix after five rounds: something writes there",
            found.len()
        )));
    }
    let mut deleted: BTreeMap<String, usize> = BTreeMap::new();
    for v in &receipt.versions {
        *deleted.entry(kind_of(&v.key).to_string()).or_default() += 1;
    }
    receipt.deleted = deleted;
    receipt.keys = receipt
        .versions
        .iter()
        .map(|v| v.key.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    receipt.status = "complete".into();
    receipt.finished_at = Some(rfc3339(SystemTime::now().max(req.now)));
    store
        .write(&receipt)
        .await
        .map_err(|e| EraseError::Receipt(name.clone(), e))?;
    Ok(Erased::Now(receipt))
}

/// Stops an erasure whose account changed since it was checked: its pointer must still be
/// the tombstone read then (`checked`: its version), or gone (this run, or the one it
/// finishes, deleted it). A rollback or a deployment that wrote a pointer meanwhile is never
/// erased.
async fn still_the_tombstone(
    target: &dyn Target,
    account: &AccountRef,
    checked: Option<&crate::target::ETag>,
) -> Result<(), EraseError> {
    match (target.read_pointer(account).await?, checked) {
        (None, _) => Ok(()),
        (Some((p, etag)), Some(c)) if &etag == c && p.is_tombstone() => Ok(()),
        (Some(_), _) => Err(EraseError::Refused(
            account.name.clone(),
            "its pointer changed while it was being erased (a rollback, or a deployment): stopped; what was deleted is in the in-progress receipt. Check the account, then decommission it again".into(),
        )),
    }
}

/// Receipts as files: `<dir>/<account>.json`.
#[derive(Debug)]
pub struct FileReceipts {
    pub dir: std::path::PathBuf,
}

#[async_trait::async_trait]
impl ReceiptStore for FileReceipts {
    fn location(&self, account: &str) -> String {
        self.dir
            .join(format!("{account}.json"))
            .display()
            .to_string()
    }

    async fn read(&self, account: &str) -> Result<Option<Receipt>, String> {
        let path = self.dir.join(format!("{account}.json"));
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    async fn write(&self, receipt: &Receipt) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let path = self.dir.join(format!("{}.json", receipt.account));
        let tmp = self.dir.join(format!(".{}.json.tmp", receipt.account));
        let mut body = serde_json::to_vec_pretty(receipt).map_err(|e| e.to_string())?;
        body.push(b'\n');
        std::fs::write(&tmp, body).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Receipts in the hub's state bucket: `s3://<bucket>/fleetgate/erasures/<account>.json`.
#[derive(Debug)]
pub struct S3Receipts {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
}

impl S3Receipts {
    fn key(account: &str) -> String {
        format!("fleetgate/erasures/{account}.json")
    }
}

#[async_trait::async_trait]
impl ReceiptStore for S3Receipts {
    fn location(&self, account: &str) -> String {
        format!("s3://{}/{}", self.bucket, Self::key(account))
    }

    async fn read(&self, account: &str) -> Result<Option<Receipt>, String> {
        let got = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(Self::key(account))
            .send()
            .await;
        let out = match got {
            Ok(o) => o,
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key,
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(format!("{}: {}", self.location(account), e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| format!("{}: {e}", self.location(account)))?
            .into_bytes();
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", self.location(account)))
    }

    async fn write(&self, receipt: &Receipt) -> Result<(), String> {
        let mut body = serde_json::to_vec_pretty(receipt).map_err(|e| e.to_string())?;
        body.push(b'\n');
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(Self::key(&receipt.account))
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map(drop)
            .map_err(|e| format!("{}: {e}", self.location(&receipt.account)))
    }
}
