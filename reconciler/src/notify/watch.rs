//! A rollout's [`Watch`] that notifies: rollout started and finished, wave passed or failed,
//! each with how long it took; waves are passed on to the metrics (the daemon), and
//! everything to another watch (the CLI's printer).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Event;
use super::Notifier;
use super::deliver::wave_event;
use crate::execute::report::{AccountReport, Outcome, RolloutReport, Watch, WaveReport, WaveState};

/// Hears of each wave's end as it happens.
pub type WaveMetric<'a> = &'a (dyn Fn(&str, &'static str, Duration) + Sync);

pub struct RolloutWatch<'a> {
    commit: String,
    subject: Option<String>,
    began: Mutex<Option<Instant>>,
    notifier: &'a Notifier,
    inner: Option<&'a dyn Watch>,
    metric: Option<WaveMetric<'a>>,
    started: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for RolloutWatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutWatch")
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

impl<'a> RolloutWatch<'a> {
    /// Notifies of `commit`'s waves through `notifier`; `inner` hears everything too, and
    /// `metric` gets each wave's name, result (succeeded, failed, preempted) and duration.
    pub fn new(
        commit: &str,
        subject: Option<String>,
        notifier: &'a Notifier,
        inner: Option<&'a dyn Watch>,
        metric: Option<WaveMetric<'a>>,
    ) -> RolloutWatch<'a> {
        RolloutWatch {
            commit: commit.to_string(),
            subject,
            began: Mutex::new(None),
            notifier,
            inner,
            metric,
            started: Mutex::new(HashMap::new()),
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
        *self
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let waves: Vec<&WaveReport> = report
            .waves
            .iter()
            .filter(|w| !w.accounts.is_empty())
            .collect();
        self.notifier.notify(Event::RolloutStarted {
            commit: report.commit.clone(),
            subject: self.subject.clone(),
            accounts: waves.iter().map(|w| w.accounts.len()).sum(),
            waves: waves.iter().map(|w| w.name.clone()).collect(),
        });
        if let Some(w) = self.inner {
            w.rollout_started(report);
        }
    }

    fn rollout_finished(&self, report: &RolloutReport) {
        let took = self
            .began
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|b| b.elapsed())
            .unwrap_or_default();
        self.notifier.notify(Event::RolloutFinished {
            commit: report.commit.clone(),
            outcome: outcome_name(report.outcome).into(),
            reason: report.reason.clone(),
            rolled_back: report.tally().rolled_back,
            duration_seconds: took,
        });
        if let Some(w) = self.inner {
            w.rollout_finished(report);
        }
    }
    fn account(&self, wave: &str, name: &str, account: &AccountReport) {
        if let Some(w) = self.inner {
            w.account(wave, name, account);
        }
    }

    fn wave_started(&self, wave: &str) {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(wave.to_string(), Instant::now());
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
        let took = self
            .started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&wave.name)
            .map(Instant::elapsed)
            .unwrap_or_default();
        if let Some(m) = self.metric {
            m(&wave.name, result, took);
        }
        if let Some(event) = wave_event(&self.commit, wave, took, failure) {
            self.notifier.notify(event);
        }
    }
}
