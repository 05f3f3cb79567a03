//! The gateway's S3 source on moto's server: the pointer is polled with a conditional GET,
//! a moved pointer swaps the bundle, a tampered one is refused.

#![allow(clippy::unwrap_used)]

#[path = "../src/aws.rs"]
#[allow(dead_code)] // shared with the reconciler's AWS tests: not every helper is used here
mod aws_support;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_support::{Faults, Moto, Proxy};
use fleetgate::config::example_fleet::example_repo;
use fleetgate::{Repo, render};
use fleetgate_bundle::Digest;
use fleetgate_gateway::aws::https_client;
use fleetgate_gateway::source::S3Source;
use fleetgate_gateway::{Gateway, ReloadOutcome};

async fn put(s3: &aws_sdk_s3::Client, key: &str, bytes: Vec<u8>) {
    s3.put_object()
        .bucket("config")
        .key(key)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .unwrap();
}

async fn deploy(s3: &aws_sdk_s3::Client, bytes: &[u8], stored: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    put(
        s3,
        &format!("acme/bundles/{}.json", digest.hex()),
        stored.to_vec(),
    )
    .await;
    let pointer = serde_json::json!({
        "digest": digest.to_string(), "commit": "c0ffee", "applied_by": "test",
        "applied_at": "2026-11-23T00:00:00Z",
    });
    put(
        s3,
        "acme/current.json",
        serde_json::to_vec(&pointer).unwrap(),
    )
    .await;
    digest
}

#[test]
fn the_s3_source_polls_by_etag_and_swaps_only_good_bundles() {
    let moto = Moto::start();
    // Counting requests: an unchanged pointer costs one conditional GET.
    let proxy = Proxy::start(moto.addr, Faults::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .region(Region::new("us-east-1"))
            .endpoint_url(proxy.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket().bucket("config").send().await.unwrap();
        let source = S3Source::new("s3://config/acme", &config).unwrap();
        let gw = Gateway::new();
        assert!(matches!(
            gw.reload_once(&source).await,
            ReloadOutcome::Unavailable { .. }
        ));

        let a = render(&Repo::load(&example_repo()), "acme-prod")
            .unwrap()
            .canonical;
        let da = deploy(&s3, &a, &a).await;
        assert_eq!(
            gw.reload_once(&source).await,
            ReloadOutcome::Swapped { digest: da.clone() }
        );
        let before = proxy.stats.requests.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(gw.reload_once(&source).await, ReloadOutcome::Unchanged);
        let after = proxy.stats.requests.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(after - before, 1, "one conditional GET for an unchanged pointer");

        // A pointer to bytes that are not what they claim: refused, the old bundle serves.
        let mut other = a.clone();
        other.extend_from_slice(b" ");
        deploy(&s3, &other, &a).await;
        let outcome = gw.reload_once(&source).await;
        assert!(
            matches!(&outcome, ReloadOutcome::Rejected { reason } if reason.contains("does not match its digest")),
            "{outcome:?}"
        );
        assert_eq!(gw.current().unwrap().digest, da);
        assert_eq!(gw.status("s3").reload_failures, 2);
    });
    drop(proxy);
    drop(moto);
}
