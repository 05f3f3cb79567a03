//! Deployed state, in the deployed-state layout (docs/architecture.md), on a local directory (the embedded default
//! target, `file://DIR`):
//!
//! ```text
//! DIR/<account>/bundles/<sha256>.json   immutable, content-addressed; written first
//! DIR/<account>/current.json            the pointer; replaced with a compare-and-swap
//! DIR/<account>/status/                 gateways report here (later)
//! ```
//!
//! The pointer's ETag is the sha256 of its bytes (what S3 gives for a single-part object is
//! also a content hash). A replace names the ETag it read; under an OS file lock the current
//! ETag is compared and the new pointer renamed into place, so two appliers racing lose
//! nothing: the second gets [`TargetError::Conflict`]. A crash between the two writes leaves
//! an unreferenced bundle and an intact pointer.
//!
//! `DIR` itself must exist: a missing directory is far more often a mistyped path than a
//! fleet never deployed, and reading it as "nothing deployed" would plan every account as a
//! create. Every operation refuses it ([`TargetError::MissingTarget`]) unless the target was
//! opened for `apply` ([`FileTarget::create_if_missing`]), which creates it.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use fleetgate_bundle::{Bundle, Digest};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

pub use fleetgate_bundle::pointer::{Hold, Pointer};
pub use fleetgate_bundle::report::InstanceReport;

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

/// What `bootstrap` did for one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrapped {
    Created,
    /// The store was there; its settings were (re)applied.
    AlreadyThere,
}

/// Where bundles are deployed: `file://DIR` here, every account's own S3 bucket in the AWS
/// target. Reads for plan and drift, writes for apply (bundle first, then pointer by CAS).
pub trait Target: Send + Sync {
    /// For messages and plans: `file:///srv/fleet`, `aws`.
    fn location(&self) -> String;

    /// Accounts the target holds state for, whether or not git still has them (for orphans).
    /// A target that cannot enumerate accounts returns an empty list.
    fn deployed_accounts(&self) -> impl Future<Output = Result<Vec<String>, TargetError>> + Send;

    /// The pointer and its ETag; `None` for an account never deployed.
    fn read_pointer(
        &self,
        account: &AccountRef,
    ) -> impl Future<Output = Result<Option<(Pointer, ETag)>, TargetError>> + Send;

    /// A stored bundle, checked against its digest; `None` when absent.
    fn read_bundle(
        &self,
        account: &AccountRef,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<Bundle>, TargetError>> + Send;

    /// Stores canonical bundle bytes under their digest; whether anything was written.
    fn write_bundle(
        &self,
        account: &AccountRef,
        canonical: &[u8],
    ) -> impl Future<Output = Result<bool, TargetError>> + Send;

    /// Replaces the pointer if it is still at `expected` (`None`: there must be none).
    fn write_pointer(
        &self,
        account: &AccountRef,
        pointer: &Pointer,
        expected: Option<&ETag>,
    ) -> impl Future<Output = Result<ETag, TargetError>> + Send;

    /// The account's pointers, newest first, at most `limit`: S3 keeps every version of
    /// `current.json` (the bucket is versioned); the file target keeps `history.jsonl`.
    fn pointer_history(
        &self,
        account: &AccountRef,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Pointer>, TargetError>> + Send;

    /// The reports gateway instances write next to the pointer (`status/<instance>.json`),
    /// for the rollout's health gate. A report that does not parse is skipped with a
    /// warning: one broken instance must not hide the others.
    fn read_statuses(
        &self,
        account: &AccountRef,
    ) -> impl Future<Output = Result<Vec<InstanceReport>, TargetError>> + Send;

    /// Creates the account's store (S3: its config bucket, versioned, encrypted, not public)
    /// when missing. Idempotent.
    fn bootstrap(
        &self,
        account: &AccountRef,
    ) -> impl Future<Output = Result<Bootstrapped, TargetError>> + Send;
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

/// Reads every account's deployed state, [`FanOut::concurrency`] at a time, each within the
/// per-account timeout. One account's failure is that account's [`Observed::Unreachable`],
/// never the others'.
///
/// With `wanted`, an account whose pointer already names its wanted digest is
/// [`Observed::Current`] without its bundle being read: one request fewer per unchanged
/// account, which is most of them in a plan.
pub async fn observe<T: Target>(
    target: &T,
    accounts: &[AccountRef],
    wanted: Option<&std::collections::BTreeMap<String, Digest>>,
    fan: &FanOut<'_>,
) -> std::collections::BTreeMap<String, Observed> {
    fan.run(
        "observe",
        accounts.iter(),
        |a| a,
        |a| observe_one(target, a, wanted.and_then(|w| w.get(&a.name))),
    )
    .await
    .into_iter()
    .map(|(name, r)| (name, r.unwrap_or_else(|e| Observed::from_error(&e))))
    .collect()
}

/// How calls fan out over accounts: how many at once, how long one account may take, and
/// who hears about progress.
#[derive(Clone, Copy)]
pub struct FanOut<'a> {
    pub concurrency: usize,
    /// For all of one account's calls in one step (observe, apply, bootstrap), retries
    /// included.
    pub timeout: std::time::Duration,
    pub progress: &'a dyn Progress,
}

impl std::fmt::Debug for FanOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl FanOut<'static> {
    /// 32 at once, 2 minutes per account, no progress output.
    pub fn quiet(concurrency: usize) -> FanOut<'static> {
        FanOut {
            concurrency,
            timeout: std::time::Duration::from_secs(120),
            progress: &NoProgress,
        }
    }
}

