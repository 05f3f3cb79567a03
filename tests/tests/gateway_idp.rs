//! The embedded IdP on real sockets: the gateway's data plane serves the account's token
//! endpoint, JWKS and discovery document; tokens it issues are checked by its own routes.
//! Bundles are deployed to `file://` account directories and loaded as the running gateway
//! loads them; signing keys are read through real secret references (files, and AWS Secrets
//! Manager on moto's server).

#![allow(clippy::unwrap_used)]

#[path = "../src/gateway_support.rs"]
mod support;

#[path = "../src/aws.rs"]
#[allow(dead_code)] // shared with the reconciler's AWS tests: not every helper is used here
mod aws_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::routing::any;
use base64::Engine as _;
use fleetgate_bundle::Bundle;
use fleetgate_gateway::Options;
use fleetgate_gateway::secrets::Secrets;
use fleetgate_gateway::source::FileSource;
use fleetgate_gateway::{Gateway, ReloadOutcome};
use serde_json::{Value, json};
use support::reqwest_like::{Client, Resp};
use support::{Server, deploy, serve};

/// The argon2id hash of `secret` with small parameters (the verification cost is the
/// hash's own; production hashes use argon2's defaults).
fn hash(secret: &str) -> String {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = argon2::password_hash::SaltString::encode_b64(b"fleetgate-test-salt").unwrap();
    a.hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn key_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/keys")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

/// A signing key read from a fixture file.
fn key(kid: &str, file: &str, alg: &str) -> Value {
    json!({"kid": kid, "algorithm": alg, "privateKey": {"file": key_file(file)}})
}

/// What differs between the test accounts.
struct Account {
    name: &'static str,
    tenant: &'static str,
}

const ACME: Account = Account {
    name: "acme",
    tenant: "acme",
};
const GLOBEX: Account = Account {
    name: "globex",
    tenant: "globex",
};

fn host(a: &Account) -> String {
    format!("api.{}.example", a.name)
}

fn issuer(a: &Account) -> String {
    format!("https://auth.{}.example", a.name)
}

/// An account with its own issuer, three clients, and one route that needs `orders:read`
/// and the account's tenant: the gateway trusts its own issuer with no more configuration
/// than `issuers: [local]` (the default).
fn bundle(a: &Account, backend: SocketAddr, signing_keys: Value, idp_extra: Value) -> Vec<u8> {
    let mut idp = json!({
        "issuer": {"url": issuer(a), "audiences": [format!("https://{}", host(a))], "tokenTtl": "10m",
                   "signingKeys": signing_keys},
        "scopes": [{"name": "orders:read"}, {"name": "orders:write"}, {"name": "reports:export"}],
        "clients": [
            {"id": "web", "secret": {"argon2Hash": hash("web-secret")}, "scopes": ["orders:read", "orders:write"]},
            {"id": "reporter", "secret": {"argon2Hash": hash("reporter-secret")}, "scopes": ["reports:export"]},
            {"id": "short", "secret": {"argon2Hash": hash("short-secret")}, "scopes": ["orders:read"], "tokenTtl": "1s"},
        ],
    });
    for (k, v) in idp_extra.as_object().unwrap() {
        match (idp.get_mut(k), v) {
            (Some(Value::Object(old)), Value::Object(new)) => old.extend(new.clone()),
            _ => {
                idp[k] = v.clone();
            }
        }
    }
    let doc = json!({
        "apiVersion": fleetgate_bundle::bundle::BUNDLE_API_VERSION,
        "account": {"name": a.name, "id": "123456789012", "region": "eu-west-1", "stage": "prod", "tenant": a.tenant},
        "gateway": {
            "hosts": [host(a)],
            "backends": {"orders": {"url": format!("http://{backend}")}},
            "authPolicies": {"default": {"requiredClaims": {"tenant": [a.tenant]}, "leeway": "0s",
                                         "forwardClaims": {"sub": "X-Fleetgate-Subject", "tenant": "X-Fleetgate-Tenant"}}},
            "routes": [{"name": "orders.get", "methods": ["GET"], "path": "/orders/{id}", "backend": "orders",
                        "auth": {"policy": "default", "scopes": ["orders:read"]}}],
        },
        "idp": idp,
    });
    let parsed: Bundle = serde_json::from_value(doc).unwrap();
    if let Err(e) = fleetgate_bundle::compile(&parsed) {
        panic!("test bundle does not compile:\n{e}");
    }
    serde_json::to_vec(&parsed).unwrap()
}

/// A backend that answers 200 with the claims the gateway forwarded.
async fn backend() -> Server {
    serve(axum::Router::new().fallback(any(|req: Request| async move {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        axum::Json(json!({"subject": h("x-fleetgate-subject"), "tenant": h("x-fleetgate-tenant")}))
    })))
    .await
}

/// One account's gateway: its data plane on a real socket, its bundle in a temp dir.
struct Account1 {
    gw: Arc<Gateway>,
    source: FileSource,
    dir: std::path::PathBuf,
    client: Client,
    _server: Server,
    _tmp: tempfile::TempDir,
}

impl Account1 {
    async fn start(a: &Account, bytes: &[u8], secrets: Secrets) -> Account1 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(a.name);
        let source = FileSource::new(&format!("file://{}", dir.display()));
        let gw = Arc::new(Gateway::with_options(Options {
            secrets: Arc::new(secrets),
            ..Options::default()
        }));
        let server = serve(fleetgate_gateway::dataplane::router(gw.clone())).await;
        let account = Account1 {
            gw,
            source,
            dir,
            client: Client::new(server.addr, &host(a)),
            _server: server,
            _tmp: tmp,
        };
        account.swap(bytes, "c1").await;
        account
    }

    async fn swap(&self, bytes: &[u8], commit: &str) {
        deploy(&self.dir, bytes, commit);
        let outcome = self.gw.reload_once(&self.source).await;
        assert!(
            matches!(outcome, ReloadOutcome::Swapped { .. }),
            "{outcome:?}"
        );
    }

    async fn token_request(&self, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut h = vec![("content-type", "application/x-www-form-urlencoded")];
        h.extend_from_slice(headers);
        self.client
            .send("POST", "/oauth2/token", &h, body.as_bytes())
            .await
    }

    /// client_secret_basic.
    async fn token_basic(&self, id: &str, secret: &str, scope: Option<&str>) -> Resp {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        );
        let body = match scope {
            Some(s) => format!(
                "grant_type=client_credentials&scope={}",
                s.replace(' ', "+")
            ),
            None => "grant_type=client_credentials".to_string(),
        };
        self.token_request(&[("authorization", &basic)], &body)
            .await
    }

    async fn token(&self, id: &str, secret: &str) -> String {
        let r = self.token_basic(id, secret, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), "no-store");
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    async fn call(&self, token: &str) -> Resp {
        self.client
            .get(
                "/orders/1",
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await
    }

    async fn jwks_kids(&self) -> Vec<String> {
        let r = self.client.get("/oauth2/jwks", &[]).await;
        assert_eq!(r.status, 200);
        r.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                // Public halves only.
                for private in ["d", "p", "q", "dp", "dq", "qi"] {
                    assert!(k.get(private).is_none(), "{k}");
                }
                k["kid"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn tokens_validate_across_a_key_rotation_and_the_old_key_ends_with_its_removal() {
    let be = backend().await;
    let a = key("key-a", "issuer-rsa.pem", "RS256");
    let b = key("key-b", "other-rsa.pem", "RS256");
    let stage = |keys: Value| bundle(&ACME, be.addr, keys, json!({}));
    let acme = Account1::start(&ACME, &stage(json!({"active": a})), Secrets::default()).await;

    // Discovery names the endpoints under the issuer.
    let d = acme
        .client
        .get("/.well-known/openid-configuration", &[])
        .await
        .json();
    assert_eq!(d["issuer"], issuer(&ACME));
    assert_eq!(
        d["token_endpoint"],
        format!("{}/oauth2/token", issuer(&ACME))
    );
    assert_eq!(d["jwks_uri"], format!("{}/oauth2/jwks", issuer(&ACME)));
    assert_eq!(d["grant_types_supported"], json!(["client_credentials"]));

    // 1. Only key A.
    assert_eq!(acme.jwks_kids().await, ["key-a"]);
    let old = acme.token("web", "web-secret").await;
    assert_eq!(kid_of(&old), "key-a");
    let r = acme.call(&old).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["subject"], "web");
    assert_eq!(r.json()["tenant"], "acme");

    // 2. B is published ahead of time; A still signs.
    acme.swap(&stage(json!({"active": a, "next": b})), "c2")
        .await;
    assert_eq!(acme.jwks_kids().await, ["key-a", "key-b"]);
    assert_eq!(kid_of(&acme.token("web", "web-secret").await), "key-a");
    assert_eq!(acme.call(&old).await.status, 200);

    // 3. B signs; A is kept for the tokens it signed: both validate during the overlap.
    acme.swap(&stage(json!({"active": b, "previous": a})), "c3")
        .await;
    assert_eq!(acme.jwks_kids().await, ["key-b", "key-a"]);
    let new = acme.token("web", "web-secret").await;
    assert_eq!(kid_of(&new), "key-b");
    assert_eq!(acme.call(&old).await.status, 200);
    assert_eq!(acme.call(&new).await.status, 200);
    // The published JWKS verifies the new token on its own (what other verifiers do).
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&acme.client.get("/oauth2/jwks", &[]).await.body).unwrap();
    let jwk = jwks.find("key-b").unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[format!("https://{}", host(&ACME))]);
    v.set_issuer(&[issuer(&ACME)]);
    let claims =
        jsonwebtoken::decode::<Value>(&new, &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), &v)
            .unwrap()
            .claims;
    assert_eq!(claims["scope"], "orders:read orders:write");
    assert_eq!(claims["account"], "acme");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["client_id"], "web");

    // 4. A is dropped: its tokens fail, B's still pass.
    acme.swap(&stage(json!({"active": b})), "c4").await;
    assert_eq!(acme.jwks_kids().await, ["key-b"]);
    let r = acme.call(&old).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("signing key is unknown"), "{}", r.body);
    assert_eq!(acme.call(&new).await.status, 200);
}

