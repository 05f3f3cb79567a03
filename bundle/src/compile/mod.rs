//! `compile()`: the one place that decides whether a bundle is runnable.
//!
//! The reconciler compiles every bundle it renders before it plans or applies; the gateway
//! compiles every bundle before it swaps it in. Both therefore refuse exactly the same
//! bundles. Every problem is collected (not just the first), and each names its subject with
//! a [`BundlePath`] such as `gateway.routes[orders.getOrder].backend`, which the reconciler
//! maps back to the manifest line that produced it.
//!
//! Imports [`crate::bundle`], [`crate::duration`], [`crate::idp`] and [`crate::route`].

use std::collections::BTreeMap;
use std::fmt;

use jsonwebtoken::jwk::JwkSet;

use crate::bundle::{BUNDLE_API_VERSION, Bundle, Cors, RateLimit, Retries, RouteAuth, SecretRef};
use crate::duration::Duration;
use crate::route::{PathTemplate, RouteTable};

mod gateway;
mod idp;
#[cfg(test)]
mod tests;

use gateway::check_gateway;
use idp::{check_idp, check_policy};

/// One step of a path into a bundle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathSeg {
    /// An object key.
    Key(String),
    /// The item of a list of named items whose `key` field (`name` or `id`) is `value`.
    Item { key: &'static str, value: String },
    /// A list position, for lists whose items have no name.
    Index(usize),
}

/// Where in a bundle something is, e.g. `gateway.routes[orders.getOrder].backend`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundlePath(pub Vec<PathSeg>);

impl BundlePath {
    fn root(keys: &[&str]) -> BundlePath {
        BundlePath(
            keys.iter()
                .map(|k| PathSeg::Key((*k).to_string()))
                .collect(),
        )
    }

    fn key(&self, k: &str) -> BundlePath {
        let mut p = self.clone();
        p.0.push(PathSeg::Key(k.to_string()));
        p
    }

    fn item(&self, key: &'static str, value: &str) -> BundlePath {
        let mut p = self.clone();
        p.0.push(PathSeg::Item {
            key,
            value: value.to_string(),
        });
        p
    }

    fn index(&self, i: usize) -> BundlePath {
        let mut p = self.clone();
        p.0.push(PathSeg::Index(i));
        p
    }

    /// What a person calls the thing at this path: `route orders.getOrder`,
    /// `backend orders`, `client web-portal`, ...
    pub fn subject(&self) -> String {
        let segs = &self.0;
        for (i, seg) in segs.iter().enumerate().rev() {
            let parent = i.checked_sub(1).and_then(|p| match &segs[p] {
                PathSeg::Key(k) => Some(k.as_str()),
                _ => None,
            });
            let kind = match parent {
                Some("routes") => "route",
                Some("backends") if i >= 2 && segs[i - 2] == PathSeg::Key("gateway".into()) => {
                    "backend"
                }
                Some("authPolicies") => "auth policy",
                Some("flags") => "flag",
                Some("clients") => "client",
                Some("scopes") if i >= 2 && segs[i - 2] == PathSeg::Key("idp".into()) => "scope",
                Some("trustedIssuers") => "trusted issuer",
                _ => continue,
            };
            let name = match seg {
                PathSeg::Key(k) => k.clone(),
                PathSeg::Item { value, .. } => value.clone(),
                PathSeg::Index(n) => format!("#{n}"),
            };
            return format!("{kind} {name}");
        }
        match segs.first() {
            Some(PathSeg::Key(k)) if k == "account" => "account".into(),
            Some(PathSeg::Key(k)) if k == "idp" => "identity provider".into(),
            _ => "gateway".into(),
        }
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Key(k) if i == 0 => write!(f, "{k}")?,
                PathSeg::Key(k) => write!(f, ".{k}")?,
                PathSeg::Item { value, .. } => write!(f, "[{value}]")?,
                PathSeg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CompileError {
    pub path: BundlePath,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (at {})",
            self.path.subject(),
            self.message,
            self.path
        )
    }
}

/// Every reason a bundle cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileErrors(pub Vec<CompileError>);

impl fmt::Display for CompileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileErrors {}

/// A route with everything it inherits resolved, ready for the request path.
#[derive(Clone, Debug)]
pub struct CompiledRoute {
    pub template: PathTemplate,
    /// `None`: public.
    pub auth: Option<RouteAuth>,
    pub timeout: Duration,
    pub max_body_bytes: u64,
    pub retries: Option<Retries>,
    pub rate_limit: Option<RateLimit>,
    pub cors: Option<Cors>,
    /// `Some(status)` when the route is switched off (kill switch or flag off).
    pub disabled: Option<u16>,
}

