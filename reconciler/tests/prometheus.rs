//! The dashboards and alerts of deploy/ against a real Prometheus (Debian's `prometheus`
//! package; scripts/test installs it) scraping a real watch daemon and real gateways under
//! load, on the moto rig of the watch tests.
//!
//! 1. A healthy run: the fleet rolled out, traffic of every kind (routes, 404s, 401s, 429s,
//!    IdP refusals, cut-short uploads). No alert expression of
//!    deploy/prometheus/fleetgate-alerts.yaml returns anything, and no alert is pending.
//! 2. One fault after another, each with the alerts it must raise: a change whose canary
//!    fails (the fleet then behind a rejected head: drift; a notification sink that is down
//!    gives up), a dead backend, a slow one, an IdP client
//!    whose secret cannot be read, a gateway with no bundle and an unreadable source, a
//!    pointer moved to a bundle that fails its digest, a standby daemon without the lease,
//!    an invalid head, a daemon gone. After each, its alerts' expressions return series and
//!    the alerts are pending or firing; at the end, every alert has.
//! 3. Every query of every panel and variable of deploy/grafana's dashboards returns data: a
//!    metric or label the binaries do not emit leaves a panel empty and fails the test.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)]
mod support;

#[path = "../../tests/src/aws.rs"]
#[allow(dead_code)]
mod aws_support;

#[path = "support/rig.rs"]
#[allow(dead_code)]
mod rig;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

use rig::*;
use support::git;

/// The workspace's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `prometheus` binary, or why the test cannot run.
fn prometheus_bin() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("prometheus"))
            .find(|f| f.is_file())
    });
    from_path.or_else(|| {
        let f = PathBuf::from("/usr/bin/prometheus");
        f.is_file().then_some(f)
    })
}

