//! A rollout's [`Watch`] that notifies: rollout started and finished, wave passed or failed,
//! each with how long it took, passed on to the daemon's metrics ([`RolloutMetrics`]) and to
//! another watch (the CLI's printer). A rollout with nothing to write tells no one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Notifier;
use super::deliver::wave_event;
use super::event::{Event, FailedAccount};
use crate::execute::report::{
    AccountReport, AccountState, Outcome, RolloutReport, Watch, WaveReport, WaveState,
};

/// What the watch daemon counts of a rollout as it goes.
pub trait RolloutMetrics: Sync {
    /// A wave ended: its name, result (succeeded, failed, preempted) and duration.
    fn wave(&self, wave: &str, result: &'static str, took: Duration);
    /// The rollout ended: its outcome and duration from its start.
    fn rollout(&self, outcome: &'static str, took: Duration);
}

/// The rollout as heard so far.
#[derive(Debug, Default)]
struct Heard {
    began: Option<Instant>,
    /// Nothing to write: no notification at all.
    silent: bool,
    finished: bool,
    /// Each started wave's start.
    waves: HashMap<String, Instant>,
    /// Each wave's accounts that failed, with why, in the order they failed (before a
    /// rollback marks every account it reaches rolled back).
    failed: HashMap<String, Vec<FailedAccount>>,
}

pub struct RolloutWatch<'a> {
    commit: String,
    subject: Option<String>,
    notifier: &'a Notifier,
    inner: Option<&'a dyn Watch>,
    metrics: Option<&'a dyn RolloutMetrics>,
    heard: Mutex<Heard>,
}

impl std::fmt::Debug for RolloutWatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutWatch")
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

impl<'a> RolloutWatch<'a> {
    /// Notifies of `commit`'s rollout through `notifier`; `inner` hears everything too, and
    /// `metrics` counts waves and the rollout.
    pub fn new(
        commit: &str,
        subject: Option<String>,
        notifier: &'a Notifier,
        inner: Option<&'a dyn Watch>,
        metrics: Option<&'a dyn RolloutMetrics>,
    ) -> RolloutWatch<'a> {
        RolloutWatch {
            commit: commit.to_string(),
            subject,
            notifier,
            inner,
            metrics,
            heard: Mutex::new(Heard::default()),
        }
    }

    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The rollout stopped without an outcome (the watch daemon lost its lease mid-way; the
    /// new holder carries on): `rollout.finished` with outcome `interrupted`, once.
    pub fn interrupted(&self, report: &RolloutReport, reason: &str) {
        let (took, silent) = {
            let mut h = self.heard();
            if h.finished {
                return;
            }
            h.finished = true;
            (h.began.map(|b| b.elapsed()).unwrap_or_default(), h.silent)
        };
        if let Some(m) = self.metrics {
            m.rollout("interrupted", took);
        }
        if !silent {
            self.notifier.notify(Event::RolloutFinished {
                commit: report.commit.clone(),
                outcome: "interrupted".into(),
                reason: Some(reason.to_string()),
                rolled_back: report.tally().rolled_back,
                duration_seconds: took,
            });
        }
    }
}

/// A rollout outcome's name in metrics and notifications.
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::RolledBack => "rolled_back",
        Outcome::Halted => "halted",
        Outcome::InProgress => "in_progress",
        Outcome::Preempted => "preempted",
    }
}

