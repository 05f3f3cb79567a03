//! `render(repo, account) -> Bundle`. Pure: it reads only the loaded repo.
//!
//! Owns merging patches into the spanned trees ([`mod@merge`]), rendering, which accounts a
//! change can affect ([`affected`]) and checking a whole repo by rendering it ([`validate`]).
//! May import: [`crate::config`], [`crate::redact`] and the bundle contract; never a later
//! stage, tokio, HTTP, AWS or git2.
//!
//! Order (each step may adjust what the previous ones produced):
//! 1. `base/gateway.yaml` and `base/idp.yaml`;
//! 2. routes generated from the OpenAPI spec of every service version the account pins
//!    (overlays' pins, then the account's own; generated when the repo is loaded,
//!    [`crate::config::openapi`]);
//! 3. each overlay the account selects, in the order it lists them (file-name order within
//!    an overlay): its gateway and idp patches, then its flag values;
//! 4. the account's own patches, then its flag values;
//! 5. `${account.*}` variables expanded ([`crate::config::template`]); the result decoded
//!    strictly and put in canonical order (routes and IdP lists by name), so file order
//!    never changes a digest;
//! 6. the bundle compiled by the bundle contract's `compile()` (the one the gateway runs).
//!
//! Besides the bundle, render returns the repo paths it can read ([`input_paths`], worked out
//! from the manifests alone), so a plan can tell which accounts a change can affect.

pub mod affected;
pub mod merge;
pub mod packed;
pub mod validate;

pub use affected::input_paths;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fleetgate_bundle::bundle::{AccountInfo, BUNDLE_API_VERSION, GatewayConfig, IdpConfig};
use fleetgate_bundle::compile::{BundlePath, PathSeg};
use fleetgate_bundle::{Bundle, Digest, compile};

use crate::config::diagnostics::{Diagnostic, Span};
use crate::config::doc::{Account, Doc, spec_span};
use crate::config::manifest::{GATEWAY_FILE, IDP_FILE};
use crate::config::repo::Repo;
use crate::config::yaml::{Key, Node, Value};
use crate::render::merge::merge;

/// A rendered account.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub account: String,
    pub bundle: Bundle,
    /// The canonical bytes (what is stored under the digest).
    pub canonical: Vec<u8>,
    pub digest: Digest,
    /// Repo paths this render can read ([`input_paths`]). A path ending in `/` stands for a
    /// directory: adding a file there can change the result.
    pub inputs: BTreeSet<String>,
}

impl Rendered {
    /// Whether a change to `path` can change this render.
    pub fn depends_on(&self, path: &str) -> bool {
        affected::depends_on(&self.inputs, path)
    }
}

/// Renders one account. Every problem is returned, each located and tagged with the account.
pub fn render(repo: &Repo, account_name: &str) -> Result<Rendered, Vec<Diagnostic>> {
    let Some(account) = repo.accounts.get(account_name) else {
        let known: Vec<&str> = repo.account_names().collect();
        return Err(vec![Diagnostic::in_file(
            "accounts/",
            format!(
                "no account named {account_name:?} (accounts: {})",
                if known.len() > 10 {
                    format!("{} and {} more", known[..10].join(", "), known.len() - 10)
                } else {
                    known.join(", ")
                }
            ),
        )]);
    };
    render_account(repo, account).map_err(|errs| {
        errs.into_iter()
            .map(|d| d.for_account(account_name))
            .collect()
    })
}

