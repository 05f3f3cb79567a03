//! `validate`: every problem of a repo in one run.

use crate::diagnostics::{Diagnostic, Diagnostics};
use crate::merge::merge;
use fleetgate_gateway::Digest;

use crate::render::{add_generated_routes, render};
use crate::repo::Repo;

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
    for overlay in crate::repo::unused_overlays(repo) {
        ds.extend(check_overlay_alone(repo, overlay));
    }
    Validated {
        rendered,
        diagnostics: ds.into_sorted(),
    }
}

/// An overlay no account selects, applied to the base with the routes of the services it
/// pins itself. Unknown fields and wrong types are reported; a patched item's missing
/// fields are not, since the item may come from a service the selecting account pins.
fn check_overlay_alone(repo: &Repo, overlay: &str) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let (Some(gateway), Some(idp), Some(o)) =
        (&repo.gateway, &repo.idp, repo.overlays.get(overlay))
    else {
        return errors;
    };
    let mut gw = gateway.spec_node.clone();
    let mut id = idp.spec_node.clone();
    for file in &o.files {
        for (service, version) in &file.spec.services {
            if let Some(Some(spec)) = version
                .as_ref()
                .and_then(|v| repo.services.get(&(service.clone(), v.clone())))
                .map(|sv| sv.spec.as_ref())
            {
                add_generated_routes(&mut gw, &spec.routes, &mut errors);
            }
        }
    }
    for file in &o.files {
        for (target, key) in [(&mut gw, "gateway"), (&mut id, "idp")] {
            if let Some(patch) = file.spec_node.get(key).filter(|p| !p.is_null())
                && let Err(e) = merge(target, patch)
            {
                errors.push(e);
            }
        }
    }
    let decoded = [
        gw.decode::<fleetgate_gateway::bundle::GatewayConfig>("gateway")
            .err(),
        id.decode::<fleetgate_gateway::bundle::IdpConfig>("idp")
            .err(),
    ];
    errors.extend(
        decoded
            .into_iter()
            .flatten()
            .filter(|d| !d.message.contains(": missing field")),
    );
    errors
}
