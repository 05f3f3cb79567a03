//! Where the gateway's bundles come from: the [`BundleSource`] trait and its two sources,
//! [`file`](mod@file) (`file://DIR/<account>`) and [`s3`] (`s3://bucket/prefix/<account>`).
//!
//! A source reads the pointer and the bundle bytes it names, and writes this instance's
//! status report next to the pointer. It knows nothing of compiling or serving: it imports
//! only the bundle crate and [`crate::aws`].
//!
//! This file only declares the children and re-exports their items: the trait and what it
//! gives are in `types.rs`, which [`file`](mod@file) and [`s3`] import.

pub mod file;
pub mod s3;
mod types;

pub use file::FileSource;
pub use s3::S3Source;
pub use types::{BundleSource, Fetched, SourceError, SourceVersion};
