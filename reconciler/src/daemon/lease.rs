//! The watch daemon's lease: at most one daemon (per shard) rolls out at a time.
//!
//! The lease is one small JSON object, in the hub's state bucket (`--target aws`) or in the
//! target directory (`file://`), written only by compare-and-swap: taken with
//! `If-None-Match: *` when there is none, and otherwise with `If-Match` on the ETag read, so
//! of two daemons racing for it exactly one wins. The holder renews it well before it
//! expires; a holder that dies stops renewing, and once `expires_at` has passed another
//! daemon may take it over (by CAS on the dead holder's object). [`decide`] is the pure rule.
//!
//! The object also carries the commit the fleet's last rollout was rolled back from, so a
//! daemon that takes over does not retry a commit its predecessor already found bad.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::target::ETag;

/// The lease object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Which daemon holds it: host, process and a random suffix (`--identity`).
    pub holder: String,
    /// Seconds since the Unix epoch.
    pub acquired_at: u64,
    pub renewed_at: u64,
    /// After this, the lease is free for the taking.
    pub expires_at: u64,
    /// `i/N`, or absent for an unsharded daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// A commit whose rollout was rolled back: not retried until the branch moves on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejected>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub commit: String,
    pub reason: String,
}

/// What a daemon should do about the lease, given what it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write a new record, CAS on the ETag read (`None`: create it).
    Take { expected: Option<ETag> },
    /// Ours: write the renewed record, CAS on the ETag read.
    Renew { expected: ETag },
    /// Somebody else's and still valid.
    HeldBy { holder: String, expires_at: u64 },
}

/// The pure rule: free or expired leases may be taken; ours is renewed; another's is left.
pub fn decide(me: &str, now: u64, current: Option<&(LeaseRecord, ETag)>) -> Decision {
    match current {
        None => Decision::Take { expected: None },
        Some((record, etag)) if record.holder == me => Decision::Renew {
            expected: etag.clone(),
        },
        Some((record, etag)) if record.expires_at <= now => Decision::Take {
            expected: Some(etag.clone()),
        },
        Some((record, _)) => Decision::HeldBy {
            holder: record.holder.clone(),
            expires_at: record.expires_at,
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another writer changed the object between our read and our write.
    #[error("the lease {location} changed under us (another daemon took or renewed it)")]
    Conflict { location: String },
    #[error("lease {location}: {message}")]
    Store { location: String, message: String },
}

/// Where the lease object lives.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    fn location(&self) -> String;
    async fn read(&self) -> Result<Option<(LeaseRecord, ETag)>, LeaseError>;
    /// Writes `record` if the object is still at `expected` (`None`: absent).
    async fn write(
        &self,
        record: &LeaseRecord,
        expected: Option<&ETag>,
    ) -> Result<ETag, LeaseError>;
}

/// The lease's state as the daemon last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseView {
    pub location: String,
    pub holder: Option<String>,
    pub expires_at: Option<u64>,
    pub held_by_me: bool,
    /// When this read took the lease over: the holder before (its lease had expired).
    #[serde(skip)]
    pub taken_from: Option<String>,
}

