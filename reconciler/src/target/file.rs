//! Deployed state, in the deployed-state layout (docs/architecture.md), on a local directory (the embedded default
//! target, `file://DIR`):
//!
//! ```text
//! DIR/<account>/bundles/<sha256>.json   immutable, content-addressed; written first
//! DIR/<account>/current.json            the pointer; replaced with a compare-and-swap
//! DIR/<account>/status/                 gateway instances report here
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
use sha2::{Digest as _, Sha256};

use fleetgate_bundle::pointer::Pointer;
use fleetgate_bundle::report::InstanceReport;

use crate::target::store::{
    AccountRef, Bootstrapped, ETag, StoredObject, Target, TargetError, check_stored_bundle,
    parse_status,
};

#[async_trait::async_trait]
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
        self.pointer(&account.name)
    }

    async fn read_bundle(
        &self,
        account: &AccountRef,
        digest: &Digest,
    ) -> Result<Option<Bundle>, TargetError> {
        self.bundle(&account.name, digest)
    }

    async fn write_bundle(
        &self,
        account: &AccountRef,
        canonical: &[u8],
    ) -> Result<bool, TargetError> {
        self.store_bundle(&account.name, canonical)
    }

    async fn write_pointer(
        &self,
        account: &AccountRef,
        pointer: &Pointer,
        expected: Option<&ETag>,
    ) -> Result<ETag, TargetError> {
        self.replace_pointer(&account.name, pointer, expected)
    }

    async fn read_statuses(
        &self,
        account: &AccountRef,
    ) -> Result<Vec<InstanceReport>, TargetError> {
        self.statuses(&account.name)
    }

    async fn pointer_history(
        &self,
        account: &AccountRef,
        limit: usize,
    ) -> Result<Vec<Pointer>, TargetError> {
        self.history(&account.name, limit)
    }

    async fn bootstrap(&self, account: &AccountRef) -> Result<Bootstrapped, TargetError> {
        let dir = self.account_dir(&account.name)?;
        if dir.is_dir() {
            return Ok(Bootstrapped::AlreadyThere);
        }
        std::fs::create_dir_all(&dir).map_err(|e| Self::io(&account.name, &dir, e))?;
        Ok(Bootstrapped::Created)
    }

    async fn list_stored(&self, account: &AccountRef) -> Result<Vec<StoredObject>, TargetError> {
        let dir = self.account_dir(&account.name)?;
        let mut out = Vec::new();
        let mut todo = vec![dir.clone()];
        while let Some(d) = todo.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Self::io(&account.name, &d, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Self::io(&account.name, &d, e))?;
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .map_err(|e| Self::io(&account.name, &path, e))?;
                if kind.is_dir() {
                    todo.push(path);
                } else if let Ok(rel) = path.strip_prefix(&dir) {
                    out.push(StoredObject {
                        key: rel.to_string_lossy().replace('\\', "/"),
                        version: None,
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete_stored(
        &self,
        account: &AccountRef,
        objects: &[StoredObject],
    ) -> Result<(), TargetError> {
        let dir = self.account_dir(&account.name)?;
        for o in objects {
            // Keys come from list_stored; one that would leave the account's directory is
            // refused rather than followed.
            if o.key
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
            {
                return Err(TargetError::BadAccount {
                    account: format!("{}/{}", account.name, o.key),
                });
            }
            let path = dir.join(&o.key);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io(&account.name, &path, e)),
            }
        }
        // Directories left empty go too, the account's own last.
        let mut dirs = Vec::new();
        let mut todo = vec![dir.clone()];
        while let Some(d) = todo.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        todo.push(e.path());
                    }
                }
                dirs.push(d);
            }
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        Ok(())
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
    fn accounts(&self) -> Result<Vec<String>, TargetError> {
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
    fn pointer(&self, account: &str) -> Result<Option<(Pointer, ETag)>, TargetError> {
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
    fn bundle(&self, account: &str, digest: &Digest) -> Result<Option<Bundle>, TargetError> {
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
    fn store_bundle(&self, account: &str, canonical: &[u8]) -> Result<bool, TargetError> {
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
    fn history(&self, account: &str, limit: usize) -> Result<Vec<Pointer>, TargetError> {
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
    fn statuses(&self, account: &str) -> Result<Vec<InstanceReport>, TargetError> {
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
    fn replace_pointer(
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
            decommissioned: None,
        }
    }

    fn sample_bundle() -> Vec<u8> {
        let src = crate::config::example_fleet::example_repo();
        let repo = crate::Repo::load(&src);
        crate::render(&repo, "acme-prod").unwrap().canonical
    }

    #[test]
    fn bundle_then_pointer_then_cas() {
        let tmp = tempfile::tempdir().unwrap();
        let t = FileTarget::new(&format!("file://{}", tmp.path().display()));
        assert_eq!(t.pointer("acme-prod").unwrap(), None, "never deployed");
        let bytes = sample_bundle();
        let digest = Digest::of(&bytes);

        // The pointer may not name a bundle that is not stored.
        assert!(matches!(
            t.replace_pointer("acme-prod", &pointer(&digest, None), None),
            Err(TargetError::MissingBundle { .. })
        ));
        assert!(t.store_bundle("acme-prod", &bytes).unwrap());
        assert!(
            !t.store_bundle("acme-prod", &bytes).unwrap(),
            "identical object: nothing written"
        );
        let etag = t
            .replace_pointer("acme-prod", &pointer(&digest, None), None)
            .unwrap();
        let (read, read_etag) = t.pointer("acme-prod").unwrap().unwrap();
        assert_eq!(
            (read.digest.clone(), read_etag.clone()),
            (digest.clone(), etag.clone())
        );
        assert_eq!(
            t.bundle("acme-prod", &digest)
                .unwrap()
                .unwrap()
                .account
                .name,
            "acme-prod"
        );

        // A writer holding a stale ETag loses; the pointer is unchanged.
        t.replace_pointer(
            "acme-prod",
            &pointer(&digest, Some(digest.clone())),
            Some(&etag),
        )
        .unwrap();
        let e = t
            .replace_pointer("acme-prod", &pointer(&digest, None), Some(&etag))
            .unwrap_err();
        assert!(matches!(e, TargetError::Conflict { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("acme-prod: the pointer changed since it was read"),
            "{e}"
        );
        assert_eq!(
            t.pointer("acme-prod").unwrap().unwrap().0.previous,
            Some(digest.clone())
        );
        // Expecting "no pointer" when there is one is a conflict too.
        assert!(matches!(
            t.replace_pointer("acme-prod", &pointer(&digest, None), None),
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
        t.store_bundle("acme-prod", &bytes).unwrap();
        let mut etag = t
            .replace_pointer("acme-prod", &pointer(&digest, None), None)
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
                            t.replace_pointer("acme-prod", &p, Some(etag))
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
            let (current, current_etag) = t.pointer("acme-prod").unwrap().unwrap();
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
        t.store_bundle("acme-prod", &bytes).unwrap();
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
        let e = t.bundle("acme-prod", &digest).unwrap_err();
        assert!(e.to_string().contains("does not match its digest"), "{e}");
        assert!(matches!(
            t.store_bundle("acme-prod", &bytes),
            Err(TargetError::TamperedBundle { .. })
        ));

        std::fs::create_dir_all(tmp.path().join("globex-prod")).unwrap();
        std::fs::write(
            tmp.path().join("globex-prod/current.json"),
            "{\"digest\": 12",
        )
        .unwrap();
        let e = t.pointer("globex-prod").unwrap_err().to_string();
        assert!(e.starts_with("globex-prod: current.json is corrupt"), "{e}");
        assert!(matches!(
            t.pointer("../etc"),
            Err(TargetError::BadAccount { .. })
        ));
    }
}
