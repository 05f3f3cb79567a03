//! The rollout engine and `fleetgate watch`, end to end: moto's server for S3 and STS (every
//! account its own moto account), real `fleetgate-gateway` processes, one per account,
//! polling their account's S3 prefix with that account's credentials and writing status
//! reports, a real backend behind them (`/ok*` answers 200, `/bad` 500), traffic through
//! every gateway all along, a real git repository, and the `fleetgate` binary.
//!
//! The gateway binary is the workspace's own (`cargo test --workspace` builds it next to
//! `fleetgate`; run alone, this file builds it when missing).

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

#[path = "../../tests/src/aws.rs"]
#[allow(dead_code)]
mod aws_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_support::{Moto, assume, free_port, hub_config, s3_with};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::{code, git, show, stdout};

const FLEET: &str = r#"apiVersion: fleetgate.dev/v1
kind: Fleet
metadata: {name: watch-test}
spec:
  roleName: fleetgate-deployer
  externalId: watch-test
  hubRegion: us-east-1
  stateBucket: fleetgate-hub-state
  bucket: fleetgate-config-${account.id}
  prefix: fleetgate/${account.name}
  concurrency: 8
  rollout: {pollInterval: 250ms, reportMaxAge: 30s, rollback: wave}
  waves:
    - name: canary
      select: {stages: [canary]}
      failureTolerance: 0
      bakeTime: 2s
      healthGate: {max5xxRatio: 0.05, timeout: 60s, minRequests: 5, noGateway: fail}
    - name: early
      select: {stages: [early]}
      failureTolerance: 0
      bakeTime: 2s
      healthGate: {max5xxRatio: 0.05, timeout: 60s, minRequests: 5, noGateway: fail}
    - name: prod
      select: {stages: [prod]}
      failureTolerance: 0
      bakeTime: 2s
      healthGate: {max5xxRatio: 0.05, timeout: 60s, minRequests: 5, noGateway: fail}
  drift: {interval: 1h, historyDepth: 20}
"#;

const IDP: &str = r#"apiVersion: fleetgate.dev/v1
kind: IdentityProvider
metadata: {name: base}
spec:
  issuer:
    url: https://auth.${account.name}.test
    audiences: ["https://api.${account.name}.test"]
    tokenTtl: 15m
    signingKeys:
      active:
        kid: k1
        algorithm: RS256
        privateKey: {awsSecretsManager: "arn:aws:secretsmanager:${account.region}:${account.id}:secret:idp"}
  scopes: []
  clients: []
"#;

/// Two canary accounts, one early, one prod.
const ACCOUNTS: [(&str, &str, &str); 4] = [
    ("c1", "100000000001", "canary"),
    ("c2", "100000000002", "canary"),
    ("e1", "100000000003", "early"),
    ("p1", "100000000004", "prod"),
];

const SECRET: &str = "webhook-test-secret";

/// The workspace's gateway binary, next to `fleetgate`.
fn gateway_bin() -> PathBuf {
    support::gateway_bin_beside(Path::new(env!("CARGO_BIN_EXE_fleetgate")))
}

/// How a test webhook is signed.
#[derive(Clone, Copy)]
enum Sig {
    Good,
    Wrong,
    Missing,
}

/// A process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `fleetgate watch`.
struct Daemon {
    proc: Proc,
    addr: SocketAddr,
    log: PathBuf,
    identity: String,
}

/// Everything a scenario runs against.
struct Rig {
    rt: tokio::runtime::Runtime,
    moto: Moto,
    tmp: tempfile::TempDir,
    repo: PathBuf,
    /// Per account: an S3 client acting as that account.
    s3: BTreeMap<String, aws_sdk_s3::Client>,
    gateways: Vec<Proc>,
    /// Each gateway's data-plane address.
    data: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Rig {
    /// moto, the config repo at its first commit, the buckets (bootstrap), the backend, a
    /// gateway per account, and traffic through each.
    fn start() -> Rig {
        Rig::start_with(FLEET)
    }

    /// As [`Rig::start`], with this fleet.yaml.
    fn start_with(fleet: &str) -> Rig {
        let moto = Moto::start();
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));

