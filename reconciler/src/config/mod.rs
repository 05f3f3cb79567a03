//! Stage 1, the config repo as data: the files of a snapshot ([`source`]), parsed into trees
//! that remember every value's file and line ([`yaml`]), decoded into the strict manifest kinds
//! ([`manifest`], each kept with its tree as a [`doc::Doc`]), loaded and cross-checked as one
//! [`repo::Repo`], with the account selectors ([`selector`]) and rollout waves ([`waves`]) it
//! defines. Loading also checks every service's OpenAPI spec and generates its routes
//! ([`openapi`]); [`template`] is the `${account.*}` template language loading, render and
//! the plan share. [`diagnostics`] is how every stage reports a problem in the repo (file,
//! line, what is wrong). [`example_fleet`] is the embedded example repo and a generator of
//! big fleets.
//!
//! Pure except [`source::DirSource`], which reads a working tree by the same rules as a git
//! commit. May import: the bundle contract and [`crate::redact`]; never a later stage, tokio,
//! HTTP, AWS or git2.

pub mod diagnostics;
pub mod doc;
pub mod example_fleet;
pub mod manifest;
pub mod notifications;
pub mod openapi;
pub mod repo;
pub mod selector;
pub mod source;
pub mod template;
pub mod waves;
pub mod yaml;