impl FanOut<'_> {
    /// Runs `step` for every item, `concurrency` at a time, each under the timeout, and
    /// returns the results in completion order. A step that times out is that account's
    /// [`TargetError::Timeout`]; the others go on.
    pub async fn run<I, T, F>(
        &self,
        what: &str,
        items: impl IntoIterator<Item = I>,
        account: impl Fn(&I) -> &AccountRef,
        step: impl Fn(I) -> F,
    ) -> Vec<(String, Result<T, TargetError>)>
    where
        F: Future<Output = Result<T, TargetError>>,
    {
        use futures::StreamExt as _;
        let items: Vec<I> = items.into_iter().collect();
        self.progress.start(what, items.len());
        let results = futures::stream::iter(items)
            .map(|item| {
                let name = account(&item).name.clone();
                let work = step(item);
                async move {
                    let r = match tokio::time::timeout(self.timeout, work).await {
                        Ok(r) => r,
                        Err(_) => Err(TargetError::Timeout {
                            account: name.clone(),
                            after: humantime::format_duration(self.timeout).to_string(),
                        }),
                    };
                    self.progress.done(&name, r.is_ok());
                    (name, r)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        self.progress.finish();
        results
    }
}

/// Hears about a fan-out as it goes (a progress bar on a terminal, counters in CI).
pub trait Progress: Sync {
    fn start(&self, what: &str, total: usize);
    fn done(&self, account: &str, ok: bool);
    fn finish(&self);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: usize) {}
    fn done(&self, _: &str, _: bool) {}
    fn finish(&self) {}
}

async fn observe_one<T: Target>(
    target: &T,
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

impl Target for FileTarget {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn deployed_accounts(&self) -> Result<Vec<String>, TargetError> {
        self.accounts()
    }

    async fn read_pointer(
        &self,
        account: &AccountRef,
    ) -> Result<Option<(Pointer, ETag)>, TargetError> {
        FileTarget::read_pointer(self, &account.name)
    }

    async fn read_bundle(
        &self,
        account: &AccountRef,
        digest: &Digest,
    ) -> Result<Option<Bundle>, TargetError> {
        FileTarget::read_bundle(self, &account.name, digest)
    }

    async fn write_bundle(
        &self,
        account: &AccountRef,
        canonical: &[u8],
    ) -> Result<bool, TargetError> {
        FileTarget::write_bundle(self, &account.name, canonical)
    }

    async fn write_pointer(
        &self,
        account: &AccountRef,
        pointer: &Pointer,
        expected: Option<&ETag>,
    ) -> Result<ETag, TargetError> {
        FileTarget::write_pointer(self, &account.name, pointer, expected)
    }

    async fn read_statuses(
        &self,
        account: &AccountRef,
    ) -> Result<Vec<InstanceReport>, TargetError> {
        FileTarget::read_statuses(self, &account.name)
    }

    async fn pointer_history(
        &self,
        account: &AccountRef,
        limit: usize,
    ) -> Result<Vec<Pointer>, TargetError> {
        FileTarget::pointer_history(self, &account.name, limit)
    }

    async fn bootstrap(&self, account: &AccountRef) -> Result<Bootstrapped, TargetError> {
        let dir = self.account_dir(&account.name)?;
        if dir.is_dir() {
            return Ok(Bootstrapped::AlreadyThere);
        }
        std::fs::create_dir_all(&dir).map_err(|e| Self::io(&account.name, &dir, e))?;
        Ok(Bootstrapped::Created)
    }
}

/// A directory of accounts.
#[derive(Debug, Clone)]
pub struct FileTarget {
    root: PathBuf,
    /// Whether a missing root directory is created (apply) or refused (everything else).
    create: bool,
}

impl FileTarget {
    /// `file://DIR` or a plain path. `DIR` must exist: see [`FileTarget::create_if_missing`].
    pub fn new(location: &str) -> FileTarget {
        FileTarget {
            root: PathBuf::from(location.strip_prefix("file://").unwrap_or(location)),
            create: false,
        }
    }

    /// For `apply`: a missing root directory is a fleet never deployed, and is created with
    /// the first bundle written.
    pub fn create_if_missing(mut self) -> FileTarget {
        self.create = true;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root must be a directory, unless this target may create it.
    fn check_root(&self) -> Result<(), TargetError> {
        let why = match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => "it is not a directory",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.create {
                    return Ok(());
                }
                "the directory does not exist"
            }
            Err(e) => return Err(Self::io("*", &self.root, e)),
        };
        Err(TargetError::MissingTarget {
            path: self.root.display().to_string(),
            why: why.to_string(),
        })
    }

    fn account_dir(&self, account: &str) -> Result<PathBuf, TargetError> {
        self.check_root()?;
        // Account names are validated by the manifests; a path separator here would escape
        // the target directory, so refuse it outright.
        if account.is_empty() || account.contains(['/', '\\']) || account.starts_with('.') {
            return Err(TargetError::BadAccount {
                account: account.to_string(),
            });
        }
        Ok(self.root.join(account))
    }

    fn io(account: &str, path: &Path, source: std::io::Error) -> TargetError {
        TargetError::Io {
            account: account.to_string(),
            path: path.display().to_string(),
            source,
        }
    }

    /// Accounts that have a directory in the target (deployed or bootstrapped), sorted.
    pub fn accounts(&self) -> Result<Vec<String>, TargetError> {
        self.check_root()?;
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("*", &self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Self::io("*", &self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().is_dir() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The pointer and its ETag; `None` for an account never deployed.
    pub fn read_pointer(&self, account: &str) -> Result<Option<(Pointer, ETag)>, TargetError> {
        let path = self.account_dir(account)?.join("current.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(account, &path, e)),
        };
        let pointer: Pointer =
            serde_json::from_slice(&bytes).map_err(|e| TargetError::CorruptPointer {
                account: account.to_string(),
                message: e.to_string(),
            })?;
        Ok(Some((pointer, etag_of(&bytes))))
    }

    /// A stored bundle, checked against its digest; `None` when absent.
    pub fn read_bundle(
        &self,
        account: &str,
        digest: &Digest,
    ) -> Result<Option<Bundle>, TargetError> {
        let path = self.bundle_path(account, digest)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(account, &path, e)),
        };
        check_stored_bundle(account, &bytes, digest).map(Some)
    }

    fn bundle_path(&self, account: &str, digest: &Digest) -> Result<PathBuf, TargetError> {
        Ok(self
            .account_dir(account)?
            .join("bundles")
            .join(format!("{}.json", digest.hex())))
    }

    /// Stores canonical bundle bytes under their digest. Returns whether anything was written
    /// (an identical object already there is fine; a different one is reported as tampered).
    pub fn write_bundle(&self, account: &str, canonical: &[u8]) -> Result<bool, TargetError> {
        let digest = Digest::of(canonical);
        let path = self.bundle_path(account, &digest)?;
        match std::fs::read(&path) {
            Ok(existing) if existing == canonical => return Ok(false),
            Ok(existing) => {
                return Err(TargetError::TamperedBundle {
                    account: account.to_string(),
                    digest,
                    actual: Digest::of(&existing),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io(account, &path, e)),
        }
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| Self::io(account, dir, e))?;
        write_atomically(&path, canonical).map_err(|e| Self::io(account, &path, e))?;
        Ok(true)
    }

    /// The pointers written to the account, newest first, from `history.jsonl` (one JSON
    /// pointer a line, appended under the pointer's lock after each write).
    pub fn pointer_history(
        &self,
        account: &str,
        limit: usize,
    ) -> Result<Vec<Pointer>, TargetError> {
        let path = self.account_dir(account)?.join("history.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(account, &path, e)),
        };
        let mut out = Vec::new();
        for line in text.lines().rev().filter(|l| !l.trim().is_empty()) {
            if out.len() == limit {
                break;
            }
            // A torn last line (a crash mid-append) is skipped, not fatal.
            if let Ok(p) = serde_json::from_str::<Pointer>(line) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The gateway instances' reports in `DIR/<account>/status/`, sorted by instance.
    pub fn read_statuses(&self, account: &str) -> Result<Vec<InstanceReport>, TargetError> {
        let dir = self.account_dir(account)?.join("status");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(account, &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Self::io(account, &dir, e))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue; // the gateway's temp files
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::io(account, &path, e)),
            };
            if let Some(report) = parse_status(account, &path.display().to_string(), &bytes) {
                out.push(report);
            }
        }
        out.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(out)
    }

    /// Replaces the pointer if it is still at `expected` (`None`: there must be no pointer).
    /// The bundle it names must already be stored.
    pub fn write_pointer(
        &self,
        account: &str,
        pointer: &Pointer,
        expected: Option<&ETag>,
    ) -> Result<ETag, TargetError> {
        let dir = self.account_dir(account)?;
        let bundle = self.bundle_path(account, &pointer.digest)?;
        if !bundle.exists() {
            return Err(TargetError::MissingBundle {
                account: account.to_string(),
                digest: pointer.digest.clone(),
            });
        }
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Self::io(account, &lock_path, e))?;
        lock.lock().map_err(|e| Self::io(account, &lock_path, e))?;
        let path = dir.join("current.json");
        let found = match std::fs::read(&path) {
            Ok(bytes) => Some(etag_of(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Self::io(account, &path, e)),
        };
        if found.as_ref() != expected {
            let show = |t: Option<&ETag>| {
                t.map(|t| t.0.clone())
                    .unwrap_or_else(|| "no pointer".into())
            };
            return Err(TargetError::Conflict {
                account: account.to_string(),
                expected: show(expected),
                found: show(found.as_ref()),
            });
        }
        let mut bytes =
            serde_json::to_vec_pretty(pointer).map_err(|e| TargetError::CorruptPointer {
                account: account.to_string(),
                message: e.to_string(),
            })?;
        bytes.push(b'\n');
        write_atomically(&path, &bytes).map_err(|e| Self::io(account, &path, e))?;
        // The history line goes after the pointer, under the same lock: it never names a
        // pointer that was not written (a crash in between loses one line of history).
        let history = dir.join("history.jsonl");
        let mut line = serde_json::to_vec(pointer).map_err(|e| TargetError::CorruptPointer {
            account: account.to_string(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&history)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| Self::io(account, &history, e))?;
        // The lock is released when `lock` drops.
        Ok(etag_of(&bytes))
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

fn etag_of(bytes: &[u8]) -> ETag {
    ETag(hex::encode(Sha256::digest(bytes))[..32].to_string())
}

/// Write to a temp file in the same directory, fsync, rename over: readers see the old or
/// the new content, never a torn one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Unique per process and per call: concurrent writers never share a temp file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(digest: &Digest, previous: Option<Digest>) -> Pointer {
        Pointer {
            digest: digest.clone(),
            commit: Some("0123456789ab".into()),
            previous,
            applied_by: "test".into(),
            applied_at: "2026-11-23T12:00:00Z".into(),
            hold: None,
        }
    }

    fn sample_bundle() -> Vec<u8> {
        let src = crate::example_fleet::example_repo();
        let repo = crate::Repo::load(&src);
        crate::render(&repo, "acme-prod").unwrap().canonical
    }

    #[test]
    fn bundle_then_pointer_then_cas() {
        let tmp = tempfile::tempdir().unwrap();
        let t = FileTarget::new(&format!("file://{}", tmp.path().display()));
        assert_eq!(t.read_pointer("acme-prod").unwrap(), None, "never deployed");
        let bytes = sample_bundle();
        let digest = Digest::of(&bytes);

        // The pointer may not name a bundle that is not stored.
        assert!(matches!(
            t.write_pointer("acme-prod", &pointer(&digest, None), None),
            Err(TargetError::MissingBundle { .. })
        ));
        assert!(t.write_bundle("acme-prod", &bytes).unwrap());
        assert!(
            !t.write_bundle("acme-prod", &bytes).unwrap(),
            "identical object: nothing written"
        );
        let etag = t
            .write_pointer("acme-prod", &pointer(&digest, None), None)
            .unwrap();
        let (read, read_etag) = t.read_pointer("acme-prod").unwrap().unwrap();
        assert_eq!(
            (read.digest.clone(), read_etag.clone()),
            (digest.clone(), etag.clone())
        );
        assert_eq!(
            t.read_bundle("acme-prod", &digest)
                .unwrap()
                .unwrap()
                .account
                .name,
            "acme-prod"
        );

        // A writer holding a stale ETag loses; the pointer is unchanged.
        t.write_pointer(
            "acme-prod",
            &pointer(&digest, Some(digest.clone())),
            Some(&etag),
        )
        .unwrap();
        let e = t
            .write_pointer("acme-prod", &pointer(&digest, None), Some(&etag))
            .unwrap_err();
        assert!(matches!(e, TargetError::Conflict { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("acme-prod: the pointer changed since it was read"),
            "{e}"
        );
        assert_eq!(
            t.read_pointer("acme-prod").unwrap().unwrap().0.previous,
            Some(digest.clone())
        );
        // Expecting "no pointer" when there is one is a conflict too.
        assert!(matches!(
            t.write_pointer("acme-prod", &pointer(&digest, None), None),
            Err(TargetError::Conflict { .. })
        ));
        assert_eq!(t.accounts().unwrap(), ["acme-prod"]);
    }

    #[test]
    fn of_two_racing_writers_with_the_same_etag_exactly_one_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let t = FileTarget::new(tmp.path().to_str().unwrap());
        let bytes = sample_bundle();
        let digest = Digest::of(&bytes);
        t.write_bundle("acme-prod", &bytes).unwrap();
        let mut etag = t
            .write_pointer("acme-prod", &pointer(&digest, None), None)
            .unwrap();
        for round in 0..50 {
            let barrier = std::sync::Barrier::new(2);
            let results: Vec<Result<ETag, TargetError>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..2)
                    .map(|i| {
                        let (t, barrier, etag, digest) = (&t, &barrier, &etag, &digest);
                        s.spawn(move || {
                            let mut p = pointer(digest, Some(digest.clone()));
                            p.applied_by = format!("writer-{i}-round-{round}");
                            barrier.wait();
                            t.write_pointer("acme-prod", &p, Some(etag))
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<&ETag> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            assert!(
                results
                    .iter()
                    .any(|r| matches!(r, Err(TargetError::Conflict { .. })))
            );
            let (current, current_etag) = t.read_pointer("acme-prod").unwrap().unwrap();
            assert_eq!(&current_etag, winners[0], "the pointer is the winner's");
            assert!(current.applied_by.ends_with(&format!("round-{round}")));
            etag = current_etag;
        }
    }

    #[test]
    fn tampering_and_corruption_are_reported_per_account() {
        let tmp = tempfile::tempdir().unwrap();
        let t = FileTarget::new(tmp.path().to_str().unwrap());
        let bytes = sample_bundle();
        let digest = Digest::of(&bytes);
        t.write_bundle("acme-prod", &bytes).unwrap();
        let path = tmp
            .path()
            .join("acme-prod/bundles")
            .join(format!("{}.json", digest.hex()));
        std::fs::write(
            &path,
            String::from_utf8(bytes.clone())
                .unwrap()
                .replace("acme", "evil"),
        )
        .unwrap();
        let e = t.read_bundle("acme-prod", &digest).unwrap_err();
        assert!(e.to_string().contains("does not match its digest"), "{e}");
        assert!(matches!(
            t.write_bundle("acme-prod", &bytes),
            Err(TargetError::TamperedBundle { .. })
        ));

        std::fs::create_dir_all(tmp.path().join("globex-prod")).unwrap();
        std::fs::write(
            tmp.path().join("globex-prod/current.json"),
            "{\"digest\": 12",
        )
        .unwrap();
        let e = t.read_pointer("globex-prod").unwrap_err().to_string();
        assert!(e.starts_with("globex-prod: current.json is corrupt"), "{e}");
        assert!(matches!(
            t.read_pointer("../etc"),
            Err(TargetError::BadAccount { .. })
        ));
    }
}
