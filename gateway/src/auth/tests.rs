//! Unit tests of bearer-token checks: the claim policy, token times, keys and JWKS caches.

use std::future::Future;
use std::pin::Pin;

use super::*;
use crate::jwks::{JwksFetcher, shared_jwks};
use serde_json::json;

fn issuer(name: &str) -> Issuer {
    Issuer {
        name: name.into(),
        iss: format!("https://{name}.example"),
        audiences: vec!["api".into()],
        algorithms: vec![Algorithm::RS256],
        keys: KeySource::Unavailable("test".into()),
    }
}

fn req(issuers: &[&str], scopes: &[&str]) -> Requirement {
    Requirement {
        policy: "p".into(),
        issuers: issuers.iter().map(|s| s.to_string()).collect(),
        audiences: vec![],
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        required_claims: BTreeMap::new(),
        forward_claims: BTreeMap::new(),
        leeway_secs: 30,
    }
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().expect("object").clone()
}

#[test]
fn scopes_come_from_scope_or_scp() {
    let c = claims(json!({"scope": "a b", "scp": ["c"]}));
    assert_eq!(token_scopes(&c), BTreeSet::from(["a", "b", "c"]));
    // The check of one scope reads the same claims the set does.
    for s in ["a", "b", "c"] {
        assert!(has_scope(&c, s), "{s}");
    }
    for s in ["", "d", "a b", "ab"] {
        assert!(!has_scope(&c, s), "{s:?}");
    }
    assert!(!has_scope(&claims(json!({"scope": 7})), "7"));
}

#[test]
fn requirement_checks_issuer_audience_claims_and_scopes_in_that_order() {
    let i = issuer("partner");
    let ok = claims(json!({"aud": ["other", "api"], "scope": "orders:read", "tenant": "acme"}));
    assert_eq!(
        check_requirement(&ok, &i, &req(&["partner"], &["orders:read"])),
        Ok(())
    );
    assert!(matches!(
        check_requirement(&ok, &i, &req(&["local"], &[])),
        Err(Unmet::NotForUs(_))
    ));
    let wrong_aud = claims(json!({"aud": "billing", "scope": "orders:read"}));
    assert!(matches!(
        check_requirement(&wrong_aud, &i, &req(&["partner"], &[])),
        Err(Unmet::NotForUs(_))
    ));
    let mut r = req(&["partner"], &["orders:read", "orders:write"]);
    assert_eq!(
        check_requirement(&ok, &i, &r),
        Err(Unmet::Scopes(BTreeSet::from(["orders:write".to_string()])))
    );
    r.scopes.clear();
    r.required_claims
        .insert("tenant".into(), vec!["globex".into()]);
    assert!(matches!(
        check_requirement(&ok, &i, &r),
        Err(Unmet::Claim(_))
    ));
    r.required_claims.insert("tenant".into(), vec![]);
    assert_eq!(check_requirement(&ok, &i, &r), Ok(()));
    r.required_claims.insert("region".into(), vec![]);
    assert!(matches!(
        check_requirement(&ok, &i, &r),
        Err(Unmet::Claim(_))
    ));
    // A policy's own audiences replace the issuer's.
    let mut own = req(&["partner"], &[]);
    own.audiences = vec!["billing".into()];
    assert_eq!(check_requirement(&wrong_aud, &i, &own), Ok(()));
}

#[test]
fn required_claims_match_only_exact_strings() {
    let i = issuer("partner");
    let mut r = req(&["partner"], &[]);
    r.required_claims.insert(
        "tenant".into(),
        vec!["acme".into(), "1".into(), "true".into()],
    );
    let with = |tenant: Value| claims(json!({"aud": "api", "tenant": tenant}));
    assert_eq!(check_requirement(&with(json!("acme")), &i, &r), Ok(()));
    for not_a_string in [
        json!(["acme"]),
        json!(["other", "acme"]),
        json!({"acme": true}),
        json!(1),
        json!(true),
        Value::Null,
        json!("ACME"),
    ] {
        assert!(
            matches!(
                check_requirement(&with(not_a_string.clone()), &i, &r),
                Err(Unmet::Claim(_))
            ),
            "{not_a_string} met a string requirement"
        );
    }
    // Present (an empty list of values): any scalar, but no list, object or null.
    r.required_claims.insert("tenant".into(), vec![]);
    for scalar in [json!("x"), json!(""), json!(7), json!(false)] {
        assert_eq!(check_requirement(&with(scalar), &i, &r), Ok(()));
    }
    for other in [json!([]), json!(["x"]), json!({}), Value::Null] {
        assert!(
            matches!(
                check_requirement(&with(other.clone()), &i, &r),
                Err(Unmet::Claim(_))
            ),
            "{other} counted as present"
        );
    }
}

