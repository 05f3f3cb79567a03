//! Drift's decisions, and the whole report on an in-memory history and a directory target.

use super::*;
use crate::target::{ETag, Pointer};

fn account() -> AccountRef {
    AccountRef {
        name: "acme-prod".into(),
        id: "423456789012".into(),
        region: "us-east-1".into(),
        bucket: "b".into(),
        prefix: "p".into(),
    }
}

fn deployed(digest: &Digest, commit: &str) -> Observed {
    let src = crate::config::example_fleet::example_repo();
    let bundle = crate::render(&Repo::load(&src), "acme-prod")
        .unwrap()
        .bundle;
    Observed::Deployed {
        pointer: Pointer {
            digest: digest.clone(),
            commit: Some(commit.into()),
            previous: None,
            applied_by: "ci".into(),
            applied_at: "2026-11-23T00:00:00Z".into(),
            hold: None,
            decommissioned: None,
        },
        etag: ETag("\"e\"".into()),
        bundle: Box::new(bundle),
    }
}

#[test]
fn each_cause() {
    let a = account();
    let head = Digest::of(b"head");
    let old = Digest::of(b"old");
    let subject = |observed: &Observed, behind: Option<&Behind>| {
        assess(&Subject {
            account: &a,
            expected: &head,
            observed,
            behind,
        })
    };
    let in_sync = subject(&deployed(&head, "c0"), None);
    assert_eq!((in_sync.status, in_sync.cause), (DriftStatus::InSync, None));

    let b = Behind {
        commit: "a1b2c3d4e5f6".into(),
        commits_behind: 3,
    };
    let behind = subject(&deployed(&old, "a1b2c3d4e5f6"), Some(&b));
    assert_eq!(behind.status, DriftStatus::Drifted);
    assert_eq!(
        behind.cause.as_deref(),
        Some("still on a1b2c3d, 3 commits behind")
    );

    let oob = subject(&deployed(&old, "a1b2c3d4e5f6"), None);
    assert_eq!(oob.cause_kind, Some(CauseKind::OutOfBand));
    assert!(oob.cause.unwrap().starts_with("out-of-band edit"));

    let never = subject(&Observed::New, None);
    assert_eq!(
        (never.status, never.cause.as_deref()),
        (DriftStatus::Drifted, Some("never deployed"))
    );

    let tampered = subject(
        &Observed::Unreachable {
            reason: "acme-prod: bundle ... does not match its digest".into(),
            class: ErrorClass::Tampered,
        },
        None,
    );
    assert_eq!(
        (tampered.status, tampered.cause_kind),
        (DriftStatus::Drifted, Some(CauseKind::Tampered))
    );

    let denied = subject(
        &Observed::Unreachable {
            reason: "acme-prod: access denied: ...".into(),
            class: ErrorClass::AccessDenied,
        },
        None,
    );
    assert_eq!(
        (denied.status, denied.error),
        (DriftStatus::Unreachable, Some(ErrorClass::AccessDenied))
    );
}

#[test]
fn exit_codes_and_order() {
    let a = account();
    let head = Digest::of(b"head");
    let line = |observed: Observed, name: &str| {
        let mut l = assess(&Subject {
            account: &a,
            expected: &head,
            observed: &observed,
            behind: None,
        });
        l.name = name.into();
        l
    };
    let rev = Revision {
        rev: "main".into(),
        commit: "c".repeat(40),
    };
    let ok = report(
        "r",
        rev.clone(),
        "t",
        50,
        vec![line(deployed(&head, "c"), "a")],
    );
    assert_eq!(ok.exit_code(), 0);
    let drift = report(
        "r",
        rev.clone(),
        "t",
        50,
        vec![line(deployed(&head, "c"), "a"), line(Observed::New, "b")],
    );
    assert_eq!(drift.exit_code(), 2);
    assert_eq!(drift.accounts[0].name, "b", "drifted first");
    let broken = report(
        "r",
        rev,
        "t",
        50,
        vec![
            line(Observed::New, "b"),
            line(
                Observed::Unreachable {
                    reason: "x".into(),
                    class: ErrorClass::Timeout,
                },
                "c",
            ),
        ],
    );
    assert_eq!(broken.exit_code(), 1);
    let json: serde_json::Value = serde_json::from_str(&json(&broken)).unwrap();
    assert_eq!(json["accounts"][1]["status"], "unreachable");
    assert_eq!(json["accounts"][1]["account_id"], "423456789012");
    assert_eq!(json["accounts"][0]["cause"], "never deployed");
    assert!(markdown(&broken).contains("| `b` | 423456789012 | drifted | never deployed |"));
    assert!(text(&broken).contains("drifted      b (423456789012): never deployed"));
}

/// The example repo, with `edit` applied to base/gateway.yaml and `drop` removed.
fn snapshot(edit: Option<(&str, &str)>, drop: Option<&str>) -> crate::MemSource {
    let mut src = crate::config::example_fleet::example_repo();
    if let Some((from, to)) = edit {
        let text = String::from_utf8(src.files["base/gateway.yaml"].clone()).unwrap();
        assert!(text.contains(from));
        src.insert("base/gateway.yaml", &text.replacen(from, to, 1));
    }
    if let Some(path) = drop {
        src.files.remove(path).unwrap();
    }
    src
}

/// Drift reads git only through the history seam: with the history in memory and the
/// deployed state in a directory, no repository and no process.
#[tokio::test]
async fn behind_and_orphaned_accounts_are_found_through_the_history_seam() {
    use crate::git::history::{History as _, MemHistory};
    use crate::target::{FileTarget, Target as _};

    let mut history = MemHistory::default();
    let first = history.commit("first", snapshot(None, None));
    let head = history.commit(
        "timeouts",
        snapshot(
            Some(("timeout: 15s", "timeout: 20s")),
            Some("accounts/wayne-prod.yaml"),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let target = FileTarget::new(dir.path().to_str().unwrap());
    // Every account runs the first commit's bundle.
    let old = Repo::load(&*history.snapshot(&first).unwrap());
    for name in old.account_names() {
        let r = crate::render(&old, name).unwrap();
        let account = AccountRef::from_repo(&old, name).unwrap();
        target.write_bundle(&account, &r.canonical).await.unwrap();
        let pointer = Pointer {
            digest: r.digest,
            commit: Some(first.id.to_string()),
            previous: None,
            applied_by: "ci".into(),
            applied_at: "2026-11-23T00:00:00Z".into(),
            hold: None,
            decommissioned: None,
        };
        target
            .write_pointer(&account, &pointer, None)
            .await
            .unwrap();
    }

    let report = run(&history, &head, &target, &FanOut::quiet(4), 10)
        .await
        .unwrap();
    let by_name: BTreeMap<&str, &AccountDrift> = report
        .accounts
        .iter()
        .map(|a| (a.name.as_str(), a))
        .collect();
    assert_eq!(by_name["wayne-prod"].status, DriftStatus::Orphaned);
    let behind: Vec<&str> = report
        .accounts
        .iter()
        .filter(|a| a.cause_kind == Some(CauseKind::Behind))
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(behind.len(), old.accounts.len() - 1, "{report:#?}");
    assert!(
        report
            .accounts
            .iter()
            .filter(|a| a.cause_kind == Some(CauseKind::Behind))
            .all(|a| a.commits_behind == Some(1))
    );
    assert_eq!(report.summary.orphaned, 1);
    // The markdown report's table, as docs/drift.md shows it.
    assert!(
        markdown(&report).contains("| Account | Account id | Status | Cause |"),
        "{}",
        markdown(&report)
    );
}
