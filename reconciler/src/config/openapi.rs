//! Routes generated from services' OpenAPI specs (the seed's ETL step).
//!
//! Done when the repo is loaded: every spec is checked, pinned or not, and its problems are
//! the repo's diagnostics. The generated routes are kept as spanned trees; render adds
//! those of the versions an account pins.
//!
//! `services/<service>/<version>/openapi.yaml`: every operation of the pinned version becomes
//! a route to the service's backend. The document is validated by a maintained OpenAPI crate
//! (`openapiv3` for 3.0.x, `oas3` for 3.1.x); what routing needs (security requirements,
//! `x-fleetgate-*` extensions, source lines) is then read from the spanned tree, which also
//! tells an absent `security` (inherit the document's) from `security: []` (public), a
//! distinction `oas3` does not keep.
//!
//! Mapping (docs/openapi.md):
//! - route name `<service>.<operationId>`, method and path from the operation, prefixed by
//!   the document's `x-fleetgate-path-prefix`; backend: `x-fleetgate-backend` or the service
//!   name;
//! - `security` -> `auth`: each requirement's scheme maps to an auth policy (the scheme's
//!   `x-fleetgate-auth-policy`, else the document's, else `default`) and its scopes; several
//!   requirements become alternatives; `[]` or `[{}]` -> `public: true`; no `security` on
//!   the operation or the document -> the gateway's `defaults.auth` (never silently public);
//! - `x-fleetgate-rate-limit`, `-timeout`, `-retries`, `-max-body-bytes`, `-flag`,
//!   `-upstream-path` set the route fields of the same name; `x-fleetgate-route-name`
//!   overrides the name; `x-fleetgate-skip: true` leaves the operation out.

use std::collections::BTreeSet;

use fleetgate_bundle::Duration;
use fleetgate_bundle::bundle::{Method, RateLimit, Retries};
use serde_json::{Map, json};

use crate::config::diagnostics::{Diagnostic, Span};
use crate::config::yaml::{Node, Value};

const ROOT_EXTENSIONS: [&str; 3] = [
    "x-fleetgate-backend",
    "x-fleetgate-path-prefix",
    "x-fleetgate-auth-policy",
];
const OPERATION_EXTENSIONS: [&str; 8] = [
    "x-fleetgate-rate-limit",
    "x-fleetgate-timeout",
    "x-fleetgate-retries",
    "x-fleetgate-max-body-bytes",
    "x-fleetgate-flag",
    "x-fleetgate-upstream-path",
    "x-fleetgate-route-name",
    "x-fleetgate-skip",
];
const SCHEME_EXTENSIONS: [&str; 1] = ["x-fleetgate-auth-policy"];
const DEFAULT_POLICY: &str = "default";

/// A service version's spec, checked, with its routes generated.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub service: String,
    pub version: String,
    pub file: String,
    /// Route manifests (as spanned trees pointing at their operations), in document order.
    pub routes: Vec<Node>,
}

