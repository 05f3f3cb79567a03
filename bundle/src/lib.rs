//! The contract between fleetgate's reconciler and its gateway, and nothing else: pure
//! types and functions, no I/O, no async runtime, no network client.
//!
//! - [`bundle`]: the bundle format, one canonical JSON document per account;
//! - [`compile()`](compile::compile): the one function that decides whether a bundle is
//!   runnable (the reconciler refuses exactly the bundles a gateway would refuse), with
//!   [`route`] matching, the IdP's reserved paths and argon2 hash rules ([`idp`]);
//! - [`digest`]: a bundle's identity, the sha256 of its canonical bytes;
//! - [`pointer`](mod@pointer): `current.json`, which bundle an account runs;
//! - [`report`]: `status/<instance>.json`, what a gateway instance reports back;
//! - [`duration`] and [`sensitive`]: the value types bundles are written with.
//!
//! Modules here import only each other and the crates in Cargo.toml.

pub mod bundle;
pub mod compile;
pub mod digest;
pub mod duration;
pub mod idp;
pub mod pointer;
pub mod report;
pub mod route;
pub mod sensitive;

pub use bundle::{Bundle, Digest};
pub use compile::{CompileError, CompileErrors, CompiledBundle, compile};
pub use duration::Duration;
pub use sensitive::Sensitive;
