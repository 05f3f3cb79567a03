//! Unit tests of the plan: [`plan`] on in-memory desired and observed states (the embedded
//! example fleet, rendered once; no files, no target, no processes), asserted on the typed
//! plan, and the grouping of changes.

use std::slice::from_ref;
use std::sync::LazyLock;

use proptest::prelude::*;

use super::*;
use crate::config::example_fleet::example_repo;
use crate::config::repo::Repo;
use crate::target::{AccountRef, ETag, Hold, Pointer};
use fleetgate_bundle::Digest;

/// An update of `name` whose diff replaces `old` by `new` under one route.
fn update(name: &str, change: &str, old: &str, new: &str) -> AccountPlan {
    AccountPlan {
        name: name.into(),
        account_id: String::new(),
        action: Action::Update,
        from: None,
        to: String::new(),
        deployed_commit: None,
        note: None,
        error: None,
        group: None,
        changes: vec![Change {
            area: Area::Route,
            op: Op::Changed,
            name: change.into(),
            details: vec!["upstreamPath: changed".into()],
        }],
        diff: format!(
            "@@ gateway.routes[{change}] @@\n   \"{change}\": {{\n-  \"{old}\"\n+  \"{new}\"\n"
        )
        .into(),
        expected: None,
        carried: None,
    }
}

fn vars(name: &str, id: &str, region: &str, tenant: &str) -> Vars {
    Vars::for_account(name, id, region, "prod", tenant, &BTreeMap::new())
}

#[test]
fn an_account_named_like_a_word_of_the_change_groups_with_the_rest() {
    // `orders` is an account's name and a route of every account.
    let mut accounts = vec![
        update(
            "billing",
            "orders.list",
            "/v1/111111111111",
            "/v2/111111111111",
        ),
        update(
            "orders",
            "orders.list",
            "/v1/222222222222",
            "/v2/222222222222",
        ),
        update(
            "shipping",
            "orders.list",
            "/v1/333333333333",
            "/v2/333333333333",
        ),
    ];
    let v = [
        vars("billing", "111111111111", "us-east-1", "b"),
        vars("orders", "222222222222", "eu-west-1", "o"),
        vars("shipping", "333333333333", "us-east-1", "s"),
    ];
    let groups = group::group(&mut accounts, &v);
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let g = &groups[0];
    assert_eq!(g.accounts, ["billing", "orders", "shipping"]);
    assert_eq!(g.variables, ["account.id"]);
    assert_eq!(g.changes[0].name, "orders.list");
    assert!(g.diff.contains("+  \"/v2/${account.id}\""), "{}", g.diff);
    assert!(g.diff.contains("routes[orders.list]"), "{}", g.diff);
    assert!(g.context_from.is_none());
    assert!(accounts.iter().all(|a| a.group == Some(0)));
    assert!(
        accounts[1].diff.unpack().contains("/v2/222222222222"),
        "accounts stay literal"
    );
}

#[test]
fn a_value_two_variables_share_is_written_as_the_one_the_group_shares() {
    // acme's name is also its tenant; the others' texts hold their tenant.
    let mut accounts = vec![
        update(
            "acme",
            "r",
            "https://acme.example/a",
            "https://acme.example/b",
        ),
        update(
            "globex-prod",
            "r",
            "https://globex.example/a",
            "https://globex.example/b",
        ),
        update(
            "hooli-prod",
            "r",
            "https://hooli.example/a",
            "https://hooli.example/b",
        ),
    ];
    let v = [
        vars("acme", "111111111111", "us-east-1", "acme"),
        vars("globex-prod", "222222222222", "us-east-1", "globex"),
        vars("hooli-prod", "333333333333", "us-east-1", "hooli"),
    ];
    let groups = group::group(&mut accounts, &v);
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!(groups[0].variables, ["account.tenant"]);
    assert!(
        groups[0]
            .diff
            .contains("+  \"https://${account.tenant}.example/b\""),
        "{}",
        groups[0].diff
    );
}

#[test]
fn different_changes_split_and_single_accounts_show_their_text() {
    let mut accounts = vec![
        update("a1", "r", "/x/111111111111", "/y/111111111111"),
        update("a2", "r", "/x/222222222222", "/z/222222222222"),
    ];
    let v = [
        vars("a1", "111111111111", "us-east-1", "t1"),
        vars("a2", "222222222222", "us-east-1", "t2"),
    ];
    let groups = group::group(&mut accounts, &v);
    assert_eq!(groups.len(), 2, "{groups:#?}");
    for g in &groups {
        assert!(g.variables.is_empty(), "{g:#?}");
        assert!(!g.diff.contains("${"), "{}", g.diff);
    }
}

