//! The floors the AWS benchmarks measure fleetgate against: only the AWS calls a step
//! cannot do without, with the same SDK, HTTP client and concurrency, and nothing else.
//! Prints the seconds the calls took (the repo and files are read before the clock starts).
//!
//! - plan (`bench/fleet.sh`): per account, AssumeRole and a GetObject of its pointer;
//! - `--apply DIR` (`bench/rollout.sh`, a rollout): that, then a PutObject of the account's
//!   bundle (`DIR/<account>.json`, from `fleetgate render --out DIR`) and a PutObject of a
//!   pointer naming it;
//! - `--point FILE` (`bench/rollout.sh`, `rollback --to`): that, then a GetObject of the
//!   bundle FILE names for the account (`<account> sha256:<hex>` lines, as `fleetgate render`
//!   prints them; it is already stored) checked against its sha256, and a PutObject of a
//!   pointer naming it: a rollback that never points at a bundle it has not checked;
//! - `--point-unchecked FILE`: the same without the bundle's GetObject (a pointer moved
//!   blindly), to show what the check costs.
//!
//! The writes go to `floor-bundles/` and `floor-current.json` beside the real keys: the same
//! requests, bodies and sizes, without changing the state the measured commands run on.
//!
//! `cargo run --release -p fleetgate --example aws_floor -- CONFIG_DIR ENDPOINT_URL [CONCURRENCY] [--apply DIR | --point FILE | --point-unchecked FILE]`

use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context as _, Result};
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region};
use fleetgate::target::AccountRef;
use fleetgate::{DirSource, Repo};
use futures::StreamExt as _;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(endpoint)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: aws_floor CONFIG_DIR ENDPOINT_URL [CONCURRENCY]");
    };
    let concurrency: usize = args.get(2).map_or(Ok(32), |c| c.parse())?;
    // What each account gets written: (digest, bundle bytes when they are to be stored).
    let mut writes: std::collections::BTreeMap<String, (String, Option<Vec<u8>>)> =
        Default::default();
    // Whether the stored bundle a pointer is moved to is read and checked first.
    let mut check = false;
    match (args.get(3).map(String::as_str), args.get(4)) {
        (None, _) => {}
        (Some("--apply"), Some(dir)) => {
            for entry in std::fs::read_dir(dir)? {
                let path = entry?.path();
                let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                    continue;
                };
                let bytes = std::fs::read(&path)?;
                let digest = fleetgate_bundle::Digest::of(&bytes).to_string();
                writes.insert(name.to_string(), (digest, Some(bytes)));
            }
        }
        (Some(flag @ ("--point" | "--point-unchecked")), Some(file)) => {
            check = flag == "--point";
            for line in std::fs::read_to_string(file)?.lines() {
                if let Some((name, digest)) = line.split_once(' ') {
                    writes.insert(name.to_string(), (digest.trim().to_string(), None));
                }
            }
        }
        _ => anyhow::bail!(
            "usage: aws_floor CONFIG_DIR ENDPOINT_URL [CONCURRENCY] [--apply DIR | --point FILE | --point-unchecked FILE]"
        ),
    }
    let (writes, check) = (&writes, check);
    let repo = Repo::load(&DirSource::new(std::path::Path::new(dir)));
    let fleet = repo.fleet.as_ref().context("fleet.yaml")?.spec.clone();
    let accounts: Vec<AccountRef> = repo
        .account_names()
        .filter_map(|n| AccountRef::from_repo(&repo, n))
        .collect();
    let rt = tokio::runtime::Runtime::new()?;
    let (ok, seconds) = rt.block_on(async {
        let hub = aws_config::defaults(BehaviorVersion::latest())
            .http_client(fleetgate::target::aws::https_client())
            .region(Region::new(fleet.hub_region.clone()))
            .endpoint_url(endpoint)
            .load()
            .await;
        let sts = aws_sdk_sts::Client::new(&hub);
        let started = Instant::now();
        let ok = futures::stream::iter(&accounts)
            .map(|a| {
                let (sts, hub, fleet) = (&sts, &hub, &fleet);
                async move {
                    let out = sts
                        .assume_role()
                        .role_arn(format!("arn:aws:iam::{}:role/{}", a.id, fleet.role_name))
                        .role_session_name("fleetgate-floor")
                        .external_id(&fleet.external_id)
                        .send()
                        .await
                        .ok()?;
                    let c = out.credentials()?;
                    let conf = aws_sdk_s3::config::Builder::from(hub)
                        .region(Region::new(a.region.clone()))
                        .credentials_provider(Credentials::new(
                            c.access_key_id(),
                            c.secret_access_key(),
                            Some(c.session_token().to_string()),
                            None,
                            "floor",
                        ))
                        .force_path_style(true)
                        .build();
                    let s3 = aws_sdk_s3::Client::from_conf(conf);
                    let got = s3
                        .get_object()
                        .bucket(&a.bucket)
                        .key(format!("{}/current.json", a.prefix))
                        .send()
                        .await
                        .ok()?;
                    got.body.collect().await.ok()?;
                    let Some((digest, bundle)) = writes.get(&a.name) else {
                        return Some(());
                    };
                    if let Some(bytes) = bundle {
                        s3.put_object()
                            .bucket(&a.bucket)
                            .key(format!(
                                "{}/floor-bundles/{}.json",
                                a.prefix,
                                digest.trim_start_matches("sha256:")
                            ))
                            .body(bytes.clone().into())
                            .send()
                            .await
                            .ok()?;
                    }
                    if check {
                        let stored = s3
                            .get_object()
                            .bucket(&a.bucket)
                            .key(format!(
                                "{}/bundles/{}.json",
                                a.prefix,
                                digest.trim_start_matches("sha256:")
                            ))
                            .send()
                            .await
                            .ok()?;
                        let bytes = stored.body.collect().await.ok()?.into_bytes();
                        if fleetgate_bundle::Digest::of(&bytes).to_string() != *digest {
                            return None;
                        }
                    }
                    let pointer = serde_json::json!({
                        "digest": digest, "applied_by": "floor", "applied_at": "2026-11-24T00:00:00Z",
                    });
                    s3.put_object()
                        .bucket(&a.bucket)
                        .key(format!("{}/floor-current.json", a.prefix))
                        .body(serde_json::to_vec(&pointer).ok()?.into())
                        .send()
                        .await
                        .ok()
                        .map(|_| ())
                }
            })
            .buffer_unordered(concurrency)
            .filter(|r| std::future::ready(r.is_some()))
            .count()
            .await;
        (ok, started.elapsed().as_secs_f64())
    });
    let report = serde_json::json!({"accounts": accounts.len(), "ok": ok, "seconds": seconds});
    let _ = writeln!(std::io::stdout(), "{report}");
    Ok(())
}
