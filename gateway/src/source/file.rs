//! `file://DIR/<account>`: an account's directory in a file target, `current.json` and
//! `bundles/`.
//!
//! Imports [`super::types`] only.

use std::path::PathBuf;

use fleetgate_bundle::pointer::Pointer;
use sha2::{Digest as _, Sha256};

use super::types::{BundleSource, Fetched, SourceError, SourceVersion};

/// One account's directory in a `file://` target: `current.json` and `bundles/`.
#[derive(Debug, Clone)]
pub struct FileSource {
    dir: PathBuf,
}

impl FileSource {
    /// `file://DIR/<account>` or a plain path.
    pub fn new(location: &str) -> FileSource {
        FileSource {
            dir: PathBuf::from(location.strip_prefix("file://").unwrap_or(location)),
        }
    }

    fn error(&self, message: String) -> SourceError {
        SourceError {
            source_name: self.describe(),
            message,
        }
    }
}

impl BundleSource for FileSource {
    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    async fn fetch(&self, known: Option<&SourceVersion>) -> Result<Option<Fetched>, SourceError> {
        let path = self.dir.join("current.json");
        let pointer_bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| self.error(format!("{}: {e}", path.display())))?;
        // The content is the version: a rewrite with the same bytes is no change, and a
        // change within the file system's mtime granularity is still seen.
        let version = SourceVersion(hex::encode(Sha256::digest(&pointer_bytes)));
        if known == Some(&version) {
            return Ok(None);
        }
        let pointer: Pointer = serde_json::from_slice(&pointer_bytes)
            .map_err(|e| self.error(format!("{}: not a valid pointer: {e}", path.display())))?;
        // A tombstone: nothing to load (the bundle may be erased already).
        if pointer.is_tombstone() {
            return Ok(Some(Fetched {
                version,
                pointer,
                bytes: Vec::new(),
            }));
        }
        let bundle_path = self
            .dir
            .join("bundles")
            .join(format!("{}.json", pointer.digest.hex()));
        let bytes = tokio::fs::read(&bundle_path)
            .await
            .map_err(|e| self.error(format!("{}: {e}", bundle_path.display())))?;
        Ok(Some(Fetched {
            version,
            pointer,
            bytes,
        }))
    }

    async fn write_status(&self, instance: &str, body: Vec<u8>) -> Result<(), SourceError> {
        let dir = self.dir.join("status");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| self.error(format!("{}: {e}", dir.display())))?;
        // Write and rename: a reader never sees half a report.
        let path = dir.join(format!("{instance}.json"));
        let tmp = dir.join(format!(".{instance}.json.tmp"));
        tokio::fs::write(&tmp, &body)
            .await
            .map_err(|e| self.error(format!("{}: {e}", tmp.display())))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| self.error(format!("{}: {e}", path.display())))
    }
}