/// One daemon's side of the lease.
#[derive(Debug)]
pub struct Lease {
    pub store: Box<dyn LeaseStore>,
    pub identity: String,
    pub ttl: Duration,
    pub shard: Option<String>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Lease {
    /// Takes or renews the lease when it may; returns whether we hold it now, the record
    /// as it stands, and what it looked like.
    pub async fn try_hold(
        &self,
        now: SystemTime,
        rejected: Option<Option<Rejected>>,
    ) -> Result<(bool, Option<LeaseRecord>, LeaseView), LeaseError> {
        let now = unix(now);
        let current = self.store.read().await?;
        let view = |held: bool, rec: Option<&LeaseRecord>| LeaseView {
            location: self.store.location(),
            holder: rec.map(|r| r.holder.clone()),
            expires_at: rec.map(|r| r.expires_at),
            held_by_me: held,
            taken_from: None,
        };
        let (expected, acquired_at) = match decide(&self.identity, now, current.as_ref()) {
            Decision::HeldBy { .. } => {
                let rec = current.map(|(r, _)| r);
                return Ok((false, rec.clone(), view(false, rec.as_ref())));
            }
            Decision::Take { expected } => (expected, now),
            Decision::Renew { expected } => (
                Some(expected),
                current.as_ref().map(|(r, _)| r.acquired_at).unwrap_or(now),
            ),
        };
        let record = LeaseRecord {
            holder: self.identity.clone(),
            acquired_at,
            renewed_at: now,
            expires_at: now + self.ttl.as_secs().max(1),
            shard: self.shard.clone(),
            // A takeover inherits what its predecessor learned.
            rejected: match rejected {
                Some(r) => r,
                None => current.as_ref().and_then(|(r, _)| r.rejected.clone()),
            },
        };
        match self.store.write(&record, expected.as_ref()).await {
            Ok(_) => {
                let mut v = view(true, Some(&record));
                v.taken_from = current
                    .as_ref()
                    .map(|(r, _)| r.holder.clone())
                    .filter(|h| *h != self.identity);
                Ok((true, Some(record.clone()), v))
            }
            Err(LeaseError::Conflict { .. }) => {
                let now_rec = self.store.read().await?.map(|(r, _)| r);
                Ok((false, now_rec.clone(), view(false, now_rec.as_ref())))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (on shutdown): it expires now, so another daemon takes over at
    /// once instead of after the TTL. Only if it is still ours.
    pub async fn release(&self) -> Result<(), LeaseError> {
        if let Some((mut record, etag)) = self.store.read().await?
            && record.holder == self.identity
        {
            record.expires_at = unix(SystemTime::now());
            self.store.write(&record, Some(&etag)).await?;
        }
        Ok(())
    }
}

/// The lease as a file, CAS under an OS file lock (as `file://` pointers are).
#[derive(Debug, Clone)]
pub struct FileLeaseStore {
    pub path: PathBuf,
}

fn etag_of(bytes: &[u8]) -> ETag {
    use sha2::Digest as _;
    ETag(hex::encode(sha2::Sha256::digest(bytes))[..32].to_string())
}

impl FileLeaseStore {
    fn err(&self, e: impl std::fmt::Display) -> LeaseError {
        LeaseError::Store {
            location: self.location(),
            message: e.to_string(),
        }
    }

    fn read_sync(&self) -> Result<Option<(LeaseRecord, ETag)>, LeaseError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                let record = serde_json::from_slice(&bytes)
                    .map_err(|e| self.err(format!("unreadable lease object: {e}")))?;
                Ok(Some((record, etag_of(&bytes))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    fn write_sync(
        &self,
        record: &LeaseRecord,
        expected: Option<&ETag>,
    ) -> Result<ETag, LeaseError> {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(|e| self.err(e))?;
        lock.lock().map_err(|e| self.err(e))?;
        let found = match std::fs::read(&self.path) {
            Ok(bytes) => Some(etag_of(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.err(e)),
        };
        if found.as_ref() != expected {
            return Err(LeaseError::Conflict {
                location: self.location(),
            });
        }
        let mut bytes = serde_json::to_vec_pretty(record).map_err(|e| self.err(e))?;
        bytes.push(b'\n');
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| self.err(e))?;
        Ok(etag_of(&bytes))
    }
}

#[async_trait::async_trait]
impl LeaseStore for FileLeaseStore {
    fn location(&self) -> String {
        format!("file://{}", self.path.display())
    }

    async fn read(&self) -> Result<Option<(LeaseRecord, ETag)>, LeaseError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.read_sync())
            .await
            .map_err(|e| self.err(e))?
    }

    async fn write(
        &self,
        record: &LeaseRecord,
        expected: Option<&ETag>,
    ) -> Result<ETag, LeaseError> {
        let (me, record, expected) = (self.clone(), record.clone(), expected.cloned());
        tokio::task::spawn_blocking(move || me.write_sync(&record, expected.as_ref()))
            .await
            .map_err(|e| self.err(e))?
    }
}

/// The lease as an object in the hub's state bucket, with the hub's own credentials.
#[derive(Debug, Clone)]
pub struct S3LeaseStore {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub key: String,
}

impl S3LeaseStore {
    fn err<E>(&self, what: &str, e: &aws_sdk_s3::error::SdkError<E>) -> LeaseError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (class, message) = crate::target::aws_errors::classify(e);
        if class == crate::target::ErrorClass::Conflict {
            return LeaseError::Conflict {
                location: self.location(),
            };
        }
        LeaseError::Store {
            location: self.location(),
            message: format!("{what}: {message}"),
        }
    }
}

#[async_trait::async_trait]
impl LeaseStore for S3LeaseStore {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    async fn read(&self) -> Result<Option<(LeaseRecord, ETag)>, LeaseError> {
        let out = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_s3::operation::get_object::GetObjectError::is_no_such_key,
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.err("GetObject", &e)),
        };
        let etag = ETag(out.e_tag().unwrap_or_default().to_string());
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| LeaseError::Store {
                location: self.location(),
                message: e.to_string(),
            })?
            .into_bytes();
        let record = serde_json::from_slice(&bytes).map_err(|e| LeaseError::Store {
            location: self.location(),
            message: format!("unreadable lease object: {e}"),
        })?;
        Ok(Some((record, etag)))
    }