#[test]
fn accounts_naming_each_others_ids_are_each_their_own_group() {
    let n = 300;
    let id = |i: usize| format!("{:012}", 100_000_000_000 + i);
    let mut accounts: Vec<AccountPlan> = (0..n)
        .map(|i| {
            let peer = id((i + 1) % n);
            update(
                &format!("a{i:03}"),
                "r",
                &format!("/old/{peer}"),
                &format!("/new/{peer}"),
            )
        })
        .collect();
    let v: Vec<Vars> = (0..n)
        .map(|i| vars(&format!("a{i:03}"), &id(i), "us-east-1", &format!("t{i}")))
        .collect();
    let groups = group::group(&mut accounts, &v);
    assert_eq!(groups.len(), n);
    assert!(
        groups
            .iter()
            .all(|g| g.accounts.len() == 1 && g.variables.is_empty())
    );
    assert_eq!(groups[0].accounts, ["a000"], "by first account");
    assert!(groups[0].diff.contains(&id(1)), "{}", groups[0].diff);
}

// ---------------------------------------------------------------------------------------
// plan(): each action, on the example fleet.

/// The example fleet, loaded and rendered once.
struct Example {
    desired: Vec<Desired>,
    waves: Vec<crate::config::manifest::Wave>,
    wave_of: BTreeMap<String, usize>,
}

static EXAMPLE: LazyLock<Example> = LazyLock::new(|| {
    let repo = Repo::load(&example_repo());
    assert!(repo.diagnostics.is_empty(), "{:#?}", repo.diagnostics);
    let fleet = repo.fleet.as_ref().expect("the example has a fleet.yaml");
    let waves = fleet.spec.waves.clone();
    let mut wave_of = BTreeMap::new();
    let desired = repo
        .account_names()
        .map(|name| {
            let account = &repo.accounts[name];
            let spec = &account.doc.spec;
            let labels = &account.doc.metadata.labels;
            if let Some(w) = crate::config::waves::wave_of(&waves, &spec.stage, labels) {
                wave_of.insert(name.to_string(), w);
            }
            let r = crate::render::render(&repo, name).expect("the example renders");
            Desired::new(
                AccountRef::from_repo(&repo, name).expect("the example places it"),
                &r.bundle,
                &r.canonical,
                r.digest,
            )
        })
        .collect();
    Example {
        desired,
        waves,
        wave_of,
    }
});

fn example(name: &str) -> Desired {
    EXAMPLE
        .desired
        .iter()
        .find(|d| d.account.name == name)
        .unwrap_or_else(|| panic!("no example account {name}"))
        .clone()
}

/// Every account of the example fleet, by name.
fn fleet() -> BTreeSet<String> {
    EXAMPLE
        .desired
        .iter()
        .map(|d| d.account.name.clone())
        .collect()
}

/// The context of a plan of the example fleet at its head, against a target that holds
/// `deployed`.
fn context(deployed: &[&str]) -> Context {
    Context {
        repo: "config".into(),
        base: None,
        head: Revision {
            rev: "HEAD".into(),
            commit: "c0ffee".into(),
        },
        target: "file:///fleet".into(),
        fleet: fleet(),
        deployed: deployed.iter().map(|a| a.to_string()).collect(),
        decommission: Default::default(),
        rendered: RenderCounts::default(),
        waves: EXAMPLE.waves.clone(),
        concurrency: 4,
        wave_of: EXAMPLE.wave_of.clone(),
    }
}

fn options() -> Options {
    Options {
        redaction_key: b"plan-test".to_vec(),
        ..Options::default()
    }
}

fn pointer(digest: &Digest) -> Pointer {
    Pointer {
        digest: digest.clone(),
        commit: Some("0ld".into()),
        previous: None,
        applied_by: "ci".into(),
        applied_at: "2026-01-01T00:00:00Z".into(),
        hold: None,
        decommissioned: None,
    }
}

