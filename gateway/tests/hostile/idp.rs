//! The token endpoint under a flood of made-up clients: thousands of unknown client ids,
//! each long and each from its own loopback address, with wrong secrets. The gateway's
//! memory must stay bounded (per-key state is capped and argon2's working memory is a
//! fixed set of buffers), and a real client still gets its token afterwards.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

const GOOD: (&str, &str) = ("good", "good-secret");

/// The argon2id hash of `secret` with small parameters (256 KiB, one pass), so a flood is
/// quick to verify and the workers' buffers (one per core) stay small next to the bound
/// below even on a machine with many cores.
fn hash(secret: &str) -> String {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(256, 1, 1, None).unwrap();
    let salt = argon2::password_hash::SaltString::encode_b64(b"fleetgate-hostile").unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn gateway() -> Gw {
    let up = echo_backend();
    let mut issuer = local_issuer();
    // Limits far above the flood's rate: every request reaches the client lookup and argon2.
    issuer["tokenRateLimit"] = json!({
        "perClient": {"requests": 100000, "per": "1s"},
        "perIp": {"requests": 100000, "per": "1s"},
    });
    let b = bundle(
        json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "routes": [{"name": "pub", "methods": ["GET"], "path": "/pub/{*rest}",
                        "backend": "echo", "public": true}],
        }),
        json!({
            "issuer": issuer,
            "scopes": [{"name": "orders:read"}],
            "clients": [{"id": GOOD.0, "secret": {"argon2Hash": hash(GOOD.1)}, "scopes": ["orders:read"]}],
        }),
    );
    Gw::start(&b, &[])
}

fn token_request(client_id: &str, secret: &str) -> Vec<u8> {
    let body =
        format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
    format!(
        "POST /oauth2/token HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` from the loopback address `source` and returns the status (0 when
/// none came within `wait`).
fn send_from(source: Ipv4Addr, to: SocketAddr, request: &[u8], wait: Duration) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
        socket.connect(to).await
    });
    let Ok(stream) = stream else { return 0 };
    let mut stream = {
        let _guard = rt.enter();
        stream.into_std().unwrap()
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    if stream.write_all(request).is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    status_of(&String::from_utf8_lossy(&out))
}

/// A token for the good client, retried while the endpoint answers 503 (busy) or 429.
fn good_token(gw: &Gw) -> serde_json::Value {
    let mut last = String::new();
    for _ in 0..50 {
        last = raw(
            gw.listen,
            &token_request(GOOD.0, GOOD.1),
            Duration::from_secs(10),
        );
        if status_of(&last) == 200 {
            return body_json(&last);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the good client got no token: {last}");
}

#[test]
fn a_flood_of_unknown_clients_from_many_addresses_leaves_memory_bounded() {
    let gw = gateway();
    // Warm up: argon2's workers and the runtime's buffers exist before the baseline.
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| good_token(&gw));
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let before = gw.rss_kib();

    // 3,000 made-up ids of 15,000 characters, each from its own address in 127.1.0.0/16.
    const IDS: usize = 3000;
    const THREADS: usize = 32;
    let next = Arc::new(AtomicUsize::new(0));
    let answered: Vec<Vec<u16>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let next = next.clone();
                let listen = gw.listen;
                s.spawn(move || {
                    let mut statuses = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= IDS {
                            return statuses;
                        }
                        let id = format!("{i:05}{}", "x".repeat(15_000));
                        let source = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
                        let request = token_request(&id, "wrong-secret");
                        statuses.push(send_from(source, listen, &request, Duration::from_secs(1)));
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = answered.into_iter().flatten().collect();
    assert_eq!(statuses.len(), IDS);
    // Refused: 401 (verified, no such client) or 503 (argon2's queue full). Never a token.
    let refused = statuses.iter().filter(|s| [401, 503].contains(*s)).count();
    assert!(
        refused * 10 >= IDS * 9,
        "most flood requests must be answered 401 or 503 at once; statuses: {:?}",
        statuses
            .iter()
            .fold(std::collections::BTreeMap::new(), |mut m, s| {
                *m.entry(*s).or_insert(0) += 1;
                m
            })
    );

    std::thread::sleep(Duration::from_secs(1));
    let after = gw.rss_kib();
    let growth = after.saturating_sub(before);
    assert!(
        growth < 32 * 1024,
        "RSS grew by {growth} KiB ({before} KiB before the flood, {after} KiB after)"
    );

    // The IdP still works for its real client.
    let token = good_token(&gw);
    assert_eq!(token["token_type"], "Bearer");
    assert!(
        token["access_token"]
            .as_str()
            .is_some_and(|t| t.len() > 100)
    );
}