        // The backend: /ok* is healthy, /bad fails.
        let backend = rt.block_on(async {
            let app = axum::Router::new()
                .route(
                    "/bad",
                    axum::routing::get(|| async {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken\n")
                    }),
                )
                .fallback(|| async { "ok\n" });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        while !stop.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    })
                    .await
                    .unwrap();
            });
            addr
        });

        std::fs::create_dir_all(repo.join("base")).unwrap();
        std::fs::create_dir_all(repo.join("accounts")).unwrap();
        std::fs::write(repo.join("fleet.yaml"), fleet).unwrap();
        std::fs::write(repo.join("base/idp.yaml"), IDP).unwrap();
        std::fs::write(
            repo.join("base/gateway.yaml"),
            format!(
                "apiVersion: fleetgate.dev/v1\nkind: Gateway\nmetadata: {{name: base}}\nspec:\n  backends:\n    app: {{url: \"http://{backend}\"}}\n  routes:\n    - name: hello\n      methods: [GET]\n      path: /hello\n      backend: app\n      upstreamPath: /ok\n      public: true\n"
            ),
        )
        .unwrap();
        for (name, id, stage) in ACCOUNTS {
            std::fs::write(
                repo.join(format!("accounts/{name}.yaml")),
                format!(
                    "apiVersion: fleetgate.dev/v1\nkind: Account\nmetadata: {{name: {name}}}\nspec:\n  accountId: \"{id}\"\n  region: us-east-1\n  stage: {stage}\n  tenant: t-{name}\n"
                ),
            )
            .unwrap();
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "the fleet"]);

        let endpoint = moto.endpoint();
        let http = Client::builder(TokioExecutor::new()).build_http();
        let mut rig = Rig {
            rt,
            moto,
            tmp,
            repo,
            s3: BTreeMap::new(),
            gateways: Vec::new(),
            data: Vec::new(),
            stop,
            http,
        };
        let out = rig.fleetgate(&["bootstrap", "--repo", rig.repo_str(), "--target", "aws"]);
        assert_eq!(code(&out), 0, "{}", show(&out));
        let creds = rig.rt.block_on(async {
            let hub = hub_config(&endpoint).await;
            aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&hub)
                    .force_path_style(true)
                    .build(),
            )
            .create_bucket()
            .bucket("fleetgate-hub-state")
            .send()
            .await
            .unwrap();
            let mut creds = Vec::new();
            for (name, id, _) in ACCOUNTS {
                creds.push((name, id, assume(&hub, id, "fleetgate-gateway").await));
            }
            (hub, creds)
        });
        let (hub, creds) = creds;

        // One gateway per account, with that account's credentials, like a task role.
        let bin = gateway_bin();
        for (name, id, c) in creds {
            rig.s3
                .insert(name.to_string(), s3_with(&hub, c.clone(), "us-east-1"));
            let (key, secret, token) = (
                c.access_key_id().to_string(),
                c.secret_access_key().to_string(),
                c.session_token().unwrap_or_default().to_string(),
            );
            let (data, admin) = (free_port(), free_port());
            let log =
                std::fs::File::create(rig.tmp.path().join(format!("gateway-{name}.log"))).unwrap();
            let child = Command::new(&bin)
                .args([
                    "--source",
                    &format!("s3://fleetgate-config-{id}/fleetgate/{name}"),
                    "--listen",
                    &format!("127.0.0.1:{data}"),
                    "--admin-listen",
                    &format!("127.0.0.1:{admin}"),
                    "--poll",
                    "200ms",
                    "--status-every",
                    "300ms",
                    "--instance-id",
                    &format!("gw-{name}"),
                    "--endpoint-url",
                    &endpoint,
                    "--log-format",
                    "text",
                ])
                .env_remove("AWS_PROFILE")
                .env("AWS_ACCESS_KEY_ID", key)
                .env("AWS_SECRET_ACCESS_KEY", secret)
                .env("AWS_SESSION_TOKEN", token)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_CONFIG_FILE", rig.tmp.path().join("no-aws-config"))
                .env(
                    "AWS_SHARED_CREDENTIALS_FILE",
                    rig.tmp.path().join("no-aws-credentials"),
                )
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            rig.gateways.push(Proc(child));
            rig.data.push(SocketAddr::from(([127, 0, 0, 1], data)));
        }

        // Traffic through every gateway, all along: what the health gates judge.
        let (client, data, stop) = (rig.http.clone(), rig.data.clone(), rig.stop.clone());
        rig.rt.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for addr in &data {
                    let uri = format!("http://{addr}/hello");
                    if let Ok(req) = hyper::Request::get(uri).body(Full::new(Bytes::new())) {
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            if let Ok(resp) = client.request(req).await {
                                let _ = resp.into_body().collect().await;
                            }
                        })
                        .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        rig
    }

    fn repo_str(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    /// The CLI as an operator runs it: hub credentials in the environment, moto's endpoint.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
        c.args(args)
            .args(["--endpoint-url", &self.moto.endpoint()])
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("FLEETGATE_WEBHOOK_SECRET")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.tmp.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.tmp.path().join("no-aws-credentials"),
            )
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache-cli"))
            .env("FLEETGATE_APPLIED_BY", "operator")
            .env("NO_COLOR", "1")
            .env("CI", "true");
        c
    }

    fn fleetgate(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `fleetgate watch` on the repo (by file:// URL, so it fetches like a remote).
    fn daemon(&self, identity: &str, poll: &str, extra: &[&str]) -> Daemon {
        let port = free_port();
        let secret = self.tmp.path().join("webhook-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let log = self.tmp.path().join(format!("watch-{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let url = format!("file://{}", self.repo_str());
        let mut cmd = self.command(&[
            "watch",
            "--repo",
            &url,
            "--branch",
            "main",
            "--target",
            "aws",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--poll-interval",
            poll,
            "--lease-ttl",
            "3s",
            "--identity",
            identity,
            "--account-timeout",
            "30s",
            "--max-backoff",
            "2s",
        ]);
        cmd.args(extra)
            .arg("--webhook-secret-file")
            .arg(&secret)
            .env(
                "FLEETGATE_CACHE_DIR",
                self.tmp.path().join(format!("cache-{identity}")),
            )
            .stdout(Stdio::null())
            .stderr(file);
        let d = Daemon {
            proc: Proc(cmd.spawn().unwrap()),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            identity: identity.to_string(),
        };
        self.wait(&d, "the daemon answers", Duration::from_secs(30), |_| true);
        d
    }

    fn request(
        &self,
        method: &str,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Option<(u16, String)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_vec()))).unwrap();
        self.rt.block_on(async {
            let resp = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
                .await
                .ok()?
                .ok()?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((status, String::from_utf8_lossy(&body).into_owned()))
        })
    }

    fn status(&self, d: &Daemon) -> Option<Value> {
        let (code, body) = self.request("GET", d.addr, "/status", &[], b"")?;
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    fn metrics(&self, d: &Daemon) -> String {
        self.request("GET", d.addr, "/metrics", &[], b"").unwrap().1
    }

    /// Waits until `ok(status)`, or fails with the last status and the daemon's log.
    fn wait(
        &self,
        d: &Daemon,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(s) = self.status(d) {
                if ok(&s) {
                    return s;
                }
                last = Some(s);
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: timed out waiting for {what}\n--- last /status\n{}\n--- log\n{}",
                    d.identity,
                    serde_json::to_string_pretty(&last).unwrap(),
                    std::fs::read_to_string(&d.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the daemon has brought the fleet to `commit`.
    fn wait_applied(&self, d: &Daemon, commit: &str) -> Value {
        self.wait(
            d,
            &format!("{commit} applied"),
            Duration::from_secs(180),
            |s| s["last_applied"]["commit"] == commit,
        )
    }

    /// Sends a push webhook for the branch's head.
    fn push_webhook(&self, d: &Daemon, after: &str, signature: Sig) -> (u16, String) {
        let body = serde_json::to_vec(&serde_json::json!({
            "ref": "refs/heads/main", "after": after,
        }))
        .unwrap();
        let mut headers = vec![
            ("x-github-event", "push".to_string()),
            ("x-github-delivery", "test-delivery".to_string()),
            ("content-type", "application/json".to_string()),
        ];
        match signature {
            Sig::Good => headers.push((
                "x-hub-signature-256",
                fleetgate::daemon::watch::sign(SECRET.as_bytes(), &body),
            )),
            Sig::Wrong => headers.push((
                "x-hub-signature-256",
                fleetgate::daemon::watch::sign(b"not the secret", &body),
            )),
            Sig::Missing => {}
        }
        self.request("POST", d.addr, "/webhook", &headers, &body)
            .unwrap()
    }

    fn head(&self) -> String {
        git(&self.repo, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Commits an edit of base/gateway.yaml; returns the commit.
    fn commit(&self, find: &str, replace: &str, message: &str) -> String {
        support::edit(&self.repo, "base/gateway.yaml", find, replace);
        git(&self.repo, &["commit", "-q", "-am", message]);
        self.head()
    }

    fn revert(&self, commit: &str) -> String {
        git(&self.repo, &["revert", "--no-edit", commit]);
        self.head()
    }

    /// Every account's digest at the working tree's head, from `fleetgate render`.
    fn rendered(&self) -> BTreeMap<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(["render", "--repo", self.repo_str()])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        stdout(&out)
            .lines()
            .map(|l| {
                let (a, d) = l.split_once(' ').unwrap();
                (a.to_string(), d.to_string())
            })
            .collect()
    }

    /// Every account's pointer, read as that account.
    fn pointers(&self) -> BTreeMap<String, Value> {
        ACCOUNTS
            .iter()
            .filter_map(|(name, id, _)| {
                let p = self.rt.block_on(get_json(
                    &self.s3[*name],
                    &format!("fleetgate-config-{id}"),
                    &format!("fleetgate/{name}/current.json"),
                ))?;
                Some((name.to_string(), p))
            })
            .collect()
    }

    fn digests(&self) -> BTreeMap<String, String> {
        self.pointers()
            .into_iter()
            .map(|(n, p)| (n, p["digest"].as_str().unwrap().to_string()))
            .collect()
    }
}

async fn get_json(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Value> {
    let out = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap())
}

/// The states of the accounts of the rollout in `/status`, by wave.
fn rollout_states(status: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    status["rollout"]["waves"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["accounts"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(a, r)| (a.clone(), r["state"].as_str().unwrap().to_string()))
                    .collect(),
            )
        })
        .collect()
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// (1) a good change rolls through every wave, visible in /status and /metrics while it
/// runs; (5) a webhook with a bad signature is refused and triggers nothing, a signed one
/// triggers the rollout; (2) a change that makes the backend answer 500 breaches the canary
/// wave: the canary accounts are rolled back, early and prod never change, and the commit
/// is not retried.
#[test]
fn waves_roll_a_good_change_and_roll_back_a_sick_canary() {
    let rig = Rig::start();
    let c0 = rig.head();
    // Polling once an hour: after the first pass, only webhooks wake the daemon.
    let d = rig.daemon("solo", "1h", &[]);
    let status = rig.wait_applied(&d, &c0);
    let d0 = rig.rendered();
    assert_eq!(rig.digests(), d0);
    for (wave, accounts) in rollout_states(&status) {
        for (account, state) in accounts {
            assert_eq!(state, "healthy", "{wave}/{account}");
        }
    }
    assert_eq!(status["lease"]["held_by_me"], true);

    // (5) A new commit, announced with a bad signature, then unsigned: refused, nothing runs.
    let c1 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok2", "hello v2");
    let before = rig.status(&d).unwrap();
    let (code, _) = rig.push_webhook(&d, &c1, Sig::Wrong);
    assert_eq!(code, 401);
    let (code, _) = rig.push_webhook(&d, &c1, Sig::Missing);
    assert_eq!(code, 401);
    std::thread::sleep(Duration::from_secs(2));
    let after = rig.status(&d).unwrap();
    assert_eq!(
        after["head"]["commit"], c0,
        "a refused webhook triggers nothing"
    );
    assert_eq!(after["last_reconcile_at"], before["last_reconcile_at"]);
    assert_eq!(rig.digests(), d0);
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("webhook refused"), "{log}");
    assert!(!log.contains(SECRET), "the secret never reaches the log");
    assert!(
        rig.metrics(&d)
            .contains("fleetgate_webhooks_total{result=\"bad_signature\"} 2")
    );

    // (1) Signed: the daemon rolls c1 out wave by wave; /status shows it while it runs.
    let (code, _) = rig.push_webhook(&d, &c1, Sig::Good);
    assert_eq!(code, 202);
    let during = rig.wait(&d, "the rollout in flight", Duration::from_secs(120), |s| {
        s["rollout"]["commit"] == c1.as_str() && s["rollout"]["outcome"] == "in-progress"
    });
    assert_eq!(
        rollout_states(&during).keys().cloned().collect::<Vec<_>>(),
        ["canary", "early", "prod"]
    );
    let metrics = rig.metrics(&d);
    assert!(metrics.contains("fleetgate_accounts{state="), "{metrics}");
    let status = rig.wait_applied(&d, &c1);
    let d1 = rig.rendered();
    assert_eq!(rig.digests(), d1);
    let waves = status["rollout"]["waves"].as_array().unwrap();
    assert!(
        waves.iter().all(|w| w["state"] == "succeeded"),
        "{status:#}"
    );
    let metrics = rig.metrics(&d);
    assert_eq!(
        metric(&metrics, "fleetgate_rollouts_total{result=\"succeeded\"}"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "fleetgate_lease_held"), Some(1.0));

    // (2) A route to a backend path that answers 500.
    let untouched: BTreeMap<String, Value> = rig
        .pointers()
        .into_iter()
        .filter(|(n, _)| n == "e1" || n == "p1")
        .collect();
    let c2 = rig.commit("upstreamPath: /ok2", "upstreamPath: /bad", "hello broken");
    assert_eq!(rig.push_webhook(&d, &c2, Sig::Good).0, 202);
    let status = rig.wait(
        &d,
        "the canary rolled back",
        Duration::from_secs(180),
        |s| s["rejected"]["commit"] == c2.as_str(),
    );
    assert_eq!(status["rollout"]["outcome"], "rolled-back", "{status:#}");
    let states = rollout_states(&status);
    assert_eq!(states["canary"]["c1"], "rolled-back", "{status:#}");
    assert_eq!(states["canary"]["c2"], "rolled-back", "{status:#}");
    assert_eq!(states["early"]["e1"], "pending");
    assert_eq!(states["prod"]["p1"], "pending");
    let reason = status["rollout"]["reason"].as_str().unwrap();
    assert!(reason.contains("5xx"), "{reason}");
    assert_eq!(rig.digests(), d1, "canaries back on the last good bundles");
    let now: BTreeMap<String, Value> = rig
        .pointers()
        .into_iter()
        .filter(|(n, _)| n == "e1" || n == "p1")
        .collect();
    assert_eq!(now, untouched, "early and prod were never written");
    assert_eq!(
        metric(&rig.metrics(&d), "fleetgate_account_rollbacks_total"),
        Some(2.0)
    );

    // Not retried: another wake-up leaves the fleet alone and says why.
    assert_eq!(rig.push_webhook(&d, &c2, Sig::Good).0, 202);
    let status = rig.wait(&d, "the rejection reported", Duration::from_secs(60), |s| {
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not retried"))
    });
    assert_eq!(status["rollout"]["outcome"], "rolled-back");
    assert_eq!(rig.digests(), d1);
}

/// (3) a revert commit rolls the fleet back through the daemon; (4) `rollback --to` on the
/// whole fleet while the daemon runs: the daemon holds (shows it, does not roll forward)
/// until the revert lands, then goes on with newer commits.
#[test]
fn revert_and_rollback_to_with_holds_the_daemon_respects() {
    let rig = Rig::start();
    let c0 = rig.head();
    let d = rig.daemon("solo", "500ms", &[]);
    rig.wait_applied(&d, &c0);
    let d0 = rig.rendered();

    let c1 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok1", "hello v1");
    rig.wait_applied(&d, &c1);
    assert_ne!(rig.digests(), d0);

    // (3) Revert: the daemon rolls every account back to c0's bundles.
    let c2 = rig.revert(&c1);
    rig.wait_applied(&d, &c2);
    assert_eq!(rig.digests(), d0, "the revert rolled the fleet back");

    let c3 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok3", "hello v3");
    rig.wait_applied(&d, &c3);
    let d3 = rig.rendered();
    assert_eq!(rig.digests(), d3);

    // (4) Break-glass while the daemon runs: the whole fleet back to c2, at once.
    let out = rig.fleetgate(&[
        "rollback",
        "--repo",
        rig.repo_str(),
        "--branch",
        "main",
        "--to",
        &c2,
        "--target",
        "aws",
        "--reason",
        "v3 breaks checkout",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(stdout(&out).contains("rolled back to"), "{}", show(&out));
    assert_eq!(rig.digests(), d0);
    for (name, p) in rig.pointers() {
        assert_eq!(p["hold"]["reason"], "v3 breaks checkout", "{name}: {p:#}");
        assert_eq!(p["hold"]["branch_head"], c3.as_str());
    }
    // The daemon sees the holds and leaves the accounts alone, pass after pass.
    let first = rig.wait(&d, "the holds shown", Duration::from_secs(30), |s| {
        s["held"].as_array().is_some_and(|h| h.len() == 4)
    });
    rig.wait(&d, "two more passes", Duration::from_secs(30), |s| {
        s["last_reconcile_at"] != first["last_reconcile_at"]
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rig.digests(), d0, "held accounts are not rolled forward");
    let metrics = rig.metrics(&d);
    assert_eq!(
        metric(&metrics, "fleetgate_accounts{state=\"held\"}"),
        Some(4.0),
        "{metrics}"
    );

    // The revert lands: the holds end, and the fleet follows the branch again.
    let c4 = rig.revert(&c3);
    let status = rig.wait_applied(&d, &c4);
    assert_eq!(status["held"].as_array().unwrap().len(), 0);
    assert_eq!(rig.digests(), d0);
    for (name, p) in rig.pointers() {
        assert!(
            p.get("hold").is_none_or(Value::is_null),
            "{name}: hold lifted: {p:#}"
        );
    }
    let c5 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok5", "hello v5, fixed");
    rig.wait_applied(&d, &c5);
    assert_eq!(
        rig.digests(),
        rig.rendered(),
        "rolled forward once the hold ended"
    );

    // The history of an account shows all of it.
    let out = rig.fleetgate(&[
        "history",
        "--repo",
        rig.repo_str(),
        "--target",
        "aws",
        "--account",
        "c1",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(stdout(&out).contains("hold by operator"), "{}", show(&out));
}

/// (8) A newer commit preempts a rollout: a bad change bakes in the canary (a 10-minute
/// bake), its revert is pushed, and the daemon stops the bake at once: the canaries are back
/// on their previous bundles within seconds (not after the bake), early and prod are never
/// written, and `/status` says what was preempted, by which commit, and what it had moved.
#[test]
fn a_revert_preempts_a_bad_change_baking_in_the_canary() {
    let fleet = FLEET.replacen("bakeTime: 2s", "bakeTime: 10m", 1);
    let rig = Rig::start_with(&fleet);
    let c0 = rig.head();
    // The first deployment, without gates: a 10-minute canary bake is not what is tested.
    let out = rig.fleetgate(&[
        "apply",
        "--repo",
        rig.repo_str(),
        "--target",
        "aws",
        "--skip-health-gates",
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let d0 = rig.rendered();
    assert_eq!(rig.digests(), d0);
    // Polling once an hour: only webhooks wake the daemon.
    let d = rig.daemon("solo", "1h", &[]);
    rig.wait_applied(&d, &c0);
    let later_waves = |rig: &Rig| -> BTreeMap<String, Value> {
        rig.pointers()
            .into_iter()
            .filter(|(n, _)| n == "e1" || n == "p1")
            .collect()
    };
    let untouched = later_waves(&rig);

    // The bad change: it passes the gate (the backend answers 200), and bakes in the canary.
    let c1 = rig.commit(
        "upstreamPath: /ok",
        "upstreamPath: /ok-v2",
        "hello v2 (the bad one)",
    );
    let d1 = rig.rendered();
    assert_eq!(rig.push_webhook(&d, &c1, Sig::Good).0, 202);
    rig.wait(&d, "the canary baking c1", Duration::from_secs(120), |s| {
        s["rollout"]["commit"] == c1.as_str() && s["rollout"]["waves"][0]["state"] == "baking"
    });
    let canaries = |digests: &BTreeMap<String, String>| -> Vec<String> {
        ["c1", "c2"].iter().map(|n| digests[*n].clone()).collect()
    };
    assert_eq!(canaries(&rig.digests()), canaries(&d1));
    assert_ne!(canaries(&d1), canaries(&d0));

    // Its revert: the bake is cut short and the canaries go back.
    let c2 = rig.revert(&c1);
    let pushed = Instant::now();
    assert_eq!(rig.push_webhook(&d, &c2, Sig::Good).0, 202);
    let deadline = pushed + Duration::from_secs(90);
    while canaries(&rig.digests()) != canaries(&d0) {
        assert!(
            Instant::now() < deadline,
            "the canaries are still on c1 {:?} after the revert: the bad rollout was not preempted\n{:#}\n{}",
            pushed.elapsed(),
            rig.status(&d).unwrap_or_default(),
            std::fs::read_to_string(&d.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the canaries were back {:?} after the revert's webhook",
        pushed.elapsed()
    );
    let status = rig.wait(
        &d,
        "the preemption reported",
        Duration::from_secs(30),
        |s| s["preempted"]["commit"] == c1.as_str() && s["rollout"]["commit"] == c2.as_str(),
    );
    assert_eq!(status["preempted"]["by"], c2.as_str(), "{status:#}");
    assert_eq!(
        status["preempted"]["moved"],
        serde_json::json!(["c1", "c2"]),
        "{status:#}"
    );
    assert_eq!(
        later_waves(&rig),
        untouched,
        "early and prod were never written"
    );
    assert!(
        status["rejected"].is_null(),
        "a preempted commit is superseded, not rejected: {status:#}"
    );
    let metrics = rig.metrics(&d);
    assert_eq!(
        metric(&metrics, "fleetgate_rollouts_total{result=\"preempted\"}"),
        Some(1.0),
        "{metrics}"
    );
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("rollout preempted"), "{log}");
}

/// (6) Two daemons: only the lease holder rolls out; when it dies (killed, no goodbye), the
/// other takes the lease after it expires and converges the fleet.
#[test]
fn only_the_lease_holder_rolls_out_and_a_standby_takes_over() {
    let rig = Rig::start();
    let c0 = rig.head();
    let mut a = rig.daemon("alpha", "500ms", &[]);
    rig.wait_applied(&a, &c0);
    let b = rig.daemon("bravo", "500ms", &[]);
    let status = rig.wait(
        &b,
        "bravo sees alpha's lease",
        Duration::from_secs(30),
        |s| s["lease"]["holder"] == "alpha",
    );
    assert_eq!(status["lease"]["held_by_me"], false);
    assert_eq!(
        metric(&rig.metrics(&b), "fleetgate_lease_holder{holder=\"alpha\"}"),
        Some(1.0)
    );

    let c1 = rig.commit("upstreamPath: /ok", "upstreamPath: /ok1", "hello v1");
    rig.wait_applied(&a, &c1);
    for (name, p) in rig.pointers() {
        assert!(
            p["applied_by"].as_str().unwrap().contains("alpha"),
            "{name}: {p:#}"
        );
    }
    let status = rig.status(&b).unwrap();
    assert!(
        status["rollout"].is_null(),
        "bravo never rolled out: {status:#}"
    );
    assert!(status["last_applied"].is_null());

    // alpha dies without releasing its lease.
    a.proc.0.kill().unwrap();
    a.proc.0.wait().unwrap();
    let c2 = rig.commit("upstreamPath: /ok1", "upstreamPath: /ok2", "hello v2");
    let status = rig.wait_applied(&b, &c2);
    assert_eq!(status["lease"]["holder"], "bravo");
    assert_eq!(rig.digests(), rig.rendered());
    for (name, p) in rig.pointers() {
        assert!(
            p["applied_by"].as_str().unwrap().contains("bravo"),
            "{name}: {p:#}"
        );
    }
}

/// (7) `fleetgate apply` killed at random points, 20 times, each time with new work: no
/// pointer ever names a bundle that is not stored, and the next run converges.
#[test]
fn an_apply_killed_at_random_points_never_breaks_a_pointer() {
    let moto = Moto::start();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    let src = fleetgate::config::example_fleet::generate(
        &fleetgate::config::example_fleet::FleetParams {
            accounts: 24,
            seed: 7,
        },
    );
    fleetgate::config::example_fleet::write_to(&src, &repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "generated fleet"]);
    let run = |args: &[&str]| -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
        c.args(args)
            .args(["--repo", repo.to_str().unwrap(), "--target", "aws"])
            .args(["--endpoint-url", &moto.endpoint()])
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", tmp.path().join("none"))
            .env("AWS_SHARED_CREDENTIALS_FILE", tmp.path().join("none"))
            .env("FLEETGATE_CACHE_DIR", tmp.path().join("cache"))
            .env("CI", "true");
        c
    };
    let out = run(&["bootstrap"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let config = fleetgate::Repo::load(&fleetgate::DirSource::new(&repo));
    let accounts: Vec<fleetgate::target::AccountRef> = config
        .account_names()
        .filter_map(|n| fleetgate::target::AccountRef::from_repo(&config, n))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clients: Vec<aws_sdk_s3::Client> = rt.block_on(async {
        let hub = hub_config(&moto.endpoint()).await;
        let mut out = Vec::new();
        for a in &accounts {
            out.push(s3_with(
                &hub,
                assume(&hub, &a.id, "auditor").await,
                &a.region,
            ));
        }
        out
    });
    // Every pointer names a stored bundle whose bytes hash to it.
    let check = |round: usize| {
        rt.block_on(async {
            for (a, s3) in accounts.iter().zip(&clients) {
                let key = format!("{}/current.json", a.prefix);
                let Some(p) = get_json(s3, &a.bucket, &key).await else {
                    continue;
                };
                let digest = p["digest"].as_str().unwrap();
                let hex = digest.trim_start_matches("sha256:");
                let bundle = s3
                    .get_object()
                    .bucket(&a.bucket)
                    .key(format!("{}/bundles/{hex}.json", a.prefix))
                    .send()
                    .await
                    .unwrap_or_else(|e| {
                        panic!("round {round}: {}'s pointer names {digest}, which is not stored: {e:?}", a.name)
                    });
                let bytes = bundle.body.collect().await.unwrap().into_bytes();
                assert_eq!(
                    fleetgate_bundle::Digest::of(&bytes).to_string(),
                    digest,
                    "round {round}: {}'s bundle is torn",
                    a.name
                );
            }
        });
    };

    // How long a whole apply of every account takes on this machine: kill points are drawn
    // within it, so most runs are cut mid-apply however fast or slow the machine is.
    support::edit(&repo, "base/gateway.yaml", "timeout: 15s", "timeout: 16s");
    git(&repo, &["commit", "-q", "-am", "timed change"]);
    let started = Instant::now();
    let out = run(&["apply", "--skip-health-gates", "--concurrency", "4"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    let whole = (started.elapsed().as_millis() as u64).max(100);
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    eprintln!("kill points from seed {seed}, within {whole} ms");
    let mut killed = 0;
    for round in 0..20 {
        // New work every round: every account's bundle changes.
        support::edit(
            &repo,
            "base/gateway.yaml",
            &format!("maxBodyBytes: {}", 1_048_576 + round),
            &format!("maxBodyBytes: {}", 1_048_576 + round + 1),
        );
        git(&repo, &["commit", "-q", "-am", &format!("round {round}")]);
        let mut child = run(&["apply", "--skip-health-gates", "--concurrency", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(10..whole * 8 / 10)));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        check(round);
    }
    assert!(
        killed >= 10,
        "only {killed} of 20 runs were killed mid-apply"
    );

    // The next run converges, and then there is nothing left to do.
    let out = run(&["apply", "--skip-health-gates"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));
    check(20);
    let out = run(&["plan", "--format", "json"]).output().unwrap();
    assert_eq!(code(&out), 0, "no changes left: {}", show(&out));
    let out = run(&["drift", "--format", "json"]).output().unwrap();
    assert_eq!(code(&out), 0, "in sync: {}", show(&out));
}
