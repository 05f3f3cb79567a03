//! Render + compile of every account of a generated 1,000-account fleet, and, side by side,
//! one account pinning a generated OpenAPI spec of 2,500, 5,000 and 10,000 paths (time should
//! grow linearly with the paths).
//!
//! `cargo bench -p fleetgate --bench render`. Criterion reports time per iteration and,
//! with the throughput set to the account count, accounts per second (goal: under 1 ms CPU
//! per account); for the specs, with the throughput set to the path count, paths per second.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::config::example_fleet::{FleetParams, example_repo, generate};
use fleetgate::{Repo, render};

#[path = "../tests/support/big_spec.rs"]
mod big_spec;

const ACCOUNTS: usize = 1000;

fn bench(c: &mut Criterion) {
    let src = generate(&FleetParams {
        accounts: ACCOUNTS,
        seed: 1,
    });
    let mut group = c.benchmark_group("fleet");
    group.sample_size(10);

    group.bench_function(BenchmarkId::new("load", ACCOUNTS), |b| {
        b.iter(|| black_box(Repo::load(&src)))
    });

    let repo = Repo::load(&src);
    assert!(
        repo.diagnostics.is_empty(),
        "generated fleet must be valid: {:?}",
        repo.diagnostics
    );
    let names: Vec<String> = repo.account_names().map(str::to_string).collect();
    group.throughput(Throughput::Elements(names.len() as u64));
    group.bench_function(BenchmarkId::new("render_compile_all", ACCOUNTS), |b| {
        b.iter(|| {
            for name in &names {
                black_box(render(&repo, name).expect("renders"));
            }
        })
    });
    group.finish();
}

/// The example repo with a spec of `paths` paths as service `inventory`, pinned by
/// `hooli-early` (the spec's routes are added to the account's other routes, then its
/// overlay and patches apply, then the gateway compiles them all).
fn openapi_repo(paths: usize) -> Repo {
    let mut src = example_repo();
    src.insert(
        "services/inventory/1.0.0/openapi.yaml",
        &big_spec::openapi_spec(paths, 0),
    );
    let account = "accounts/hooli-early.yaml";
    let text = String::from_utf8(src.files[account].clone()).expect("UTF-8");
    let pin = "    customers: \"1.3.0\"\n";
    assert_eq!(text.matches(pin).count(), 1);
    src.insert(
        account,
        &text.replace(pin, &format!("{pin}    inventory: \"1.0.0\"\n")),
    );
    let repo = Repo::load(&src);
    assert!(
        repo.diagnostics.is_empty(),
        "the {paths}-path repo must be valid: {:?}",
        repo.diagnostics
    );
    repo
}

fn bench_openapi(c: &mut Criterion) {
    let mut group = c.benchmark_group("openapi_paths");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    for paths in [2_500, 5_000, 10_000] {
        let repo = openapi_repo(paths);
        let routes = render(&repo, "hooli-early")
            .expect("renders")
            .bundle
            .gateway
            .routes
            .len();
        assert!(routes >= 2 * paths, "{routes} routes for {paths} paths");
        group.throughput(Throughput::Elements(paths as u64));
        group.bench_function(BenchmarkId::new("render_compile_account", paths), |b| {
            b.iter(|| black_box(render(&repo, "hooli-early").expect("renders")))
        });
    }
    for paths in [2_500, 5_000, 10_000] {
        let mut src = example_repo();
        src.insert(
            "services/inventory/1.0.0/openapi.yaml",
            &big_spec::openapi_spec(paths, 0),
        );
        group.throughput(Throughput::Elements(paths as u64));
        group.bench_function(BenchmarkId::new("load_repo", paths), |b| {
            b.iter(|| black_box(Repo::load(&src)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_openapi);
criterion_main!(benches);