#[test]
fn only_scalar_claims_are_forwarded() {
    let i = issuer("partner");
    let mut r = req(&["partner"], &[]);
    for (claim, header) in [
        ("tenant", "x-tenant"),
        ("groups", "x-groups"),
        ("org", "x-org"),
        ("gone", "x-gone"),
        ("level", "x-level"),
        ("admin", "x-admin"),
        ("absent", "x-absent"),
    ] {
        r.forward_claims.insert(claim.into(), header.into());
    }
    let c = claims(json!({
        "aud": "api", "sub": "alice", "tenant": "acme", "groups": ["b", "a"],
        "org": {"id": "x"}, "gone": null, "level": 3, "admin": false,
    }));
    let p = evaluate(&c, &i, &[r]).expect("accepted");
    let forwarded: BTreeMap<&str, &str> = p
        .forward
        .iter()
        .map(|(h, v)| (h.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        forwarded,
        BTreeMap::from([("x-admin", "false"), ("x-level", "3"), ("x-tenant", "acme")])
    );
}

#[test]
fn refusals_never_quote_claim_values() {
    let i = issuer("partner");
    let c = claims(json!({"aud": "api", "tenant": "secret-tenant-name"}));
    let mut r = req(&["partner"], &[]);
    r.required_claims
        .insert("tenant".into(), vec!["acme".into()]);
    let Err(Unmet::Claim(msg)) = check_requirement(&c, &i, &r) else {
        panic!("expected a claim refusal")
    };
    assert!(!msg.contains("secret-tenant-name"), "{msg}");
}

#[test]
fn www_authenticate_follows_rfc_6750() {
    let e = AuthError::unauthorized("", "a bearer token is required");
    assert_eq!(
        e.www_authenticate().as_deref(),
        Some("Bearer realm=\"fleetgate\"")
    );
    let e = AuthError {
        status: 403,
        code: "insufficient_scope",
        description: "missing scope \"x\"".into(),
        scope: Some("x y".into()),
        unavailable: None,
    };
    assert_eq!(
        e.www_authenticate().as_deref(),
        Some(
            "Bearer realm=\"fleetgate\", error=\"insufficient_scope\", error_description=\"missing scope 'x'\", scope=\"x y\""
        )
    );
}

// The verified-token cache, with real RS256 tokens signed by the test keys in
// tests/fixtures/keys.

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../tests/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn jwks(names: &[&str]) -> JwkSet {
    let all: BTreeMap<String, Value> =
        serde_json::from_str(&fixture("jwks.json")).expect("jwks.json");
    serde_json::from_value(json!({
        "keys": names.iter().map(|n| all[*n].clone()).collect::<Vec<_>>()
    }))
    .expect("a JWKS")
}

fn sign(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(fixture("issuer-rsa.pem").as_bytes())
        .expect("issuer-rsa.pem");
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("issuer-rsa".into());
    jsonwebtoken::encode(&header, &claims, &key).expect("signed")
}

fn bearer_of(token: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    h
}

fn static_issuer(name: &str, key_names: &[&str]) -> Issuer {
    Issuer {
        name: name.into(),
        iss: "https://sso.example".into(),
        audiences: vec!["api".into()],
        algorithms: vec![Algorithm::RS256],
        keys: KeySource::Static(Arc::new(keys_of(&jwks(key_names)))),
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn token_for(exp: u64) -> String {
    sign(json!({"iss": "https://sso.example", "aud": "api", "sub": "alice", "exp": exp}))
}

#[test]
fn token_times_follow_jsonwebtoken_rules() {
    let t = 1_000_000;
    assert!(check_times(t, None, 0, t).is_ok());
    assert!(check_times(t - 1, None, 0, t).is_err());
    assert!(check_times(t - 30, None, 30, t).is_ok());
    assert!(check_times(t - 31, None, 30, t).is_err());
    assert!(check_times(t + 60, Some(t + 30), 30, t).is_ok());
    let e = check_times(t + 60, Some(t + 31), 30, t).expect_err("not yet");
    assert_eq!(
        (e.status, e.description.as_str()),
        (401, "the token is not valid yet")
    );
    let e = check_times(t - 100, None, 30, t).expect_err("expired");
    assert_eq!(e.description, "the token has expired");
}

#[tokio::test]
async fn a_token_is_verified_once_then_served_from_the_cache() {
    let issuers = HashMap::from([("sso".to_string(), static_issuer("sso", &["issuer-rsa"]))]);
    let reqs = [req(&["sso"], &[])];
    let cache = VerifiedTokens::new(16);
    let token = token_for(now() + 600);
    for _ in 0..3 {
        let p = authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
            .await
            .expect("accepted");
        assert_eq!(p.subject.as_deref(), Some("alice"));
    }
    assert_eq!((cache.len(), cache.hits()), (1, 2));

    // Turned off: nothing is remembered, everything still works.
    let off = VerifiedTokens::new(0);
    authenticate(&bearer_of(&token), &reqs, &issuers, &off)
        .await
        .expect("accepted");
    assert_eq!((off.len(), off.hits()), (0, 0));

    // Refused tokens are never stored.
    let cache = VerifiedTokens::new(16);
    let expired = token_for(now() - 3600);
    for _ in 0..2 {
        let e = authenticate(&bearer_of(&expired), &reqs, &issuers, &cache)
            .await
            .expect_err("expired");
        assert_eq!(e.description, "the token has expired");
    }
    assert!(cache.is_empty());
}

#[tokio::test]
async fn a_cached_token_still_expires_and_keeps_its_policy_checks() {
    let issuers = HashMap::from([("sso".to_string(), static_issuer("sso", &["issuer-rsa"]))]);
    let cache = VerifiedTokens::new(16);
    let exp = now() + 60;
    let token = token_for(exp);
    let reqs = [req(&["sso"], &[])];
    authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
        .await
        .expect("accepted");
    // Later, past exp and the 30 s leeway: the cached entry is refused like a fresh one.
    let e = authenticate_at(&bearer_of(&token), &reqs, &issuers, &cache, exp + 31)
        .await
        .expect_err("expired by now");
    assert_eq!(
        (e.status, e.description.as_str()),
        (401, "the token has expired")
    );
    assert_eq!(cache.hits(), 1);
    // A route that needs a scope the token lacks: 403 from the cached claims.
    let scoped = [req(&["sso"], &["orders:write"])];
    let e = authenticate(&bearer_of(&token), &scoped, &issuers, &cache)
        .await
        .expect_err("missing scope");
    assert_eq!(e.status, 403);
}

#[tokio::test]
async fn a_cached_token_counts_only_for_the_issuer_that_verified_it() {
    // Two trusted issuers claim the same `iss`; only "real" holds the signing key.
    let issuers = HashMap::from([
        ("real".to_string(), static_issuer("real", &["issuer-rsa"])),
        ("other".to_string(), static_issuer("other", &["other-rsa"])),
    ]);
    let cache = VerifiedTokens::new(16);
    let token = token_for(now() + 600);
    authenticate(&bearer_of(&token), &[req(&["real"], &[])], &issuers, &cache)
        .await
        .expect("accepted by real");
    let e = authenticate(
        &bearer_of(&token),
        &[req(&["other"], &[])],
        &issuers,
        &cache,
    )
    .await
    .expect_err("other has no such key");
    assert_eq!(e.status, 401);
    assert_eq!(e.description, "the token's signing key is unknown");
}

/// Serves `jwks(["issuer-rsa"])` and counts the fetches.
#[derive(Default)]
struct Counting(std::sync::atomic::AtomicUsize);

impl JwksFetcher for Counting {
    fn fetch<'a>(
        &'a self,
        _url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send + 'a>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { Ok(jwks(&["issuer-rsa"])) })
    }
}

/// An issuer `sso` whose keys come from a JWKS URL, and the fetcher's call counter: a
/// refusal that leaves it at 0 came before any key was looked up.
fn remote_issuer() -> (HashMap<String, Issuer>, Arc<Counting>) {
    let fetcher = Arc::new(Counting::default());
    let mut issuer = static_issuer("sso", &[]);
    issuer.keys = KeySource::Remote(Arc::new(RemoteJwks::new(
        "https://sso.example/jwks".into(),
        std::time::Duration::ZERO,
        fetcher.clone(),
    )));
    (HashMap::from([("sso".to_string(), issuer)]), fetcher)
}

fn fetches(f: &Counting) -> usize {
    f.0.load(std::sync::atomic::Ordering::SeqCst)
}

fn sign_with(header: jsonwebtoken::Header, claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(fixture("issuer-rsa.pem").as_bytes())
        .expect("issuer-rsa.pem");
    jsonwebtoken::encode(&header, &claims, &key).expect("signed")
}

fn rs256() -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
    header.kid = Some("issuer-rsa".into());
    header
}

/// A well-formed token with a `pad` claim of `n` bytes.
fn padded(n: usize) -> String {
    sign(
        json!({"iss": "https://sso.example", "aud": "api", "sub": "alice",
                "exp": now() + 600, "pad": "x".repeat(n)}),
    )
}

#[tokio::test]
async fn a_token_with_crit_is_refused_before_any_key_is_looked_up() {
    let (issuers, fetcher) = remote_issuer();
    let reqs = [req(&["sso"], &[])];
    let cache = VerifiedTokens::new(16);
    let good = token_for(now() + 600);
    let claims = json!({"iss": "https://sso.example", "aud": "api", "sub": "alice",
                        "exp": now() + 600});

    let mut header = rs256();
    header.crit = Some(vec!["x-unknown".into()]);
    header.extras.insert("x-unknown", "must-be-understood");
    let critical = sign_with(header, claims.clone());
    let e = authenticate(&bearer_of(&critical), &reqs, &issuers, &cache)
        .await
        .expect_err("crit");
    assert_eq!((e.status, e.code), (401, "invalid_token"));
    assert!(e.description.contains("crit"), "{}", e.description);
    assert!(!e.description.contains("x-unknown"), "{}", e.description);

    // An empty `crit` is forbidden by the RFC; other types are malformed. jsonwebtoken
    // cannot write these headers, so they are put together by hand (signed all the same).
    for crit in [json!([]), json!("x-unknown"), json!([1]), Value::Null] {
        let header = json!({"alg": "RS256", "kid": "issuer-rsa", "crit": crit});
        let token = with_header(&good, &header);
        let e = authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
            .await
            .expect_err("malformed crit");
        assert_eq!((e.status, e.code), (401, "invalid_token"), "{crit}");
        assert!(e.description.contains("crit"), "{crit}: {}", e.description);
    }
    assert_eq!(fetches(&fetcher), 0, "no key lookup for a refused token");
    assert!(cache.is_empty());

    // The same token without `crit` is fine.
    authenticate(&bearer_of(&good), &reqs, &issuers, &cache)
        .await
        .expect("accepted");
    assert_eq!(fetches(&fetcher), 1);
}

/// `token` with its header segment replaced by `header` (the signature no longer fits,
/// which does not matter to checks made before the signature).
fn with_header(token: &str, header: &Value) -> String {
    use base64::Engine as _;
    let (_, rest) = token.split_once('.').expect("a JWT");
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(header).expect("JSON"));
    format!("{encoded}.{rest}")
}