/// Deployed with this bundle (read and checked).
fn deployed(bundle: &Bundle) -> Observed {
    Observed::Deployed {
        pointer: pointer(&bundle.digest()),
        etag: ETag("etag".into()),
        bundle: Box::new(bundle.clone()),
    }
}

/// Deployed at this digest, its bundle not read.
fn current(digest: &Digest) -> Observed {
    Observed::Current {
        pointer: pointer(digest),
        etag: ETag("etag".into()),
    }
}

/// `d`'s bundle with its first route's timeout changed: what an older commit rendered.
fn older(d: &Desired) -> Bundle {
    let mut old = d.bundle();
    old.gateway.routes[0].timeout = Some("42s".parse().expect("a duration"));
    assert_ne!(old.digest(), d.digest);
    old
}

fn observed(
    states: impl IntoIterator<Item = (&'static str, Observed)>,
) -> BTreeMap<String, Observed> {
    states
        .into_iter()
        .map(|(name, state)| (name.to_string(), state))
        .collect()
}

/// [`plan`], under a name the tests' `plan` variables do not shadow.
fn run(
    context: &Context,
    desired: &[Desired],
    observed: &BTreeMap<String, Observed>,
    options: &Options,
) -> Plan {
    plan(context, desired, observed, options)
}

fn entry<'a>(plan: &'a Plan, name: &str) -> &'a AccountPlan {
    plan.accounts
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("{name} is not planned: {:#?}", plan.accounts))
}

#[test]
fn an_account_never_deployed_is_created_with_its_whole_bundle_as_the_change() {
    let d = example("acme-prod");
    let plan = run(&context(&[]), from_ref(&d), &BTreeMap::new(), &options());
    let a = entry(&plan, "acme-prod");
    assert_eq!(a.action, Action::Create);
    assert_eq!(
        (a.from.as_deref(), a.to.as_str()),
        (None, d.digest.as_str())
    );
    assert_eq!(a.changes, [changes::created(&d.bundle())]);
    assert!(!a.diff.is_empty());
    assert!(
        a.diff.unpack().lines().all(|l| !l.starts_with('-')),
        "nothing is removed: {}",
        a.diff
    );
    assert_eq!(a.group, Some(0));
    assert_eq!(plan.groups.len(), 1);
    assert_eq!(plan.groups[0].action, Action::Create);
    assert_eq!(plan.groups[0].accounts, ["acme-prod"]);
    assert_eq!((plan.summary.create, plan.summary.planned), (1, 1));
    assert!(plan.summary.has_changes());
    assert_eq!(plan.format_version, PLAN_FORMAT_VERSION);
}

#[test]
fn an_account_deployed_at_the_head_is_unchanged_whether_or_not_its_bundle_was_read() {
    let (a, b) = (example("acme-prod"), example("stark-prod"));
    let seen = observed([
        ("acme-prod", current(&a.digest)),
        ("stark-prod", deployed(&b.bundle())),
    ]);
    let plan = run(
        &context(&["acme-prod", "stark-prod"]),
        &[a.clone(), b],
        &seen,
        &options(),
    );
    for p in &plan.accounts {
        assert_eq!(p.action, Action::NoChange, "{p:#?}");
        assert_eq!(p.from.as_deref(), Some(p.to.as_str()));
        assert_eq!(p.deployed_commit.as_deref(), Some("0ld"));
        assert!(p.changes.is_empty() && p.diff.is_empty() && p.group.is_none());
        assert!(p.note.is_none() && p.error.is_none());
    }
    assert_eq!(plan.summary.no_change, 2);
    assert!(!plan.summary.has_changes());
    assert!(plan.groups.is_empty() && plan.warnings.is_empty());
    assert!(plan.waves.iter().all(|w| w.accounts.is_empty()));
    assert_eq!(plan.waves.iter().map(|w| w.untouched).sum::<usize>(), 2);
}