/// A Prometheus server on a free loopback port, stopped on drop.
struct Prometheus {
    _proc: Proc,
    addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl Prometheus {
    fn start(rig: &Rig, bin: &Path, daemons: &[SocketAddr], gateways: &[SocketAddr]) -> Self {
        let dir = rig.tmp.path().join("prometheus");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        write_config(&config, daemons, gateways);
        let port = aws_support::free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let p = Prometheus {
            _proc: Proc(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            config,
            log,
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while p.get(rig, "/-/ready").map(|(c, _)| c) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus did not start:\n{}",
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn get(&self, rig: &Rig, path_and_query: &str) -> Option<(u16, String)> {
        self.call(rig, "GET", path_and_query)
    }

    fn call(&self, rig: &Rig, method: &str, path_and_query: &str) -> Option<(u16, String)> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{path_and_query}", self.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        rig.rt.block_on(async {
            let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
                .await
                .ok()?
                .ok()?;
            let code = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((code, String::from_utf8_lossy(&body).into_owned()))
        })
    }

    /// The targets again (a daemon or gateway started since), then a reload.
    fn retarget(&self, rig: &Rig, daemons: &[SocketAddr], gateways: &[SocketAddr]) {
        write_config(&self.config, daemons, gateways);
        let (code, body) = self.call(rig, "POST", "/-/reload").unwrap();
        assert_eq!(code, 200, "reload: {body}");
    }

    /// An instant query's result vector; the error names the query.
    fn query(&self, rig: &Rig, expr: &str) -> Result<Vec<Value>, String> {
        let q = serde_urlencoded::to_string([("query", expr)]).unwrap();
        let (code, body) = self
            .get(rig, &format!("/api/v1/query?{q}"))
            .ok_or_else(|| format!("no answer to {expr}"))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{expr}: {e}: {body}"))?;
        if code != 200 || v["status"] != "success" {
            return Err(format!("{expr}: {code} {body}"));
        }
        Ok(match &v["data"]["result"] {
            Value::Array(a) => a.clone(),
            // A scalar: one value.
            other => vec![serde_json::json!({"metric": {}, "value": other.clone()})],
        })
    }

    /// The series of `expr` whose value is a number (not NaN).
    fn numbers(&self, rig: &Rig, expr: &str) -> Result<usize, String> {
        Ok(self
            .query(rig, expr)?
            .iter()
            .filter(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| !v.is_nan())
            })
            .count())
    }

    /// Every alerting rule loaded: name, expression, health.
    fn rules(&self, rig: &Rig) -> Vec<(String, String, String)> {
        let (_, body) = self.get(rig, "/api/v1/rules?type=alert").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_string(),
                    r["query"].as_str().unwrap().to_string(),
                    format!(
                        "{} {}",
                        r["health"].as_str().unwrap_or("?"),
                        r["lastError"].as_str().unwrap_or("")
                    ),
                )
            })
            .collect()
    }

    /// The alerts pending or firing now.
    fn active(&self, rig: &Rig) -> BTreeMap<String, String> {
        let (_, body) = self.get(rig, "/api/v1/alerts").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap().to_string(),
                    a["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn write_config(path: &Path, daemons: &[SocketAddr], gateways: &[SocketAddr]) {
    let list = |a: &[SocketAddr]| {
        a.iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rules = workspace().join("deploy/prometheus/fleetgate-alerts.yaml");
    std::fs::write(
        path,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n\
             \x20 - job_name: fleetgate-reconciler\n\
             \x20   static_configs: [{{targets: [{}]}}]\n\
             \x20 - job_name: fleetgate-gateway\n\
             \x20   static_configs: [{{targets: [{}]}}]\n",
            rules.display(),
            list(daemons),
            list(gateways)
        ),
    )
    .unwrap();
}

const GATEWAY: &str = r#"apiVersion: fleetgate.dev/v1
kind: Gateway
metadata: {name: base}
spec:
  backends:
    app: {url: "http://BACKEND"}
    gone: {url: "http://127.0.0.1:DEAD", connectTimeout: 1s}
  authPolicies:
    default: {issuers: [local]}
  routes:
    - {name: hello, methods: [GET], path: /hello, backend: app, upstreamPath: /ok, public: true}
    - {name: customers, methods: [GET], path: "/customers/{id}", backend: app, public: true}
    - {name: limited, methods: [GET], path: /limited, backend: app, upstreamPath: /ok, public: true, rateLimit: {requests: 1, per: 1m, key: ip}}
    - {name: private, methods: [GET], path: /private, backend: app, upstreamPath: /ok, auth: {policy: default}}
    - {name: upload, methods: [PUT], path: /upload, backend: app, upstreamPath: /ok, public: true, retries: {attempts: 1, backoff: 10ms}}
    - {name: slow, methods: [GET], path: /slow, backend: app, upstreamPath: /slow, public: true, timeout: 5s}
    - {name: dead, methods: [GET], path: /dead, backend: gone, public: true}
"#;

/// The rig's identity provider gets one client, whose secret cannot be read.
const BROKEN_CLIENT: &str = "  clients:
    - id: broken
      secret: {ref: {env: FLEETGATE_TEST_NO_SUCH_SECRET}}
      scopes: []
";

/// What the load sends, beyond the rig's own `/hello`.
#[derive(Default)]
struct Faults {
    dead: AtomicBool,
    slow: AtomicBool,
    broken_client: AtomicBool,
}

/// Traffic of every kind to every gateway, until the rig stops.
fn load(rig: &Rig, faults: Arc<Faults>) {
    let (client, data, stop) = (rig.http.clone(), rig.data.clone(), rig.stop.clone());
    let send = move |client: &hyper_util::client::legacy::Client<_, Full<Bytes>>,
                     method: &'static str,
                     uri: String,
                     body: &'static str| {
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let fut = client.request(req);
        async move {
            if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), fut).await {
                let _ = resp.into_body().collect().await;
            }
        }
    };
    rig.rt.spawn(async move {
        let mut round = 0u64;
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            for addr in &data {
                let u = |p: &str| format!("http://{addr}{p}");
                let mut calls = vec![
                    send(&client, "GET", u("/customers/c-42"), ""),
                    send(&client, "GET", u("/limited"), ""),
                    send(&client, "GET", u("/private"), ""),
                    send(&client, "GET", u("/nowhere"), ""),
                    send(
                        &client,
                        "POST",
                        u("/oauth2/token"),
                        "grant_type=client_credentials&client_id=nobody&client_secret=x",
                    ),
                ];
                if faults.dead.load(Ordering::SeqCst) {
                    calls.push(send(&client, "GET", u("/dead"), ""));
                }
                if faults.broken_client.load(Ordering::SeqCst) {
                    calls.push(send(
                        &client,
                        "POST",
                        u("/oauth2/token"),
                        "grant_type=client_credentials&client_id=broken&client_secret=x",
                    ));
                }
                if faults.slow.load(Ordering::SeqCst) && round.is_multiple_of(2) {
                    tokio::spawn(send(&client, "GET", u("/slow"), ""));
                }
                futures::future::join_all(calls).await;
                if round.is_multiple_of(5) {
                    // An upload the client cuts short (buffered for a retry, so read before it
                    // is sent): a client error, never the gateway's.
                    let addr = *addr;
                    tokio::spawn(async move {
                        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                            use tokio::io::AsyncWriteExt as _;
                            let _ = s
                                .write_all(
                                    b"PUT /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nonly-a-part",
                                )
                                .await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn grouping_labels_are_found() {
    let e = "sum by (route, le) (rate(x[1m])) * on (instance) group_left (account) max without(digest) (y) / ignoring(a) z{labels=\"by (nope)\"}";
    let got: Vec<String> = grouping_labels(e).into_iter().collect();
    assert_eq!(got, ["a", "account", "digest", "instance", "le", "route"]);
}

/// Waits until `ok()`, or fails saying what.
fn eventually(what: &str, timeout: Duration, mut ok: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match ok() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("timed out: {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The label names an expression groups or matches by: `by (..)`, `without (..)`,
/// `on (..)`, `ignoring (..)`, `group_left (..)`, `group_right (..)`.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    // String literals blanked out: a label value may read like a clause.
    let (mut quoted, mut escaped) = (false, false);
    let expr: String = expr
        .chars()
        .map(|c| {
            let inside = quoted;
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                _ => {}
            }
            if inside && c != '"' { ' ' } else { c }
        })
        .collect();
    let expr = expr.as_str();
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut from = 0;
        while let Some(i) = expr[from..].find(kw) {
            let at = from + i;
            from = at + kw.len();
            let before_ok =
                at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
            let rest = expr[from..].trim_start();
            if !before_ok || !rest.starts_with('(') {
                continue;
            }
            let Some(end) = rest.find(')') else { continue };
            for label in rest[1..end].split(',') {
                let label = label.trim();
                if !label.is_empty() {
                    out.insert(label.to_string());
                }
            }
        }
    }
    out
}

/// `expr` with Grafana's variables set to values that select everything.
fn substitute(expr: &str) -> String {
    let mut out = expr.to_string();
    for (name, value) in [
        ("__rate_interval", "1m"),
        ("__interval", "1m"),
        ("__range", "1h"),
        ("account", ".*"),
        ("instance", ".*"),
        ("route", ".*"),
    ] {
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    out
}

/// Every panel's and query variable's expression of a dashboard: (where, PromQL).
fn dashboard_queries(path: &Path) -> Vec<(String, String)> {
    fn panels(v: &Value, file: &str, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((format!("{file}: panel {title:?}"), expr.to_string()));
                }
            }
            panels(&p["panels"], file, out);
        }
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let file = path.file_name().unwrap().to_string_lossy().to_string();
    let mut out = Vec::new();
    panels(&v["panels"], &file, &mut out);
    for var in v["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .or(var["definition"].as_str())
            .unwrap_or_default();
        // label_values(<selector>, <label>): the selector's series must carry the label.
        if let Some(inner) = q
            .trim()
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            && let Some((selector, label)) = inner.rsplit_once(',')
        {
            out.push((
                format!("{file}: variable {}", var["name"].as_str().unwrap_or("?")),
                format!("count by ({}) ({})", label.trim(), selector.trim()),
            ));
        }
    }
    out
}

#[test]
fn dashboards_and_alerts_hold_against_a_real_prometheus() {
    let Some(bin) = prometheus_bin() else {
        let required = std::env::var("CI").as_deref() == Ok("true")
            || std::env::var_os("FLEETGATE_REQUIRE_PROMETHEUS").is_some();
        assert!(
            !required,
            "prometheus is not installed (scripts/test installs Debian's prometheus package)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no prometheus binary (apt-get install prometheus, or run scripts/test)"
        );
        return;
    };
    let mut rig = Rig::start();
    // The credential of the notification sink the faults add (its port is closed).
    rig.env = vec![(
        "FLEETGATE_NOTIFY_TEST_DOWN_KEY".into(),
        "a-key-for-a-sink-that-is-down".into(),
    )];
    let dead = aws_support::free_port();
    std::fs::write(
        rig.repo.join("base/gateway.yaml"),
        GATEWAY
            .replace("BACKEND", &rig.backend.to_string())
            .replace("DEAD", &dead.to_string()),
    )
    .unwrap();
    assert!(IDP.contains("  clients: []\n"));
    std::fs::write(
        rig.repo.join("base/idp.yaml"),
        IDP.replace("  clients: []\n", BROKEN_CLIENT),
    )
    .unwrap();
    git(&rig.repo, &["commit", "-q", "-am", "every kind of route"]);
    let faults = Arc::new(Faults::default());
    load(&rig, faults.clone());

    let c0 = rig.head();
    let daemon = rig.daemon("primary", "1s", &["--drift-interval", "2s"]);
    rig.wait_applied(&daemon, &c0);
    let prom = Prometheus::start(&rig, &bin, &[daemon.addr], &rig.admin);

    // The rules load and evaluate without error against what the binaries emit.
    let rules = {
        let mut rules = Vec::new();
        eventually("the alert rules loaded", Duration::from_secs(30), || {
            rules = prom.rules(&rig);
            if rules.len() < 10 {
                return Err(format!("{} rules", rules.len()));
            }
            Ok(())
        });
        rules
    };
    eventually("every target scraped", Duration::from_secs(30), || {
        let got = prom.numbers(&rig, "up == 1")?;
        if got < 5 {
            return Err(format!("{got} targets up"));
        }
        Ok(())
    });

    // 1. Healthy: a rollout while Prometheus watches, some seconds of traffic, then nothing
    // fires and nothing is pending.
    support::edit(
        &rig.repo,
        "base/gateway.yaml",
        "path: \"/customers/{id}\", backend: app,",
        "path: \"/customers/{id}\", backend: app, timeout: 20s,",
    );
    git(
        &rig.repo,
        &["commit", "-q", "-am", "customers: a longer timeout"],
    );
    let c0 = rig.head();
    rig.wait_applied(&daemon, &c0);
    std::thread::sleep(Duration::from_secs(5));
    let fired = |prom: &Prometheus| -> BTreeSet<String> {
        rules
            .iter()
            .filter(|(_, expr, _)| prom.numbers(&rig, expr).unwrap_or(0) > 0)
            .map(|(name, _, _)| name.clone())
            .collect()
    };
    let healthy = fired(&prom);
    assert!(
        healthy.is_empty(),
        "alerts whose expression holds in a healthy run: {healthy:?}"
    );
    let active = prom.active(&rig);
    assert!(
        active.is_empty(),
        "alerts active in a healthy run: {active:?}"
    );
    for (name, _, health) in &prom.rules(&rig) {
        assert!(health.starts_with("ok"), "{name}: {health}");
    }

    // 2. The faults, one after another, each with the alerts it must raise.
    let mut raised: BTreeSet<String> = BTreeSet::new();
    let mut expect = |prom: &Prometheus, scenario: &str, alerts: &[&str]| {
        eventually(scenario, Duration::from_secs(90), || {
            let now = fired(prom);
            let active = prom.active(&rig);
            let missing: Vec<&&str> = alerts
                .iter()
                .filter(|a| !now.contains(**a) || !active.contains_key(**a))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "not raised: {missing:?}; expressions holding: {now:?}; active: {active:?}"
                ))
            }
        });
        raised.extend(alerts.iter().map(|a| a.to_string()));
    };

    // A change whose canary fails, announced to a notification sink that is down.
    let fleet = std::fs::read_to_string(rig.repo.join("fleet.yaml")).unwrap();
    std::fs::write(
        rig.repo.join("fleet.yaml"),
        fleet.replace(
            "  drift: {interval: 1h, historyDepth: 20}\n",
            &format!(
                "  drift: {{interval: 1h, historyDepth: 20}}\n  notifications:\n    attempts: 2\n    retryBackoff: 100ms\n    sinks:\n      - {{type: webhook, name: down, url: \"http://127.0.0.1:{dead}/hook\", secret: {{env: FLEETGATE_NOTIFY_TEST_DOWN_KEY}}}}\n"
            ),
        ),
    )
    .unwrap();
    support::edit(
        &rig.repo,
        "base/gateway.yaml",
        "path: /hello, backend: app, upstreamPath: /ok,",
        "path: /hello, backend: app, upstreamPath: /bad,",
    );
    git(&rig.repo, &["commit", "-q", "-am", "hello broken"]);
    let c1 = rig.head();
    rig.wait(
        &daemon,
        "the canary rolled back",
        Duration::from_secs(180),
        |s| s["rejected"]["commit"] == c1.as_str(),
    );
    // Drift too: the rejected commit is the head, and every account is behind it.
    expect(
        &prom,
        "a failed canary",
        &[
            "FleetgateRolloutRolledBack",
            "FleetgateAccountsRolledBack",
            "FleetgateNotificationsFailing",
            "FleetgateDrift",
        ],
    );

    faults.dead.store(true, Ordering::SeqCst);
    expect(
        &prom,
        "a dead backend",
        &["FleetgateUpstreamErrors", "FleetgateGateway5xx"],
    );

    faults.slow.store(true, Ordering::SeqCst);
    expect(&prom, "a slow backend", &["FleetgateGatewayLatency"]);

    faults.broken_client.store(true, Ordering::SeqCst);
    expect(
        &prom,
        "an IdP client whose secret cannot be read",
        &["FleetgateTokenErrors"],
    );

    // A gateway whose source cannot be read: no bundle, and failing polls.
    let ghost_admin = SocketAddr::from(([127, 0, 0, 1], aws_support::free_port()));
    let ghost_data = aws_support::free_port();
    let _ghost = Proc(
        Command::new(gateway_bin())
            .args([
                "--source",
                &format!("file://{}/no-such-fleet/ghost", rig.tmp.path().display()),
                "--listen",
                &format!("127.0.0.1:{ghost_data}"),
                "--admin-listen",
                &ghost_admin.to_string(),
                "--poll",
                "200ms",
                "--log-format",
                "text",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut gateways = rig.admin.clone();
    gateways.push(ghost_admin);
    prom.retarget(&rig, &[daemon.addr], &gateways);
    expect(
        &prom,
        "a gateway with no bundle",
        &["FleetgateGatewayNotReady", "FleetgateGatewayReloadFailing"],
    );

    // Someone with write access moves p1's pointer to a bundle that is not what its digest
    // says: the gateway refuses it and keeps serving the last good one.
    let pointer = rig.pointers()["p1"].clone();
    let fake = "0".repeat(64);
    let mut moved = pointer.clone();
    let digest = pointer["digest"].as_str().unwrap();
    let fake_digest = match digest.split_once(':') {
        Some((algo, _)) => format!("{algo}:{fake}"),
        None => fake.clone(),
    };
    moved["digest"] = Value::String(fake_digest);
    rig.rt.block_on(async {
        let s3 = &rig.s3["p1"];
        for (key, body) in [
            (
                format!("fleetgate/p1/bundles/{fake}.json"),
                b"{\"not\": \"the bundle\"}".to_vec(),
            ),
            (
                "fleetgate/p1/current.json".to_string(),
                serde_json::to_vec(&moved).unwrap(),
            ),
        ] {
            s3.put_object()
                .bucket("fleetgate-config-100000000004")
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    });
    expect(
        &prom,
        "a refused bundle",
        &[
            "FleetgateGatewayBundleRefused",
            "FleetgateGatewayStaleBundle",
        ],
    );

    // A standby daemon: it cannot hold the lease.
    let standby = rig.daemon("standby", "1s", &[]);
    prom.retarget(&rig, &[daemon.addr, standby.addr], &gateways);
    expect(&prom, "a standby daemon", &["FleetgateLeaseNotHeld"]);

    // An invalid head: every pass fails.
    std::fs::write(
        rig.repo.join("fleet.yaml"),
        "apiVersion: fleetgate.dev/v1\nkind: Fleet\n",
    )
    .unwrap();
    git(&rig.repo, &["commit", "-q", "-am", "fleet.yaml broken"]);
    expect(&prom, "an invalid head", &["FleetgateReconcileErrors"]);

    // A daemon gone.
    drop(standby);
    expect(&prom, "a daemon gone", &["FleetgateDaemonDown"]);

    let names: BTreeSet<String> = rules.iter().map(|(n, _, _)| n.clone()).collect();
    let never: Vec<&String> = names.difference(&raised).collect();
    assert!(
        never.is_empty(),
        "alerts no scenario raised (each needs one): {never:?}"
    );

    // 3. Every dashboard query returns data.
    let mut empty = Vec::new();
    let dashboards = workspace().join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dashboards)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    // Label names the binaries emit (a grouping by a label no series has is not an error to
    // Prometheus: it silently groups everything into one series).
    let (_, body) = prom.get(&rig, "/api/v1/labels").unwrap();
    let labels: BTreeSet<String> = serde_json::from_value::<Vec<String>>(
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone(),
    )
    .unwrap()
    .into_iter()
    .collect();
    for (name, expr, _) in &rules {
        for l in grouping_labels(expr).difference(&labels) {
            empty.push(format!(
                "alert {name}: groups by {l:?}, which no series has"
            ));
        }
    }
    let mut checked = 0;
    for file in &files {
        for (at, expr) in dashboard_queries(file) {
            checked += 1;
            let q = substitute(&expr);
            for l in grouping_labels(&q).difference(&labels) {
                empty.push(format!("{at}: groups by {l:?}, which no series has: {q}"));
            }
            match prom.numbers(&rig, &q) {
                Ok(n) if n > 0 => {}
                Ok(_) => empty.push(format!("{at}: no data: {q}")),
                Err(e) => empty.push(format!("{at}: {e}")),
            }
        }
    }
    assert!(checked >= 30, "only {checked} queries found");
    assert!(
        empty.is_empty(),
        "{} problems in {checked} dashboard queries and the alerts:\n{}",
        empty.len(),
        empty.join("\n")
    );
}
