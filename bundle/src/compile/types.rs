//! What compiling says and builds: where in a bundle something is ([`BundlePath`]), why a
//! bundle cannot run ([`CompileError`], [`CompileErrors`]), and the [`CompiledBundle`] with
//! its [`CompiledRoute`]s.
//!
//! Imports [`crate::bundle`], [`crate::duration`] and [`crate::route`]; every other file of
//! [`compile`](super) imports it, and the parent re-exports it.

use std::collections::BTreeMap;
use std::fmt;

use jsonwebtoken::jwk::JwkSet;

use crate::bundle::{Bundle, Cors, RateLimit, Retries, RouteAuth};
use crate::duration::Duration;
use crate::route::{PathTemplate, RouteTable};

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
    pub(super) fn root(keys: &[&str]) -> BundlePath {
        BundlePath(
            keys.iter()
                .map(|k| PathSeg::Key((*k).to_string()))
                .collect(),
        )
    }

    pub(super) fn key(&self, k: &str) -> BundlePath {
        let mut p = self.clone();
        p.0.push(PathSeg::Key(k.to_string()));
        p
    }

    pub(super) fn item(&self, key: &'static str, value: &str) -> BundlePath {
        let mut p = self.clone();
        p.0.push(PathSeg::Item {
            key,
            value: value.to_string(),
        });
        p
    }

    pub(super) fn index(&self, i: usize) -> BundlePath {
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