/// Parses and checks one spec and generates its routes. All problems are returned.
pub fn import(
    service: &str,
    version: &str,
    file: &str,
    doc: &Node,
) -> Result<ServiceSpec, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let here = |n: &Node| n.span.clone();

    let Some(openapi) = doc.get("openapi").and_then(Node::as_str) else {
        return Err(vec![Diagnostic::new(
            doc.span.clone(),
            "not an OpenAPI document: no `openapi: 3.x.y` version field",
        )]);
    };
    // The crate decides whether the document is well-formed OpenAPI; its errors are located
    // through the tree like every other decode.
    let structural = if openapi.starts_with("3.0.") {
        doc.decode::<openapiv3::OpenAPI>("").map(|_| ())
    } else if openapi.starts_with("3.1.") {
        doc.decode::<oas3::Spec>("").map(|_| ())
    } else {
        Err(Diagnostic::new(
            here(doc.get("openapi").unwrap_or(doc)),
            format!("OpenAPI version {openapi:?} is not supported (3.0.x and 3.1.x are)"),
        ))
    };
    if let Err(e) = structural {
        return Err(vec![Diagnostic::new(
            e.span,
            format!("invalid OpenAPI document: {}", e.message),
        )]);
    }

    let backend = doc
        .get("x-fleetgate-backend")
        .map(|n| string_ext(n, "x-fleetgate-backend", &mut errors))
        .unwrap_or_else(|| service.to_string());
    let prefix = doc
        .get("x-fleetgate-path-prefix")
        .map(|n| string_ext(n, "x-fleetgate-path-prefix", &mut errors))
        .unwrap_or_default();
    if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
        errors.push(Diagnostic::new(
            doc.get("x-fleetgate-path-prefix")
                .map(|n| n.span.clone())
                .unwrap_or_else(|| doc.span.clone()),
            "x-fleetgate-path-prefix must start with '/' and not end with '/'",
        ));
    }
    let doc_policy = doc
        .get("x-fleetgate-auth-policy")
        .map(|n| string_ext(n, "x-fleetgate-auth-policy", &mut errors))
        .unwrap_or_else(|| DEFAULT_POLICY.to_string());

    check_extension_placement(doc, &mut Vec::new(), &mut errors);
    let schemes = doc.get("components").and_then(|c| c.get("securitySchemes"));
    let root_security = doc.get("security");

    let mut routes = Vec::new();
    let mut names = BTreeSet::new();
    if let Some(Node {
        value: Value::Map(paths),
        ..
    }) = doc.get("paths")
    {
        for (path_key, item) in paths {
            if item.get("$ref").is_some() {
                errors.push(Diagnostic::new(
                    item.span.clone(),
                    "path items by $ref are not supported: write the operations inline",
                ));
                continue;
            }
            let Value::Map(ops) = &item.value else {
                continue;
            };
            for (method_key, op) in ops {
                let Some(method) = http_method(&method_key.name) else {
                    const PATH_ITEM_FIELDS: [&str; 4] =
                        ["summary", "description", "servers", "parameters"];
                    if !PATH_ITEM_FIELDS.contains(&method_key.name.as_str())
                        && !method_key.name.starts_with("x-")
                    {
                        errors.push(Diagnostic::new(
                            method_key.span.clone(),
                            format!(
                                "{:?} is not a field of a path item (operations are lowercase: get, put, post, delete, options, head, patch)",
                                method_key.name
                            ),
                        ));
                    }
                    continue;
                };
                let Some(method) = method else {
                    errors.push(Diagnostic::new(
                        method_key.span.clone(),
                        format!(
                            "{} operations cannot be routed by the gateway",
                            method_key.name.to_uppercase()
                        ),
                    ));
                    continue;
                };
                let ctx = OpContext {
                    service,
                    version,
                    backend: &backend,
                    prefix: &prefix,
                    doc_policy: &doc_policy,
                    schemes,
                    root_security,
                };
                match operation_route(&ctx, &path_key.name, method, op, &mut errors) {
                    Some((name, route)) => {
                        if !names.insert(name.clone()) {
                            errors.push(Diagnostic::new(
                                op.span.clone(),
                                format!("route name {name:?} is generated twice (operationId not unique)"),
                            ));
                        }
                        routes.push(route);
                    }
                    None => continue,
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(ServiceSpec {
            service: service.into(),
            version: version.into(),
            file: file.into(),
            routes,
        })
    } else {
        Err(errors)
    }
}

struct OpContext<'a> {
    service: &'a str,
    version: &'a str,
    backend: &'a str,
    prefix: &'a str,
    doc_policy: &'a str,
    schemes: Option<&'a Node>,
    root_security: Option<&'a Node>,
}

/// `Some(Some(method))` for a routable operation key, `Some(None)` for `trace`, `None` for
/// the other keys of a path item (`parameters`, `summary`, ...).
fn http_method(key: &str) -> Option<Option<Method>> {
    match key {
        "trace" => Some(None),
        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" => {
            Some(Method::parse(key))
        }
        _ => None,
    }
}

