//! Unit tests of `compile()`: a valid bundle, each test breaking it in one way.

use super::*;
use crate::bundle::Method;
use crate::route::RouteMatch;
use serde_json::{Value, json};

/// A small bundle that compiles; each test breaks it in one way.
fn valid() -> Value {
    json!({
        "apiVersion": BUNDLE_API_VERSION,
        "account": {"name": "acme", "id": "123456789012", "region": "eu-west-1", "stage": "prod", "tenant": "acme"},
        "gateway": {
            "hosts": ["api.acme.example"],
            "backends": {"orders": {"url": "http://orders.internal:8080"}, "v2": {"url": "http://v2.internal"}},
            "authPolicies": {"default": {"issuers": ["local"]}},
            "routes": [
                {"name": "list", "methods": ["GET"], "path": "/orders", "backend": "orders",
                 "auth": {"policy": "default", "scopes": ["orders:read"]}},
                {"name": "get", "methods": ["GET"], "path": "/orders/{id}",
                 "backends": [{"backend": "orders", "weight": 90}, {"backend": "v2", "weight": 10}], "public": true}
            ]
        },
        "idp": {
            "issuer": {"url": "https://auth.acme.example", "audiences": ["api"],
                       "signingKeys": {"active": {"kid": "k1", "algorithm": "RS256", "privateKey": {"env": "KEY"}}}},
            "scopes": [{"name": "orders:read"}],
            "trustedIssuers": [{"name": "partner", "issuer": "https://p.example", "audiences": ["api"], "algorithms": ["RS256"],
                "jwks": {"keys": [{"kty": "RSA", "kid": "p1", "alg": "RS256", "e": "AQAB",
                    "n": "yCdO_VbAs1NDZGnzkHSAmWgKwKDbCJ82xa_YnL1VmK8RqmZm8gkvWAP638m_Ke38eysXXI1EnzWJnxUARuIsjSUFoG7SA8vdOh0QytBAIgwaj2rYEPR2LwaTCg7SLMwEr5asHjDKe9uNytSsC2mF1IP1xZj4DKS641m-YLXPKh0MzrPqoHcP2psoLp4l6tLXXLiwKbFxo5_0WkmUAujS4cESGnG7jI5sRn4IKr5MJrxImsLRwYBQlQexwdFBQVwfIZaGUJ3yLzV5eUcPaJ74WXKXQLkFopRyB4Pc2Uln1F7graBv2gMDW5NAmD-RbF1tjnebFGyS6NhZfSmXG1gWMw"}]}}]
        }
    })
}

fn errors(mutate: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = valid();
    mutate(&mut v);
    let bundle: Bundle = serde_json::from_value(v).expect("still a bundle");
    match compile(&bundle) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn one_error(mutate: impl FnOnce(&mut Value)) -> String {
    let errs = errors(mutate);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn the_valid_bundle_compiles_and_routes() {
    let bundle: Bundle = serde_json::from_value(valid()).unwrap();
    let compiled = compile(&bundle).unwrap();
    assert!(matches!(
        compiled
            .table
            .find("api.acme.example", Method::Get, "/orders/7"),
        RouteMatch::Found { route: 1, .. }
    ));
    assert_eq!(compiled.inline_jwks["partner"].keys.len(), 1);
}

#[test]
fn references_must_resolve() {
    let e = one_error(|v| v["gateway"]["routes"][0]["backend"] = json!("ordrs"));
    assert_eq!(
        e,
        "route list: backend \"ordrs\" is not defined in gateway.backends (at gateway.routes[list].backend)"
    );
    let e = one_error(|v| {
        v["gateway"]["authPolicies"]["default"]["issuers"] = json!(["local", "corp"])
    });
    assert!(
        e.contains("unknown issuer \"corp\" (known: local, partner)") && e.contains("issuers[1]"),
        "{e}"
    );
    let e = one_error(|v| v["gateway"]["routes"][0]["auth"]["scopes"] = json!(["orders:raed"]));
    assert!(e.contains("scope \"orders:raed\" is not declared"), "{e}");
}

#[test]
fn weights_must_sum_to_100() {
    let e = one_error(|v| v["gateway"]["routes"][1]["backends"][1]["weight"] = json!(20));
    assert!(e.contains("weights sum to 110"), "{e}");
}

#[test]
fn a_route_conflict_is_reported_at_both_routes() {
    let errs = errors(|v| {
        v["gateway"]["routes"].as_array_mut().unwrap().push(json!(
            {"name": "legacy", "methods": ["GET"], "path": "/orders", "backend": "orders", "public": true}));
    });
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs.iter().any(|e| e
            .starts_with("route legacy: GET /orders is served by two routes (also route list)")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e
            .starts_with("route list: GET /orders is served by two routes (also route legacy)")),
        "{errs:#?}"
    );
}

#[test]
fn routes_need_auth_unless_public() {
    let e = one_error(|v| {
        v["gateway"]["routes"][0]
            .as_object_mut()
            .unwrap()
            .remove("auth");
    });
    assert!(e.contains("route has no auth"), "{e}");
}

#[test]
fn private_key_material_in_a_jwks_is_refused_without_quoting_it() {
    let e = one_error(|v| {
        v["idp"]["trustedIssuers"][0]["jwks"]["keys"][0]["d"] = json!("PRIVATE-EXPONENT-zz9")
    });
    assert!(e.contains("carries private key material (d)"), "{e}");
    assert!(!e.contains("PRIVATE-EXPONENT-zz9"), "{e}");
}

#[test]
fn credentials_in_urls_are_never_quoted() {
    for url in [
        "ftp://svc:Hunter2-S3cret@h.internal",
        "https://svc:Hunter2-S3cret@bad host",
        "http://svc:Hunter2-S3cret@h/x",
    ] {
        let e = one_error(|v| v["gateway"]["backends"]["v2"]["url"] = json!(url));
        assert!(
            e.contains("must not carry credentials") && !e.contains("Hunter2"),
            "{e}"
        );
    }
}

#[test]
fn hosts_are_checked() {
    let errs = errors(|v| v["gateway"]["hosts"] = json!(["api.acme.example", "API.acme.example"]));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].contains("write host names in lowercase ASCII"),
        "{errs:#?}"
    );
    assert!(
        errs[1].contains("host \"API.acme.example\" is listed twice"),
        "{errs:#?}"
    );
    let e = one_error(|v| v["gateway"]["routes"][0]["hosts"] = json!(["evil.example.org"]));
    assert!(e.contains("not one of the gateway's hosts"), "{e}");
}

