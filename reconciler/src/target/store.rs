//! What a target holds and says, and the trait every target implements: the account
//! references, the pointer version a compare-and-swap names ([`ETag`]), errors and their
//! classes, what was observed, and the checks of stored bundles and status reports.

use fleetgate_bundle::{Bundle, Digest};
use serde::Serialize;

use fleetgate_bundle::pointer::Pointer;
use fleetgate_bundle::report::InstanceReport;

/// The version of a pointer a compare-and-swap expects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{account}: {path}: {source}")]
    Io {
        account: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{account}: current.json is corrupt: {message}")]
    CorruptPointer { account: String, message: String },
    #[error(
        "{account}: bundle {digest} does not match its digest (content hashes to {actual}): tampered or truncated"
    )]
    TamperedBundle {
        account: String,
        digest: Digest,
        actual: Digest,
    },
    #[error("{account}: bundle {digest} is not a valid bundle: {message}")]
    CorruptBundle {
        account: String,
        digest: Digest,
        message: String,
    },
    #[error("{account}: the pointer names bundle {digest}, which is missing")]
    MissingBundle { account: String, digest: Digest },
    #[error(
        "{account}: the pointer changed since it was read (expected {expected}, found {found}): someone else applied; re-plan"
    )]
    Conflict {
        account: String,
        expected: String,
        found: String,
    },
    #[error("{account}: not a valid account name for a target")]
    BadAccount { account: String },
    /// A remote store or its credentials said no, or could not be reached; `class` says
    /// which kind of failure it was.
    #[error("{account}: {class}: {message}")]
    Remote {
        account: String,
        class: ErrorClass,
        message: String,
    },
    #[error("{account}: timeout: no answer within {after}")]
    Timeout { account: String, after: String },
    /// A `file://` target whose directory does not exist (or is not a directory).
    #[error(
        "target file://{path} cannot be listed: {why}; check the path (only `fleetgate apply` creates a missing target directory)"
    )]
    MissingTarget { path: String, why: String },
}

impl TargetError {
    /// The kind of failure, for reports and for deciding what to do about it.
    pub fn class(&self) -> ErrorClass {
        match self {
            TargetError::Io { .. } => ErrorClass::Io,
            TargetError::CorruptPointer { .. } | TargetError::CorruptBundle { .. } => {
                ErrorClass::Corrupt
            }
            TargetError::TamperedBundle { .. } => ErrorClass::Tampered,
            TargetError::MissingBundle { .. } => ErrorClass::MissingBundle,
            TargetError::Conflict { .. } => ErrorClass::Conflict,
            TargetError::BadAccount { .. } => ErrorClass::Other,
            TargetError::Remote { class, .. } => *class,
            TargetError::Timeout { .. } => ErrorClass::Timeout,
            TargetError::MissingTarget { .. } => ErrorClass::Io,
        }
    }
}

/// Why an account could not be read or written, in the words reports use
/// (`access-denied`, `role-not-assumable`, ...).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorClass {
    /// The assumed role may not read or write the account's bucket (or the bucket belongs to
    /// another account).
    AccessDenied,
    /// STS refused the role: missing, trust policy, ExternalId, or the hub's own
    /// credentials.
    RoleNotAssumable,
    /// The account's config bucket does not exist: run `fleetgate bootstrap`.
    BucketMissing,
    /// Still throttled after the SDK's retries.
    Throttled,
    /// Still failing with 5xx after the SDK's retries.
    ServerError,
    /// No answer within the per-account timeout.
    Timeout,
    /// The pointer moved since it was read.
    Conflict,
    /// Could not connect, or the connection broke.
    Network,
    /// A bundle that does not hash to its digest.
    Tampered,
    /// The pointer names a bundle that is not stored.
    MissingBundle,
    /// A pointer or bundle that does not parse.
    Corrupt,
    /// A local file error.
    Io,
    Other,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::AccessDenied => "access denied",
            ErrorClass::RoleNotAssumable => "role not assumable",
            ErrorClass::BucketMissing => "bucket missing",
            ErrorClass::Throttled => "throttled after retries",
            ErrorClass::ServerError => "server error after retries",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Network => "network",
            ErrorClass::Tampered => "tampered",
            ErrorClass::MissingBundle => "missing bundle",
            ErrorClass::Corrupt => "corrupt",
            ErrorClass::Io => "i/o",
            ErrorClass::Other => "error",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which account a target call is about. The file target keys on the name; the AWS target