#[test]
fn an_account_deployed_at_another_bundle_is_updated_with_what_changes() {
    let d = example("acme-prod");
    let old = older(&d);
    let route = d.bundle().gateway.routes[0].name.clone();
    let seen = observed([("acme-prod", deployed(&old))]);
    let plan = run(&context(&["acme-prod"]), from_ref(&d), &seen, &options());
    let a = entry(&plan, "acme-prod");
    assert_eq!(a.action, Action::Update);
    assert_eq!(a.from, Some(old.digest().to_string()));
    assert_eq!(a.to, d.digest.to_string());
    assert_eq!(a.deployed_commit.as_deref(), Some("0ld"));
    assert_eq!(a.changes.len(), 1, "{:#?}", a.changes);
    assert_eq!(
        (
            a.changes[0].area,
            a.changes[0].op,
            a.changes[0].name.as_str()
        ),
        (Area::Route, Op::Changed, route.as_str())
    );
    assert!(a.diff.unpack().contains("42s"), "{}", a.diff);
    assert!(a.note.is_none(), "no base, so no drift: {:?}", a.note);
    assert_eq!((plan.summary.update, plan.groups.len()), (1, 1));
    assert_eq!(plan.groups[0].action, Action::Update);
}

/// Outcomes only (apply, the daemon, rollback): the same actions, and no change lists,
/// diffs or risks kept per account.
#[test]
fn a_plan_of_outcomes_only_decides_the_same_actions_without_texts() {
    let (a, b) = (example("acme-prod"), example("stark-prod"));
    let seen = observed([("stark-prod", deployed(&older(&b)))]);
    let ctx = context(&["stark-prod"]);
    let full = run(&ctx, &[a.clone(), b.clone()], &seen, &options());
    let lean = run(
        &ctx,
        &[a, b],
        &seen,
        &Options {
            outcomes_only: true,
            ..options()
        },
    );
    let actions = |p: &Plan| -> Vec<(String, Action)> {
        p.accounts
            .iter()
            .map(|a| (a.name.clone(), a.action))
            .collect()
    };
    assert_eq!(actions(&lean), actions(&full));
    assert_eq!(
        actions(&lean),
        [
            ("acme-prod".to_string(), Action::Create),
            ("stark-prod".to_string(), Action::Update)
        ]
    );
    assert!(full.accounts.iter().all(|a| !a.diff.is_empty()));
    assert!(
        lean.accounts
            .iter()
            .all(|a| a.diff.is_empty() && a.changes.is_empty())
    );
    assert!(lean.warnings.is_empty());
}

/// Pointers only (a rollback's observe): an update with the pointer to replace, and no diff
/// or risk, since the deployed bundle was not read.
#[test]
fn an_account_observed_by_its_pointer_only_is_an_update_without_a_diff() {
    let d = example("acme-prod");
    let old = older(&d).digest();
    let seen = observed([(
        "acme-prod",
        Observed::Pointed {
            pointer: pointer(&old),
            etag: ETag("etag".into()),
        },
    )]);
    let plan = run(&context(&["acme-prod"]), from_ref(&d), &seen, &options());
    let a = entry(&plan, "acme-prod");
    assert_eq!(a.action, Action::Update, "{a:#?}");
    assert_eq!(a.from, Some(old.to_string()));
    assert!(a.changes.is_empty() && a.diff.is_empty(), "{a:#?}");
    assert_eq!(
        a.expected.as_ref().map(|e| &e.pointer.digest),
        Some(&old),
        "the write replaces exactly the pointer observed"
    );
    assert!(plan.warnings.is_empty(), "{:#?}", plan.warnings);
}

/// An account a preempted rollout moved is the next plan's, even at the head's bundle; once
/// its pointer has moved on (someone else wrote it), it is not.
#[test]
fn an_account_carried_from_a_preempted_rollout_is_planned_even_at_the_head() {
    let d = example("acme-prod");
    let before = pointer(&older(&d).digest());
    let carried = Options {
        carried: BTreeMap::from([(
            "acme-prod".to_string(),
            Carried {
                moved_to: d.digest.clone(),
                commit: "badc0ffee".into(),
                before: Some(before.clone()),
            },
        )]),
        ..options()
    };
    for state in [current(&d.digest), deployed(&d.bundle())] {
        let seen = observed([("acme-prod", state)]);
        let plan = run(&context(&["acme-prod"]), from_ref(&d), &seen, &carried);
        let a = entry(&plan, "acme-prod");
        assert_eq!(a.action, Action::Update, "{a:#?}");
        assert_eq!(
            a.carried.as_ref().and_then(|c| c.before.as_ref()),
            Some(&before)
        );
        assert!(a.note.as_deref().unwrap().contains("preempted"), "{a:#?}");
        assert_eq!(
            plan.waves.iter().map(|w| w.accounts.len()).sum::<usize>(),
            1
        );
    }
    let seen = observed([("acme-prod", deployed(&older(&d)))]);
    let plan = run(&context(&["acme-prod"]), from_ref(&d), &seen, &carried);
    assert!(entry(&plan, "acme-prod").carried.is_none());
}