#[tokio::test]
async fn an_oversized_token_is_refused_before_any_key_is_looked_up() {
    let (issuers, fetcher) = remote_issuer();
    let reqs = [req(&["sso"], &[])];
    let cache = VerifiedTokens::new(16);
    for size in [MAX_TOKEN_BYTES, 270 * 1024] {
        let token = padded(size);
        assert!(token.len() > MAX_TOKEN_BYTES);
        let e = authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
            .await
            .expect_err("too large");
        assert_eq!((e.status, e.code), (401, "invalid_token"));
        assert!(e.description.contains("too large"), "{}", e.description);
    }
    // Padding with whitespace inside the header does not get a big token past the cap.
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}  ", "a".repeat(MAX_TOKEN_BYTES + 1))
            .parse()
            .expect("header"),
    );
    let e = authenticate(&h, &reqs, &issuers, &cache)
        .await
        .expect_err("too large");
    assert!(e.description.contains("too large"), "{}", e.description);
    assert_eq!(fetches(&fetcher), 0, "no key lookup for an oversized token");
    assert!(cache.is_empty());

    // The largest token that fits is verified as usual.
    let mut n = MAX_TOKEN_BYTES * 3 / 4;
    let fits = loop {
        let t = padded(n);
        if t.len() > MAX_TOKEN_BYTES {
            n -= 1;
            continue;
        }
        break t;
    };
    assert!(fits.len() > MAX_TOKEN_BYTES - 8, "{}", fits.len());
    authenticate(&bearer_of(&fits), &reqs, &issuers, &cache)
        .await
        .expect("accepted");
    assert_eq!(fetches(&fetcher), 1);
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let issuers = HashMap::from([("sso".to_string(), static_issuer("sso", &["issuer-rsa"]))]);
    let token = token_for(now() + 600);
    let mut h = bearer_of(&token);
    h.append(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    let e = authenticate(
        &h,
        &[req(&["sso"], &[])],
        &issuers,
        &VerifiedTokens::new(16),
    )
    .await
    .expect_err("two headers");
    assert_eq!((e.status, e.code), (401, "invalid_request"));
}

