//! Offboarding a tenant on moto, end to end: the moto rig of the watch tests (every account
//! its own moto account, a real gateway per account polling its S3 prefix and writing status
//! reports, traffic), the tenant `acme` owning the two canary accounts. Through the PR plan
//! and the approved apply its gateways answer 410 (routes and the IdP's token endpoint) while
//! the other tenants' keep serving; drift says `decommissioned`; erase is refused while the
//! gateways run and for a live account, then leaves zero object versions under the
//! accounts' prefixes (ListObjectVersions), writes the receipts to the hub's state bucket, is
//! a no-op the second time, and an erase killed midway (its deletions stalled by a proxy) is
//! finished by the next run.

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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

use rig::*;
use support::{code, git, show, stdout};

/// `(status, body)` of a request to a gateway's data plane.
fn call(
    rig: &Rig,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &'static str,
) -> (u16, String) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    rig.rt.block_on(async {
        let resp = tokio::time::timeout(Duration::from_secs(10), rig.http.request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

/// Every object version (and delete marker) under an account's prefix.
fn versions(rig: &Rig, account: &str, id: &str) -> usize {
    rig.rt.block_on(async {
        let out = rig.s3[account]
            .list_object_versions()
            .bucket(format!("fleetgate-config-{id}"))
            .prefix(format!("fleetgate/{account}/"))
            .send()
            .await
            .unwrap();
        out.versions().len() + out.delete_markers().len()
    })
}

/// An erasure receipt in the hub's state bucket.
fn receipt(rig: &Rig, account: &str) -> Option<Value> {
    rig.rt.block_on(async {
        let hub = aws_support::hub_config(&rig.moto.endpoint()).await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&hub)
                .force_path_style(true)
                .build(),
        );
        let out = s3
            .get_object()
            .bucket("fleetgate-hub-state")
            .key(format!("fleetgate/erasures/{account}.json"))
            .send()
            .await
            .ok()?;
        Some(serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap())
    })
}

/// `fleetgate <command> --repo <the rig's repo> --target aws <extra>`.
fn run(rig: &Rig, command: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![command, "--repo", rig.repo_str(), "--target", "aws"];
    args.extend_from_slice(extra);
    rig.fleetgate(&args)
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const CANARY_WAVE: &str = "    - name: canary
      select: {stages: [canary]}
      failureTolerance: 0
      bakeTime: 2s
      healthGate: {max5xxRatio: 0.05, timeout: 60s, minRequests: 5, noGateway: fail}
";

const APPROVAL: &str = "  offboarding:
    gracePeriod: 0s
    decommission:
      - {account: c1, accountId: \"100000000001\", region: us-east-1, tenant: acme, reason: \"contract ended (LEGAL-1)\"}
      - {account: c2, accountId: \"100000000002\", region: us-east-1, tenant: acme, reason: \"contract ended (LEGAL-1)\"}
";

#[test]
fn a_tenant_is_decommissioned_served_410_and_erased_with_a_receipt() {
    // Status reports older than 3 s are from gateways that are gone.
    let mut rig = Rig::start_with(&FLEET.replace("reportMaxAge: 30s", "reportMaxAge: 3s"));
    for name in ["c1", "c2"] {
        support::edit(
            &rig.repo,
            &format!("accounts/{name}.yaml"),
            &format!("tenant: t-{name}"),
            "tenant: acme",
        );
    }
    git(&rig.repo, &["commit", "-q", "-am", "c1 and c2 are acme's"]);
    let out = run(&rig, "apply", &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let (c1, c2, e1, p1) = (rig.data[0], rig.data[1], rig.data[2], rig.data[3]);
    for addr in [c1, c2, e1, p1] {
        eventually("every gateway serves", || {
            call(&rig, addr, "GET", "/hello", "").0 == 200
        });
    }

    // The pull request: acme's files removed, the approval added. Its plan shows both.
    std::fs::remove_file(rig.repo.join("accounts/c1.yaml")).unwrap();
    std::fs::remove_file(rig.repo.join("accounts/c2.yaml")).unwrap();
    // The canary wave had only acme's accounts: it goes too (a wave must select one).
    let fleet = std::fs::read_to_string(rig.repo.join("fleet.yaml"))
        .unwrap()
        .replace(CANARY_WAVE, "");
    std::fs::write(
        rig.repo.join("fleet.yaml"),
        format!("{}\n{APPROVAL}", fleet.trim_end()),
    )
    .unwrap();
    git(&rig.repo, &["add", "-A"]);
    git(
        &rig.repo,
        &["commit", "-q", "-m", "offboard acme (LEGAL-1)"],
    );
    let out = rig.fleetgate(&[
        "plan",
        "--repo",
        rig.repo_str(),
        "--base",
        "HEAD~1",
        "--target",
        "aws",
        "--format",
        "markdown",
    ]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let md = stdout(&out);
    assert!(md.contains("### 🛑 Decommission"), "{md}");
    assert!(md.contains("**decommission** `c1` (tenant `acme`"), "{md}");
    assert!(md.contains("**decommission** `c2` (tenant `acme`"), "{md}");
    assert!(
        md.contains("2 accounts of tenant acme stop being served"),
        "{md}"
    );

    // The approved apply: tombstones; acme's gateways answer 410 everywhere, the others
    // keep serving.
    let out = run(&rig, "apply", &[]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(stdout(&out).contains("decommissioned c1"), "{}", show(&out));
    for addr in [c1, c2] {
        eventually("acme's gateways answer 410", || {
            call(&rig, addr, "GET", "/hello", "").0 == 410
        });
        let (status, body) = call(
            &rig,
            addr,
            "POST",
            "/oauth2/token",
            "grant_type=client_credentials&client_id=any&client_secret=x",
        );
        assert_eq!(status, 410, "no token: {body}");
        assert!(body.contains("decommissioned"), "{body}");
        let (status, _) = call(&rig, addr, "GET", "/.well-known/jwks.json", "");
        assert_eq!(status, 410);
    }
    for addr in [e1, p1] {
        assert_eq!(
            call(&rig, addr, "GET", "/hello", "").0,
            200,
            "other tenants serve"
        );
    }

    // Drift: decommissioned, not orphaned, exit 0.
    let out = rig.fleetgate(&["drift", "--repo", rig.repo_str(), "--target", "aws"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("decommissioned c1"), "{text}");
    assert!(text.contains("decommissioned c2"), "{text}");
    assert!(!text.contains("  orphaned"), "{text}");
    assert!(text.contains("2 decommissioned"), "{text}");

    // Erase: refused while acme's gateways still report, and for a live account.
    let out = run(&rig, "erase", &["--tenant", "acme"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(show(&out).contains("gateways still run"), "{}", show(&out));
    let out = run(&rig, "erase", &["--account", "p1"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(show(&out).contains("it is live"), "{}", show(&out));
    assert!(versions(&rig, "c1", "100000000001") > 0, "nothing deleted");

    // acme's gateways stopped; their last reports age past reportMaxAge.
    let stopped: Vec<Proc> = rig.gateways.drain(0..2).collect();
    drop(stopped);
    std::thread::sleep(Duration::from_secs(4));

    // An erase killed midway: c2's deletions stall behind a proxy, after its receipt says
    // in-progress; the process is killed there.
    let moto: SocketAddr = rig
        .moto
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = aws_support::Proxy::start(
        moto,
        aws_support::Faults {
            stall_posts: Some("fleetgate-config-100000000002".into()),
            ..Default::default()
        },
    );
    let mut killed = rig
        .command_via(
            &proxy.endpoint(),
            &[
                "erase",
                "--repo",
                rig.repo_str(),
                "--target",
                "aws",
                "--account",
                "c2",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("c2's erasure under way", || {
        receipt(&rig, "c2").is_some_and(|r| r["status"] == "in-progress")
    });
    std::thread::sleep(Duration::from_millis(300));
    killed.kill().unwrap();
    killed.wait().unwrap();
    drop(proxy);
    assert!(versions(&rig, "c2", "100000000002") > 0, "stopped midway");

    // The tenant's erasure: c1 now, c2 finished.
    let out = run(&rig, "erase", &["--tenant", "acme"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    for (name, id) in [("c1", "100000000001"), ("c2", "100000000002")] {
        assert_eq!(versions(&rig, name, id), 0, "{name}: every version gone");
        let r = receipt(&rig, name).unwrap();
        assert_eq!(r["status"], "complete", "{r:#}");
        assert_eq!(r["tenant"], "acme");
        assert_eq!(r["accountId"], id);
        assert!(r["deleted"]["status"].as_u64().unwrap() > 0, "{r:#}");
        assert!(
            r["deleted"]["pointer"].as_u64().unwrap() >= 2,
            "every version: {r:#}"
        );
        assert!(r["decommissionCommit"].is_string(), "{r:#}");
        let text = r.to_string();
        assert!(
            !text.contains("/hello"),
            "no tenant data beyond ids: {text}"
        );
    }
    // The other tenants' state is untouched.
    assert!(versions(&rig, "p1", "100000000004") > 0);
    assert_eq!(call(&rig, p1, "GET", "/hello", "").0, 200);

    // A second erase: nothing to do.
    let before = receipt(&rig, "c1").unwrap();
    let out = run(&rig, "erase", &["--tenant", "acme"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(show(&out).contains("already erased"), "{}", show(&out));
    assert_eq!(receipt(&rig, "c1").unwrap(), before);
}
