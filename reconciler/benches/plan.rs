//! `fleetgate plan` for a one-account change in a generated 1,000-account fleet, against a
//! `file://` target holding the base: git read (both commits), load, affected accounts,
//! render, observe, plan. Goal: 1 account rendered per side, under 1 s wall.
//!
//! `cargo bench -p fleetgate --bench plan`. Side by side in the same run: the same plan
//! without `--base` (every account rendered and observed), the cost the affected-accounts
//! step saves. The render counts of both are printed before the measurements.

#![allow(clippy::print_stderr, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::process::Command;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fleetgate::config::example_fleet::{FleetParams, generate, write_to};
use fleetgate::execute::Stamp;
use fleetgate::git::GitRepo;
use fleetgate::ops::pipeline;
use fleetgate::plan::{Options, Plan};
use fleetgate::target::{FanOut, FileTarget};

const ACCOUNTS: usize = 1000;

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@fleetgate.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn plan(
    repo: &GitRepo,
    target: &FileTarget,
    base: Option<&str>,
    rt: &tokio::runtime::Runtime,
) -> Plan {
    let head = repo.resolve("HEAD").unwrap();
    let base = base.map(|b| repo.resolve(b).unwrap());
    let prepared = pipeline::prepare(repo, base.as_ref(), &head).unwrap();
    let options = Options {
        redaction_key: b"bench".to_vec(),
        ..Options::default()
    };
    rt.block_on(pipeline::observe_and_plan(
        &prepared,
        target,
        &options,
        &FanOut::quiet(32),
        pipeline::Verify::Pointers,
        &|_| false,
    ))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("config");
    write_to(
        &generate(&FleetParams {
            accounts: ACCOUNTS,
            seed: 1,
        }),
        &dir,
    )
    .unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-q", "-m", "fleet"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A fleet never deployed: an empty directory (a missing one cannot be listed).
    std::fs::create_dir(tmp.path().join("deployed")).unwrap();
    let target = FileTarget::new(tmp.path().join("deployed").to_str().unwrap());
    let repo = GitRepo::open(dir.to_str().unwrap(), &tmp.path().join("cache")).unwrap();

    // Deploy the base (every account at once, no gate: `apply --all-at-once`), then change
    // one account.
    let head = repo.resolve("HEAD").unwrap();
    let prepared = pipeline::prepare(&repo, None, &head).unwrap();
    let stamp = Stamp {
        applied_by: "bench".into(),
        applied_at: "2026-11-23T00:00:00Z".into(),
    };
    let applied = rt
        .block_on(fleetgate::ops::apply::apply(
            prepared,
            &target,
            FanOut::quiet(32),
            &stamp,
            &Options::default(),
            fleetgate::ops::apply::ApplyOptions {
                gates: fleetgate::ops::reconcile::Gates::Skip,
                all_at_once: true,
                allow_backwards: false,
                watch: None,
            },
            &|_| false,
            &|_| false,
        ))
        .unwrap();
    let p = applied.plan;
    let name = &p.accounts[ACCOUNTS / 2].name;
    let file = dir.join(format!("accounts/{name}.yaml"));
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("overlays: [", "overlays: [eu, ")
            .replace("eu, eu", "eu"),
    )
    .unwrap();
    git(&dir, &["commit", "-q", "-am", "one account changes"]);

    for (what, base) in [
        ("with --base HEAD~1", Some("HEAD~1")),
        ("without --base", None),
    ] {
        let p = plan(&repo, &target, base, &rt);
        eprintln!(
            "plan {what}: rendered {} at base, {} at head; {} update, {} no-change",
            p.rendered.base, p.rendered.head, p.summary.update, p.summary.no_change
        );
    }

    let mut group = c.benchmark_group("plan_one_account_change");
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("affected_only", ACCOUNTS), |b| {
        b.iter(|| black_box(plan(&repo, &target, Some("HEAD~1"), &rt)))
    });
    group.bench_function(BenchmarkId::new("whole_fleet", ACCOUNTS), |b| {
        b.iter(|| black_box(plan(&repo, &target, None, &rt)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