fn operation_route(
    ctx: &OpContext<'_>,
    path: &str,
    method: Method,
    op: &Node,
    errors: &mut Vec<Diagnostic>,
) -> Option<(String, Node)> {
    if let Some(skip) = op.get("x-fleetgate-skip") {
        match skip.value {
            Value::Bool(true) => return None,
            Value::Bool(false) => {}
            _ => errors.push(Diagnostic::new(
                skip.span.clone(),
                "x-fleetgate-skip must be true or false",
            )),
        }
    }
    let op_id = op.get("operationId").and_then(Node::as_str);
    let name = match op.get("x-fleetgate-route-name") {
        Some(n) => string_ext(n, "x-fleetgate-route-name", errors),
        None => match op_id {
            Some(id) => format!("{}.{id}", ctx.service),
            None => format!(
                "{}.{}.{}",
                ctx.service,
                method.as_str().to_lowercase(),
                slug(path)
            ),
        },
    };

    let mut route = Map::new();
    route.insert("name".into(), json!(name));
    route.insert("methods".into(), json!([method.as_str()]));
    route.insert("path".into(), json!(format!("{}{path}", ctx.prefix)));
    route.insert("backend".into(), json!(ctx.backend));
    route.insert(
        "service".into(),
        json!({"name": ctx.service, "version": ctx.version}),
    );

    // No `security` anywhere: the route inherits the gateway's `defaults.auth` (and fails to
    // compile if there is none). Only an explicit `security: []` or `[{}]` makes it public:
    // a spec that forgets security must not expose its operations.
    if let Some(security) = op.get("security").or(ctx.root_security) {
        match security_to_auth(ctx, security, errors) {
            Some(auth) => {
                route.insert("auth".into(), auth);
            }
            None => {
                route.insert("public".into(), json!(true));
            }
        }
    }

    let mut typed = |key: &str, field: &str, check: fn(&Node) -> Result<(), Diagnostic>| {
        if let Some(n) = op.get(key) {
            match check(n) {
                Ok(()) => {
                    route.insert(field.into(), n.to_json());
                }
                Err(e) => errors.push(e),
            }
        }
    };
    typed("x-fleetgate-rate-limit", "rateLimit", |n| {
        n.decode::<RateLimit>("x-fleetgate-rate-limit").map(|_| ())
    });
    typed("x-fleetgate-timeout", "timeout", |n| {
        n.decode::<Duration>("x-fleetgate-timeout").map(|_| ())
    });
    typed("x-fleetgate-retries", "retries", |n| {
        n.decode::<Retries>("x-fleetgate-retries").map(|_| ())
    });
    typed("x-fleetgate-max-body-bytes", "maxBodyBytes", |n| {
        n.decode::<u64>("x-fleetgate-max-body-bytes").map(|_| ())
    });
    typed("x-fleetgate-flag", "flag", |n| {
        n.decode::<String>("x-fleetgate-flag").map(|_| ())
    });
    typed("x-fleetgate-upstream-path", "upstreamPath", |n| {
        n.decode::<String>("x-fleetgate-upstream-path").map(|_| ())
    });

    Some((
        name,
        Node::from_json(&serde_json::Value::Object(route), &op.span),
    ))
}

/// OpenAPI `security` -> the route's `auth` (None: public).
fn security_to_auth(
    ctx: &OpContext<'_>,
    security: &Node,
    errors: &mut Vec<Diagnostic>,
) -> Option<serde_json::Value> {
    let Value::Seq(requirements) = &security.value else {
        errors.push(Diagnostic::new(
            security.span.clone(),
            "security must be a list of requirement objects",
        ));
        return None;
    };
    let mut alternatives = Vec::new();
    for req in requirements {
        let Value::Map(schemes) = &req.value else {
            errors.push(Diagnostic::new(
                req.span.clone(),
                "a security requirement must be a map",
            ));
            return None;
        };
        // `{}` makes authentication optional: the route is served to anyone.
        if schemes.is_empty() {
            return None;
        }
        let mut policy: Option<(String, Span)> = None;
        let mut scopes = BTreeSet::new();
        for (scheme_key, scheme_scopes) in schemes {
            let Some(p) = scheme_policy(ctx, &scheme_key.name, &scheme_key.span, errors) else {
                continue;
            };
            match &policy {
                Some((existing, _)) if existing != &p => {
                    errors.push(Diagnostic::new(
                        scheme_key.span.clone(),
                        format!(
                            "schemes of one requirement map to different auth policies ({existing:?} and {p:?}); \
                             list them as separate requirements"
                        ),
                    ));
                }
                _ => policy = Some((p, scheme_key.span.clone())),
            }
            if let Value::Seq(items) = &scheme_scopes.value {
                scopes.extend(items.iter().filter_map(Node::as_str).map(str::to_string));
            }
        }
        if let Some((policy, _)) = policy {
            alternatives
                .push(json!({"policy": policy, "scopes": scopes.into_iter().collect::<Vec<_>>()}));
        }
    }
    if alternatives.is_empty() {
        return None;
    }
    let mut main = alternatives.remove(0);
    if !alternatives.is_empty() {
        main["alternatives"] = serde_json::Value::Array(alternatives);
    }
    Some(main)
}

