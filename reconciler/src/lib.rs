//! fleetgate's reconciler: config repo -> render -> plan -> execute, one folder a stage.
//!
//! - [`config`]: the config repo as data (sources, YAML with positions, strict manifests,
//!   selectors, waves, diagnostics);
//! - [`git`]: the config repo in git (snapshots at any revision, history);
//! - [`render`]: one canonical bundle per account (overlays, patches, templates, OpenAPI
//!   routes), compiled by the bundle contract's `compile()`; which accounts a change affects;
//! - [`plan`]: desired vs observed state -> the plan and its formats;
//! - [`target`]: where bundles are deployed (a directory or S3 in each AWS account) and the
//!   fan-out over accounts;
//! - [`execute`]: rolling a plan out in waves with health gates and rollback;
//! - [`ops`]: the operations (apply, rollback, release, drift, history) built from the stages;
//! - [`daemon`]: `fleetgate watch`, the operations in a loop;
//! - [`metrics`]: the catalog of every metric family registered (for the docs);
//! - [`notify`]: notifications to Slack, Teams, webhooks and GitHub deployments;
//! - [`cli`]: arguments, output, progress;
//! - [`redact`]: the one point every printed text goes through, secrets fingerprinted;
//! - [`clock`]: wall time as tokio sees it (virtual in tests);
//! - [`schema`]: the JSON schemas of every document fleetgate reads or writes.
//!
//! The pure stages (config, render, plan) never import tokio, HTTP, AWS or git2; a test
//! checks it.

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod execute;
pub mod git;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod plan;
pub mod redact;
pub mod render;
pub mod schema;
pub mod target;
#[cfg(feature = "up")]
pub mod up;

pub use config::diagnostics::Diagnostic;
pub use config::repo::Repo;
pub use config::source::{ConfigSource, DirSource, MemSource};
pub use render::validate::validate;
pub use render::{Rendered, render};