#[test]
fn jwks_caches_are_shared_while_a_bundle_uses_them_and_dropped_after() {
    let mut map = HashMap::new();
    let fetcher: Arc<dyn JwksFetcher> = Arc::new(Counting::default());
    let make = |url: &str| {
        let url = url.to_string();
        let fetcher = fetcher.clone();
        move || RemoteJwks::new(url, std::time::Duration::ZERO, fetcher)
    };
    let a = shared_jwks(&mut map, "https://a/jwks", make("https://a/jwks"));
    let a2 = shared_jwks(&mut map, "https://a/jwks", make("https://a/jwks"));
    assert!(Arc::ptr_eq(&a, &a2), "one cache per URL while in use");
    // Bundles come and go, each with a new URL: only the URLs still in use are kept.
    for n in 0..100 {
        let url = format!("https://issuer-{n}/jwks");
        let held = shared_jwks(&mut map, &url, make(&url));
        assert!(map.len() <= 2, "{} entries", map.len());
        drop(held);
    }
    assert!(map.contains_key("https://a/jwks"));
    drop((a, a2));
    let b = shared_jwks(&mut map, "https://b/jwks", make("https://b/jwks"));
    assert_eq!(map.keys().collect::<Vec<_>>(), ["https://b/jwks"]);
    // A URL used again after it was dropped gets a fresh cache.
    drop(b);
    let b2 = shared_jwks(&mut map, "https://b/jwks", make("https://b/jwks"));
    assert_eq!((b2.generation(), map.len()), (0, 1));
}

