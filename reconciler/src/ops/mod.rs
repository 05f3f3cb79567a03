//! The operations, each composed from the pipeline stages and returning a report value
//! that the CLI prints and the daemon records: [`apply`], [`decommission`], [`erase`], [`rollback`], [`release`],
//! [`drift`], [`history`], [`bootstrap`]. Every change to deployed state goes through the
//! one [`reconcile`] path (one rollout executor, one hold fan-out in [`holds`]).
//!
//! May import every stage; never the CLI or the daemon.

pub mod apply;
pub mod bootstrap;
pub mod decommission;
pub mod drift;
pub mod erase;
pub mod history;
pub mod holds;
pub mod pipeline;
pub mod reconcile;
pub mod release;
pub mod rollback;
pub mod status;
