//! Loading a config repo snapshot: every file parsed, every manifest checked on its own, and
//! the references between them checked. All problems are collected.
//!
//! Layout (see config-repo-example/ and docs/config-repo.md):
//!
//! ```text
//! fleet.yaml                             kind: Fleet
//! base/gateway.yaml                      kind: Gateway
//! base/idp.yaml                          kind: IdentityProvider
//! overlays/<overlay>/*.yaml              kind: Overlay (applied in file-name order)
//! accounts/*.yaml                        kind: Account
//! services/<service>/<version>/openapi.yaml (or openapi.json)
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;

use crate::config::diagnostics::Diagnostic;
use crate::config::doc::{Account, Doc, spec_span};
use crate::config::manifest::{
    API_VERSION, AccountSpec, FLEET_FILE, FleetSpec, GATEWAY_FILE, GatewaySpec, IDP_FILE,
    IdentityProviderSpec, Kind, Manifest, OverlaySpec,
};
use crate::config::openapi::{self, ServiceSpec};
use crate::config::source::{ConfigSource, SourceError};
use crate::config::waves;
use crate::config::yaml::{self, Node, Value};

#[derive(Debug, Clone)]
pub struct Overlay {
    pub name: String,
    /// The overlay's files, in file-name order.
    pub files: Vec<Doc<OverlaySpec>>,
    /// A file of the overlay could not be loaded (its problems are in the diagnostics);
    /// accounts that select it cannot be rendered.
    pub broken: bool,
}

/// One version of one service.
#[derive(Debug, Clone)]
pub struct ServiceVersion {
    pub path: String,
    /// `None` when the spec is invalid (its problems are in the repo's diagnostics).
    pub spec: Option<ServiceSpec>,
}

