//! Where bundles are deployed, behind one trait object ([`Target`]): a directory
//! ([`file::FileTarget`], the embedded default) or every account's own S3 bucket
//! ([`aws::AwsTarget`]); what a target holds for an account ([`Observed`]); and the
//! fan-out that reads or writes many accounts at once, each within its own timeout, each
//! ending in exactly one result ([`fanout::FanOut`]).
//!
//! May import the bundle contract, config (account references) and the AWS SDK; never the
//! plan, the executor or the operations.

pub mod aws;
pub mod aws_errors;
mod aws_requests;
pub mod connect;
pub mod fanout;
pub mod file;
pub mod observe;
pub mod store;

pub use fanout::{FanOut, NoProgress, Progress};
pub use file::FileTarget;
pub use fleetgate_bundle::pointer::{Hold, Pointer};
pub use fleetgate_bundle::report::InstanceReport;
pub use observe::{observe, observe_pointers};
pub use store::{
    AccountRef, Bootstrapped, ETag, ErrorClass, Observed, RequestStats, StoredObject, Target,
    TargetError, check_stored_bundle, parse_status,
};
