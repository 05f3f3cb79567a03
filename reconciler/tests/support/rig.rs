//! The end-to-end rig of the watch daemon's tests: moto's server for S3 and STS (every
//! account its own moto account), real `fleetgate-gateway` processes, one per account,
//! polling their account's S3 prefix with that account's credentials and writing status
//! reports, a real backend behind them (`/ok*` answers 200, `/bad` 500), traffic through
//! every gateway all along, a real git repository, and the `fleetgate` binary.
//!
//! A test file includes it with `mod support; mod aws_support;` declared beside it (the
//! shared helpers it uses).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::aws_support::{Moto, assume, free_port, hub_config, s3_with};
use crate::support::{self, code, git, show, stdout};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub const FLEET: &str = r#"apiVersion: fleetgate.dev/v1
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

pub const IDP: &str = r#"apiVersion: fleetgate.dev/v1
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
pub const ACCOUNTS: [(&str, &str, &str); 4] = [
    ("c1", "100000000001", "canary"),
    ("c2", "100000000002", "canary"),
    ("e1", "100000000003", "early"),
    ("p1", "100000000004", "prod"),
];

pub const SECRET: &str = "webhook-test-secret";

/// The workspace's gateway binary, next to `fleetgate`.
pub fn gateway_bin() -> PathBuf {
    support::gateway_bin_beside(Path::new(env!("CARGO_BIN_EXE_fleetgate")))
}

/// How a test webhook is signed.
#[derive(Clone, Copy)]
pub enum Sig {
    Good,
    Wrong,
    Missing,
}

/// A process killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `fleetgate watch`.
pub struct Daemon {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub identity: String,
}

/// Everything a scenario runs against.
pub struct Rig {
    pub rt: tokio::runtime::Runtime,
    pub moto: Moto,
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    /// Per account: an S3 client acting as that account.
    pub s3: BTreeMap<String, aws_sdk_s3::Client>,
    pub gateways: Vec<Proc>,
    /// Each gateway's data-plane address.
    pub data: Vec<SocketAddr>,
    /// Each gateway's admin address (/metrics, /status).
    pub admin: Vec<SocketAddr>,
    /// The backend behind every gateway.
    pub backend: SocketAddr,
    pub stop: Arc<AtomicBool>,
    pub http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// Extra environment of every `fleetgate` the rig runs (notification credentials).
    pub env: Vec<(String, String)>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Rig {
    /// moto, the config repo at its first commit, the buckets (bootstrap), the backend, a
    /// gateway per account, and traffic through each.
    pub fn start() -> Rig {
        Rig::start_with(FLEET)
    }

    /// As [`Rig::start`], with this fleet.yaml.
    pub fn start_with(fleet: &str) -> Rig {
        let moto = Moto::start();
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));

        // The backend: /ok* is healthy, /bad fails, /slow answers after 1.5 s.
        let backend = rt.block_on(async {
            let app = axum::Router::new()
                .route(
                    "/bad",
                    axum::routing::get(|| async {
                        (http::StatusCode::INTERNAL_SERVER_ERROR, "broken\n")
                    }),
                )
                .route(
                    "/slow",
                    axum::routing::get(|| async {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        "slow\n"
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
            admin: Vec::new(),
            backend,
            stop,
            http,
            env: Vec::new(),
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
            rig.admin.push(SocketAddr::from(([127, 0, 0, 1], admin)));
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

    pub fn repo_str(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    /// The CLI as an operator runs it: hub credentials in the environment, moto's endpoint.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_via(&self.moto.endpoint(), args)
    }

    /// [`Rig::command`] with the AWS calls sent to `endpoint` (a fault proxy before moto).
    pub fn command_via(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleetgate"));
        c.args(args)
            .args(["--endpoint-url", endpoint])
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
            .env("CI", "true")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn fleetgate(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `fleetgate watch` on the repo (by file:// URL, so it fetches like a remote).
    pub fn daemon(&self, identity: &str, poll: &str, extra: &[&str]) -> Daemon {
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

    pub fn request(
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

    pub fn status(&self, d: &Daemon) -> Option<Value> {
        let (code, body) = self.request("GET", d.addr, "/status", &[], b"")?;
        (code == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    pub fn metrics(&self, d: &Daemon) -> String {
        self.request("GET", d.addr, "/metrics", &[], b"").unwrap().1
    }

    /// Waits until `ok(status)`, or fails with the last status and the daemon's log.
    pub fn wait(
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
    pub fn wait_applied(&self, d: &Daemon, commit: &str) -> Value {
        self.wait(
            d,
            &format!("{commit} applied"),
            Duration::from_secs(180),
            |s| s["last_applied"]["commit"] == commit,
        )
    }

    /// Sends a push webhook for the branch's head.
    pub fn push_webhook(&self, d: &Daemon, after: &str, signature: Sig) -> (u16, String) {
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

    pub fn head(&self) -> String {
        git(&self.repo, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Commits an edit of base/gateway.yaml; returns the commit.
    pub fn commit(&self, find: &str, replace: &str, message: &str) -> String {
        support::edit(&self.repo, "base/gateway.yaml", find, replace);
        git(&self.repo, &["commit", "-q", "-am", message]);
        self.head()
    }

    pub fn revert(&self, commit: &str) -> String {
        git(&self.repo, &["revert", "--no-edit", commit]);
        self.head()
    }

    /// Every account's digest at the working tree's head, from `fleetgate render`.
    pub fn rendered(&self) -> BTreeMap<String, String> {
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
    pub fn pointers(&self) -> BTreeMap<String, Value> {
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

    pub fn digests(&self) -> BTreeMap<String, String> {
        self.pointers()
            .into_iter()
            .map(|(n, p)| (n, p["digest"].as_str().unwrap().to_string()))
            .collect()
    }
}

pub async fn get_json(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<Value> {
    let out = s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap())
}

/// The states of the accounts of the rollout in `/status`, by wave.
pub fn rollout_states(status: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
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

pub fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
