//! The product's story, end to end, on real parts: moto's server for STS, S3 and Secrets
//! Manager (every customer account its own moto account), a config repo of 120 generated
//! accounts in a real git repository, the `fleetgate` binary run as the GitHub workflows in
//! deploy/github run it (plans and drift reports as the read-only role, applies as the
//! deployer), real `fleetgate-gateway` processes for a sample of the accounts
//! (one canary, one early, one prod), each with its account's credentials, and real demo
//! backends behind them.
//!
//! 1. Onboarding: `bootstrap` makes the 120 config buckets, the first deployment goes out
//!    at once, the sampled gateways load their bundles and signing keys.
//! 2. A pull request adds a route and a partner's client: the plan posted on the PR says what
//!    changes where, and shows the new client's secret hash only as a fingerprint.
//! 3. The merge rolls out wave by wave; the sampled gateways serve the new route. A client
//!    gets a token from its account's IdP and calls the API through that account's gateway;
//!    a token of another account's IdP is refused there.
//! 4. A bad change (the orders backend moved to a port nothing listens on) fails the
//!    canary's health gate: the canary is rolled back by itself, the other waves never see
//!    it.
//! 5. On-call reverts the bad commit: the fleet already runs what it renders.
//! 6. The new route is pulled by reverting its commit: every pointer flips back to bundles
//!    already stored, and the gateways stop serving the route.
//! 7. Someone edits an account by hand in S3: the drift report names it.
//! 8. A bad change goes everywhere at once; on-call rolls the 120 accounts back by following
//!    docs/runbooks/rollback.md, running its commands as written (from a clone of their own,
//!    with AWS profiles): look, roll back with a hold, check, release.
//!
//! The binaries are the workspace's own: `cargo test --workspace` builds them next to this
//! test's executable (run alone, this file builds them when missing).

#![allow(clippy::unwrap_used)]

#[path = "../src/gateway_support.rs"]
mod support;

#[path = "../src/aws.rs"]
#[allow(dead_code)] // shared with the reconciler's AWS tests: not every helper is used here
mod aws_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::Region;
use aws_support::{Moto, assume, free_port, hub_config, s3_with};
use fleetgate_bundle::Digest;
use fleetgate_bundle::bundle::SigningAlgorithm;
use fleetgate_tests::{code, edit, git, show, stdout};
use serde_json::{Value, json};
use support::reqwest_like::{Client, Resp};
use support::{Server, serve};

/// The accounts whose gateways run in this test: the one canary, an early adopter, and a
/// production account (`fleetgate example-fleet` names accounts by index and stage).
const CANARY: &str = "tenant-00000-canary";
const EARLY: &str = "tenant-00005-early";
const PROD: &str = "tenant-00042-prod";

/// The account someone edits by hand in chapter 7 (no gateway runs for it).
const HAND_EDITED: &str = "tenant-00077-prod";

/// The example's web client; its argon2 hash is in base/idp.yaml.
const WEB_PORTAL: (&str, &str) = ("web-portal", "demo-web-portal-secret");

/// The client the pull request of chapter 2 adds (with its hash; the secret stays here).
const PARTNER: (&str, &str) = ("partner-portal", "partner-portal-secret");