/// needs the account id, region, and the bucket and prefix the fleet's templates give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRef {
    pub name: String,
    pub id: String,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
}

impl AccountRef {
    /// The account as `repo` defines it, with the fleet's bucket and prefix templates
    /// expanded (`None` for an account the repo does not have or cannot place).
    pub fn from_repo(repo: &crate::Repo, name: &str) -> Option<AccountRef> {
        let account = repo.accounts.get(name)?;
        let fleet = repo.fleet.as_ref()?;
        let vars = account.vars();
        let spec = &account.doc.spec;
        Some(AccountRef {
            name: name.to_string(),
            id: spec.account_id.0.clone(),
            region: spec.region.clone(),
            bucket: vars.expand(&fleet.spec.bucket).ok()?,
            prefix: vars.expand(&fleet.spec.prefix).ok()?,
        })
    }
}

impl AccountRef {
    /// An account approved for decommission (its file gone from git), placed with
    /// fleet.yaml's bucket and prefix templates from what the approval names: `None` when a
    /// template uses a value it does not name (the stage, a label), which fleet.yaml's checks
    /// refuse.
    pub fn from_decommission(
        fleet: &crate::config::manifest::FleetSpec,
        d: &crate::config::manifest::DecommissionSpec,
    ) -> Option<AccountRef> {
        use crate::config::waves::decommission_placeable;
        if !decommission_placeable(&fleet.bucket) || !decommission_placeable(&fleet.prefix) {
            return None;
        }
        let at = crate::config::waves::placement(fleet, d)?;
        Some(AccountRef {
            name: d.account.clone(),
            id: d.account_id.0.clone(),
            region: d.region.clone(),
            bucket: at.bucket,
            prefix: at.prefix,
        })
    }
}

/// One stored object version: its key under the account's prefix (`bundles/<hex>.json`,
/// `current.json`, `status/<instance>.json`, ...), and its S3 version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct StoredObject {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What `bootstrap` did for one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrapped {
    Created,
    /// The store was there; its settings were (re)applied.
    AlreadyThere,
}

/// Where bundles are deployed: `file://DIR` here, every account's own S3 bucket in the AWS
/// target. Reads for plan and drift, writes for apply (bundle first, then pointer by CAS).
#[async_trait::async_trait]
pub trait Target: Send + Sync + std::fmt::Debug {
    /// For messages and plans: `file:///srv/fleet`, `aws`.
    fn location(&self) -> String;

    /// What the remote calls cost so far, retries included; `None` for a local target.
    fn requests(&self) -> Option<RequestStats> {
        None
    }

    /// Accounts the target holds state for, whether or not git still has them (for orphans).
    /// A target that cannot enumerate accounts returns an empty list.
    async fn deployed_accounts(&self) -> Result<Vec<String>, TargetError>;

    /// The pointer and its ETag; `None` for an account never deployed.
    async fn read_pointer(
        &self,
        account: &AccountRef,
    ) -> Result<Option<(Pointer, ETag)>, TargetError>;

    /// A stored bundle, checked against its digest; `None` when absent.
    async fn read_bundle(
        &self,
        account: &AccountRef,
        digest: &Digest,
    ) -> Result<Option<Bundle>, TargetError>;

    /// Stores canonical bundle bytes under their digest; whether anything was written.
    async fn write_bundle(
        &self,
        account: &AccountRef,
        canonical: &[u8],
    ) -> Result<bool, TargetError>;

    /// Replaces the pointer if it is still at `expected` (`None`: there must be none).
    async fn write_pointer(
        &self,
        account: &AccountRef,
        pointer: &Pointer,
        expected: Option<&ETag>,
    ) -> Result<ETag, TargetError>;