/// Step 2 of [`render_account`]: the routes generated from the OpenAPI spec of every
/// service version the account pins (its overlays' pins in order, then its own), added to
/// the gateway tree.
fn generated_routes(
    repo: &Repo,
    account: &Account,
    overlays: &[&crate::config::repo::Overlay],
    gw: &mut Node,
    errors: &mut Vec<Diagnostic>,
) {
    let doc = &account.doc;
    let mut pins: BTreeMap<&str, (&str, &Node)> = BTreeMap::new();
    let pin_layers = overlays
        .iter()
        .flat_map(|o| o.files.iter().map(|f| (&f.spec.services, &f.spec_node)))
        .chain(std::iter::once((&doc.spec.services, &doc.spec_node)));
    for (layer, node) in pin_layers {
        for (service, version) in layer {
            match version {
                Some(v) => {
                    pins.insert(service, (v, node));
                }
                None => {
                    pins.remove(service.as_str());
                }
            }
        }
    }
    for (service, (version, node)) in &pins {
        let Some(sv) = repo
            .services
            .get(&(service.to_string(), version.to_string()))
        else {
            // The same diagnostic as load's, so the two merge into one line.
            errors.push(crate::config::repo::missing_service(
                repo, node, service, version,
            ));
            continue;
        };
        let span = node
            .get("services")
            .and_then(|s| s.get(service))
            .map(|n| n.span.clone())
            .unwrap_or_else(|| node.span.clone());
        let Some(spec) = &sv.spec else {
            errors.push(Diagnostic::new(
                span,
                format!("pinned spec {} is invalid (see its errors)", sv.path),
            ));
            continue;
        };
        add_generated_routes(gw, &spec.routes, errors);
    }
}