#[tokio::test]
async fn wrong_secrets_unknown_clients_bad_scopes_expired_and_foreign_tokens_are_refused() {
    let be = backend().await;
    let acme = Account1::start(
        &ACME,
        &bundle(
            &ACME,
            be.addr,
            json!({"active": key("acme-1", "issuer-rsa.pem", "RS256")}),
            json!({}),
        ),
        Secrets::default(),
    )
    .await;

    // client_secret_post works as well as Basic; the scope asked for is what is granted.
    let r = acme
        .token_request(
            &[],
            "grant_type=client_credentials&client_id=web&client_secret=web-secret&scope=orders%3Aread",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["token_type"], "Bearer");
    assert_eq!(r.json()["scope"], "orders:read");
    assert_eq!(r.json()["expires_in"], 600);

    // A wrong secret and an unknown client read exactly the same.
    let wrong = acme.token_basic("web", "not-the-secret", None).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert!(wrong.header("www-authenticate").starts_with("Basic realm="));
    assert!(!wrong.body.contains("not-the-secret"));
    let unknown = acme.token_basic("nobody", "web-secret", None).await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.json(), wrong.json());

    // A scope the client may not have.
    let r = acme
        .token_basic("web", "web-secret", Some("orders:read reports:export"))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_scope");
    // Another grant type.
    let r = acme
        .token_request(&[], "grant_type=password&username=a&password=b")
        .await;
    assert_eq!(r.json()["error"], "unsupported_grant_type");

    // A valid token without the route's scope: 403, not 401.
    let reporter = acme.token("reporter", "reporter-secret").await;
    let r = acme.call(&reporter).await;
    assert_eq!(r.status, 403, "{}", r.body);

    // A token past its expiry (1 s lifetime, no leeway).
    let short = acme.token("short", "short-secret").await;
    assert_eq!(acme.call(&short).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = acme.call(&short).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);

    // Another account's IdP: its token is good there, refused here, and the other way round.
    let globex = Account1::start(
        &GLOBEX,
        &bundle(
            &GLOBEX,
            be.addr,
            json!({"active": key("globex-1", "local-ec.pem", "ES256")}),
            json!({}),
        ),
        Secrets::default(),
    )
    .await;
    let foreign = globex.token("web", "web-secret").await;
    assert_eq!(globex.call(&foreign).await.status, 200);
    let r = acme.call(&foreign).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("issuer is not accepted"), "{}", r.body);
    let own = acme.token("web", "web-secret").await;
    assert_eq!(globex.call(&own).await.status, 401);

    // Metrics count by known client and result; made-up clients share "-".
    let metrics = acme.gw.metrics_text();
    assert!(
        metrics.contains(r#"idp_token_requests_total{client="web",result="invalid_client"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"idp_token_requests_total{client="-",result="invalid_client"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_token_endpoint_is_rate_limited_per_client_and_per_ip() {
    let be = backend().await;
    let limits = json!({"issuer": {"tokenRateLimit": {
        "perClient": {"requests": 2, "per": "1m"},
        "perIp": {"requests": 4, "per": "1m"},
    }}});
    let acme = Account1::start(
        &ACME,
        &bundle(
            &ACME,
            be.addr,
            json!({"active": key("acme-1", "issuer-rsa.pem", "RS256")}),
            limits,
        ),
        Secrets::default(),
    )
    .await;
    acme.token("web", "web-secret").await;
    // A wrong secret counts too: guessing is what the limit is for.
    assert_eq!(acme.token_basic("web", "guess", None).await.status, 401);
    let r = acme.token_basic("web", "web-secret", None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "too_many_requests");
    assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert!(r.body.contains("for this client"), "{}", r.body);
    // Another client from the same address still gets one, then the address is cut off.
    acme.token("reporter", "reporter-secret").await;
    let r = acme.token_basic("reporter", "reporter-secret", None).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("from this address"), "{}", r.body);
}

