//! Unit tests of the embedded IdP: token requests, claims, keys, argon2 hashes and workers.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fleetgate_bundle::sensitive::Sensitive;
use http::header::HeaderMap;

use super::verify::VERIFY_WAIT;
use super::*;
use crate::keys::{generate_key, pem_encode};

fn form(body: &str, basic: Option<&str>) -> Result<TokenRequest, OAuthError> {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
    );
    if let Some(b) = basic {
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(b)))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    parse_token_request(&h, body.as_bytes())
}

#[test]
fn basic_and_post_credentials_both_work_and_basic_is_form_decoded() {
    let r = form(
        "grant_type=client_credentials&scope=a+b",
        Some("web%20portal:s%3Acret"),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(r.client_id, "web portal");
    assert_eq!(r.client_secret.expose(), "s:cret");
    assert_eq!(r.method, AuthMethod::Basic);
    assert_eq!(r.scope.as_deref(), Some("a b"));
    let r = form(
        "grant_type=client_credentials&client_id=web&client_secret=s3cret",
        None,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!((r.client_id.as_str(), r.method), ("web", AuthMethod::Post));
    assert_eq!(r.scope, None);
}

#[test]
fn malformed_requests_get_the_rfc_6749_error() {
    let code = |body: &str, basic: Option<&str>| {
        form(body, basic).map_err(|e| (e.status.as_u16(), e.code, e.challenge))
    };
    assert_eq!(
        code("client_id=a&client_secret=b", None),
        Err((400, "invalid_request", false))
    );
    assert_eq!(
        code("grant_type=password&client_id=a&client_secret=b", None),
        Err((400, "unsupported_grant_type", false))
    );
    assert_eq!(
        code("grant_type=client_credentials", None),
        Err((401, "invalid_client", true))
    );
    assert_eq!(
        code("grant_type=client_credentials&client_secret=b", Some("a:b")),
        Err((400, "invalid_request", false))
    );
    assert_eq!(
        code(
            "grant_type=client_credentials&scope=a&scope=b&client_id=a&client_secret=b",
            None
        ),
        Err((400, "invalid_request", false))
    );
    assert_eq!(
        code("grant_type=client_credentials", Some("no-colon")),
        Err((401, "invalid_client", true))
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    assert_eq!(
        parse_token_request(&h, b"{}").map_err(|e| e.code),
        Err("invalid_request")
    );
}

#[test]
fn a_secret_is_never_in_the_debug_output() {
    let r = form(
        "grant_type=client_credentials&client_id=a&client_secret=hunter2",
        None,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    #[allow(clippy::use_debug)]
    let shown = format!("{r:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn scopes_are_limited_to_the_clients_and_default_to_all_of_them() {
    let allowed = vec!["orders:read".to_string(), "orders:write".to_string()];
    assert_eq!(grant_scopes(None, &allowed), Ok(allowed.clone()));
    assert_eq!(
        grant_scopes(Some("orders:read  orders:read"), &allowed),
        Ok(vec!["orders:read".to_string()])
    );
    let e = grant_scopes(Some("orders:read payments:refund"), &allowed).unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (400, "invalid_scope"));
    assert!(e.description.contains("payments:refund"));
}

#[test]
fn claims_name_the_tenant_and_account_and_expire_after_the_ttl() {
    let account = AccountInfo {
        name: "acme-prod".into(),
        id: "423456789012".into(),
        region: "us-east-1".into(),
        stage: "prod".into(),
        tenant: "acme".into(),
        labels: BTreeMap::new(),
    };
    let c = claims(
        "https://auth.acme.example",
        &["https://api.acme.example".to_string()],
        &account,
        Grant {
            client_id: "web-portal",
            scopes: &["orders:read".to_string(), "orders:write".to_string()],
            ttl: Duration::from_secs(600),
        },
        1_000,
        "j1",
    );
    assert_eq!(
        Value::Object(c),
        json!({"iss": "https://auth.acme.example", "sub": "web-portal", "aud": "https://api.acme.example",
               "iat": 1000, "nbf": 1000, "exp": 1600, "jti": "j1", "client_id": "web-portal",
               "scope": "orders:read orders:write", "tenant": "acme", "account": "acme-prod",
               "account_id": "423456789012"})
    );
}

#[test]
fn generated_keys_sign_tokens_their_public_halves_verify() {
    for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256] {
        let pem = generate_key(alg).unwrap_or_else(|e| panic!("{e}"));
        let m = key_material(alg, &pem).unwrap_or_else(|e| panic!("{e}"));
        let a = crate::keys::signing_algorithm(alg);
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(a),
            &json!({"sub": "x", "exp": 4_000_000_000u64}),
            &m.encoding,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut v = jsonwebtoken::Validation::new(a);
        v.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(&token, &m.decoding, &v).unwrap_or_else(|e| panic!("{e}"));
    }
    let h = hash_secret("s3cret").unwrap_or_else(|e| panic!("{e}"));
    use argon2::PasswordVerifier as _;
    let parsed = argon2::PasswordHash::new(&h).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        argon2::Argon2::default()
            .verify_password(b"s3cret", &parsed)
            .is_ok()
    );
}

#[test]
fn key_errors_never_quote_the_key() {
    let pem = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n";
    for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256] {
        let e = key_material(alg, pem).unwrap_err();
        assert!(!e.contains("c2VjcmV0") && !e.contains("BEGIN"), "{e}");
    }
}

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/keys")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn rsa_keys_read_by_aws_lc_give_the_published_jwk_in_pkcs8_and_pkcs1() {
    let jwks: Value = serde_json::from_str(&fixture("jwks.json")).unwrap();
    let want = &jwks["issuer-rsa"];
    let pkcs8 = fixture("issuer-rsa.pem");
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
    let m = key_material(SigningAlgorithm::RS256, &pkcs8).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        Value::Object(m.public_jwk.clone()),
        json!({"kty": "RSA", "n": want["n"], "e": want["e"]})
    );
    // The same key as PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    let pkcs1 = pem_encode("RSA PRIVATE KEY", m.encoding.as_bytes());
    let m1 = key_material(SigningAlgorithm::RS256, &pkcs1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m1.public_jwk, m.public_jwk);
    // The EC fixture is no RSA key, nor is the public half.
    assert!(key_material(SigningAlgorithm::RS256, &fixture("local-ec.pem")).is_err());
    assert!(key_material(SigningAlgorithm::RS256, &fixture("issuer-rsa.pub.pem")).is_err());
}