#[test]
fn leeway_is_bounded() {
    let e = one_error(|v| v["gateway"]["authPolicies"]["default"]["leeway"] = json!("10m"));
    assert!(e.contains("leeway above 5m"), "{e}");
}

#[test]
fn client_secret_hashes_must_be_argon2_and_are_not_quoted() {
    let e = one_error(|v| {
        v["idp"]["clients"] = json!([{"id": "web", "secret": {"argon2Hash": "not-a-hash-hunter2"}, "scopes": ["orders:read"]}]);
    });
    assert!(
        e.contains("not an argon2 hash") && !e.contains("hunter2"),
        "{e}"
    );
}

/// The argon2id hash of `secret` with parameters `m`, `t`, `p`.
fn argon2id(secret: &str, m: u32, t: u32, p: u32) -> String {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(m, t, p, None).unwrap();
    let salt = password_hash::SaltString::encode_b64(b"fleetgate-salt!!").unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

#[test]
fn an_idp_has_one_argon2_parameter_set_and_the_error_names_the_clients() {
    let (small, big) = (argon2id("s1", 8, 1, 1), argon2id("s2", 16, 1, 1));
    let e = one_error(|v| {
        v["idp"]["clients"] = json!([
            {"id": "web", "secret": {"argon2Hash": small}, "scopes": ["orders:read"]},
            {"id": "batch", "secret": {"argon2Hash": big}, "scopes": ["orders:read"]},
            {"id": "partner", "secret": {"argon2Hash": small}, "scopes": ["orders:read"]},
        ]);
    });
    assert!(
        e.contains("2 parameter sets")
            && e.contains("argon2id v=19 m=8,t=1,p=1 with a 32-byte output: web, partner")
            && e.contains("m=16,t=1,p=1 with a 32-byte output: batch"),
        "{e}"
    );
    assert!(!e.contains(&small[30..]) && !e.contains(&big[30..]), "{e}");
    // One set: fine.
    let mut ok = valid();
    ok["idp"]["clients"] = json!([
        {"id": "web", "secret": {"argon2Hash": small}, "scopes": ["orders:read"]},
        {"id": "partner", "secret": {"argon2Hash": argon2id("s3", 8, 1, 1)}, "scopes": ["orders:read"]},
    ]);
    let b: Bundle = serde_json::from_value(ok).unwrap();
    if let Err(e) = compile(&b) {
        panic!("{e}");
    }
}

#[test]
fn argon2_costs_are_capped() {
    // A PHC string is only read, never computed, here: the cost is in its text.
    let hash = argon2id("s", 8, 1, 1).replace("m=8,t=1,p=1", "m=1048576,t=1,p=1");
    let e = one_error(|v| {
        v["idp"]["clients"] =
            json!([{"id": "web", "secret": {"argon2Hash": hash}, "scopes": ["orders:read"]}]);
    });
    assert!(
        e.contains("m (memory, KiB) is 1048576, over the gateway's cap of 262144"),
        "{e}"
    );
    let hash = argon2id("s", 8, 1, 1).replace("m=8,t=1,p=1", "m=8,t=100,p=1");
    let e = one_error(|v| {
        v["idp"]["clients"] =
            json!([{"id": "web", "secret": {"argon2Hash": hash}, "scopes": ["orders:read"]}]);
    });
    assert!(e.contains("t (passes) is 100"), "{e}");
}