impl Watch for RolloutWatch<'_> {
    fn rollout_started(&self, report: &RolloutReport) {
        let waves: Vec<&WaveReport> = report
            .waves
            .iter()
            .filter(|w| !w.accounts.is_empty())
            .collect();
        let accounts: usize = waves.iter().map(|w| w.accounts.len()).sum();
        {
            let mut h = self.heard();
            h.began = Some(Instant::now());
            h.silent = accounts == 0;
        }
        if accounts > 0 {
            self.notifier.notify(Event::RolloutStarted {
                commit: report.commit.clone(),
                subject: self.subject.clone(),
                accounts,
                waves: waves.iter().map(|w| w.name.clone()).collect(),
            });
        }
        if let Some(w) = self.inner {
            w.rollout_started(report);
        }
    }

    fn rollout_finished(&self, report: &RolloutReport) {
        let (took, silent) = {
            let mut h = self.heard();
            let first = !h.finished;
            h.finished = true;
            (
                first.then(|| h.began.map(|b| b.elapsed()).unwrap_or_default()),
                h.silent,
            )
        };
        if let Some(took) = took {
            let outcome = outcome_name(report.outcome);
            if let Some(m) = self.metrics {
                m.rollout(outcome, took);
            }
            if !silent {
                self.notifier.notify(Event::RolloutFinished {
                    commit: report.commit.clone(),
                    outcome: outcome.into(),
                    reason: report.reason.clone(),
                    rolled_back: report.tally().rolled_back,
                    duration_seconds: took,
                });
            }
        }
        if let Some(w) = self.inner {
            w.rollout_finished(report);
        }
    }

    fn account(&self, wave: &str, name: &str, account: &AccountReport) {
        if account.state == AccountState::Failed {
            let mut h = self.heard();
            let failed = h.failed.entry(wave.to_string()).or_default();
            let detail = account.detail.clone().unwrap_or_default();
            match failed.iter_mut().find(|f| f.account == name) {
                Some(f) => f.detail = detail,
                None => failed.push(FailedAccount {
                    account: name.to_string(),
                    detail,
                }),
            }
        }
        if let Some(w) = self.inner {
            w.account(wave, name, account);
        }
    }

    fn wave_started(&self, wave: &str) {
        self.heard().waves.insert(wave.to_string(), Instant::now());
        if let Some(w) = self.inner {
            w.wave_started(wave);
        }
    }

    fn wave(&self, wave: &WaveReport, failure: Option<&str>) {
        if let Some(w) = self.inner {
            w.wave(wave, failure);
        }
        let result = match (failure, wave.state) {
            (Some(_), _) => "failed",
            (None, WaveState::Succeeded) => "succeeded",
            (None, WaveState::Preempted) => "preempted",
            // An earlier wave a failed wave's rollback reached: counted when it passed.
            _ => return,
        };
        let (took, silent, failed) = {
            let h = self.heard();
            // A wave stopped before it started (preempted at its door) took no time.
            let Some(began) = h.waves.get(&wave.name) else {
                return;
            };
            (
                began.elapsed(),
                h.silent,
                h.failed.get(&wave.name).cloned().unwrap_or_default(),
            )
        };
        if let Some(m) = self.metrics {
            m.wave(&wave.name, result, took);
        }
        if !silent && let Some(event) = wave_event(&self.commit, wave, took, failure, &failed) {
            self.notifier.notify(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::report::{Outcome, RolloutReport, WaveReport, WaveState};
    use std::collections::BTreeMap;

    fn account(state: AccountState, detail: Option<&str>) -> AccountReport {
        AccountReport {
            state,
            from: Some("sha256:old".into()),
            to: "sha256:new".into(),
            detail: detail.map(str::to_string),
            error: None,
            conflict: None,
        }
    }

    fn report(waves: Vec<WaveReport>, outcome: Outcome) -> RolloutReport {
        RolloutReport {
            requests: None,
            commit: "c".repeat(40),
            outcome,
            started_at: "2026-12-05T10:00:00Z".into(),
            finished_at: None,
            reason: None,
            waves,
        }
    }

    fn wave(
        name: &str,
        state: WaveState,
        failed: usize,
        accounts: &[(&str, AccountReport)],
    ) -> WaveReport {
        WaveReport {
            name: name.into(),
            state,
            tolerated_failures: 0,
            failed,
            accounts: accounts
                .iter()
                .map(|(n, a)| (n.to_string(), a.clone()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[derive(Default)]
    struct Counted(Mutex<Vec<String>>);

    impl RolloutMetrics for Counted {
        fn wave(&self, wave: &str, result: &'static str, _: Duration) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("wave {wave} {result}"));
        }
        fn rollout(&self, outcome: &'static str, _: Duration) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("rollout {outcome}"));
        }
    }

    /// One of two canaries fails; the rollback marks both rolled back. The failed wave names
    /// the one that failed, not the healthy one rolled back with it, and everything is
    /// counted once.
    #[test]
    fn a_failed_wave_names_only_its_failed_accounts() {
        let notifier = Notifier::capturing();
        let metrics = Counted::default();
        let w = RolloutWatch::new("c", None, &notifier, None, Some(&metrics));
        let pending = wave(
            "canary",
            WaveState::Pending,
            0,
            &[
                ("a", account(AccountState::Pending, None)),
                ("b", account(AccountState::Pending, None)),
            ],
        );
        w.rollout_started(&report(vec![pending], Outcome::InProgress));
        w.wave_started("canary");
        w.account("canary", "a", &account(AccountState::Healthy, None));
        w.account(
            "canary",
            "b",
            &account(AccountState::Failed, Some("5xx ratio 0.4 over 0.05")),
        );
        let rolled = wave(
            "canary",
            WaveState::RolledBack,
            1,
            &[
                (
                    "a",
                    account(AccountState::RolledBack, Some("rolled back to sha256:old")),
                ),
                (
                    "b",
                    account(
                        AccountState::RolledBack,
                        Some("5xx ratio 0.4 over 0.05; rolled back to sha256:old"),
                    ),
                ),
            ],
        );
        w.wave(
            &rolled,
            Some("wave canary: 1 of 2 accounts failed, 0 tolerated"),
        );
        let done = report(vec![rolled], Outcome::RolledBack);
        w.rollout_finished(&done);
        w.rollout_finished(&done);
        w.interrupted(&done, "lease lost");
        let events = notifier.captured();
        let names: Vec<&str> = events.iter().map(Event::name).collect();
        assert_eq!(
            names,
            ["rollout.started", "wave.failed", "rollout.finished"]
        );
        let Event::WaveFailed {
            failed,
            failed_total,
            rolled_back,
            ..
        } = &events[1]
        else {
            panic!("{events:?}");
        };
        assert_eq!((failed.len(), *failed_total, *rolled_back), (1, 1, 2));
        assert_eq!(failed[0].account, "b");
        assert_eq!(
            *metrics.0.lock().unwrap_or_else(|e| e.into_inner()),
            ["wave canary failed", "rollout rolled_back"]
        );
    }

    /// Nothing to write (an apply at the head): no notification; a wave preempted before it
    /// started is not timed.
    #[test]
    fn a_rollout_with_nothing_to_write_tells_no_one() {
        let notifier = Notifier::capturing();
        let metrics = Counted::default();
        let w = RolloutWatch::new("c", None, &notifier, None, Some(&metrics));
        let empty = report(
            vec![wave("canary", WaveState::Pending, 0, &[])],
            Outcome::InProgress,
        );
        w.rollout_started(&empty);
        w.rollout_finished(&report(Vec::new(), Outcome::Succeeded));
        assert!(notifier.captured().is_empty());

        let w = RolloutWatch::new("c", None, &notifier, None, Some(&metrics));
        let one = wave(
            "prod",
            WaveState::Pending,
            0,
            &[("p", account(AccountState::Pending, None))],
        );
        w.rollout_started(&report(vec![one.clone()], Outcome::InProgress));
        w.wave(&wave("prod", WaveState::Preempted, 0, &[]), None);
        w.interrupted(
            &report(vec![one], Outcome::InProgress),
            "the lease was lost",
        );
        let names: Vec<&str> = notifier.captured().iter().map(Event::name).collect();
        assert_eq!(names, ["rollout.started", "rollout.finished"]);
        assert_eq!(
            *metrics.0.lock().unwrap_or_else(|e| e.into_inner()),
            ["rollout succeeded", "rollout interrupted"]
        );
    }
}
