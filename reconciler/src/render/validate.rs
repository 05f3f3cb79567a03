//! `validate`: every problem of a repo in one run.

use crate::config::diagnostics::{Diagnostic, Diagnostics};
use fleetgate_bundle::Digest;

use crate::config::repo::Repo;
use crate::config::yaml::{Node, Value};
use crate::render::{render, render_account};

/// The outcome of rendering a whole repo.
#[derive(Debug)]
pub struct Validated {
    /// Accounts that rendered, with their digests, by name. (Only the digests: a fleet of
    /// thousands of bundles does not need to sit in memory to be validated.)
    pub rendered: Vec<(String, Digest)>,
    /// Every problem, sorted, each once.
    pub diagnostics: Vec<Diagnostic>,
}

/// Renders every account and checks what no account exercises (an overlay nobody selects
/// still has to apply cleanly to the base, or it breaks the day someone selects it).
pub fn validate(repo: &Repo) -> Validated {
    let mut ds = Diagnostics::new();
    ds.extend(repo.diagnostics.iter().cloned());
    let mut rendered = Vec::with_capacity(repo.accounts.len());
    // Without a base there is nothing to render; load has said why.
    let renderable = repo.gateway.is_some() && repo.idp.is_some();
    for name in repo.account_names().filter(|_| renderable) {
        match render(repo, name) {
            Ok(r) => rendered.push((r.account, r.digest)),
            Err(errs) => ds.extend(errs),
        }
    }
    for overlay in crate::config::repo::unused_overlays(repo) {
        ds.extend(check_overlay_alone(repo, overlay));
    }
    Validated {
        rendered,
        diagnostics: ds.into_sorted(),
    }
}

/// An overlay no account selects, rendered for a stand-in account that selects only it (the
/// first account's identity, no pins but the overlay's own, no patches): merge, flags,
/// variables, decode and `compile()` all run. Only problems located in the overlay's own
/// files are reported (the rest of the repo is checked by the real accounts), and a patched
/// item's missing fields are not, since the item may come from a service the selecting
/// account pins.
pub(crate) fn check_overlay_alone(repo: &Repo, overlay: &str) -> Vec<Diagnostic> {
    let (Some(o), Some(model)) = (repo.overlays.get(overlay), repo.accounts.values().next()) else {
        return Vec::new();
    };
    let mut stand_in = model.clone();
    let spec = &mut stand_in.doc.spec;
    spec.overlays = vec![overlay.to_string()];
    spec.services.clear();
    spec.flags.clear();
    spec.patches = Default::default();
    for key in ["services", "flags", "patches", "overlays"] {
        stand_in.doc.spec_node.remove(key);
    }
    let files: Vec<&str> = o.files.iter().map(|f| f.path.as_str()).collect();
    match render_account(repo, &stand_in) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .filter(|d| files.contains(&d.span.file.as_ref()))
            .filter(|d| {
                !(d.message.contains(": missing field") && patches_a_generated_route(repo, o, d))
            })
            .collect(),
    }
}

/// Whether a diagnostic is about a route item of the overlay named like a generated route
/// (`<service>.<operation>` of a service in the repo): such an item patches a route that the
/// selecting account's pins provide, so on its own it is incomplete by design.
fn patches_a_generated_route(
    repo: &Repo,
    overlay: &crate::config::repo::Overlay,
    d: &Diagnostic,
) -> bool {
    overlay.files.iter().any(|f| {
        let Some(Value::Seq(routes)) = f
            .spec_node
            .get("gateway")
            .and_then(|g| g.get("routes"))
            .map(|r| &r.value)
        else {
            return false;
        };
        routes.iter().any(|r| {
            r.span == d.span
                && r.get("name")
                    .and_then(Node::as_str)
                    .and_then(|n| n.split_once('.'))
                    .is_some_and(|(service, _)| repo.services.keys().any(|(s, _)| s == service))
        })
    })
}