/// A loaded config repo snapshot. Loading never stops early: what could be read is here,
/// and everything that was wrong is in `diagnostics`.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub fleet: Option<Doc<FleetSpec>>,
    pub gateway: Option<Doc<GatewaySpec>>,
    pub idp: Option<Doc<IdentityProviderSpec>>,
    pub overlays: BTreeMap<String, Overlay>,
    pub accounts: BTreeMap<String, Account>,
    /// (service, version) -> spec.
    pub services: BTreeMap<(String, String), ServiceVersion>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Repo {
    pub fn load(source: &dyn ConfigSource) -> Repo {
        let mut repo = Repo::default();
        let mut files = match source.files() {
            Ok(f) => f,
            Err(e) => {
                repo.diagnostics
                    .push(Diagnostic::in_file(".", e.to_string()));
                return repo;
            }
        };
        // Sorted, so that nothing depends on the order a source lists files in.
        files.sort();
        files.dedup();

        // Account files that could not be loaded: a wave may select nothing because of them.
        let mut unloaded_accounts = 0;
        for path in &files {
            let Some(role) = classify(path) else { continue };
            let text = match source.read(path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(_) => {
                        repo.diagnostics
                            .push(Diagnostic::in_file(path, "file is not UTF-8 text"));
                        continue;
                    }
                },
                // A file the rules refuse (not a regular file, a symlink out of the repo,
                // over the size limit) is one more located problem; the message does not
                // repeat the path the diagnostic already names.
                Err(SourceError::Refused { refusal, .. }) => {
                    repo.diagnostics
                        .push(Diagnostic::in_file(path, refusal.to_string()));
                    continue;
                }
                Err(e) => {
                    repo.diagnostics
                        .push(Diagnostic::in_file(path, e.to_string()));
                    continue;
                }
            };
            match role {
                Role::Unexpected(why) => repo.diagnostics.push(Diagnostic::in_file(path, why)),
                Role::Fleet => repo.fleet = repo.manifest(path, &text, Kind::Fleet),
                Role::Gateway => repo.gateway = repo.manifest(path, &text, Kind::Gateway),
                Role::Idp => repo.idp = repo.manifest(path, &text, Kind::IdentityProvider),
                Role::Overlay(name) => {
                    let doc = repo.manifest::<OverlaySpec>(path, &text, Kind::Overlay);
                    if let Some(doc) = &doc
                        && doc.metadata.name != name
                    {
                        repo.diagnostics
                            .push(name_mismatch(doc, &name, "its directory"));
                    }
                    let overlay = repo
                        .overlays
                        .entry(name.clone())
                        .or_insert_with(|| Overlay {
                            name,
                            files: Vec::new(),
                            broken: false,
                        });
                    match doc {
                        Some(doc) => overlay.files.push(doc),
                        None => overlay.broken = true,
                    }
                }
                Role::Account => {
                    let doc = repo.manifest::<AccountSpec>(path, &text, Kind::Account);
                    if doc.is_none() {
                        unloaded_accounts += 1;
                    }
                    if let Some(doc) = doc {
                        let name = doc.metadata.name.clone();
                        match repo.accounts.get(&name) {
                            Some(existing) => {
                                let message = format!(
                                    "account name {name:?} is also defined in {}",
                                    existing.doc.path
                                );
                                repo.diagnostics
                                    .push(Diagnostic::new(doc.name_span.clone(), message));
                            }
                            None => {
                                repo.accounts.insert(name.clone(), Account { name, doc });
                            }
                        }
                    }
                }
                Role::Service { service, version } => {
                    let spec = match yaml::parse(path, &text) {
                        Err(e) => {
                            repo.diagnostics.push(e);
                            None
                        }
                        Ok(node) => match openapi::import(&service, &version, path, &node) {
                            Ok(spec) => Some(spec),
                            Err(errs) => {
                                repo.diagnostics.extend(errs);
                                None
                            }
                        },
                    };
                    let key = (service, version);
                    if let Some(other) = repo.services.get(&key) {
                        repo.diagnostics.push(Diagnostic::in_file(
                            path,
                            format!(
                                "{} also exists: keep one spec per service version",
                                other.path
                            ),
                        ));
                        continue;
                    }
                    repo.services.insert(
                        key,
                        ServiceVersion {
                            path: path.clone(),
                            spec,
                        },
                    );
                }
            }
        }

        for (path, what) in [
            (FLEET_FILE, repo.fleet.is_none()),
            (GATEWAY_FILE, repo.gateway.is_none()),
            (IDP_FILE, repo.idp.is_none()),
        ] {
            if what && !files.iter().any(|f| f == path) {
                repo.diagnostics.push(Diagnostic::in_file(
                    path,
                    "missing: every config repo needs this file",
                ));
            }
        }
        repo.check_references(unloaded_accounts);
        repo
    }

    /// Parses a manifest of the expected kind. Problems go to the diagnostics.
    fn manifest<S: DeserializeOwned>(
        &mut self,
        path: &str,
        text: &str,
        kind: Kind,
    ) -> Option<Doc<S>> {
        let node = match yaml::parse(path, text) {
            Ok(n) => n,
            Err(e) => {
                self.diagnostics.push(e);
                return None;
            }
        };
        if !matches!(node.value, Value::Map(_)) {
            self.diagnostics.push(Diagnostic::new(
                node.span.clone(),
                "a manifest must be a mapping with apiVersion, kind, metadata and spec",
            ));
            return None;
        }
        // Check the envelope first: a wrong kind explains everything that would follow.
        let mut ok = true;
        match node.get("apiVersion").map(|n| (n, n.as_str())) {
            Some((_, Some(API_VERSION))) => {}
            Some((n, _)) => {
                self.diagnostics.push(Diagnostic::new(
                    n.span.clone(),
                    format!("apiVersion must be {API_VERSION}"),
                ));
                ok = false;
            }
            None => {}
        }
        match node.get("kind").map(|n| (n, n.as_str())) {
            Some((_, Some(k))) if k == kind.as_str() => {}
            Some((n, found)) => {
                self.diagnostics.push(Diagnostic::new(
                    n.span.clone(),
                    format!(
                        "kind must be {kind} in {} (found {})",
                        where_kind_lives(kind),
                        found
                            .map(|f| format!("{f:?}"))
                            .unwrap_or_else(|| "a non-string".into())
                    ),
                ));
                ok = false;
            }
            None => {}
        }
        if kind == Kind::Account
            && let Some(e) = node
                .get("spec")
                .and_then(|spec| spec.get("accountId"))
                .and_then(account_id_as_written)
        {
            self.diagnostics.push(e);
            return None;
        }
        let decoded = match node.decode::<Manifest<S>>("") {
            Ok(m) => Some(m),
            Err(e) => {
                self.diagnostics.push(e);
                None
            }
        };
        let manifest = decoded.filter(|_| ok)?;
        let spec_node = node.get("spec").cloned()?;
        if manifest.metadata.name.is_empty() {
            self.diagnostics.push(Diagnostic::new(
                node.span.clone(),
                "metadata.name must not be empty",
            ));
            return None;
        }
        let name_span = node
            .get("metadata")
            .and_then(|m| m.get("name"))
            .map(|n| n.span.clone())
            .unwrap_or_else(|| node.span.clone());
        Some(Doc {
            path: path.to_string(),
            name_span,
            metadata: manifest.metadata,
            spec: manifest.spec,
            spec_node,
        })
    }

    /// References between manifests: overlays, service pins, duplicate ids, waves, regions.
    fn check_references(&mut self, unloaded_accounts: usize) {
        let mut errors = Vec::new();
        let mut ids: BTreeMap<&str, &Account> = BTreeMap::new();
        for account in self.accounts.values() {
            let doc = &account.doc;
            if let Some(other) = ids.insert(&doc.spec.account_id.0, account) {
                errors.push(Diagnostic::new(
                    spec_span(doc, "accountId"),
                    format!(
                        "account id {} is also used by account {} ({})",
                        doc.spec.account_id, other.name, other.doc.path
                    ),
                ));
            }
            for (i, overlay) in doc.spec.overlays.iter().enumerate() {
                let span = match doc.spec_node.get("overlays").map(|n| &n.value) {
                    Some(Value::Seq(items)) => items.get(i).map(|n| n.span.clone()),
                    _ => None,
                }
                .unwrap_or_else(|| doc.spec_node.span.clone());
                if doc.spec.overlays[..i].contains(overlay) {
                    errors.push(Diagnostic::new(
                        span.clone(),
                        format!("overlay {overlay:?} is listed twice"),
                    ));
                }
                if !self.overlays.contains_key(overlay) {
                    errors.push(Diagnostic::new(
                        span,
                        unknown_overlay_message(self, overlay),
                    ));
                }
            }
            if let Some(fleet) = &self.fleet {
                errors.extend(waves::check_account_target(fleet, account));
                let regions = &fleet.spec.regions;
                if !regions.is_empty() && !regions.contains(&doc.spec.region) {
                    errors.push(Diagnostic::new(
                        spec_span(doc, "region"),
                        format!(
                            "region {} is not one of the fleet's regions ({})",
                            doc.spec.region,
                            regions.join(", ")
                        ),
                    ));
                }
            }
        }
        // Every pin, wherever it is written, must name an existing service version.
        let pin_sources = self
            .accounts
            .values()
            .map(|a| (&a.doc.spec.services, &a.doc.spec_node))
            .chain(
                self.overlays
                    .values()
                    .flat_map(|o| o.files.iter().map(|f| (&f.spec.services, &f.spec_node))),
            );
        for (pins, node) in pin_sources {
            for (service, version) in pins {
                let Some(version) = version else { continue };
                if !self
                    .services
                    .contains_key(&(service.clone(), version.clone()))
                {
                    errors.push(missing_service(self, node, service, version));
                }
            }
        }
        if let Some(fleet) = &self.fleet {
            errors.extend(waves::check_fleet(fleet));
            let live: Vec<waves::Placement> = self
                .accounts
                .iter()
                .filter_map(|(name, a)| {
                    let vars = a.vars();
                    Some(waves::Placement {
                        name: name.clone(),
                        bucket: vars.expand(&fleet.spec.bucket).ok()?,
                        prefix: vars.expand(&fleet.spec.prefix).ok()?,
                    })
                })
                .collect();
            errors.extend(waves::check_offboarding(
                fleet,
                |name| self.accounts.contains_key(name),
                &live,
            ));
            let accounts: Vec<&Account> = self.accounts.values().collect();
            errors.extend(waves::check_assignment(fleet, &accounts, unloaded_accounts));
        }
        self.diagnostics.extend(errors);
    }

    /// Names of accounts, sorted.
    pub fn account_names(&self) -> impl Iterator<Item = &str> {
        self.accounts.keys().map(String::as_str)
    }
}