#[test]
fn a_change_from_pull_request_to_rollback() {
    // 1. Onboarding.
    let mut world = World::start(120);
    let out = world.fleetgate(&["bootstrap"]);
    assert_eq!(code(&out), 0, "bootstrap: {}", show(&out));
    // The first deployment goes out at once: no gateway runs yet to gate the waves.
    let out = world.fleetgate(&["apply", "--all-at-once"]);
    assert_eq!(code(&out), 0, "first apply: {}", show(&out));
    assert!(stdout(&out).contains("120 created"), "{}", stdout(&out));
    let onboarded = world.head();
    for name in [CANARY, EARLY, PROD] {
        world.start_gateway(name);
    }
    for gw in &world.gateways {
        world.wait_serving(gw, &world.digest(&gw.name));
    }
    world.start_traffic();

    // 2. A pull request adds GET /orders-summary; the plan is posted on it in markdown.
    git(&world.repo, &["checkout", "-q", "-b", "orders-summary"]);
    edit(
        &world.repo,
        "base/gateway.yaml",
        "  routes:\n",
        "  routes:\n    - name: orders.summary\n      methods: [GET]\n      path: /orders-summary\n      backend: orders\n      upstreamPath: /orders/summary\n      auth: {policy: default, scopes: [\"orders:read\"]}\n",
    );
    let partner_hash = fleetgate_gateway::idp::hash_secret(PARTNER.1).unwrap();
    edit(
        &world.repo,
        "base/idp.yaml",
        "  clients:\n",
        &format!(
            "  clients:\n    - id: partner-portal\n      secret: {{argon2Hash: \"{partner_hash}\"}}\n      scopes: [\"orders:read\"]\n"
        ),
    );
    world.commit("Add GET /orders-summary for the partner portal");
    let out = world.fleetgate(&[
        "plan",
        "--base",
        "main",
        "--head",
        "orders-summary",
        "--format",
        "markdown",
    ]);
    assert_eq!(code(&out), 2, "exit 2: changes to apply: {}", show(&out));
    let comment = stdout(&out);
    // The repo's strings are markdown-escaped in the comment (docs/plan.md, Formats).
    for line in [
        "<!-- fleetgate:plan -->",
        "120 of 120 in the fleet planned",
        "Rollout on merge: canary (1) → early (12) → prod (107).",
        "same change in 120 accounts",
        "route orders\\.summary added\\: GET \\/orders\\-summary",
        "partner\\-portal",
        "(sensitive:",
    ] {
        assert!(
            comment.contains(line),
            "{line:?} in the PR comment:\n{comment}"
        );
    }
    assert!(
        !comment.contains(&partner_hash),
        "the hash is fingerprinted:\n{comment}"
    );
    assert_no_secret(&comment);

    // 3. The merge rolls out wave by wave.
    git(&world.repo, &["checkout", "-q", "main"]);
    git(&world.repo, &["merge", "-q", "--ff-only", "orders-summary"]);
    let summary_commit = world.head();
    let (out, report) = world.apply();
    assert_eq!(code(&out), 0, "apply on merge: {}", show(&out));
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    assert_eq!(
        wave_states(&report),
        [
            ("canary", "succeeded"),
            ("early", "succeeded"),
            ("prod", "succeeded")
        ]
    );
    for gw in &world.gateways {
        world.wait_serving(gw, &world.digest(&gw.name));
        let token = world.token(gw, WEB_PORTAL, "orders:read");
        let r = world.call(gw, "/orders-summary", &token);
        assert_eq!(r.status, 200, "{}: {}", gw.name, r.body);
        let seen = r.json();
        assert_eq!(seen["backend"], "orders", "{}: {seen}", gw.name);
        assert_eq!(seen["path"], "/orders/summary", "{}: {seen}", gw.name);
        assert_eq!(seen["tenant"], gw.tenant, "{}: {seen}", gw.name);
        assert_eq!(seen["subject"], "web-portal", "{}: {seen}", gw.name);
        let partner = world.token(gw, PARTNER, "orders:read");
        assert_eq!(world.call(gw, "/orders-summary", &partner).status, 200);
    }
    // A token is good only in the account whose IdP issued it.
    let (early, prod) = (world.gateway(EARLY), world.gateway(PROD));
    let from_prod = world.token(prod, WEB_PORTAL, "orders:read");
    assert_eq!(world.call(prod, "/orders", &from_prod).status, 200);
    let r = world.call(early, "/orders", &from_prod);
    assert_eq!(
        r.status, 401,
        "a token of {PROD}'s IdP at {EARLY}: {}",
        r.body
    );
    let from_early = world.token(early, WEB_PORTAL, "orders:read");
    assert_eq!(world.call(early, "/orders", &from_early).status, 200);
    assert_eq!(world.call(prod, "/orders", &from_early).status, 401);

    // 4. A bad change: the orders backend "moves" to a port nothing listens on. The
    // canary's gateway answers 502, its health gate fails, and the canary is rolled back.
    let good = world.digests([CANARY, EARLY, PROD]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let orders = world.backend_url("orders");
    edit(&world.repo, "base/gateway.yaml", &orders, &dead);
    world.commit("Move orders behind the new load balancer");
    let bad_commit = world.head();
    world.expect_bad_change(true);
    let (out, report) = world.apply();
    assert_eq!(code(&out), 1, "the bad change must fail: {}", show(&out));
    assert_eq!(report["outcome"], "rolled-back", "{report:#}");
    assert_eq!(
        wave_states(&report),
        [
            ("canary", "rolled-back"),
            ("early", "not-started"),
            ("prod", "not-started")
        ]
    );
    let canary_report = &report["waves"][0]["accounts"][CANARY];
    assert_eq!(canary_report["state"], "rolled-back", "{report:#}");
    let why = format!(
        "rollout stopped: wave canary: 1 failed account of 1, 0 tolerated: {CANARY} (5xx ratio 1.000"
    );
    assert!(show(&out).contains(&why), "{why:?} in {}", show(&out));
    let canary = world.gateway(CANARY);
    world.wait_serving(canary, &good[0]);
    world.expect_bad_change(false);
    let token = world.token(canary, WEB_PORTAL, "orders:read");
    assert_eq!(world.call(canary, "/orders", &token).status, 200);
    assert_eq!(world.serving(world.gateway(EARLY)), good[1]);
    assert_eq!(world.serving(world.gateway(PROD)), good[2]);

    // 5. On-call reverts the bad commit. The fleet already runs what main now renders.
    git(&world.repo, &["revert", "--no-edit", &bad_commit]);
    let out = world.fleetgate(&["plan", "--format", "markdown"]);
    assert_eq!(
        code(&out),
        0,
        "nothing to do after the revert: {}",
        show(&out)
    );
    let (out, report) = world.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    assert!(
        stdout(&out).contains("0 created, 0 updated, 120 unchanged"),
        "{}",
        stdout(&out)
    );

    // 6. The new route is pulled: revert its commit. The bundles of the onboarding commit
    // are stored in every account already, so only pointers move.
    let stored = world.bundles_stored();
    git(&world.repo, &["revert", "--no-edit", &summary_commit]);
    let (out, report) = world.apply();
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    assert!(stdout(&out).contains("120 updated"), "{}", stdout(&out));
    assert_eq!(
        world.bundles_stored(),
        stored,
        "no bundle written by the revert"
    );
    for gw in &world.gateways {
        let onboarded_digest = world.digest_at(&onboarded, &gw.name);
        world.wait_serving(gw, &onboarded_digest);
        let token = world.token(gw, WEB_PORTAL, "orders:read");
        let r = world.call(gw, "/orders-summary", &token);
        assert_eq!(r.status, 404, "{}: the route is gone: {}", gw.name, r.body);
        assert_eq!(world.call(gw, "/orders", &token).status, 200);
        let r = world.token_response(gw, PARTNER, "orders:read");
        assert_eq!(
            r.status, 401,
            "{}: the partner's client is gone: {}",
            gw.name, r.body
        );
    }
    let errors = world.stop_traffic();
    assert_eq!(errors, Vec::<String>::new(), "traffic kept being served");

    // 7. Someone turns a flag on by hand in one account's bucket: the drift report says so.
    let out = world.fleetgate(&["drift", "--format", "markdown"]);
    assert_eq!(
        code(&out),
        0,
        "in sync before the hand edit: {}",
        show(&out)
    );
    world.edit_by_hand(HAND_EDITED);
    let out = world.fleetgate(&["drift", "--format", "markdown"]);
    assert_eq!(code(&out), 2, "exit 2: drift: {}", show(&out));
    let drift = stdout(&out);
    assert!(
        drift.contains("120 accounts in git: 119 in sync, 1 drifted"),
        "{drift}"
    );
    let row = drift
        .lines()
        .find(|l| l.contains(&format!("`{HAND_EDITED}`")))
        .unwrap_or_else(|| panic!("{HAND_EDITED} in the drift report:\n{drift}"));
    assert!(
        row.contains("drifted") && row.contains("out-of-band edit"),
        "{row}"
    );
    assert_no_secret(&drift);

    // 8. A bad change, applied by hand to every account at once; on-call follows the runbook.
    world.on_call_follows_the_runbook();
}

/// The wave names and states of a rollout report.
fn wave_states(report: &Value) -> Vec<(&str, &str)> {
    report["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w["state"].as_str().unwrap()))
        .collect()
}

/// Nothing secret in what fleetgate posts or prints.
fn assert_no_secret(text: &str) {
    for secret in [
        WEB_PORTAL.1,
        PARTNER.1,
        "PRIVATE KEY",
        "$argon2",
        "reporting-secret",
    ] {
        assert!(!text.contains(secret), "{secret:?} leaked:\n{text}");
    }
}

/// A process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `fleetgate-gateway` process serving one account.
struct Gateway {
    name: String,
    tenant: String,
    host: String,
    data: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    _proc: Proc,
}

/// One sampled account's S3 view, acting as that account.
struct AccountStore {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// Everything the story runs against. Fields drop in order: gateways and traffic first,
/// then the backends (on the runtime), the runtime, moto, and the files.
struct World {
    gateways: Vec<Gateway>,
    stores: Vec<(String, AccountStore)>,
    traffic: Option<(Arc<AtomicBool>, tokio::task::JoinHandle<Vec<String>>)>,
    /// While set, the canary's 502s are the bad change of chapter 4, not a failure.
    bad_change: Arc<AtomicBool>,
    backends: Vec<(&'static str, Server)>,
    rt: tokio::runtime::Runtime,
    hub: aws_config::SdkConfig,
    moto: Moto,
    repo: PathBuf,
    tmp: tempfile::TempDir,
}

/// The backends the example's gateway names.
const BACKENDS: [(&str, &str); 6] = [
    (
        "orders",
        "http://orders.${account.region}.svc.internal:8080",
    ),
    (
        "orders-canary",
        "http://orders-canary.${account.region}.svc.internal:8080",
    ),
    (
        "customers",
        "http://customers.${account.region}.svc.internal:8080",
    ),
    (
        "payments",
        "https://payments.${account.region}.svc.internal:8443",
    ),
    (
        "reporting",
        "http://reporting.${account.region}.svc.internal:8080",
    ),
    (
        "reporting-v2",
        "http://reporting-v2.${account.region}.svc.internal:8080",
    ),
];

/// The fleet's waves, with bakes and gates short enough for a test.
const FLEET: &str = r#"apiVersion: fleetgate.dev/v1
kind: Fleet
metadata: {name: story}
spec:
  roleName: fleetgate-deployer
  externalId: fleetgate-story
  hubRegion: us-east-1
  regions: [us-east-1, us-west-2, eu-west-1, eu-central-1]
  bucket: fleetgate-config-${account.id}
  prefix: fleetgate/${account.name}
  concurrency: 32
  rollout: {pollInterval: 250ms, reportMaxAge: 30s, rollback: wave}
  waves:
    - name: canary
      select: {stages: [canary]}
      failureTolerance: 0
      bakeTime: 3s
      healthGate: {max5xxRatio: 0.01, timeout: 60s, minRequests: 5, noGateway: fail}
    - name: early
      select: {stages: [early]}
      failureTolerance: 1
      bakeTime: 1s
      healthGate: {max5xxRatio: 0.01, timeout: 60s, minRequests: 5, noGateway: skip}
    - name: prod
      select: {stages: [prod]}
      failureTolerance: "5%"
      bakeTime: 1s
      healthGate: {max5xxRatio: 0.01, timeout: 60s, minRequests: 5, noGateway: skip}
  drift: {interval: 6h, historyDepth: 50}
"#;

impl World {
    /// moto, the demo backends, and a config repo of `accounts` generated accounts whose
    /// backends are the demo ones, as one commit on `main`.
    fn start(accounts: usize) -> World {
        let moto = Moto::start();
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let backends: Vec<_> = rt.block_on(async {
            let mut servers = Vec::new();
            for (name, _) in BACKENDS {
                servers.push((name, serve(demo_backend(name)).await));
            }
            servers
        });
        let hub = rt.block_on(hub_config(&moto.endpoint()));
        let repo = tmp.path().join("config");
        let out = Command::new(bin("fleetgate"))
            .args([
                "example-fleet",
                "--accounts",
                &accounts.to_string(),
                "--out",
            ])
            .arg(&repo)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        std::fs::write(repo.join("fleet.yaml"), FLEET).unwrap();
        for ((_, url), (_, server)) in BACKENDS.iter().zip(&backends) {
            edit(
                &repo,
                "base/gateway.yaml",
                url,
                &format!("http://{}", server.addr),
            );
        }
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "The fleet, 120 accounts"]);
        World {
            gateways: Vec::new(),
            stores: Vec::new(),
            traffic: None,
            bad_change: Arc::new(AtomicBool::new(false)),
            backends,
            rt,
            hub,
            moto,
            repo,
            tmp,
        }
    }

    /// The CLI as the workflows run it: hub credentials in the environment, the config
    /// repo, the AWS target (moto's endpoint).
    fn fleetgate(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin("fleetgate"));
        c.args(args)
            .args(["--repo", self.repo.to_str().unwrap(), "--target", "aws"])
            .args(["--endpoint-url", &self.moto.endpoint()]);
        aws_env(
            &mut c,
            self.tmp.path(),
            ("testing", "testing", None),
            "us-east-1",
        );
        if matches!(args.first(), Some(&"plan" | &"drift")) {
            // What a pull request or the schedule starts may only read (deploy/aws).
            c.env("FLEETGATE_ROLE_NAME", "fleetgate-reader");
        }
        c.env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_APPLIED_BY", "ci")
            .env("NO_COLOR", "1")
            .env("CI", "true")
            .output()
            .unwrap()
    }

    /// `fleetgate apply` of main's head with its rollout report.
    fn apply(&self) -> (Output, Value) {
        let path = self.tmp.path().join("report.json");
        let _ = std::fs::remove_file(&path);
        let out = self.fleetgate(&["apply", "--report", path.to_str().unwrap()]);
        let report = std::fs::read(&path)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or_else(|e| panic!("no rollout report ({e}): {}", show(&out)));
        (out, report)
    }

    fn commit(&self, message: &str) {
        git(&self.repo, &["commit", "-q", "-am", message]);
    }

    fn head(&self) -> String {
        git(&self.repo, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// The digest the working tree renders for `account`.
    fn digest(&self, account: &str) -> String {
        let out = Command::new(bin("fleetgate"))
            .args(["render", "--repo", self.repo.to_str().unwrap()])
            .args(["--account", account])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        let line = stdout(&out);
        let (name, digest) = line.trim().split_once(' ').unwrap();
        assert_eq!(name, account);
        digest.to_string()
    }

    /// What `commit` renders for `account` (the working tree is put back after).
    fn digest_at(&self, commit: &str, account: &str) -> String {
        let here = self.head();
        git(&self.repo, &["checkout", "-q", commit]);
        let digest = self.digest(account);
        git(&self.repo, &["checkout", "-q", "main"]);
        assert_eq!(self.head(), here);
        digest
    }

    fn digests<const N: usize>(&self, accounts: [&str; N]) -> [String; N] {
        accounts.map(|a| self.digest(a))
    }

    /// The URL the repo gives `backend` now.
    fn backend_url(&self, backend: &str) -> String {
        let (_, server) = self.backends.iter().find(|(n, _)| *n == backend).unwrap();
        format!("http://{}", server.addr)
    }

    /// The account's id, region and tenant, from its rendered bundle.
    fn account(&self, name: &str) -> (String, String, String) {
        let dir = self.tmp.path().join("rendered");
        let out = Command::new(bin("fleetgate"))
            .args(["render", "--repo", self.repo.to_str().unwrap()])
            .args(["--account", name, "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        let bundle: Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap())
                .unwrap();
        let field = |k: &str| bundle["account"][k].as_str().unwrap().to_string();
        (field("id"), field("region"), field("tenant"))
    }

    /// Starts the account's gateway as its platform would: the account's own credentials
    /// (a task role), the IdP's signing key and a client's secret hash in the account's
    /// Secrets Manager, the bucket and prefix fleet.yaml names.
    fn start_gateway(&mut self, name: &str) {
        let (id, region, tenant) = self.account(name);
        let creds = self
            .rt
            .block_on(assume(&self.hub, &id, "fleetgate-gateway"));
        self.rt.block_on(async {
            let sm = aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(&self.hub)
                    .region(Region::new(region.clone()))
                    .credentials_provider(creds.clone())
                    .build(),
            );
            let key = fleetgate_gateway::keys::generate_key(SigningAlgorithm::RS256).unwrap();
            let hash = fleetgate_gateway::idp::hash_secret("reporting-secret").unwrap();
            for (secret, value) in [
                ("fleetgate/idp/signing-2026-09", key),
                ("fleetgate/clients/reporting-job", hash),
            ] {
                sm.create_secret()
                    .name(secret)
                    .secret_string(value)
                    .send()
                    .await
                    .unwrap();
            }
        });
        let (bucket, prefix) = (
            format!("fleetgate-config-{id}"),
            format!("fleetgate/{name}"),
        );
        let (data, admin) = (free_port(), free_port());
        let log = self.tmp.path().join(format!("gateway-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin("fleetgate-gateway"));
        cmd.args(["--source", &format!("s3://{bucket}/{prefix}")])
            .args(["--listen", &format!("127.0.0.1:{data}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--poll", "200ms", "--status-every", "300ms"])
            .args(["--instance-id", &format!("gw-{name}")])
            .args([
                "--endpoint-url",
                &self.moto.endpoint(),
                "--log-format",
                "text",
            ]);
        let token = creds.session_token().map(str::to_string);
        aws_env(
            &mut cmd,
            self.tmp.path(),
            (creds.access_key_id(), creds.secret_access_key(), token),
            &region,
        );
        let child = cmd
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let s3 = s3_with(&self.hub, creds, &region);
        self.stores
            .push((name.to_string(), AccountStore { s3, bucket, prefix }));
        self.gateways.push(Gateway {
            name: name.to_string(),
            host: format!("api.{name}.fleetgate.example"),
            tenant,
            data: SocketAddr::from(([127, 0, 0, 1], data)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            log,
            _proc: Proc(child),
        });
    }

    fn gateway(&self, name: &str) -> &Gateway {
        self.gateways.iter().find(|g| g.name == name).unwrap()
    }

    /// The digest the gateway serves (its admin /status), if it serves one.
    fn serving(&self, gw: &Gateway) -> String {
        self.rt.block_on(async {
            let admin = Client::new(gw.admin, "admin");
            let r = tokio::time::timeout(Duration::from_secs(5), admin.get("/status", &[])).await;
            match r {
                Ok(r) if r.status == 200 => r.json()["digest"].as_str().unwrap_or("").to_string(),
                _ => String::new(),
            }
        })
    }

    /// Waits until the gateway serves `digest`, or fails with its log.
    fn wait_serving(&self, gw: &Gateway, digest: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = self.serving(gw);
            if now == digest {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} serves {now:?}, not {digest} after 60s\n--- log\n{}",
                gw.name,
                std::fs::read_to_string(&gw.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A token from the account's IdP, by client_credentials (client_secret_basic).
    fn token(&self, gw: &Gateway, client: (&str, &str), scope: &str) -> String {
        let r = self.token_response(gw, client, scope);
        assert_eq!(r.status, 200, "{}: token: {}", gw.name, r.body);
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    /// The token endpoint's answer, whatever it is.
    fn token_response(&self, gw: &Gateway, (client, secret): (&str, &str), scope: &str) -> Resp {
        self.rt.block_on(token(gw, client, secret, scope))
    }

    /// A GET through the account's gateway, with a bearer token.
    fn call(&self, gw: &Gateway, path: &str, token: &str) -> Resp {
        self.rt.block_on(call(gw, path, token))
    }

    /// Clients of every sampled account call GET /orders through their gateway, all along:
    /// what the health gates judge. Each keeps its first token (valid 10 minutes).
    fn start_traffic(&mut self) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for gw in &self.gateways {
            let token = self.token(gw, WEB_PORTAL, "orders:read");
            clients.push((gw.name.clone(), Client::new(gw.data, &gw.host), token));
        }
        let flag = stop.clone();
        let bad_change = self.bad_change.clone();
        let task = self.rt.spawn(async move {
            let mut errors = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                for (name, client, token) in &clients {
                    let auth = format!("Bearer {token}");
                    // A request that started while the bad change was served may end after
                    // the test saw the rollback: it is still the bad change's.
                    let during = bad_change.load(Ordering::SeqCst);
                    let r = client.get("/orders", &[("authorization", &auth)]).await;
                    let expected = r.status == 502
                        && name == CANARY
                        && (during || bad_change.load(Ordering::SeqCst));
                    if r.status != 200 && !expected && errors.len() < 10 {
                        errors.push(format!("{name}: GET /orders: {} {}", r.status, r.body));
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            errors
        });
        self.traffic = Some((stop, task));
    }

    fn expect_bad_change(&self, on: bool) {
        self.bad_change.store(on, Ordering::SeqCst);
    }

    /// Stops the traffic; what it saw go wrong.
    fn stop_traffic(&mut self) -> Vec<String> {
        let (stop, task) = self.traffic.take().unwrap();
        stop.store(true, Ordering::SeqCst);
        self.rt.block_on(task).unwrap()
    }

    /// Every version of every bundle object the sampled accounts store (the buckets are
    /// versioned, so a bundle written again, even with the same bytes, shows).
    fn bundles_stored(&self) -> Vec<(String, Vec<String>)> {
        self.rt.block_on(async {
            let mut stored = Vec::new();
            for (name, store) in &self.stores {
                let listed = store
                    .s3
                    .list_object_versions()
                    .bucket(&store.bucket)
                    .prefix(format!("{}/bundles/", store.prefix))
                    .send()
                    .await
                    .unwrap();
                let versions = listed
                    .versions()
                    .iter()
                    .map(|v| format!("{} {}", v.key().unwrap(), v.version_id().unwrap_or("-")))
                    .collect();
                stored.push((name.clone(), versions));
            }
            stored
        })
    }

    /// What a person with console access does: copies the deployed bundle with a flag
    /// turned on, stores it under its digest, and points `current.json` at it.
    fn edit_by_hand(&self, name: &str) {
        let (id, region, _) = self.account(name);
        self.rt.block_on(async {
            let creds = assume(&self.hub, &id, "administrator").await;
            let s3 = s3_with(&self.hub, creds, &region);
            let (bucket, prefix) = (
                format!("fleetgate-config-{id}"),
                format!("fleetgate/{name}"),
            );
            let get = |key: String| {
                let s3 = s3.clone();
                let bucket = bucket.clone();
                async move {
                    let o = s3
                        .get_object()
                        .bucket(bucket)
                        .key(key)
                        .send()
                        .await
                        .unwrap();
                    let bytes = o.body.collect().await.unwrap().into_bytes();
                    serde_json::from_slice::<Value>(&bytes).unwrap()
                }
            };
            let mut pointer = get(format!("{prefix}/current.json")).await;
            let digest = pointer["digest"].as_str().unwrap();
            let hex = digest.strip_prefix("sha256:").unwrap();
            let mut bundle = get(format!("{prefix}/bundles/{hex}.json")).await;
            let flag = &mut bundle["gateway"]["flags"]["order-cancellation"]["enabled"];
            assert_eq!(*flag, json!(false), "the flag is off in git");
            *flag = json!(true);
            let bytes = serde_json::to_vec(&bundle).unwrap();
            let edited = Digest::of(&bytes);
            pointer["digest"] = json!(edited.to_string());
            for (key, body) in [
                (format!("{prefix}/bundles/{}.json", edited.hex()), bytes),
                (
                    format!("{prefix}/current.json"),
                    serde_json::to_vec(&pointer).unwrap(),
                ),
            ] {
                s3.put_object()
                    .bucket(&bucket)
                    .key(key)
                    .body(body.into())
                    .send()
                    .await
                    .unwrap();
            }
        });
    }
}

impl World {
    /// Chapter 8: the runbook's checked blocks (`<!-- checked-by-test: NAME -->` before a
    /// fenced block), run as written from on-call's own clone, with `<good-commit>` filled in.
    fn on_call_follows_the_runbook(&self) {
        let good = self.head();
        let good_digests = self.rendered();
        edit(
            &self.repo,
            "base/gateway.yaml",
            "maxBodyBytes: 1048576",
            "maxBodyBytes: 1024",
        );
        self.commit("Bodies up to 1 KiB (the bad one)");
        let bad = self.head();
        let out = self.fleetgate(&["apply", "--skip-health-gates"]);
        assert_eq!(code(&out), 0, "the bad change goes out: {}", show(&out));
        let bad_digests = self.rendered();
        assert_eq!(self.deployed(), bad_digests);

        // On-call's machine: a clone, the binary on the PATH, profiles for the two roles.
        let home = self.tmp.path().join("on-call");
        let clone = home.join("fleet-config");
        std::fs::create_dir_all(&home).unwrap();
        git(
            &home,
            &["clone", "-q", self.repo.to_str().unwrap(), "fleet-config"],
        );
        let profiles = "[fleetgate-hub]\naws_access_key_id = testing\naws_secret_access_key = testing\n\
                        [fleetgate-planner]\naws_access_key_id = testing\naws_secret_access_key = testing\n";
        std::fs::write(home.join("credentials"), profiles).unwrap();
        std::fs::write(
            home.join("config"),
            "[profile fleetgate-hub]\nregion = us-east-1\n[profile fleetgate-planner]\nregion = us-east-1\n",
        )
        .unwrap();
        let runbook = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbooks/rollback.md"),
        )
        .unwrap();
        let run = |name: &str| -> Output {
            let marker = format!("<!-- checked-by-test: {name} -->\n```sh\n");
            let start = runbook
                .find(&marker)
                .unwrap_or_else(|| panic!("the runbook has no checked block {name}"))
                + marker.len();
            let block = &runbook[start..start + runbook[start..].find("```").unwrap()];
            let script = block.replace("<good-commit>", &good);
            let path = format!(
                "{}:{}",
                bin("fleetgate").parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let out = Command::new("sh")
                .args(["-ec", &script])
                .current_dir(&clone)
                .env_clear()
                .env("PATH", path)
                .env("HOME", &home)
                .env("AWS_CONFIG_FILE", home.join("config"))
                .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
                .env("AWS_ENDPOINT_URL", self.moto.endpoint())
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("FLEETGATE_CACHE_DIR", home.join("cache"))
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            assert_eq!(
                code(&out),
                0,
                "runbook block {name}:\n{script}\n{}",
                show(&out)
            );
            out
        };

        // 1. Look: every wave runs the bad commit, nothing held.
        let out = run("status");
        let text = stdout(&out);
        assert!(
            text.contains("120 of 120 accounts at the head; 0 held"),
            "{text}"
        );
        assert!(text.contains(&bad[..12]), "{text}");
        assert_no_secret(&text);

        // 3B. Roll back: every account on the good commit's bundles, held.
        let out = run("rollback");
        assert!(stdout(&out).contains("rolled back to"), "{}", show(&out));
        assert_eq!(self.deployed(), good_digests, "every account went back");
        let holds = self.holds();
        assert_eq!(holds.len(), 120);
        assert!(
            holds.values().all(|h| h == "INC-1234: 5xx on orders"),
            "{holds:?}"
        );

        // 4. Check: status says every account runs the good commit, held.
        let text = stdout(&run("status"));
        assert!(
            text.contains("0 of 120 accounts at the head; 120 held"),
            "{text}"
        );
        assert!(text.contains(&good[..12]), "{text}");
        assert!(text.contains("\"INC-1234: 5xx on orders\""), "{text}");

        // 5. Release: the holds are gone, the pointers stay.
        run("release");
        assert!(self.holds().is_empty(), "{:?}", self.holds());
        assert_eq!(self.deployed(), good_digests);
    }

    /// Every account's digest at the working tree's head.
    fn rendered(&self) -> std::collections::BTreeMap<String, String> {
        let out = Command::new(bin("fleetgate"))
            .args(["render", "--repo", self.repo.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        stdout(&out)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, d)| (a.to_string(), d.to_string()))
            .collect()
    }

    /// Every account's pointer, read as that account's administrator.
    fn pointers(&self) -> std::collections::BTreeMap<String, Value> {
        let dir = self.tmp.path().join("rendered-all");
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(bin("fleetgate"))
            .args([
                "render",
                "--repo",
                self.repo.to_str().unwrap(),
                "--all",
                "--out",
            ])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", show(&out));
        let accounts: Vec<(String, String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let b: Value =
                    serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
                let f = |k: &str| b["account"][k].as_str().unwrap().to_string();
                (f("name"), f("id"), f("region"))
            })
            .collect();
        self.rt.block_on(async {
            let mut pointers = std::collections::BTreeMap::new();
            for (name, id, region) in accounts {
                let creds = assume(&self.hub, &id, "administrator").await;
                let s3 = s3_with(&self.hub, creds, &region);
                let o = s3
                    .get_object()
                    .bucket(format!("fleetgate-config-{id}"))
                    .key(format!("fleetgate/{name}/current.json"))
                    .send()
                    .await
                    .unwrap();
                let bytes = o.body.collect().await.unwrap().into_bytes();
                pointers.insert(name, serde_json::from_slice(&bytes).unwrap());
            }
            pointers
        })
    }

    fn deployed(&self) -> std::collections::BTreeMap<String, String> {
        self.pointers()
            .into_iter()
            .map(|(n, p)| (n, p["digest"].as_str().unwrap().to_string()))
            .collect()
    }

    /// The reason of every hold, by account.
    fn holds(&self) -> std::collections::BTreeMap<String, String> {
        self.pointers()
            .into_iter()
            .filter_map(|(n, p)| Some((n, p["hold"]["reason"].as_str()?.to_string())))
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.traffic {
            stop.store(true, Ordering::SeqCst);
        }
    }
}

/// A demo service: answers every request with its name, the path it was asked for, and
/// the identity the gateway forwarded.
fn demo_backend(name: &'static str) -> axum::Router {
    axum::Router::new().fallback(move |req: axum::extract::Request| async move {
        let header = |h: &str| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        axum::Json(json!({
            "backend": name,
            "path": req.uri().path(),
            "subject": header("x-fleetgate-subject"),
            "tenant": header("x-fleetgate-tenant"),
        }))
    })
}

async fn token(gw: &Gateway, client: &str, secret: &str, scope: &str) -> Resp {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client}:{secret}"));
    Client::new(gw.data, &gw.host)
        .send(
            "POST",
            "/oauth2/token",
            &[
                ("authorization", &format!("Basic {basic}")),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            format!("grant_type=client_credentials&scope={scope}").as_bytes(),
        )
        .await
}

async fn call(gw: &Gateway, path: &str, token: &str) -> Resp {
    Client::new(gw.data, &gw.host)
        .get(path, &[("authorization", &format!("Bearer {token}"))])
        .await
}

/// The workspace's binary `name`, next to this test's executable's directory.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "fleetgate", "-p", "fleetgate-gateway"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cargo build of the binaries");
    }
    path
}

/// AWS settings of a process: these credentials and region, no profile, files or instance
/// metadata of the machine running the test.
fn aws_env(
    c: &mut Command,
    tmp: &Path,
    (key, secret, token): (&str, &str, Option<String>),
    region: &str,
) {
    c.env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", region)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", tmp.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            tmp.join("no-aws-credentials"),
        );
    if let Some(token) = token {
        c.env("AWS_SESSION_TOKEN", token);
    }
}