pub(crate) fn render_account(repo: &Repo, account: &Account) -> Result<Rendered, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let inputs = input_paths(repo, account);
    let doc = &account.doc;

    let (Some(gateway), Some(idp)) = (&repo.gateway, &repo.idp) else {
        // Load reported why; nothing sensible can be rendered without the base.
        return Err(vec![Diagnostic::in_file(
            if repo.gateway.is_none() {
                GATEWAY_FILE
            } else {
                IDP_FILE
            },
            "cannot render without a valid base",
        )]);
    };
    let mut gw = gateway.spec_node.clone();
    let mut id = idp.spec_node.clone();

    // An overlay that failed to load cannot be applied, and skipping it would render
    // something nobody wrote.
    for (i, name) in doc.spec.overlays.iter().enumerate() {
        if repo.overlays.get(name).is_none_or(|o| o.broken) {
            let span = match doc.spec_node.get("overlays").map(|n| &n.value) {
                Some(Value::Seq(items)) => items.get(i).map(|n| n.span.clone()),
                _ => None,
            };
            // For a missing overlay, load's message word for word, so the two merge.
            let message = if repo.overlays.contains_key(name) {
                format!("overlay {name:?} has errors (see its errors)")
            } else {
                crate::config::repo::unknown_overlay_message(repo, name)
            };
            errors.push(Diagnostic::new(
                span.unwrap_or_else(|| doc.spec_node.span.clone()),
                message,
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // 2. Pins: overlays in order, then the account. `null` un-pins. Each pin remembers the
    // manifest that wrote it, for errors.
    let overlays: Vec<_> = crate::config::repo::account_overlays(repo, account).collect();
    generated_routes(repo, account, &overlays, &mut gw, &mut errors);

    // 3. Overlays.
    for overlay in &overlays {
        for file in &overlay.files {
            apply_patch(&mut gw, file.spec_node.get("gateway"), &mut errors);
            apply_patch(&mut id, file.spec_node.get("idp"), &mut errors);
            apply_flags(&mut gw, file, &mut errors);
        }
    }
    // 4. The account's own patches and flags.
    if let Some(patches) = doc.spec_node.get("patches") {
        apply_patch(&mut gw, patches.get("gateway"), &mut errors);
        apply_patch(&mut id, patches.get("idp"), &mut errors);
    }
    apply_flags(&mut gw, doc, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }

    // 5. Variables, strict decode, canonical order.
    let spec = &doc.spec;
    let vars = account.vars();
    vars.expand_tree(&mut gw, &mut errors);
    vars.expand_tree(&mut id, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let gateway_config = gw.decode::<GatewayConfig>("gateway");
    let idp_config = id.decode::<IdpConfig>("idp");
    let (mut gateway_config, mut idp_config) = match (gateway_config, idp_config) {
        (Ok(g), Ok(i)) => (g, i),
        (g, i) => {
            errors.extend(g.err());
            errors.extend(i.err());
            return Err(errors);
        }
    };
    canonical_order(&mut gateway_config, &mut idp_config);

    let bundle = Bundle {
        api_version: BUNDLE_API_VERSION.to_string(),
        account: AccountInfo {
            name: account.name.clone(),
            id: spec.account_id.0.clone(),
            region: spec.region.clone(),
            stage: spec.stage.clone(),
            tenant: spec.tenant.clone(),
            labels: doc.metadata.labels.clone(),
        },
        gateway: gateway_config,
        idp: idp_config,
    };

    // 6. The gateway's verdict, mapped back to the lines that produced each problem.
    if let Err(problems) = compile(&bundle) {
        return Err(problems
            .0
            .into_iter()
            .map(|p| {
                let span = locate_bundle_path(&p.path, &gw, &id, doc);
                Diagnostic::new(span, format!("{}: {}", p.path.subject(), p.message))
            })
            .collect());
    }
    let canonical = bundle.canonical_json();
    let digest = Digest::of(&canonical);
    Ok(Rendered {
        account: account.name.clone(),
        bundle,
        canonical,
        digest,
        inputs,
    })
}

/// Appends generated routes to the gateway's `routes`. A name the base already uses is an
/// error: which one should win is not obvious, so the author must rename or patch.
fn add_generated_routes(gw: &mut Node, routes: &[Node], errors: &mut Vec<Diagnostic>) {
    if gw.get("routes").is_none() {
        let span = gw.span.clone();
        if let Value::Map(entries) = &mut gw.value {
            entries.push((
                Key {
                    name: "routes".into(),
                    span: span.clone(),
                },
                Node::new(Value::Seq(Vec::new()), span),
            ));
        }
    }
    let Some(Node {
        value: Value::Seq(existing),
        ..
    }) = gw.get_mut("routes")
    else {
        return; // decode reports a `routes` that is not a list
    };
    // Names already taken -> where (the first route of that name), kept up to date as routes
    // are added: one lookup per route, not a scan of every route added before it.
    let mut taken: HashMap<String, Span> = HashMap::with_capacity(existing.len() + routes.len());
    for r in existing.iter() {
        if let Some(name) = r.get("name").and_then(Node::as_str) {
            taken
                .entry(name.to_string())
                .or_insert_with(|| r.span.clone());
        }
    }
    existing.reserve(routes.len());
    for route in routes {
        let name = route.get("name").and_then(Node::as_str).unwrap_or_default();
        if let Some(other) = taken.get(name) {
            errors.push(Diagnostic::new(
                route.span.clone(),
                format!(
                    "generated route {name:?} has the same name as the route at {other}; rename the hand-written route, or give the operation another name with x-fleetgate-route-name",
                ),
            ));
            continue;
        }
        taken.insert(name.to_string(), route.span.clone());
        existing.push(route.clone());
    }
}

fn apply_patch(target: &mut Node, patch: Option<&Node>, errors: &mut Vec<Diagnostic>) {
    if let Some(patch) = patch
        && !patch.is_null()
        && let Err(e) = merge(target, patch)
    {
        errors.push(e);
    }
}

/// `flags: {name: bool}` of an overlay or account sets `gateway.flags.<name>.enabled`.
fn apply_flags<S>(gw: &mut Node, doc: &Doc<S>, errors: &mut Vec<Diagnostic>) {
    let Some(Node {
        value: Value::Map(values),
        ..
    }) = doc.spec_node.get("flags")
    else {
        return;
    };
    for (key, value) in values {
        let flag = gw.get_mut("flags").and_then(|f| f.get_mut(&key.name));
        match flag {
            Some(flag) => {
                if let Value::Map(_) = flag.value {
                    flag.set("enabled", value.clone());
                }
            }
            None => errors.push(Diagnostic::new(
                key.span.clone(),
                format!("flag {:?} is not declared in the Gateway's flags", key.name),
            )),
        }
    }
}

/// Routes and IdP lists sorted by name, methods sorted: the bundle does not depend on which
/// file or overlay happened to add an item first. (Variants and aggregate parts keep their
/// order: it means something.)
fn canonical_order(gw: &mut GatewayConfig, idp: &mut IdpConfig) {
    gw.routes.sort_by(|a, b| a.name.cmp(&b.name));
    for r in &mut gw.routes {
        r.methods.sort();
    }
    idp.scopes.sort_by(|a, b| a.name.cmp(&b.name));
    idp.clients.sort_by(|a, b| a.id.cmp(&b.id));
    idp.trusted_issuers.sort_by(|a, b| a.name.cmp(&b.name));
}

/// Where in the manifests a bundle path came from: walks the merged trees by name.
fn locate_bundle_path(
    path: &BundlePath,
    gw: &Node,
    idp: &Node,
    account: &Doc<crate::config::manifest::AccountSpec>,
) -> Span {
    let mut segs = path.0.iter();
    let (mut node, mut span) = match segs.next() {
        Some(PathSeg::Key(k)) if k == "gateway" => (gw, gw.span.clone()),
        Some(PathSeg::Key(k)) if k == "idp" => (idp, idp.span.clone()),
        Some(PathSeg::Key(k)) if k == "account" => {
            let key = match path.0.get(1) {
                Some(PathSeg::Key(k)) if k == "name" => return account.name_span.clone(),
                Some(PathSeg::Key(k)) if k == "id" => "accountId",
                Some(PathSeg::Key(k)) => k.as_str(),
                _ => "",
            };
            return spec_span(account, key);
        }
        _ => return Span::file(&account.path),
    };
    for seg in segs {
        let next = match (seg, &node.value) {
            (PathSeg::Key(k), Value::Map(entries)) => entries
                .iter()
                .find(|(key, _)| &key.name == k)
                .map(|(key, v)| (v, key.span.clone())),
            // The last item of that name: when a name is used twice, the later one is the
            // one to fix.
            (PathSeg::Item { key, value }, Value::Seq(items)) => items
                .iter()
                .rfind(|i| i.get(key).and_then(Node::as_str) == Some(value.as_str()))
                .map(|i| (i, i.span.clone())),
            (PathSeg::Index(n), Value::Seq(items)) => items.get(*n).map(|i| (i, i.span.clone())),
            _ => None,
        };
        let Some((n, s)) = next else { break };
        span = if matches!(n.value, Value::Map(_) | Value::Seq(_)) {
            s
        } else {
            n.span.clone()
        };
        node = n;
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    #[test]
    fn a_generated_name_already_taken_is_reported_at_the_operation_naming_the_first() {
        let mut gw = parse("base.yaml", "routes:\n- {name: a}\n- {name: a}\n").unwrap();
        let spec = parse(
            "spec.yaml",
            "- {name: b}\n- {name: a}\n- {name: c}\n- {name: b}\n",
        )
        .unwrap();
        let Value::Seq(generated) = spec.value else {
            panic!()
        };
        let mut errors = Vec::new();
        add_generated_routes(&mut gw, &generated, &mut errors);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(
            text[0].starts_with(
                "spec.yaml:2:3: generated route \"a\" has the same name as the route at base.yaml:2:3;"
            ),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with(
                "spec.yaml:4:3: generated route \"b\" has the same name as the route at spec.yaml:1:3;"
            ),
            "{text:#?}"
        );
        let names: Vec<String> = match &gw.get("routes").unwrap().value {
            Value::Seq(items) => items
                .iter()
                .map(|i| i.get("name").and_then(Node::as_str).unwrap().to_string())
                .collect(),
            _ => panic!(),
        };
        assert_eq!(names, ["a", "a", "b", "c"]);
    }
}