#[test]
fn a_deployed_bundle_that_is_neither_the_base_nor_the_head_is_noted() {
    let mut d = example("acme-prod");
    let old = older(&d);
    let seen = observed([("acme-prod", deployed(&old))]);
    // The base rendered what is deployed: a change in git, nothing to note.
    d.base_digest = Some(old.digest());
    let plan = run(&context(&["acme-prod"]), from_ref(&d), &seen, &options());
    assert_eq!(entry(&plan, "acme-prod").note, None);
    // The base rendered something else: the target drifted.
    d.base_digest = Some(Digest::of(b"something else"));
    let plan = run(&context(&["acme-prod"]), &[d], &seen, &options());
    let a = entry(&plan, "acme-prod");
    assert_eq!(a.action, Action::Update);
    let note = a.note.as_deref().unwrap_or_default();
    assert!(
        note.contains("is neither the base's") && note.contains(old.digest().short()),
        "{note}"
    );
}

#[test]
fn an_account_whose_state_cannot_be_read_is_unreachable_and_nothing_is_planned_for_it() {
    let d = example("acme-prod");
    let seen = observed([(
        "acme-prod",
        Observed::Unreachable {
            reason: "acme-prod: timed out after 10s".into(),
            class: ErrorClass::Timeout,
        },
    )]);
    let plan = run(&context(&["acme-prod"]), &[d], &seen, &options());
    let a = entry(&plan, "acme-prod");
    assert_eq!(a.action, Action::Unreachable);
    assert_eq!(a.note.as_deref(), Some("acme-prod: timed out after 10s"));
    assert_eq!(a.error, Some(ErrorClass::Timeout));
    assert!(a.from.is_none() && a.changes.is_empty() && a.diff.is_empty());
    assert_eq!(plan.summary.unreachable, 1);
    assert!(!plan.summary.has_changes());
    assert!(plan.groups.is_empty());
}

#[test]
fn an_account_observed_current_at_another_digest_is_shown_as_unreachable() {
    let d = example("acme-prod");
    let other = older(&d).digest();
    let seen = observed([("acme-prod", current(&other))]);
    let plan = run(&context(&["acme-prod"]), from_ref(&d), &seen, &options());
    let a = entry(&plan, "acme-prod");
    assert_eq!(a.action, Action::Unreachable);
    assert_eq!(a.error, Some(ErrorClass::Other));
    assert_eq!(a.from, Some(other.to_string()));
    assert_eq!(
        a.note.as_deref(),
        Some(
            format!(
                "acme-prod: observed as current at {}, which is not the head's {}",
                other.short(),
                d.digest.short()
            )
            .as_str()
        )
    );
}

#[test]
fn a_held_account_stays_on_its_bundle_until_the_hold_is_released_or_ignored() {
    let d = example("acme-prod");
    let old = older(&d);
    let hold = Hold {
        by: "oncall".into(),
        at: "2026-01-02T00:00:00Z".into(),
        reason: "bad release".into(),
        to: "0ld".into(),
        branch_head: Some("b1".into()),
    };
    let held = |bundle: &Bundle| {
        let mut state = deployed(bundle);
        if let Observed::Deployed { pointer, .. } = &mut state {
            pointer.hold = Some(hold.clone());
        }
        observed([("acme-prod", state)])
    };
    let ctx = context(&["acme-prod"]);
    let plan = run(&ctx, from_ref(&d), &held(&old), &options());
    let a = entry(&plan, "acme-prod");
    assert_eq!(a.action, Action::Held);
    assert_eq!(a.from, Some(old.digest().to_string()));
    assert_eq!(a.note.as_deref(), Some(held_note(&hold).as_str()));
    assert!(a.changes.is_empty() && a.diff.is_empty());
    assert_eq!(plan.summary.held, 1);
    assert!(!plan.summary.has_changes());

    let ignoring = Options {
        ignore_holds: true,
        ..options()
    };
    let plan = run(&ctx, from_ref(&d), &held(&old), &ignoring);
    assert_eq!(entry(&plan, "acme-prod").action, Action::Update);

    let released = Options {
        released_holds: BTreeSet::from(["b1".to_string()]),
        ..options()
    };
    let plan = run(&ctx, from_ref(&d), &held(&old), &released);
    assert_eq!(entry(&plan, "acme-prod").action, Action::Update);

    // Held at the head's bundle: nothing to hold back.
    let plan = run(&ctx, from_ref(&d), &held(&d.bundle()), &options());
    assert_eq!(entry(&plan, "acme-prod").action, Action::NoChange);
}