#[test]
fn signing_keys_and_client_hashes_come_from_secrets_manager() {
    let moto = aws_support::Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use aws_sdk_secretsmanager::config::{Credentials, Region};
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(fleetgate_gateway::aws::https_client())
            .region(Region::new("eu-west-1"))
            .endpoint_url(moto.endpoint())
            .credentials_provider(Credentials::for_tests())
            .load()
            .await;
        let sm = aws_sdk_secretsmanager::Client::new(&config);
        let create = |name: &'static str, value: String| {
            let sm = sm.clone();
            async move {
                sm.create_secret()
                    .name(name)
                    .secret_string(value)
                    .send()
                    .await
                    .unwrap()
                    .arn
                    .unwrap()
            }
        };
        let key_arn = create(
            "fleetgate/idp/acme-1",
            support::fixture("issuer-rsa.pem"),
        )
        .await;
        let hash_arn = create("fleetgate/clients/batch", hash("batch-secret")).await;
        // Not created yet: the gateway loads the bundle, that key is unavailable, and it
        // heals by itself once the secret exists.
        let later_arn =
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:fleetgate/idp/acme-2";
        let be = backend().await;
        let bytes = bundle(
            &ACME,
            be.addr,
            json!({"active": {"kid": "acme-1", "algorithm": "RS256", "privateKey": {"awsSecretsManager": key_arn}},
                   "next": {"kid": "acme-2", "algorithm": "ES256", "privateKey": {"awsSecretsManager": later_arn}}}),
            json!({"clients": [
                {"id": "batch", "secret": {"ref": {"awsSecretsManager": hash_arn}}, "scopes": ["orders:read"]},
            ]}),
        );
        let acme = Account1::start(&ACME, &bytes, Secrets::with_config(None, config.clone())).await;
        let token = acme.token("batch", "batch-secret").await;
        assert_eq!(kid_of(&token), "acme-1");
        assert_eq!(acme.call(&token).await.status, 200);
        assert_eq!(acme.token_basic("batch", "wrong", None).await.status, 401);
        assert_eq!(acme.jwks_kids().await, ["acme-1"]);
        let loaded = acme.gw.current().unwrap();
        assert!(
            loaded.runtime.warnings.iter().any(|w| w.contains("acme-2") && w.contains("ResourceNotFoundException")),
            "{:?}",
            loaded.runtime.warnings
        );
        // No value of a secret in what the gateway reports about them.
        for w in &loaded.runtime.warnings {
            assert!(!w.contains("PRIVATE KEY") && !w.contains("$argon2"), "{w}");
        }

        create("fleetgate/idp/acme-2", support::fixture("local-ec.pem")).await;
        assert_eq!(
            acme.gw.reload_once(&acme.source).await,
            ReloadOutcome::Unchanged
        );
        assert_eq!(acme.jwks_kids().await, ["acme-1", "acme-2"]);
        assert!(acme.gw.current().unwrap().runtime.secret_failures.is_empty());
    });
}
