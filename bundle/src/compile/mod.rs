//! `compile()`: the one place that decides whether a bundle is runnable.
//!
//! The reconciler compiles every bundle it renders before it plans or applies; the gateway
//! compiles every bundle before it swaps it in. Both therefore refuse exactly the same
//! bundles. Every problem is collected (not just the first), and each names its subject with
//! a [`BundlePath`] such as `gateway.routes[orders.getOrder].backend`, which the reconciler
//! maps back to the manifest line that produced it.
//!
//! This file holds `compile()` itself and the account checks; the checks of the bundle's
//! sections are in `gateway.rs` and `idp.rs`, the `Checker` they all report to in
//! `checker.rs`, and the paths, errors and compiled types (re-exported here) in `types.rs`.
//! The children never import this file.
//!
//! Imports [`crate::bundle`], [`crate::duration`], [`crate::idp`] and [`crate::route`].

use crate::bundle::{BUNDLE_API_VERSION, Bundle};

mod checker;
mod gateway;
mod idp;
#[cfg(test)]
mod tests;
mod types;

pub use checker::is_account_id;
pub use types::{BundlePath, CompileError, CompileErrors, CompiledBundle, CompiledRoute, PathSeg};

use checker::Checker;
use gateway::check_gateway;
use idp::check_idp;

/// Checks a bundle and builds what the gateway needs to serve it.
pub fn compile(bundle: &Bundle) -> Result<CompiledBundle, CompileErrors> {
    let mut c = Checker { errors: Vec::new() };

    if bundle.api_version != BUNDLE_API_VERSION {
        c.err(
            &BundlePath::root(&["apiVersion"]),
            format!(
                "apiVersion {:?} is not {BUNDLE_API_VERSION}",
                bundle.api_version
            ),
        );
    }
    check_account(&mut c, bundle);
    let inline_jwks = check_idp(&mut c, &bundle.idp);
    let (routes, table) = check_gateway(&mut c, bundle);

    if c.errors.is_empty() {
        Ok(CompiledBundle {
            bundle: bundle.clone(),
            routes,
            table,
            inline_jwks,
        })
    } else {
        c.errors.sort();
        c.errors.dedup();
        Err(CompileErrors(c.errors))
    }
}

fn check_account(c: &mut Checker, bundle: &Bundle) {
    let a = &bundle.account;
    let p = BundlePath::root(&["account"]);
    if !is_account_id(&a.id) {
        c.err(
            &p.key("id"),
            format!("account id {:?} must be exactly 12 digits", a.id),
        );
    }
    if a.name.is_empty()
        || a.name.len() > 63
        || !a
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        c.err(
            &p.key("name"),
            format!(
                "account name {:?} must be 1-63 lowercase letters, digits or '-'",
                a.name
            ),
        );
    }
}