/// The argon2id PHC hash of `secret` with parameters `m`, `t`, `p`.
fn argon2id(secret: &str, m: u32, t: u32, p: u32) -> String {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(m, t, p, None).unwrap();
    let salt = argon2::password_hash::SaltString::encode_b64(b"fleetgate-salt!!").unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn account() -> AccountInfo {
    AccountInfo {
        name: "acme-prod".into(),
        id: "423456789012".into(),
        region: "us-east-1".into(),
        stage: "prod".into(),
        tenant: "acme".into(),
        labels: BTreeMap::new(),
    }
}

/// An IdP config signing with the EC fixture, with `clients` and a scope `a`.
fn idp_config(clients: Value, limits: Value) -> IdpConfig {
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/keys/local-ec.pem");
    serde_json::from_value(json!({
        "issuer": {"url": "https://idp.acme.example", "audiences": ["https://api.acme.example"],
                   "signingKeys": {"active": {"kid": "k1", "algorithm": "ES256",
                                              "privateKey": {"file": key.to_str().unwrap()}}},
                   "tokenRateLimit": limits},
        "scopes": [{"name": "a"}],
        "clients": clients,
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn build(config: &IdpConfig, secrets: &Resolved) -> (Idp, Vec<String>) {
    let mut warnings = Vec::new();
    let idp = Idp::build(config, &account(), secrets, None, &mut warnings).unwrap();
    (idp, warnings)
}

fn ec_secret() -> (fleetgate_bundle::bundle::SecretRef, String) {
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/keys/local-ec.pem");
    (
        fleetgate_bundle::bundle::SecretRef::File(key.to_str().unwrap().into()),
        fixture("local-ec.pem"),
    )
}

#[test]
fn the_dummy_hash_has_exactly_the_parameters_of_the_clients_hashes() {
    let hashed = fleetgate_bundle::bundle::SecretRef::Env("BATCH_HASH".into());
    let config = idp_config(
        json!([
            {"id": "web", "secret": {"argon2Hash": argon2id("web-secret", 16, 2, 1)}, "scopes": ["a"]},
            {"id": "partner", "secret": {"argon2Hash": argon2id("partner-secret", 16, 2, 1)}, "scopes": ["a"]},
            {"id": "batch", "secret": {"ref": {"env": "BATCH_HASH"}}, "scopes": ["a"]},
        ]),
        json!({}),
    );
    // A hash read at run time with other parameters is refused, naming its client.
    let secrets = Resolved::from_values([
        ec_secret(),
        (hashed.clone(), argon2id("batch-secret", 8, 1, 1)),
    ]);
    let (idp, warnings) = build(&config, &secrets);
    let usable: Vec<Argon2Cost> = idp
        .clients
        .values()
        .filter_map(|c| c.hash.as_ref().ok().map(|h| h.cost()))
        .collect();
    assert_eq!(usable.len(), 2);
    assert!(usable.iter().all(|c| *c == idp.dummy.cost()));
    assert_eq!(
        (
            idp.dummy.cost().m_cost,
            idp.dummy.cost().t_cost,
            idp.dummy.salt.len()
        ),
        (16, 2, 16)
    );
    assert!(
        warnings.iter().any(|w| w.contains("client batch")
            && w.contains("m=8,t=1,p=1")
            && w.contains("m=16,t=2,p=1")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("$argon2")),
        "{warnings:?}"
    );
    // With the same parameters it is usable; the dummy is unchanged and matches nothing.
    let secrets =
        Resolved::from_values([ec_secret(), (hashed, argon2id("batch-secret", 16, 2, 1))]);
    let (idp, warnings) = build(&config, &secrets);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(idp.clients.values().all(|c| c.hash.is_ok()));
    let mut memory = Vec::new();
    for id in ["web", "partner", "batch"] {
        let secret = format!("{id}-secret");
        let entry = &idp.clients[id];
        assert!(
            entry
                .hash
                .as_ref()
                .unwrap()
                .verify_with(secret.as_bytes(), &mut memory)
        );
        assert!(!idp.dummy.verify_with(secret.as_bytes(), &mut memory));
    }
    assert_eq!(
        idp.dummy.cost(),
        idp.clients["web"].hash.as_ref().unwrap().cost()
    );
    // Without any usable client hash: argon2's defaults, as `fleetgate up` hashes.
    let (idp, _) = build(
        &idp_config(json!([]), json!({})),
        &Resolved::from_values([ec_secret()]),
    );
    let d = argon2::Params::default();
    assert_eq!(
        (
            idp.dummy.cost().m_cost,
            idp.dummy.cost().t_cost,
            idp.dummy.cost().p_cost
        ),
        (d.m_cost(), d.t_cost(), d.p_cost())
    );
}

fn token_request(client_id: &str, secret: &str) -> axum::extract::Request {
    http::Request::builder()
        .method("POST")
        .uri(TOKEN)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=client_credentials&client_id={client_id}&client_secret={secret}"
        )))
        .unwrap()
}

/// Log ids of a request from `ip` (no client address logged).
fn unlogged(ip: IpAddr) -> RequestLog<'static> {
    static OFF: crate::logging::ClientAddressLog = crate::logging::ClientAddressLog::Off;
    RequestLog::new("-", "-", ip, &OFF)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_client_ids_and_addresses_never_grow_the_limiters_past_their_caps() {
    let config = idp_config(
        json!([{"id": "web", "secret": {"argon2Hash": argon2id("web-secret", 8, 1, 1)}, "scopes": ["a"]}]),
        // Generous bursts that take an hour to earn back: no key is idle during the test.
        json!({"perClient": {"requests": 1, "per": "1h", "burst": 1000000},
               "perIp": {"requests": 1, "per": "1h", "burst": 1000000}}),
    );
    let (idp, _) = build(&config, &Resolved::from_values([ec_secret()]));
    let verifier = Verifier::new(2, 64);
    let n = MAX_IP_KEYS + MAX_CLIENT_KEYS;
    for i in 0..n {
        let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        let (resp, _) = serve(
            &idp,
            Endpoint::Token,
            &verifier,
            ip,
            &unlogged(ip),
            token_request(&format!("nobody-{i}"), "guess"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "request {i}");
    }
    assert_eq!(idp.per_client.keys(), MAX_CLIENT_KEYS);
    assert_eq!(idp.per_ip.keys(), MAX_IP_KEYS);
    // The good client still gets its token (from an address and id counted before).
    let (resp, token) = serve(
        &idp,
        Endpoint::Token,
        &verifier,
        IpAddr::from([10, 0, 0, 1]),
        &unlogged(IpAddr::from([10, 0, 0, 1])),
        token_request("web", "web-secret"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(token.map(|t| t.1), Some(TokenResult::Issued));
}

#[tokio::test]
async fn argon2_runs_on_the_workers_and_a_full_queue_answers_503_at_once() {
    let hash = Arc::new(PhcHash::parse(&argon2id("s", 8, 1, 1)).unwrap());
    let verifier = Verifier::new(1, 4);
    assert_eq!(verifier.workers(), 1);
    assert_eq!(
        verifier.verify(hash.clone(), Sensitive("s".into())).await,
        Ok(true)
    );
    assert_eq!(
        verifier.verify(hash.clone(), Sensitive("x".into())).await,
        Ok(false)
    );
    // No worker ever takes a job: a queue of one is full after one request.
    let (jobs, _rx) = mpsc::sync_channel(1);
    let stuck = Arc::new(Verifier { jobs, workers: 0 });
    let waiting = tokio::spawn({
        let (stuck, hash) = (stuck.clone(), hash.clone());
        async move {
            stuck
                .verify(hash, Sensitive("s".into()))
                .await
                .map_err(|e| e.code)
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let refused = stuck.verify(hash, Sensitive("s".into())).await;
    assert_eq!(refused.map_err(|e| e.code), Err("temporarily_unavailable"));
    assert!(started.elapsed() < Duration::from_millis(500));
    // The queued one gives up after the wait cap.
    assert_eq!(waiting.await.unwrap(), Err("temporarily_unavailable"));
    assert!(started.elapsed() <= VERIFY_WAIT + Duration::from_secs(1));
}

/// What the argon2 crate itself makes of a PHC string, with the caps: the reading the
/// bundle crate's parser must agree with (the same hashes accepted, the same errors).
fn argon2_reading(phc: &str) -> Result<Argon2Cost, String> {
    let not_phc = || "not an argon2 hash in PHC format ($argon2id$v=19$...)".to_string();
    let parsed = argon2::PasswordHash::new(phc).map_err(|_| not_phc())?;
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).map_err(|_| not_phc())?;
    let version = match parsed.version {
        None => argon2::Version::default(),
        Some(v) => argon2::Version::try_from(v)
            .map_err(|_| format!("argon2 version {v} is not one argon2 has"))?,
    };
    let params = argon2::Params::try_from(&parsed)
        .map_err(|_| "the argon2 hash's parameters are not valid".to_string())?;
    let (Some(salt), Some(hash)) = (parsed.salt, parsed.hash) else {
        return Err("the argon2 hash has no salt or no output".into());
    };
    salt.decode_b64(&mut [0u8; 64])
        .map_err(|_| "the argon2 hash's salt is not valid".to_string())?;
    let cost = Argon2Cost {
        algorithm: match algorithm {
            argon2::Algorithm::Argon2d => fleetgate_bundle::idp::Argon2Algorithm::Argon2d,
            argon2::Algorithm::Argon2i => fleetgate_bundle::idp::Argon2Algorithm::Argon2i,
            argon2::Algorithm::Argon2id => fleetgate_bundle::idp::Argon2Algorithm::Argon2id,
        },
        version: u32::from(version),
        m_cost: params.m_cost(),
        t_cost: params.t_cost(),
        p_cost: params.p_cost(),
        output_len: hash.len(),
    };
    check_cost(&cost)?;
    Ok(cost)
}

#[test]
fn hashes_are_read_as_the_argon2_crate_reads_them() {
    let good = argon2id("s", 8, 1, 1);
    let (head, tail) = good.split_at(good.find("$m=").unwrap());
    let (_, rest) = tail[1..].split_once('$').unwrap();
    let with_params = |params: &str| format!("{head}${params}${rest}");
    let mut cases = vec![
        good.clone(),
        good.replace("$argon2id$", "$argon2i$"),
        good.replace("$argon2id$", "$argon2d$"),
        good.replace("$argon2id$", "$argon2x$"),
        good.replace("$argon2id$", "$scrypt$"),
        good.replace("$v=19$", "$v=16$"),
        good.replace("$v=19$", "$v=18$"),
        good.replace("$v=19$", "$"),
        "$argon2id$v=19$m=8,t=1,p=1".to_string(),
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ".to_string(),
        "$argon2id$v=19$m=8,t=1,p=1$!!!$AAAAAAAAAAAAAAAAAAAAAA".to_string(),
        "not-a-hash-hunter2".to_string(),
        String::new(),
    ];
    for params in [
        "m=8,t=1,p=1",
        "m=7,t=1,p=1",
        "m=8,t=0,p=1",
        "m=8,t=1,p=0",
        "m=16,t=1,p=2",
        "m=16,t=1,p=3",
        "m=8",
        "t=1",
        "p=1",
        "m=8,t=1,p=1,keyid=AAAAAAAAAAA",
        "m=8,t=1,p=1,keyid=AAAAAAAAAAAAAAAA",
        "m=8,t=1,p=1,data=AAAA",
        "m=8,t=1,p=1,data=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "m=8,t=1,p=1,x=1",
        "m=08,t=1,p=1",
        "m=1048576,t=1,p=1",
        "m=8,t=100,p=1",
        "m=8,t=1,p=16777216",
    ] {
        cases.push(with_params(params));
    }
    for case in cases {
        let ours = PhcHash::parse(&case).map(|h| h.cost());
        assert_eq!(ours, argon2_reading(&case), "{case}");
    }
    // Where argon2's own check of m against 8 * p overflows (a panic in debug builds), the
    // hash is refused.
    assert_eq!(
        PhcHash::parse(&with_params("m=4294967295,t=1,p=536870912")).unwrap_err(),
        "the argon2 hash's parameters are not valid"
    );
}