#[test]
fn accounts_deployed_but_gone_from_git_are_orphans_and_never_planned() {
    let d = example("acme-prod");
    let seen = observed([
        ("acme-prod", deployed(&d.bundle())),
        ("gone-prod", deployed(&d.bundle())),
    ]);
    let plan = run(
        &context(&["acme-prod", "gone-prod"]),
        &[d],
        &seen,
        &options(),
    );
    assert_eq!(plan.orphans, ["gone-prod"]);
    assert_eq!(plan.summary.orphaned, 1);
    assert!(plan.accounts.iter().all(|a| a.name != "gone-prod"));
    assert!(!plan.summary.has_changes());
}

#[test]
fn only_desired_accounts_are_planned_once_each_in_name_order() {
    let (a, b) = (example("acme-prod"), example("wayne-prod"));
    let seen = observed([("stark-prod", deployed(&a.bundle()))]);
    let desired = [b.clone(), a.clone(), b];
    let plan = run(&context(&[]), &desired, &seen, &options());
    let names: Vec<&str> = plan.accounts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["acme-prod", "wayne-prod"]);
    assert_eq!(plan.summary.planned, 2);
    assert_eq!(plan.summary.fleet, fleet().len());
    assert_eq!(plan.summary.not_affected, fleet().len() - 2);
}

#[test]
fn changed_accounts_go_to_their_waves_and_accounts_without_one_to_a_last_wave() {
    let (a, b) = (example("acme-prod"), example("globex-canary"));
    let mut ctx = context(&[]);
    ctx.wave_of.remove("acme-prod");
    let plan = run(&ctx, &[a, b], &BTreeMap::new(), &options());
    let canary_wave = &EXAMPLE.waves[EXAMPLE.wave_of["globex-canary"]].name;
    let wave = |name: &str| {
        plan.waves
            .iter()
            .find(|w| w.accounts.iter().any(|a| a == name))
    };
    assert_eq!(
        wave("globex-canary").map(|w| &w.name),
        Some(canary_wave),
        "{:#?}",
        plan.waves
    );
    let last = plan.waves.last().expect("a last wave");
    assert_eq!(last.name, "(no wave)");
    assert_eq!(last.accounts, ["acme-prod"]);
    assert_eq!(
        last.tolerated_failures, 1,
        "without a wave, a failure stops nothing"
    );
    assert_eq!(plan.waves.len(), EXAMPLE.waves.len() + 1);
}

#[test]
fn updating_more_than_the_configured_share_of_the_fleet_is_a_warning() {
    let desired: Vec<Desired> = ["acme-prod", "stark-prod", "wayne-prod"]
        .map(example)
        .to_vec();
    let seen: BTreeMap<String, Observed> = desired
        .iter()
        .map(|d| (d.account.name.clone(), deployed(&older(d))))
        .collect();
    let ctx = context(&["acme-prod", "stark-prod", "wayne-prod"]);
    let strict = Options {
        fleet_change_percent: 10,
        ..options()
    };
    let plan = run(&ctx, &desired, &seen, &strict);
    assert_eq!(plan.summary.update, 3);
    let share: Vec<&Warning> = plan
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::FleetShare)
        .collect();
    assert_eq!(share.len(), 1, "{:#?}", plan.warnings);
    let lenient = Options {
        fleet_change_percent: 100,
        ..options()
    };
    let plan = run(&ctx, &desired, &seen, &lenient);
    assert!(
        plan.warnings
            .iter()
            .all(|w| w.kind != WarningKind::FleetShare)
    );
}

#[test]
fn secret_material_in_what_the_plan_shows_is_fingerprinted() {
    let d = example("acme-prod");
    let seen = observed([(
        "acme-prod",
        Observed::Unreachable {
            reason: "GET https://admin:hunter2-hunter2@state.example/acme-prod failed".into(),
            class: ErrorClass::Network,
        },
    )]);
    let mut ctx = context(&["acme-prod"]);
    ctx.target = "s3://deploy:ghp_abcdefghijklmnopqrstuvwxyz0123456789@bucket".into();
    let plan = run(&ctx, &[d], &seen, &options());
    let note = entry(&plan, "acme-prod").note.clone().unwrap_or_default();
    assert!(!note.contains("hunter2"), "{note}");
    assert!(note.contains("(sensitive:"), "{note}");
    assert!(!plan.target.contains("ghp_"), "{}", plan.target);
}

