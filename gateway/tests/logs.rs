//! What the gateway's logs say about requests, with the real binary on loopback: personal
//! data planted in paths, queries, headers, the Host and the token endpoint's form never
//! reaches them; every access line names its request by ids, route and path template; the
//! client's address appears only as `--log-client-address` allows.
//!
//! The gateway listens on 127.0.0.2 and its backends on 127.0.0.3 and 127.0.0.4, so
//! `127.0.0.1` in its output can only be the client's address (the test connects from it).

#![allow(clippy::unwrap_used)]

#[path = "hostile/support.rs"]
mod support;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::Request;
use serde_json::{Value, json};
use support::{AUD, HOST, ISS, bundle, deploy, local_issuer, raw, status_of, wait_for};

/// The client's address: where the test connects from.
const CLIENT: &str = "127.0.0.1";

/// The traceparent sent with the first request, and its trace id.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// What must never be logged: everything a client put in a request.
const PLANTED: &[&str] = &[
    "alice@example.com",
    "bob@example.com",
    "carol@example.com",
    "dave@example.com",
    "erin@example.com",
    "frank@example.com",
    "grace@example.com",
    "heidi@example.com",
    "ivan@example.com",
    "judy@example.com",
    "tok_live_PLANTED1",
    "tok_live_PLANTED2",
    "PLANTED3",
    "PLANTED4",
    "PLANTED5",
    "PLANTED6",
    "PLANTED7",
    "tok_live_PLANTED8",
    "session=",
    "eyJhbGciOiJIUzI1NiJ9",
];

/// Lines about one request, besides the access log, each of which must name it.
const REQUEST_SCOPED: &[&str] = &[
    "upstream failed",
    "aggregated part failed",
    "token refused: client authentication failed",
    "token issued",
    "cannot verify the token: the issuer's keys are unavailable",
];