/// A bundle that passed every check, with its routing table built.
#[derive(Debug)]
pub struct CompiledBundle {
    pub bundle: Bundle,
    /// Same order as `bundle.gateway.routes`.
    pub routes: Vec<CompiledRoute>,
    pub table: RouteTable,
    /// Inline JWKS of trusted issuers, parsed, by issuer name.
    pub inline_jwks: BTreeMap<String, JwkSet>,
}

struct Checker {
    errors: Vec<CompileError>,
}

impl Checker {
    fn err(&mut self, path: &BundlePath, message: impl Into<String>) {
        self.errors.push(CompileError {
            path: path.clone(),
            message: message.into(),
        });
    }

    fn name(&mut self, path: &BundlePath, what: &str, name: &str) {
        if name.is_empty() {
            self.err(path, format!("{what} name must not be empty"));
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-/".contains(&b))
        {
            self.err(
                path,
                format!("{what} name {name:?} may only use letters, digits and . _ : - /"),
            );
        }
    }

    fn positive(&mut self, path: &BundlePath, what: &str, d: Duration) {
        if d.is_zero() {
            self.err(path, format!("{what} must be greater than zero"));
        }
    }

    fn header_name(&mut self, path: &BundlePath, name: &str) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.err(path, format!("{name:?} is not a valid HTTP header name"));
        }
    }

    fn url(&mut self, path: &BundlePath, what: &str, raw: &str) -> Option<url::Url> {
        // Before anything that quotes the URL: credentials in it must not reach a message.
        let authority = raw.split_once("://").map_or(raw, |(_, rest)| rest);
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            self.err(
                path,
                format!("{what} must not carry credentials in the URL (value not shown)"),
            );
            return None;
        }
        match url::Url::parse(raw) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                self.err(
                    path,
                    format!("{what} {raw:?} must be an http:// or https:// URL"),
                );
                None
            }
            Ok(u) if u.host().is_none() => {
                self.err(path, format!("{what} {raw:?} has no host"));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                // Credentials in a URL end up in logs and plans: keep them in secret refs.
                self.err(
                    path,
                    format!("{what} must not carry credentials in the URL"),
                );
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                self.err(
                    path,
                    format!("{what} {raw:?} must not have a query or fragment"),
                );
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                self.err(path, format!("{what} {raw:?} is not a valid URL: {e}"));
                None
            }
        }
    }

    fn host(&mut self, path: &BundlePath, host: &str) {
        let ok = !host.is_empty()
            && host.len() <= 253
            && !host.contains(['/', ':', '*', ' '])
            && url::Host::parse(host).is_ok();
        if ok && (!host.is_ascii() || host.bytes().any(|b| b.is_ascii_uppercase() || b == b'%')) {
            // Requests carry the lowercase ASCII (punycode) form; anything else never matches.
            self.err(path, format!("{host:?}: write host names in lowercase ASCII (punycode for international names)"));
        } else if !ok {
            self.err(
                path,
                format!("{host:?} is not a host name (no scheme, port, path or wildcard)"),
            );
        }
    }

    fn secret_ref(&mut self, path: &BundlePath, r: &SecretRef) {
        let (SecretRef::File(v) | SecretRef::Env(v) | SecretRef::AwsSecretsManager(v)) = r;
        if v.contains("-----BEGIN") || v.contains(['\n', '\r']) {
            // A key pasted where its reference belongs: say so without quoting it.
            self.err(
                path,
                "holds secret material instead of a reference to it: name the file, \
                 environment variable or Secrets Manager secret that holds it (value not shown)",
            );
            return;
        }
        match r {
            SecretRef::File(p) if !p.starts_with('/') => {
                self.err(path, format!("secret file {p:?} must be an absolute path"))
            }
            SecretRef::Env(v)
                if v.is_empty()
                    || v.as_bytes()[0].is_ascii_digit()
                    || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                self.err(path, format!("{v:?} is not an environment variable name"))
            }
            SecretRef::AwsSecretsManager(arn) => {
                // arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
                let parts: Vec<&str> = arn.splitn(7, ':').collect();
                let ok = parts.len() == 7
                    && parts[0] == "arn"
                    && parts[1].starts_with("aws")
                    && parts[2] == "secretsmanager"
                    && !parts[3].is_empty()
                    && is_account_id(parts[4])
                    && parts[5] == "secret"
                    && !parts[6].is_empty();
                if !ok {
                    self.err(
                        path,
                        format!(
                            "{arn:?} is not a Secrets Manager secret ARN \
                             (arn:aws:secretsmanager:<region>:<account id>:secret:<name>)"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

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
