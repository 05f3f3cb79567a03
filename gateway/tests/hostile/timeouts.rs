//! Connections that hold the gateway without asking for anything: a head trickled a byte at
//! a time, a keep-alive connection left idle, a head too large to be a request.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

fn public_route() -> Vec<u8> {
    let up = echo_backend();
    bundle(
        serde_json::json!({
            "hosts": [HOST],
            "backends": {"echo": {"url": format!("http://{up}")}},
            "routes": [{"name": "pub", "methods": ["GET"], "path": "/pub/{*rest}",
                        "backend": "echo", "public": true}],
        }),
        serde_json::json!({}),
    )
}

/// Reads one response with a `content-length` from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            if body.len() >= len {
                return text;
            }
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a whole response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

/// Waits up to `limit` for the peer to close `s` (anything it still sends is ignored);
/// how long that took, or `None`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn a_head_trickled_a_byte_at_a_time_is_cut_off_while_others_are_served() {
    let gw = Gw::start(&public_route(), &["--header-read-timeout", "1s"]);
    let head = format!(
        "GET /pub/slow HTTP/1.1\r\nhost: {HOST}\r\nx-padding: {}\r\n\r\n",
        "a".repeat(200)
    );
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let start = Instant::now();
    let mut closed = None;
    let mut buf = [0u8; 1024];
    for (i, b) in head.bytes().enumerate() {
        if s.write_all(&[b]).is_err() {
            closed = Some(start.elapsed());
            break;
        }
        // One byte per 300 ms: the read's timeout paces the writes.
        match s.read(&mut buf) {
            Ok(_) => {
                closed = Some(start.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = Some(start.elapsed());
                break;
            }
        }
        if i == 2 {
            assert_eq!(gw.get("/pub/meanwhile", &[]).0, 200, "others are served");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a head trickled for 10 s is still being read"
        );
    }
    let closed = closed.expect("the whole trickled head was read");
    assert!(
        closed < Duration::from_secs(4),
        "closed only after {closed:?}"
    );
    assert_eq!(gw.get("/pub/after", &[]).0, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout_only() {
    let gw = Gw::start(
        &public_route(),
        &["--header-read-timeout", "1s", "--keep-alive-timeout", "3s"],
    );
    let request = format!("GET /nowhere HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    assert_eq!(status_of(&read_response(&mut s)), 404);
    // Idle longer than the header read timeout: still open, and it serves the next request.
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(request.as_bytes()).unwrap();
    assert_eq!(status_of(&read_response(&mut s)), 404);
    // Then idle past the keep-alive timeout: closed.
    let closed = closed_within(&mut s, Duration::from_secs(8))
        .expect("an idle keep-alive connection was still open after 8 s");
    assert!(
        closed >= Duration::from_millis(2500) && closed < Duration::from_secs(6),
        "closed after {closed:?}, not about 3 s"
    );
}

#[test]
fn an_oversized_head_is_refused_with_431_and_the_connection_closed() {
    let gw = Gw::start(&public_route(), &[]);
    let big = "b".repeat(100 * 1024);
    let request = format!(
        "GET /pub/big HTTP/1.1\r\nhost: {HOST}\r\nconnection: keep-alive\r\nx-big: {big}\r\n\r\n"
    );
    let mut s = TcpStream::connect(gw.listen).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let eof = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            // Reset: the gateway closed with our unread bytes in its buffer.
            Err(_) => break true,
        }
    };
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), 431, "{text}");
    assert!(eof, "the connection stayed open after a 431");
    // More headers than the table holds: 431 too.
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let out = gw.raw(
        format!("GET /pub/many HTTP/1.1\r\nhost: {HOST}\r\n{many}\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(status_of(&out), 431, "{out}");
    // Just under the cap is a request like any other.
    let fits = "f".repeat(60 * 1024);
    assert_eq!(gw.get("/pub/fits", &[("x-fits", &fits)]).0, 200);
}