pub fn unknown_overlay_message(repo: &Repo, overlay: &str) -> String {
    format!(
        "overlay {overlay:?} does not exist (known: {})",
        known(repo.overlays.keys())
    )
}

/// A pin to a service version that has no spec, located at the pin: at the service name when
/// the service does not exist at all, at the version when only the version is missing.
pub fn missing_service(repo: &Repo, spec_node: &Node, service: &str, version: &str) -> Diagnostic {
    let services = spec_node.get("services");
    let versions: Vec<&str> = repo
        .services
        .keys()
        .filter(|(s, _)| s == service)
        .map(|(_, v)| v.as_str())
        .collect();
    let (span, message) = if versions.is_empty() {
        (
            services.and_then(|s| s.key_span(service)).cloned(),
            format!(
                "service {service:?} does not exist: no services/{service}/<version>/openapi.yaml"
            ),
        )
    } else {
        (
            services
                .and_then(|s| s.get(service))
                .map(|n| n.span.clone()),
            format!(
                "service {service} has no version {version} (no services/{service}/{version}/openapi.yaml; available: {})",
                versions.join(", ")
            ),
        )
    };
    Diagnostic::new(span.unwrap_or_else(|| spec_node.span.clone()), message)
}

enum Role {
    Fleet,
    Gateway,
    Idp,
    Overlay(String),
    Account,
    Service { service: String, version: String },
    Unexpected(String),
}

