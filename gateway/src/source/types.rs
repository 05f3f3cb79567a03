//! What every bundle source is and gives: the [`BundleSource`] trait, the [`Fetched`]
//! pointer and bytes, the [`SourceVersion`] that says whether they changed, and
//! [`SourceError`].
//!
//! Imports only the bundle crate; [`file`](super::file), [`s3`](super::s3) and the parent
//! import it.

use fleetgate_bundle::pointer::Pointer;

/// What a source last gave: a reload happens only when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceVersion(pub String);

/// A pointer and the bundle bytes it names.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub version: SourceVersion,
    pub pointer: Pointer,
    pub bytes: Vec<u8>,
}

/// The source could not be read this time (it may work at the next poll).
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SourceError {
    pub source_name: String,
    pub message: String,
}

/// Where the gateway's bundles come from: `file://DIR/<account>` or S3.
pub trait BundleSource: Send + Sync {
    /// For logs and `/status`: `file:///srv/fleet/acme-prod`.
    fn describe(&self) -> String;

    /// The pointer and its bundle's bytes, or `None` when the pointer is still at `known`.
    fn fetch(
        &self,
        known: Option<&SourceVersion>,
    ) -> impl Future<Output = Result<Option<Fetched>, SourceError>> + Send;

    /// Writes this instance's report next to the pointer, as `status/<instance>.json`.
    fn write_status(
        &self,
        instance: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}
