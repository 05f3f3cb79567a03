//! fleetgate's gateway runtime.
//!
//! This crate owns the bundle format ([`bundle`]) and [`compile()`](compile::compile), the one
//! function that decides whether a bundle is runnable. The reconciler links it so that it
//! refuses exactly the bundles a gateway would refuse.

pub mod auth;
pub mod bundle;
pub mod client_addr;
pub mod compile;
pub mod dataplane;
pub mod duration;
pub mod idp;
pub mod normalize;
pub mod pointer;
pub mod ratelimit;
pub mod reload;
pub mod route;
pub mod s3;
pub mod secrets;
pub mod sensitive;
pub mod server;
pub mod split;
pub mod upstream;

pub use bundle::{Bundle, Digest};
pub use compile::{CompileError, CompileErrors, CompiledBundle, compile};
pub use duration::Duration;
pub use sensitive::Sensitive;