/// What a repo path is. Inside the directories fleetgate owns, a file it would not read is
/// an error rather than silently ignored (a misnamed manifest must not drop out of the
/// fleet); documentation (`.md`) may live anywhere.
fn classify(path: &str) -> Option<Role> {
    let parts: Vec<&str> = path.split('/').collect();
    let file = parts[parts.len() - 1];
    if file.ends_with(".md") {
        return None;
    }
    let unexpected = |why: &str| Some(Role::Unexpected(why.to_string()));
    let yaml = file.ends_with(".yaml");
    match parts.as_slice() {
        ["fleet.yaml"] => Some(Role::Fleet),
        ["fleet.yml" | "fleet.json"] => unexpected("the fleet manifest is fleet.yaml"),
        ["base", "gateway.yaml"] => Some(Role::Gateway),
        ["base", "idp.yaml"] => Some(Role::Idp),
        ["base", ..] => unexpected("base/ holds gateway.yaml and idp.yaml only"),
        ["overlays", name, _] if yaml => Some(Role::Overlay((*name).to_string())),
        ["overlays", _] => {
            unexpected("overlays/ holds one directory per overlay: overlays/<name>/*.yaml")
        }
        ["overlays", _, _, _, ..] => {
            unexpected("overlay directories are flat: overlays/<name>/*.yaml")
        }
        ["overlays", ..] => unexpected("overlay manifests end in .yaml"),
        ["accounts", _] if yaml => Some(Role::Account),
        ["accounts", ..] => {
            unexpected("accounts/ holds one accounts/<name>.yaml per account, nothing else")
        }
        [
            "services",
            service,
            version,
            "openapi.yaml" | "openapi.json",
        ] => Some(Role::Service {
            service: (*service).to_string(),
            version: (*version).to_string(),
        }),
        ["services", _, _, "openapi.yml"] => {
            unexpected("a service spec is openapi.yaml or openapi.json")
        }
        _ => None,
    }
}

/// YAML reads `0x62A7DA2E14`, `4234_5678_9012`, `+123456789012` and `1.2e11` as numbers,
/// which would decode to some 12-digit id nobody wrote. An account id written as a number
/// must be exactly its 12 digits; quoted ids are checked when the manifest is decoded.
fn account_id_as_written(node: &Node) -> Option<Diagnostic> {
    let raw = node.raw.as_deref()?;
    if fleetgate_bundle::compile::is_account_id(raw) {
        return None;
    }
    Some(Diagnostic::new(
        node.span.clone(),
        format!(
            "spec.accountId: account id {raw} must be exactly 12 digits as written (YAML \
             would read it as the number {}; write the 12 digits, quoted if they start with 0)",
            yaml::number_text(node)
        ),
    ))
}

fn where_kind_lives(kind: Kind) -> &'static str {
    match kind {
        Kind::Fleet => "fleet.yaml",
        Kind::Gateway => "base/gateway.yaml",
        Kind::IdentityProvider => "base/idp.yaml",
        Kind::Overlay => "overlays/<name>/",
        Kind::Account => "accounts/",
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn name_mismatch<S>(doc: &Doc<S>, expected: &str, what: &str) -> Diagnostic {
    Diagnostic::new(
        doc.name_span.clone(),
        format!(
            "metadata.name {:?} must match {what} ({expected:?})",
            doc.metadata.name
        ),
    )
}

/// Overlay names an account uses that exist, in order.
pub fn account_overlays<'a>(
    repo: &'a Repo,
    account: &'a Account,
) -> impl Iterator<Item = &'a Overlay> {
    account
        .doc
        .spec
        .overlays
        .iter()
        .filter_map(|o| repo.overlays.get(o))
}

/// Overlays that no account selects.
pub fn unused_overlays(repo: &Repo) -> BTreeSet<&str> {
    let used: BTreeSet<&str> = repo
        .accounts
        .values()
        .flat_map(|a| a.doc.spec.overlays.iter().map(String::as_str))
        .collect();
    repo.overlays
        .keys()
        .map(String::as_str)
        .filter(|o| !used.contains(o))
        .collect()
}