    async fn write(
        &self,
        record: &LeaseRecord,
        expected: Option<&ETag>,
    ) -> Result<ETag, LeaseError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| LeaseError::Store {
            location: self.location(),
            message: e.to_string(),
        })?;
        let put = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(bytes.into());
        let put = match expected {
            Some(etag) => put.if_match(&etag.0),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(out) => Ok(ETag(out.e_tag().unwrap_or_default().to_string())),
            Err(e) => Err(self.err("PutObject", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rec(holder: &str, expires_at: u64) -> (LeaseRecord, ETag) {
        (
            LeaseRecord {
                holder: holder.into(),
                acquired_at: 0,
                renewed_at: 0,
                expires_at,
                shard: None,
                rejected: None,
            },
            ETag("e1".into()),
        )
    }

    #[test]
    fn free_expired_ours_and_theirs() {
        assert_eq!(decide("a", 10, None), Decision::Take { expected: None });
        assert_eq!(
            decide("a", 10, Some(&rec("a", 5))),
            Decision::Renew {
                expected: ETag("e1".into())
            },
            "ours is renewed even when late"
        );
        assert_eq!(
            decide("a", 10, Some(&rec("b", 10))),
            Decision::Take {
                expected: Some(ETag("e1".into()))
            },
            "expired at exactly now"
        );
        assert_eq!(
            decide("a", 10, Some(&rec("b", 11))),
            Decision::HeldBy {
                holder: "b".into(),
                expires_at: 11
            }
        );
    }

    #[tokio::test]
    async fn of_two_daemons_one_holds_until_it_stops_renewing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLeaseStore {
            path: dir.path().join("lease.json"),
        };
        let lease = |who: &str| Lease {
            store: Box::new(store.clone()),
            identity: who.into(),
            ttl: Duration::from_secs(30),
            shard: None,
        };
        let (a, b) = (lease("a"), lease("b"));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(a.try_hold(t0, None).await.unwrap().0);
        let (held, rec, view) = b.try_hold(t0, None).await.unwrap();
        assert!(!held);
        assert_eq!(rec.unwrap().holder, "a");
        assert_eq!(view.holder.as_deref(), Some("a"));
        // a renews at +20 s: b still waits at +40 s (a's renewal runs to +50).
        assert!(
            a.try_hold(t0 + Duration::from_secs(20), None)
                .await
                .unwrap()
                .0
        );
        assert!(
            !b.try_hold(t0 + Duration::from_secs(40), None)
                .await
                .unwrap()
                .0
        );
        // a records a rejected commit, then dies; b takes over after expiry and inherits it.
        let rejected = Rejected {
            commit: "c0ffee".into(),
            reason: "canary breached".into(),
        };
        assert!(
            a.try_hold(t0 + Duration::from_secs(41), Some(Some(rejected.clone())))
                .await
                .unwrap()
                .0
        );
        let (held, rec, _) = b
            .try_hold(t0 + Duration::from_secs(72), None)
            .await
            .unwrap();
        assert!(held);
        assert_eq!(rec.unwrap().rejected, Some(rejected));
        // a comes back: it is not the holder any more.
        assert!(
            !a.try_hold(t0 + Duration::from_secs(73), None)
                .await
                .unwrap()
                .0
        );
        // b releases on shutdown: a may take it at once.
        b.release().await.unwrap();
        assert!(a.try_hold(SystemTime::now(), None).await.unwrap().0);
    }

    #[tokio::test]
    async fn a_stale_etag_loses() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLeaseStore {
            path: dir.path().join("lease.json"),
        };
        let (r, _) = rec("a", 5);
        store.write(&r, None).await.unwrap();
        assert!(matches!(
            store.write(&r, None).await,
            Err(LeaseError::Conflict { .. })
        ));
        assert!(matches!(
            store.write(&r, Some(&ETag("stale".into()))).await,
            Err(LeaseError::Conflict { .. })
        ));
    }
}
