//! The floor `bench/fleet.sh` measures `fleetgate plan --target aws` against: only the AWS
//! calls a plan cannot do without (per account, AssumeRole and a GetObject of its pointer),
//! with the same SDK, HTTP client and concurrency, and nothing else. Prints the seconds the
//! calls took (the repo is read before the clock starts).
//!
//! `cargo run --release -p fleetgate --example aws_floor -- CONFIG_DIR ENDPOINT_URL [CONCURRENCY]`

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
    let repo = Repo::load(&DirSource::new(std::path::Path::new(dir)));
    let fleet = repo.fleet.as_ref().context("fleet.yaml")?.spec.clone();
    let accounts: Vec<AccountRef> = repo
        .account_names()
        .filter_map(|n| AccountRef::from_repo(&repo, n))
        .collect();
    let rt = tokio::runtime::Runtime::new()?;
    let (ok, seconds) = rt.block_on(async {
        let hub = aws_config::defaults(BehaviorVersion::latest())
            .http_client(fleetgate::aws::https_client())
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
                    got.body.collect().await.ok().map(|_| ())
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