struct Rotating(std::sync::Mutex<JwkSet>);

impl JwksFetcher for Rotating {
    fn fetch<'a>(
        &'a self,
        _url: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<JwkSet, String>> + Send + 'a>> {
        let set = self.0.lock().expect("lock").clone();
        Box::pin(async move { Ok(set) })
    }
}

#[tokio::test]
async fn a_refetched_jwks_invalidates_cached_tokens() {
    let fetcher = Arc::new(Rotating(std::sync::Mutex::new(jwks(&["issuer-rsa"]))));
    let remote = Arc::new(RemoteJwks::new(
        "https://sso.example/jwks".into(),
        std::time::Duration::ZERO,
        fetcher.clone(),
    ));
    let mut issuer = static_issuer("sso", &[]);
    issuer.keys = KeySource::Remote(remote.clone());
    let issuers = HashMap::from([("sso".to_string(), issuer)]);
    let reqs = [req(&["sso"], &[])];
    let cache = VerifiedTokens::new(16);
    let token = token_for(now() + 600);
    authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
        .await
        .expect("accepted");
    authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
        .await
        .expect("accepted from the cache");
    assert_eq!(cache.hits(), 1);

    // The issuer retires the key; the gateway refetches (another token's unknown kid).
    *fetcher.0.lock().expect("lock") = jwks(&["other-rsa"]);
    assert!(remote.refresh().await);
    let e = authenticate(&bearer_of(&token), &reqs, &issuers, &cache)
        .await
        .expect_err("its key is gone");
    assert_eq!(e.description, "the token's signing key is unknown");
}
