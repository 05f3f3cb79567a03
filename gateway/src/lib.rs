//! fleetgate's gateway runtime: it serves the bundles of the `fleetgate-bundle` crate.
//!
//! The modules, each importing only those listed before it (no module imports one that
//! imports it back):
//! - [`client_addr`], [`normalize`], [`split`], [`ratelimit`], [`upstream`], [`aws`]: pure
//!   or self-contained parts of the request path and its clients; [`logging`]: what
//!   request-scoped log lines say about a request;
//! - [`secrets`]: what the bundle's secret references point at;
//! - [`keys`], [`jwks`]: verifying and signing keys, external issuers' JWKS;
//! - [`auth`]: bearer-token checks of routes; [`idp`]: the embedded identity provider;
//! - [`metrics`]: the data plane's Prometheus series;
//! - [`runtime`]: the state built from a compiled bundle;
//! - [`source`]: where bundles come from (file, S3);
//! - [`reload`]: polling a source and swapping runtimes in;
//! - [`dataplane`]: the request path; [`admin`]: the admin router;
//! - [`server`]: the listeners.

pub mod admin;
pub mod auth;
pub mod aws;
pub mod client_addr;
pub mod dataplane;
pub mod idp;
pub mod jwks;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod normalize;
pub mod ratelimit;
pub mod reload;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod source;
pub mod split;
pub mod upstream;

pub use reload::{Gateway, ReloadOutcome};
pub use runtime::{Options, Runtime};