#[test]
fn the_same_inputs_give_the_same_plan() {
    let desired: Vec<Desired> = ["acme-prod", "hooli-early", "stark-prod"]
        .map(example)
        .to_vec();
    let seen = observed([
        ("acme-prod", deployed(&older(&desired[0]))),
        ("stark-prod", current(&desired[2].digest)),
    ]);
    let ctx = context(&["acme-prod", "stark-prod"]);
    let first = run(&ctx, &desired, &seen, &options());
    let again = run(&ctx, &desired, &seen, &options());
    assert_eq!(first, again);
    assert_eq!(format::json(&first), format::json(&again));
}

// ---------------------------------------------------------------------------------------
// plan(x, x): observing exactly what is desired changes nothing.

/// How one example account takes part in a generated case.
#[derive(Debug, Clone)]
struct Part {
    planned: bool,
    /// Hosts added to its bundle: desired states beyond the example's own.
    extra_hosts: Vec<String>,
    /// Observed as `Current` (bundle not read) rather than `Deployed`.
    not_read: bool,
    /// A rollback hold on its pointer, at the bundle it runs.
    held: bool,
    /// 0: no base; 1: the base rendered the same; 2: the base rendered something else.
    base: u8,
}

fn part() -> impl Strategy<Value = Part> {
    (
        any::<bool>(),
        prop::collection::vec("[a-z]{1,8}\\.example", 0..3),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
    )
        .prop_map(|(planned, extra_hosts, not_read, held, base)| Part {
            planned,
            extra_hosts,
            not_read,
            held,
            base,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn planning_exactly_what_is_observed_changes_nothing(
        parts in prop::collection::vec(part(), EXAMPLE.desired.len()),
    ) {
        let mut desired = Vec::new();
        let mut seen = BTreeMap::new();
        for (base, part) in EXAMPLE.desired.iter().zip(&parts) {
            if !part.planned {
                continue;
            }
            let mut bundle = base.bundle();
            bundle.gateway.hosts.extend(part.extra_hosts.iter().cloned());
            let mut d = Desired::new(base.account.clone(), &bundle, &bundle.canonical_json(), bundle.digest());
            d.base_digest = match part.base {
                0 => None,
                1 => Some(d.digest.clone()),
                _ => Some(base.digest.clone()),
            };
            let mut state = if part.not_read {
                current(&d.digest)
            } else {
                deployed(&d.bundle())
            };
            if part.held {
                let (Observed::Current { pointer, .. } | Observed::Deployed { pointer, .. }) =
                    &mut state
                else {
                    unreachable!("observed as deployed")
                };
                pointer.hold = Some(Hold {
                    by: "oncall".into(),
                    at: "2026-01-02T00:00:00Z".into(),
                    reason: "pinned".into(),
                    to: "0ld".into(),
                    branch_head: None,
                });
            }
            seen.insert(d.account.name.clone(), state);
            desired.push(d);
        }
        let names: Vec<&str> = seen.keys().map(String::as_str).collect();
        let plan = run(&context(&names), &desired, &seen, &options());

        prop_assert_eq!(plan.accounts.len(), desired.len());
        for a in &plan.accounts {
            prop_assert_eq!(a.action, Action::NoChange, "{:#?}", a);
            prop_assert_eq!(a.from.as_deref(), Some(a.to.as_str()));
            prop_assert!(a.changes.is_empty() && a.diff.is_empty() && a.group.is_none());
            prop_assert!(a.note.is_none() && a.error.is_none(), "{:#?}", a);
        }
        prop_assert!(!plan.summary.has_changes());
        prop_assert_eq!(plan.summary.no_change, desired.len());
        prop_assert!(plan.groups.is_empty());
        prop_assert!(plan.warnings.is_empty(), "{:#?}", plan.warnings);
        prop_assert!(plan.orphans.is_empty());
        prop_assert!(plan.waves.iter().all(|w| w.accounts.is_empty()));
    }
}