    /// The account's pointers, newest first, at most `limit`: S3 keeps every version of
    /// `current.json` (the bucket is versioned); the file target keeps `history.jsonl`.
    async fn pointer_history(
        &self,
        account: &AccountRef,
        limit: usize,
    ) -> Result<Vec<Pointer>, TargetError>;

    /// The reports gateway instances write next to the pointer (`status/<instance>.json`),
    /// for the rollout's health gate. A report that does not parse is skipped with a
    /// warning: one broken instance must not hide the others.
    async fn read_statuses(&self, account: &AccountRef)
    -> Result<Vec<InstanceReport>, TargetError>;

    /// Creates the account's store (S3: its config bucket, versioned, encrypted, not public)
    /// when missing. Idempotent.
    async fn bootstrap(&self, account: &AccountRef) -> Result<Bootstrapped, TargetError>;

    /// Every stored object under the account's prefix, every version of each (S3: versions
    /// and delete markers; a directory: its files), for erasure.
    async fn list_stored(&self, account: &AccountRef) -> Result<Vec<StoredObject>, TargetError>;

    /// Deletes these objects for good (each version; S3 in batches of 1,000).
    async fn delete_stored(
        &self,
        account: &AccountRef,
        objects: &[StoredObject],
    ) -> Result<(), TargetError>;
}

/// What a target holds for one account.
#[derive(Clone, Debug)]
pub enum Observed {
    /// No pointer: never deployed.
    New,
    Deployed {
        pointer: Pointer,
        etag: ETag,
        bundle: Box<Bundle>,
    },
    /// Deployed at exactly the digest the caller wanted, so its bundle was not read (plan
    /// and apply need no diff there; drift always reads and checks bundles).
    Current { pointer: Pointer, etag: ETag },
    /// Deployed at another digest, its bundle not read (a rollback reads pointers only,
    /// [`crate::target::observe_pointers`], so its plan has no diff to show) or read,
    /// checked and not kept ([`crate::target::observe::observe_checked`]).
    Pointed { pointer: Pointer, etag: ETag },
    /// The state could not be read or cannot be trusted (corrupt pointer, tampered or
    /// missing bundle, access denied, timeout...). The message names the account.
    Unreachable { reason: String, class: ErrorClass },
}

impl Observed {
    pub fn from_error(e: &TargetError) -> Observed {
        Observed::Unreachable {
            reason: e.to_string(),
            class: e.class(),
        }
    }
}

/// A remote target's calls so far: how many, and how many of their attempts the SDK
/// retried (after a throttled answer, a 5xx, a timed-out or failed attempt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestStats {
    pub calls: u64,
    /// Attempts beyond each call's first.
    pub retries: u64,
    /// Answers that said to slow down (429, 503, STS's Throttling).
    pub throttled: u64,
    /// Attempts that ran out of `--request-timeout`.
    pub timed_out: u64,
}

impl std::fmt::Display for RequestStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} AWS calls, {} retried attempts ({} throttled, {} timed out)",
            self.calls, self.retries, self.throttled, self.timed_out
        )
    }
}

/// A stored bundle's bytes must hash to the digest they are stored under, and parse.
pub fn check_stored_bundle(
    account: &str,
    bytes: &[u8],
    digest: &Digest,
) -> Result<Bundle, TargetError> {
    let actual = Digest::of(bytes);
    if &actual != digest {
        return Err(TargetError::TamperedBundle {
            account: account.to_string(),
            digest: digest.clone(),
            actual,
        });
    }
    Bundle::from_stored(bytes, digest).map_err(|e| TargetError::CorruptBundle {
        account: account.to_string(),
        digest: digest.clone(),
        message: e.to_string(),
    })
}

/// A gateway's status report, or `None` (with a warning) when it does not parse.
pub fn parse_status(account: &str, path: &str, bytes: &[u8]) -> Option<InstanceReport> {
    match serde_json::from_slice(bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(account, path, error = %e, "skipping a gateway status report that does not parse");
            None
        }
    }
}
