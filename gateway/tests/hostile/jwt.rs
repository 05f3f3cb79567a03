//! Bearer tokens built to be misread: a header marking an unknown extension as critical, a
//! token hundreds of kilobytes long with a valid signature, and claims given as lists or
//! objects where a policy expects one value.

use serde_json::{Value, json};

use crate::support::*;

const ISSUER: &str = "partner-sso";
const UPSTREAM_REQUESTS: &str = "fleetgate_gateway_upstream_requests_total";

/// A gateway trusting `partner-sso` (inline JWKS with the fixture key `issuer-rsa`) on four
/// routes: `/open/..` (any valid token; forwards `sub`, `tenant`, `groups`, `org`),
/// `/acme/..` (tenant `acme`), `/b/..` (tenant `b`), and a public `/pub/..`.
fn gateway() -> Gw {
    let up = echo_backend();
    let all: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    let forward = json!({
        "sub": "X-Fleetgate-Subject", "tenant": "X-Fleetgate-Tenant",
        "groups": "X-Fleetgate-Groups", "org": "X-Fleetgate-Org",
    });
    let b = bundle(
        json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "authPolicies": {
                "open": {"issuers": [ISSUER], "forwardClaims": forward},
                "acme": {"issuers": [ISSUER], "requiredClaims": {"tenant": ["acme"]},
                         "forwardClaims": forward},
                "b": {"issuers": [ISSUER], "requiredClaims": {"tenant": ["b"]},
                      "forwardClaims": forward},
            },
            "routes": [
                {"name": "open", "methods": ["GET"], "path": "/open/{*rest}", "backend": "echo",
                 "auth": {"policy": "open"}},
                {"name": "acme", "methods": ["GET"], "path": "/acme/{*rest}", "backend": "echo",
                 "auth": {"policy": "acme"}},
                {"name": "b", "methods": ["GET"], "path": "/b/{*rest}", "backend": "echo",
                 "auth": {"policy": "b"}},
                {"name": "pub", "methods": ["GET"], "path": "/pub/{*rest}", "backend": "echo",
                 "public": true},
            ],
        }),
        json!({
            "trustedIssuers": [{
                "name": ISSUER, "issuer": ISS, "jwks": {"keys": [all["issuer-rsa"].clone()]},
                "audiences": [AUD], "algorithms": ["RS256"],
            }],
        }),
    );
    Gw::start(&b, &[])
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Valid claims for the test issuer, with `extra` merged in.
fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 600});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// `claims` signed by the issuer's real key under `header` (RS256, kid `issuer-rsa`).
fn sign_with(header: jsonwebtoken::Header, claims: &Value) -> String {
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(fixture("issuer-rsa.pem").as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn rs256() -> jsonwebtoken::Header {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("issuer-rsa".into());
    h
}

fn sign(claims: &Value) -> String {
    sign_with(rs256(), claims)
}

/// How many requests the gateway sent to the echo backend for `route`.
fn upstream_requests(gw: &Gw, route: &str) -> f64 {
    metric(
        &gw.metrics(),
        UPSTREAM_REQUESTS,
        &[&format!("route=\"{route}\"")],
    )
}

fn www_authenticate(response: &str) -> String {
    let head = response.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("www-authenticate")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// The echoed request's headers by lowercase name.
fn echoed_headers(echoed: &Value) -> Vec<(String, String)> {
    echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_token_marking_an_unknown_extension_critical_is_refused() {
    let gw = gateway();
    let mut header = rs256();
    header.crit = Some(vec!["x-unknown".into()]);
    header.extras.insert("x-unknown", "must be understood");
    let token = sign_with(header, &claims(json!({})));
    let (status, response) = gw.get("/open/x", &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(status, 401, "{response}");
    let challenge = www_authenticate(&response);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(challenge.contains("crit"), "{challenge}");
    assert_eq!(upstream_requests(&gw, "open"), 0.0);

    // The same claims without `crit` pass: the refusal was the header's.
    let token = sign(&claims(json!({})));
    gw.echoed("/open/x", &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(upstream_requests(&gw, "open"), 1.0);
}

#[test]
fn an_oversized_token_with_a_valid_signature_never_reaches_the_backend() {
    let gw = gateway();
    // Just over the token cap: refused by auth itself, whatever the server's header limits.
    let token = sign(&claims(json!({"pad": "x".repeat(8 * 1024)})));
    let (status, response) = gw.get("/open/x", &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(status, 401, "{response}");
    let challenge = www_authenticate(&response);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(challenge.contains("too large"), "{challenge}");

    // About 270 kB: refused (by auth, or earlier by a header size limit), never forwarded.
    let token = sign(&claims(json!({"pad": "x".repeat(200 * 1024)})));
    assert!(token.len() > 260_000, "{}", token.len());
    let (status, response) = gw.get("/open/x", &[("authorization", &format!("Bearer {token}"))]);
    assert!(
        status == 401 || status == 431,
        "{}",
        &response[..response.len().min(300)]
    );
    assert!(!response.contains(&token[..64]), "the token came back");
    assert_eq!(upstream_requests(&gw, "open"), 0.0);

    // A token of ordinary size still reaches the backend (and proves the counter counts).
    let token = sign(&claims(json!({"pad": "x".repeat(1024)})));
    gw.echoed("/open/x", &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(upstream_requests(&gw, "open"), 1.0);
}

#[test]
fn a_list_claim_does_not_meet_a_one_value_requirement() {
    let gw = gateway();
    let bearer = |tenant: Value| format!("Bearer {}", sign(&claims(json!({"tenant": tenant}))));
    for (path, tenant) in [
        ("/b/x", json!(["b", "a"])),
        ("/acme/x", json!(["b", "a"])),
        ("/acme/x", json!(["acme"])),
        ("/acme/x", json!({"acme": true})),
    ] {
        let (status, response) = gw.get(path, &[("authorization", &bearer(tenant.clone()))]);
        assert_eq!(status, 403, "{path} with tenant {tenant}: {response}");
        assert!(
            www_authenticate(&response).contains("insufficient_scope"),
            "{response}"
        );
        assert!(
            !response.contains("acme\"") && !response.contains("[\"b\""),
            "a claim value was quoted: {response}"
        );
    }
    assert_eq!(
        upstream_requests(&gw, "acme") + upstream_requests(&gw, "b"),
        0.0
    );

    // The one string value passes, and is forwarded as it is.
    let echoed = gw.echoed("/acme/x", &[("authorization", &bearer(json!("acme")))]);
    let headers = echoed_headers(&echoed);
    assert!(
        headers.contains(&("x-fleetgate-tenant".into(), "acme".into())),
        "{headers:?}"
    );
}

#[test]
fn a_list_or_object_claim_is_never_forwarded() {
    let gw = gateway();
    let token = sign(&claims(json!({
        "tenant": ["b", "a"], "groups": ["admins"], "org": {"id": "o-1"},
    })));
    // The client also sends its own copies: they are stripped, and nothing takes their place.
    let echoed = gw.echoed(
        "/open/x",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-fleetgate-tenant", "forged"),
            ("x-fleetgate-groups", "admins"),
        ],
    );
    let headers = echoed_headers(&echoed);
    assert!(
        headers.contains(&("x-fleetgate-subject".into(), "alice".into())),
        "{headers:?}"
    );
    for name in [
        "x-fleetgate-tenant",
        "x-fleetgate-groups",
        "x-fleetgate-org",
    ] {
        assert!(
            !headers.iter().any(|(n, _)| n == name),
            "{name} reached the backend: {headers:?}"
        );
    }
}