fn free_on(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// A backend on `ip` answering every request with `{}`; a path with `/slow` in it after 2 s.
fn backend(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().fallback(|req: Request| async move {
                if req.uri().path().contains("/slow") {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                axum::Json(json!({}))
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

/// The argon2id hash of `secret` with small parameters, so the test is quick.
fn hash(secret: &str) -> String {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(256, 1, 1, None).unwrap();
    let salt = argon2::password_hash::SaltString::encode_b64(b"fleetgate-logs").unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// A public route with a parameter (`/customers/{id}`), one behind the embedded IdP's
/// tokens, one behind an issuer whose JWKS cannot be fetched, one to a backend that is down,
/// an aggregate of that backend, and the IdP with the client `good`.
fn test_bundle() -> Vec<u8> {
    let app = backend("127.0.0.3");
    let dead = free_on("127.0.0.4");
    bundle(
        json!({
            "hosts": [HOST],
            "backends": {
                "app": {"url": format!("http://{app}")},
                "dead": {"url": format!("http://{dead}")},
            },
            "authPolicies": {
                "own": {"issuers": ["local"]},
                "partner": {"issuers": ["partner"]},
            },
            "routes": [
                {"name": "customers", "methods": ["GET"], "path": "/customers/{id}",
                 "backend": "app", "public": true},
                {"name": "orders", "methods": ["GET"], "path": "/orders/{*rest}",
                 "backend": "app", "auth": {"policy": "own"}},
                {"name": "partner", "methods": ["GET"], "path": "/partner/{*rest}",
                 "backend": "app", "auth": {"policy": "partner"}},
                {"name": "down", "methods": ["GET"], "path": "/down/{id}",
                 "backend": "dead", "public": true},
                {"name": "summary", "methods": ["GET"], "path": "/summary/{id}", "public": true,
                 "aggregate": {"parts": [{"backend": "dead", "path": "/parts/{id}"}]}},
            ],
        }),
        json!({
            "issuer": local_issuer(),
            "scopes": [{"name": "orders:read"}],
            "clients": [{"id": "good", "secret": {"argon2Hash": hash("good-secret")},
                         "scopes": ["orders:read"]}],
            "trustedIssuers": [{
                "name": "partner", "issuer": ISS, "audiences": [AUD], "algorithms": ["RS256"],
                "jwksUrl": format!("http://{dead}/jwks"),
            }],
        }),
    )
}

/// A running `fleetgate-gateway` whose standard output and error both go to one file.
struct Gw {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gw {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Gw {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("test");
        deploy(&dir, &test_bundle(), "c1");
        let (listen, admin) = (free_on("127.0.0.2"), free_on("127.0.0.2"));
        let log = tmp.path().join("gateway.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fleetgate-gateway"))
            .args(["--source", &format!("file://{}", dir.display())])
            .args(["--listen", &listen.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--poll", "200ms", "--status-every", "0s"])
            .args(["--instance-id", "gw-1", "--drain-timeout", "2s"])
            .args(args)
            // The gateway's own debug lines too: the connection lines name the peer.
            .env("FLEETGATE_LOG", "info,fleetgate_gateway=debug")
            .env_remove("FLEETGATE_LOG_FORMAT")
            .env_remove("FLEETGATE_LOG_CLIENT_ADDRESS")
            .env_remove("FLEETGATE_LOG_CLIENT_ADDRESS_KEY")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap();
        let gw = Gw {
            child,
            listen,
            log,
            _tmp: tmp,
        };
        wait_for("the gateway to be ready", || {
            TcpStream::connect(admin).is_ok() && support::http_get(admin, "/ready", &[]).0 == 200
        });
        gw
    }

    /// One request on a fresh connection (`Host: HOST` unless `headers` name another):
    /// (status, the whole response).
    fn send(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> u16 {
        let mut req = format!("{method} {target} HTTP/1.1\r\nconnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("host: {HOST}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!(
                "content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        status_of(&raw(self.listen, req.as_bytes(), Duration::from_secs(10)))
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the gateway as an orchestrator would (SIGTERM) and returns everything it wrote.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.text()
    }
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

fn access(text: &str) -> Vec<Value> {
    lines(text)
        .into_iter()
        .filter(|l| l["target"] == "fleetgate::access")
        .collect()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn token_form(client_id: &str, secret: &str) -> String {
    format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}")
}

/// A token of the partner issuer, well formed but signed by nobody: its issuer's keys are
/// looked up (and cannot be had) before the signature is checked.
fn partner_token() -> String {
    use base64::Engine as _;
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(json!({"alg": "RS256", "typ": "JWT", "kid": "k1"})),
        b64(json!({"iss": ISS, "aud": AUD, "sub": "grace@example.com", "exp": 4_000_000_000u64})),
    )
}

/// A client that sends a request and leaves before its answer (the backend takes 2 s).
fn abort(gw: &Gw, target: &str) {
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.write_all(format!("GET {target} HTTP/1.1\r\nhost: {HOST}\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn no_planted_personal_data_reaches_the_logs_and_each_line_names_its_request() {
    let gw = Gw::start(&[], &[]);
    let customers = "/customers/alice@example.com?email=bob@example.com&token=tok_live_PLANTED1";
    let headers = [
        ("traceparent", TRACEPARENT),
        ("x-request-id", "rid-customers"),
    ];
    assert_eq!(gw.send("GET", customers, &headers, ""), 200);
    assert_eq!(
        gw.send(
            "GET",
            "/nope/carol@example.com/tok_live_PLANTED2?x=dave@example.com",
            &[],
            ""
        ),
        404
    );
    let bearer = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJQTEFOVEVEMyJ9.PLANTED3";
    assert_eq!(
        gw.send(
            "GET",
            "/orders/mine",
            &[("authorization", bearer), ("cookie", "session=PLANTED4")],
            ""
        ),
        401
    );
    assert_eq!(
        gw.send("GET", "/customers/x", &[("host", "erin@example.com")], ""),
        404
    );
    let form = token_form("frank@example.com", "wrong-PLANTED5");
    assert_eq!(gw.send("POST", "/oauth2/token", &[], &form), 401);
    let form = token_form("good", "good-secret");
    assert_eq!(gw.send("POST", "/oauth2/token", &[], &form), 200);
    let partner = format!("Bearer {}", partner_token());
    assert_eq!(
        gw.send("GET", "/partner/x", &[("authorization", &partner)], ""),
        503
    );
    assert_eq!(
        gw.send("GET", "/down/heidi@example.com?q=PLANTED6", &[], ""),
        502
    );
    assert_eq!(
        gw.send("GET", "/summary/ivan@example.com?q=PLANTED7", &[], ""),
        502
    );
    abort(
        &gw,
        "/customers/slow-judy@example.com?token=tok_live_PLANTED8",
    );
    wait_for("the abort to be logged", || {
        gw.text().contains("\"aborted\":true")
    });

    let text = gw.stop();
    for planted in PLANTED.iter().chain([&CLIENT]) {
        assert!(!text.contains(planted), "{planted} was logged:\n{text}");
    }
    for l in lines(&text) {
        assert!(l.get("client").is_none(), "a client address: {l}");
    }
    let access = access(&text);
    assert_eq!(access.len(), 10, "{text}");
    for l in &access {
        for field in ["request_id", "route", "path_template", "method", "digest"] {
            assert!(
                l[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field}: {l}"
            );
        }
        assert!(
            is_hex(l["trace_id"].as_str().unwrap_or_default(), 32),
            "{l}"
        );
        assert!(l["status"].is_u64() && l["duration_ms"].is_f64(), "{l}");
        for raw_field in ["path", "host", "query", "client_ip", "uri"] {
            assert!(l.get(raw_field).is_none(), "{raw_field}: {l}");
        }
    }
    let by = |route: &str, status: u64| -> Vec<&Value> {
        access
            .iter()
            .filter(|l| l["route"] == route && l["status"] == status)
            .collect()
    };
    let first = by("customers", 200);
    assert_eq!(first.len(), 1, "{text}");
    assert_eq!(first[0]["request_id"], "rid-customers");
    assert_eq!(first[0]["trace_id"], TRACE_ID);
    assert_eq!(first[0]["path_template"], "/customers/{id}");
    // No route for the unknown path nor for the unknown host.
    let unmatched = by("-", 404);
    assert_eq!(unmatched.len(), 2, "{text}");
    assert!(
        unmatched.iter().all(|l| l["path_template"] == "-"),
        "{text}"
    );
    assert_eq!(by("orders", 401)[0]["path_template"], "/orders/{*rest}");
    let tokens: Vec<&Value> = access
        .iter()
        .filter(|l| l["route"] == "idp.token")
        .collect();
    assert_eq!(tokens.len(), 2, "{text}");
    assert!(
        tokens.iter().all(|l| l["path_template"] == "/oauth2/token"),
        "{text}"
    );
    let aborted = by("customers", 499);
    assert_eq!(aborted.len(), 1, "{text}");
    assert_eq!(aborted[0]["aborted"], true);
    assert_eq!(aborted[0]["path_template"], "/customers/{id}");
    // Every request-scoped line names its request; each kind was seen.
    let all = lines(&text);
    for message in REQUEST_SCOPED {
        let seen: Vec<&Value> = all.iter().filter(|l| l["message"] == *message).collect();
        assert!(!seen.is_empty(), "no {message:?} line:\n{text}");
        for l in seen {
            assert!(
                l["request_id"].as_str().is_some_and(|v| !v.is_empty()),
                "{l}"
            );
            assert!(
                is_hex(l["trace_id"].as_str().unwrap_or_default(), 32),
                "{l}"
            );
            let id = l["request_id"].as_str().unwrap_or_default();
            assert!(
                access
                    .iter()
                    .any(|a| a["request_id"] == id && a["trace_id"] == l["trace_id"]),
                "no access line for {l}"
            );
        }
    }
    // A client id that names no client is the caller's text: not logged.
    let refused = all
        .iter()
        .find(|l| l["message"] == "token refused: client authentication failed")
        .unwrap();
    assert_eq!(refused["client_id"], "-", "{refused}");
    let issued = all.iter().find(|l| l["message"] == "token issued").unwrap();
    assert_eq!(issued["client_id"], "good", "{issued}");
}

/// The `client` field of every line that names one: access lines and the token endpoint's.
fn clients(text: &str) -> Vec<String> {
    let all = lines(text);
    let named: Vec<&Value> = all
        .iter()
        .filter(|l| {
            l["target"] == "fleetgate::access"
                || l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("token "))
        })
        .collect();
    assert_eq!(named.len(), 5, "{text}");
    named
        .iter()
        .map(|l| {
            l["client"]
                .as_str()
                .unwrap_or_else(|| panic!("no client in {l}"))
                .to_string()
        })
        .collect()
}

/// Two public requests, a refused token request and an aborted request, then the whole
/// output of the gateway.
fn requests(gw: Gw) -> String {
    assert_eq!(gw.send("GET", "/customers/a", &[], ""), 200);
    assert_eq!(gw.send("GET", "/customers/b", &[], ""), 200);
    let form = token_form("frank@example.com", "wrong");
    assert_eq!(gw.send("POST", "/oauth2/token", &[], &form), 401);
    abort(&gw, "/customers/slow");
    wait_for("the abort to be logged", || {
        gw.text().contains("\"aborted\":true")
    });
    gw.stop()
}

#[test]
fn truncate_logs_the_clients_network_only() {
    let text = requests(Gw::start(&["--log-client-address", "truncate"], &[]));
    assert!(!text.contains(CLIENT), "{text}");
    assert!(clients(&text).iter().all(|c| c == "127.0.0.0"), "{text}");
}

#[test]
fn text_lines_carry_the_same_fields() {
    let gw = Gw::start(
        &["--log-format", "text", "--log-client-address", "truncate"],
        &[],
    );
    assert_eq!(gw.send("GET", "/customers/alice@example.com", &[], ""), 200);
    let text = gw.stop();
    assert!(!text.contains("alice@example.com"), "{text}");
    assert!(!text.contains(CLIENT), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("fleetgate::access"))
        .unwrap_or_else(|| panic!("no access line:\n{text}"));
    for field in [
        "client=127.0.0.0",
        "route=\"customers\"",
        "path_template=\"/customers/{id}\"",
        "status=200",
    ] {
        assert!(line.contains(field), "{field}: {line}");
    }
}

#[test]
fn hash_logs_a_keyed_hash_stable_across_requests() {
    // From the environment, as a deployment sets it.
    let key = "one key for every instance";
    let text = requests(Gw::start(
        &[],
        &[
            ("FLEETGATE_LOG_CLIENT_ADDRESS", "hash"),
            ("FLEETGATE_LOG_CLIENT_ADDRESS_KEY", key),
        ],
    ));
    assert!(!text.contains(CLIENT), "{text}");
    let clients = clients(&text);
    assert!(is_hex(&clients[0], 16), "{text}");
    assert!(clients.iter().all(|c| *c == clients[0]), "{text}");
    // HMAC-SHA256 of the address under the key: another instance with the key logs the
    // same value, anyone with the key can check an address.
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes()),
        CLIENT.as_bytes(),
    );
    assert_eq!(clients[0], hex::encode(&tag.as_ref()[..8]));
    // Without a key, a random one: still stable within the process, and not the keyed value.
    let random = requests(Gw::start(&["--log-client-address", "hash"], &[]));
    let other = self::clients(&random);
    assert!(is_hex(&other[0], 16), "{random}");
    assert!(other.iter().all(|c| *c == other[0]), "{random}");
    assert_ne!(other[0], clients[0]);
    assert!(!random.contains(CLIENT), "{random}");
}

#[test]
fn full_logs_the_address() {
    let text = requests(Gw::start(&["--log-client-address", "full"], &[]));
    assert!(clients(&text).iter().all(|c| c == CLIENT), "{text}");
}