fn scheme_policy(
    ctx: &OpContext<'_>,
    name: &str,
    at: &Span,
    errors: &mut Vec<Diagnostic>,
) -> Option<String> {
    let Some(scheme) = ctx.schemes.and_then(|s| s.get(name)) else {
        errors.push(Diagnostic::new(
            at.clone(),
            format!("security scheme {name:?} is not defined in components.securitySchemes"),
        ));
        return None;
    };
    let kind = scheme.get("type").and_then(Node::as_str).unwrap_or("");
    let bearer = scheme
        .get("scheme")
        .and_then(Node::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("bearer"));
    if !(kind == "oauth2" || kind == "openIdConnect" || (kind == "http" && bearer)) {
        errors.push(Diagnostic::new(
            scheme.span.clone(),
            format!(
                "security scheme {name:?} ({kind}) is not supported: the gateway validates JWT bearer \
                 tokens (oauth2, openIdConnect or http bearer)"
            ),
        ));
        return None;
    }
    Some(match scheme.get("x-fleetgate-auth-policy") {
        Some(p) => string_ext(p, "x-fleetgate-auth-policy", errors),
        None => ctx.doc_policy.to_string(),
    })
}

/// Every `x-fleetgate-*` key of the document must be one that is read where it stands: a
/// misplaced or misspelled extension would otherwise be silently ignored.
fn check_extension_placement(node: &Node, path: &mut Vec<String>, errors: &mut Vec<Diagnostic>) {
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                if k.name.starts_with("x-fleetgate-") {
                    let (allowed, place): (&[&str], &str) = match path.as_slice() {
                        [] => (&ROOT_EXTENSIONS, "the document root"),
                        [p, _, m] if p == "paths" && http_method(m).is_some() => {
                            (&OPERATION_EXTENSIONS, "an operation")
                        }
                        [c, s, _] if c == "components" && s == "securitySchemes" => {
                            (&SCHEME_EXTENSIONS, "a security scheme")
                        }
                        _ => (&[], ""),
                    };
                    if allowed.is_empty() {
                        errors.push(Diagnostic::new(
                            k.span.clone(),
                            format!(
                                "{} is not read here: fleetgate extensions go on the document root, operations and security schemes",
                                k.name
                            ),
                        ));
                    } else if !allowed.contains(&k.name.as_str()) {
                        errors.push(Diagnostic::new(
                            k.span.clone(),
                            format!(
                                "unknown extension {} on {place} (known here: {})",
                                k.name,
                                allowed.join(", ")
                            ),
                        ));
                    }
                    continue;
                }
                path.push(k.name.clone());
                check_extension_placement(v, path, errors);
                path.pop();
            }
        }
        Value::Seq(items) => {
            for item in items {
                path.push("[]".into());
                check_extension_placement(item, path, errors);
                path.pop();
            }
        }
        _ => {}
    }
}

fn string_ext(node: &Node, key: &str, errors: &mut Vec<Diagnostic>) -> String {
    match node.as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => {
            errors.push(Diagnostic::new(
                node.span.clone(),
                format!("{key} must be a non-empty string"),
            ));
            String::new()
        }
    }
}

