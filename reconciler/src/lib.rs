//! fleetgate's reconciler: config repo -> manifests -> render -> (plan -> execute).
//!
//! The data flow, module by module:
//! - [`source`]: the files of a config repo snapshot (a working tree or a git commit, read by the same rules);
//! - [`yaml`]: files parsed into trees that remember every value's file and line;
//! - [`manifest`]: the strict manifest kinds; [`repo`]: a snapshot loaded and cross-checked;
//! - [`openapi`]: routes generated from services' OpenAPI specs;
//! - [`merge`]: how overlays and patches apply; [`template`]: `${account.*}` variables;
//! - [`render`]: one canonical bundle per account, compiled by the gateway's `compile()`;
//! - [`validate`]: every problem of a repo at once; [`waves`]: rollout wave assignment;
//! - [`redact`]: the one point every printed text goes through, secrets fingerprinted.

pub mod affected;
pub mod aws;
pub mod connect;
pub mod diagnostics;
pub mod drift;
pub mod example_fleet;
pub mod git;
pub mod lease;
pub mod manifest;
pub mod merge;
pub mod openapi;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod redact;
pub mod render;
pub mod repo;
pub mod rollout;
pub mod schema;
pub mod selector;
pub mod source;
pub mod target;
pub mod template;
#[cfg(feature = "up")]
pub mod up;
pub mod validate;
pub mod watch;
pub mod waves;
pub mod yaml;

pub use diagnostics::Diagnostic;
pub use render::{Rendered, render};
pub use repo::Repo;
pub use source::{ConfigSource, DirSource, MemSource};
pub use validate::validate;
