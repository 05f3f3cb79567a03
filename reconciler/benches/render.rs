//! Render + compile of every account of a generated 1,000-account fleet.
//!
//! `cargo bench -p fleetgate --bench render`. Criterion reports time per iteration and,
//! with the throughput set to the account count, accounts per second; the median per
//! account is printed at the end (goal: under 1 ms CPU per account).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fleetgate::example_fleet::{FleetParams, generate};
use fleetgate::{Repo, render};

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

criterion_group!(benches, bench);
criterion_main!(benches);