fn slug(path: &str) -> String {
    let s: String = path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    const SPEC: &str = r#"openapi: 3.0.3
info: {title: Orders, version: 1.0.0}
x-fleetgate-path-prefix: /api
security: [{oauth: [orders:read]}]
components:
  securitySchemes:
    oauth:
      type: oauth2
      flows: {clientCredentials: {tokenUrl: "https://a/t", scopes: {"orders:read": r, "orders:write": w}}}
    partner:
      type: openIdConnect
      openIdConnectUrl: https://p/.well-known/openid-configuration
      x-fleetgate-auth-policy: partner
paths:
  /orders:
    get:
      operationId: listOrders
      responses: {"200": {description: ok}}
    post:
      operationId: createOrder
      security: [{oauth: [orders:write]}, {partner: []}]
      x-fleetgate-rate-limit: {requests: 10, per: 1s}
      x-fleetgate-timeout: 5s
      responses: {"201": {description: created}}
  /health:
    get:
      operationId: health
      security: []
      responses: {"200": {description: ok}}
"#;

    fn routes(spec: &str) -> Vec<serde_json::Value> {
        let doc = parse("services/orders/1.0.0/openapi.yaml", spec).unwrap();
        import(
            "orders",
            "1.0.0",
            "services/orders/1.0.0/openapi.yaml",
            &doc,
        )
        .unwrap()
        .routes
        .iter()
        .map(Node::to_json)
        .collect()
    }

    #[test]
    fn operations_become_routes_with_auth_and_extensions() {
        let r = routes(SPEC);
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            json!({"name": "orders.listOrders", "methods": ["GET"], "path": "/api/orders", "backend": "orders",
                   "service": {"name": "orders", "version": "1.0.0"},
                   "auth": {"policy": "default", "scopes": ["orders:read"]}})
        );
        assert_eq!(
            r[1]["auth"],
            json!({"policy": "default", "scopes": ["orders:write"],
                                        "alternatives": [{"policy": "partner", "scopes": []}]})
        );
        assert_eq!(r[1]["rateLimit"], json!({"requests": 10, "per": "1s"}));
        assert_eq!(r[1]["timeout"], json!("5s"));
        assert_eq!(r[2]["public"], json!(true));
        assert!(r[2].get("auth").is_none());
    }

    #[test]
    fn no_security_anywhere_inherits_the_gateway_default_instead_of_going_public() {
        let spec = SPEC.replace("security: [{oauth: [orders:read]}]\n", "");
        let r = routes(&spec);
        assert!(
            r[0].get("auth").is_none() && r[0].get("public").is_none(),
            "{}",
            r[0]
        );
        assert_eq!(
            r[2]["public"],
            json!(true),
            "an explicit security: [] stays public"
        );
    }

    #[test]
    fn misplaced_fleetgate_extensions_are_errors() {
        let bad = SPEC.replace(
            "info: {title: Orders, version: 1.0.0}",
            "info: {title: Orders, version: 1.0.0, x-fleetgate-timeout: 5s}",
        );
        let doc = parse("f.yaml", &bad).unwrap();
        let errs = import("orders", "1.0.0", "f.yaml", &doc).unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("x-fleetgate-timeout is not read here"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn openapi_31_is_read_too() {
        let r = routes(&SPEC.replace("openapi: 3.0.3", "openapi: 3.1.0"));
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[2]["public"],
            json!(true),
            "security: [] must stay public under 3.1"
        );
    }

    #[test]
    fn problems_are_located() {
        let bad = SPEC.replace(
            "x-fleetgate-timeout: 5s",
            "x-fleetgate-timeout: soon\n      x-fleetgate-colour: red",
        );
        let doc = parse("f.yaml", &bad).unwrap();
        let errs = import("orders", "1.0.0", "f.yaml", &doc).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|e| e.starts_with("f.yaml:23:28: x-fleetgate-timeout: invalid duration")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("f.yaml:24:7: unknown extension x-fleetgate-colour")),
            "{text:#?}"
        );

        let doc = parse("f.yaml", "openapi: 3.0.3\ninfo: {title: x}\npaths: {}\n").unwrap();
        let errs = import("orders", "1.0.0", "f.yaml", &doc).unwrap_err();
        assert!(
            errs[0]
                .message
                .starts_with("invalid OpenAPI document: info: missing field `version`"),
            "{}",
            errs[0]
        );

        let doc = parse("f.yaml", "openapi: 2.0\n").unwrap();
        assert!(import("o", "1", "f.yaml", &doc).is_err());
    }
}
