//! `fleetgate status`: the fleet as on-call needs it at a glance. One read of every selected
//! account's pointer (never a bundle), arranged by the branch head's waves: which accounts
//! run which commit, holds, never deployed and unreachable accounts, the last automatic
//! rollback; and, when asked, the watch daemon's `/status` read into this module's own
//! lenient types (every field optional, unknown ones ignored), so older and newer daemons
//! both show.
//!
//! [`assemble`] is pure; [`read`] gathers its inputs from git and the target, and
//! [`daemon`] asks the daemon.
//!
//! May import config, git, render and target; never the CLI or the daemon.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetgate_bundle::Digest;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::repo::Repo;
use crate::git::Commit;
use crate::git::history::History;
use crate::render::render;
use crate::target::{AccountRef, ErrorClass, FanOut, Pointer, Target, TargetError};

/// The version of the JSON status document.
pub const STATUS_FORMAT_VERSION: u32 = 1;

/// The group of accounts that no wave of fleet.yaml selects.
pub const NO_WAVE: &str = "(no wave)";

/// What the rollout executor appends to `applied_by` when it moves a pointer back.
const AUTO_ROLLBACK: &str = " (auto-rollback)";

/// The longest `/status` body read from the daemon.
pub const DAEMON_MAX_BYTES: usize = 8 << 20;

/// How long the daemon has to answer, connection included.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(5);

/// A commit of the config repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    /// The revision as given (`main`, `origin/main`).
    pub rev: String,
    pub commit: String,
    /// Its subject line, when the repo has it.
    pub subject: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Accounts looked at (the selected accounts of the branch head).
    pub accounts: usize,
    /// Accounts whose pointer records the head's commit, or names the bundle the head
    /// renders for them.
    pub at_head: usize,
    pub held: usize,
    pub never_deployed: usize,
    pub unreachable: usize,
}

/// Accounts of one wave whose pointers record the same commit (or, without a commit, name
/// the same digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitGroup {
    /// The commit the pointers record; absent for pointers written without one.
    pub commit: Option<String>,
    /// The digest, for pointers without a commit.
    pub digest: Option<String>,
    pub subject: Option<String>,
    /// Whether `commit` is the branch head.
    pub is_head: bool,
    pub count: usize,
    /// How many of them run the bundle the head renders for them (an older commit that
    /// did not change them).
    pub runs_head_bundle: usize,
    /// Sorted.
    pub accounts: Vec<String>,
}

/// An account held by a rollback, as its pointer records the hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldAccount {
    pub account: String,
    pub reason: String,
    pub by: String,
    pub at: String,
    /// What the account was rolled back to, as the operator named it.
    pub to: String,
    pub branch_head: Option<String>,
    /// The branch has moved past the head the hold was taken at: the next apply or daemon
    /// pass lifts it.
    pub superseded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreachableAccount {
    pub account: String,
    pub error: String,
    pub class: ErrorClass,
}

/// One wave of fleet.yaml (or the accounts of none), in rollout order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveStatus {
    pub name: String,
    pub accounts: usize,
    /// The head's group first, then the biggest.
    pub commits: Vec<CommitGroup>,
    pub held: Vec<HeldAccount>,
    pub never_deployed: Vec<String>,
    pub unreachable: Vec<UnreachableAccount>,
}

/// One account the last automatic rollback moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolledBackAccount {
    pub account: String,
    /// The bundle it went back to.
    pub digest: String,
    pub commit: Option<String>,
    pub subject: Option<String>,
}

/// The newest pointer write of the rollout executor's automatic rollback, and every
/// account it wrote at that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoRollback {
    pub at: String,
    /// Who ran the rollout (the `applied_by` without its suffix).
    pub by: String,
    pub accounts: Vec<RolledBackAccount>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub format_version: u32,
    pub repo: String,
    pub target: String,
    pub head: CommitInfo,
    pub summary: Summary,
    pub waves: Vec<WaveStatus>,
    pub last_auto_rollback: Option<AutoRollback>,
    /// Absent unless a daemon was asked.
    pub daemon: Option<DaemonView>,
}

/// What reading one account's pointer gave.
#[derive(Debug, Clone)]
pub enum Read {
    Pointer(Box<Pointer>),
    NeverDeployed,
    Unreachable { error: String, class: ErrorClass },
}

/// One account of the branch head, with its wave and what it runs.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// Index into the waves; `None`: no wave selects it.
    pub wave: Option<usize>,
    /// The digest the head renders for it (`None` when it does not render).
    pub expected: Option<Digest>,
    pub read: Read,
}

/// What [`assemble`] asks git.
pub struct Git<'a> {
    /// A commit's subject line, when the repo has it.
    pub subject: &'a dyn Fn(&str) -> Option<String>,
    /// Whether the head has moved past a commit (holds taken there are over).
    pub superseded: &'a dyn Fn(&str) -> bool,
}

impl std::fmt::Debug for Git<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Git").finish_non_exhaustive()
    }
}

/// A commit group's key: the commit, else the digest.
type GroupKey = (Option<String>, Option<String>);

/// Arranges the accounts by wave and commit, counts them, and finds the last automatic
/// rollback. Pure.
pub fn assemble(
    repo: &str,
    target: &str,
    head: CommitInfo,
    waves: &[String],
    members: &[Member],
    git: &Git<'_>,
) -> StatusReport {
    let mut summary = Summary {
        accounts: members.len(),
        ..Summary::default()
    };
    let mut names: Vec<String> = waves.to_vec();
    if members
        .iter()
        .any(|m| m.wave.is_none_or(|w| w >= waves.len()))
    {
        names.push(NO_WAVE.to_string());
    }
    let mut out: Vec<WaveStatus> = names
        .into_iter()
        .map(|name| WaveStatus {
            name,
            accounts: 0,
            commits: Vec::new(),
            held: Vec::new(),
            never_deployed: Vec::new(),
            unreachable: Vec::new(),
        })
        .collect();
    let last = out.len().saturating_sub(1);
    let mut groups: Vec<BTreeMap<GroupKey, CommitGroup>> = vec![BTreeMap::new(); out.len()];
    for m in members {
        let i = m.wave.filter(|w| *w < waves.len()).unwrap_or(last);
        let wave = &mut out[i];
        wave.accounts += 1;
        let p = match &m.read {
            Read::NeverDeployed => {
                summary.never_deployed += 1;
                wave.never_deployed.push(m.name.clone());
                continue;
            }
            Read::Unreachable { error, class } => {
                summary.unreachable += 1;
                wave.unreachable.push(UnreachableAccount {
                    account: m.name.clone(),
                    error: error.clone(),
                    class: *class,
                });
                continue;
            }
            Read::Pointer(p) => p,
        };
        let is_head = p.commit.as_deref() == Some(head.commit.as_str());
        let runs_head_bundle = m.expected.as_ref() == Some(&p.digest);
        if is_head || runs_head_bundle {
            summary.at_head += 1;
        }
        let key = match &p.commit {
            Some(c) => (Some(c.clone()), None),
            None => (None, Some(p.digest.to_string())),
        };
        let group = groups[i].entry(key.clone()).or_insert_with(|| CommitGroup {
            subject: key.0.as_deref().and_then(|c| (git.subject)(c)),
            commit: key.0,
            digest: key.1,
            is_head,
            count: 0,
            runs_head_bundle: 0,
            accounts: Vec::new(),
        });
        group.count += 1;
        group.runs_head_bundle += usize::from(runs_head_bundle);
        group.accounts.push(m.name.clone());
        if let Some(h) = &p.hold {
            summary.held += 1;
            wave.held.push(HeldAccount {
                account: m.name.clone(),
                reason: h.reason.clone(),
                by: h.by.clone(),
                at: h.at.clone(),
                to: h.to.clone(),
                branch_head: h.branch_head.clone(),
                superseded: h.branch_head.as_deref().is_some_and(git.superseded),
            });
        }
    }
    for (wave, groups) in out.iter_mut().zip(groups) {
        wave.commits = groups.into_values().collect();
        wave.commits.sort_by(|a, b| {
            b.is_head
                .cmp(&a.is_head)
                .then(b.count.cmp(&a.count))
                .then_with(|| a.commit.cmp(&b.commit))
                .then_with(|| a.digest.cmp(&b.digest))
        });
        for g in &mut wave.commits {
            g.accounts.sort();
        }
        wave.held.sort_by(|a, b| a.account.cmp(&b.account));
        wave.never_deployed.sort();
        wave.unreachable.sort_by(|a, b| a.account.cmp(&b.account));
    }
    StatusReport {
        format_version: STATUS_FORMAT_VERSION,
        repo: repo.to_string(),
        target: target.to_string(),
        head,
        summary,
        waves: out,
        last_auto_rollback: last_auto_rollback(members, git),
        daemon: None,
    }
}

/// The newest pointer write by an automatic rollback, with every account written then.
fn last_auto_rollback(members: &[Member], git: &Git<'_>) -> Option<AutoRollback> {
    let rolled_back: Vec<(&str, &Pointer)> = members
        .iter()
        .filter_map(|m| match &m.read {
            Read::Pointer(p) if p.applied_by.ends_with(AUTO_ROLLBACK) => {
                Some((m.name.as_str(), &**p))
            }
            _ => None,
        })
        .collect();
    // Times the executor writes are RFC 3339 UTC; one it cannot parse sorts as text.
    let when = |at: &str| humantime::parse_rfc3339_weak(at).ok();
    let newest = rolled_back.iter().map(|(_, p)| p).max_by(|a, b| {
        when(&a.applied_at)
            .cmp(&when(&b.applied_at))
            .then_with(|| a.applied_at.cmp(&b.applied_at))
    })?;
    let mut accounts: Vec<RolledBackAccount> = rolled_back
        .iter()
        .filter(|(_, p)| p.applied_at == newest.applied_at)
        .map(|(name, p)| RolledBackAccount {
            account: name.to_string(),
            digest: p.digest.to_string(),
            subject: p.commit.as_deref().and_then(|c| (git.subject)(c)),
            commit: p.commit.clone(),
        })
        .collect();
    accounts.sort_by(|a, b| a.account.cmp(&b.account));
    Some(AutoRollback {
        at: newest.applied_at.clone(),
        by: newest
            .applied_by
            .strip_suffix(AUTO_ROLLBACK)
            .unwrap_or(&newest.applied_by)
            .to_string(),
        accounts,
    })
}

/// Reads the pointers of `accounts` (one GET each, through the fan-out) and assembles the
/// report against the branch head `head`, whose repo is `config`. An error of the target
/// itself (a `file://` directory that does not exist) is the run's, not each account's.
pub async fn read(
    repo: &dyn History,
    head: &Commit,
    config: &Repo,
    accounts: &[AccountRef],
    target: &dyn Target,
    fan: &FanOut<'_>,
) -> Result<StatusReport, TargetError> {
    let (waves, _, wave_of) = crate::ops::pipeline::rollout_order(config);
    let wave_names: Vec<String> = waves.iter().map(|w| w.name.clone()).collect();
    let mut read: BTreeMap<String, Read> = BTreeMap::new();
    let results = fan
        .run(
            "read pointer",
            accounts.iter(),
            |a| a,
            |a| target.read_pointer(a),
        )
        .await;
    for (name, r) in results {
        let r = match r {
            Ok(Some((pointer, _))) => Read::Pointer(Box::new(pointer)),
            Ok(None) => Read::NeverDeployed,
            Err(e @ TargetError::MissingTarget { .. }) => return Err(e),
            Err(e) => Read::Unreachable {
                error: e.to_string(),
                class: e.class(),
            },
        };
        read.insert(name, r);
    }
    let members: Vec<Member> = accounts
        .iter()
        .map(|a| Member {
            name: a.name.clone(),
            wave: wave_of.get(&a.name).copied(),
            // Rendering is local; it tells an account an older commit left unchanged.
            expected: render(config, &a.name).ok().map(|r| r.digest),
            read: read.remove(&a.name).unwrap_or(Read::NeverDeployed),
        })
        .collect();
    let head_id = head.id.to_string();
    let subject = |c: &str| repo.summary(c);
    let superseded = |c: &str| c != head_id && repo.is_descendant(&head_id, c);
    let info = CommitInfo {
        rev: head.rev.clone(),
        commit: head_id.clone(),
        subject: repo.summary(&head_id),
    };
    Ok(assemble(
        repo.location(),
        &target.location(),
        info,
        &wave_names,
        &members,
        &Git {
            subject: &subject,
            superseded: &superseded,
        },
    ))
}

/// A commit as the daemon shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DaemonCommit {
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub at: Option<String>,
}

/// A wave of the daemon's rollout: its state and how many of its accounts are in each
/// state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonWave {
    pub name: String,
    pub state: Option<String>,
    pub accounts: usize,
    /// Account state (`applied`, `healthy`, `rolled-back`, ...) to how many.
    pub account_states: BTreeMap<String, usize>,
}

/// The daemon's rollout: the one in progress, else the last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonRollout {
    pub commit: Option<String>,
    /// `in-progress`, `succeeded`, `rolled-back`, `halted`, `preempted`, ... as the daemon
    /// says it.
    pub outcome: Option<String>,
    pub in_progress: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Why it stopped, when it did.
    pub reason: Option<String>,
    pub waves: Vec<DaemonWave>,
}

/// A commit the daemon rolled back automatically and does not retry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DaemonRejected {
    pub commit: Option<String>,
    pub reason: Option<String>,
}

/// A rollout of `commit` stopped because the branch moved to `by`; `moved`: the accounts
/// it had already moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DaemonPreempted {
    pub commit: Option<String>,
    pub by: Option<String>,
    pub at: Option<String>,
    pub moved: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DaemonHeld {
    pub account: Option<String>,
    pub note: Option<String>,
}

/// What the watch daemon's `/status` said, or why it could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DaemonView {
    pub url: String,
    /// Whether the daemon answered at all.
    pub reachable: bool,
    /// Why its status could not be read (not reachable, an HTTP error, not its JSON).
    pub error: Option<String>,
    pub identity: Option<String>,
    pub branch: Option<String>,
    pub lease_holder: Option<String>,
    pub head: Option<DaemonCommit>,
    pub last_applied: Option<DaemonCommit>,
    /// A newer head waiting for the running rollout.
    pub queued: Option<String>,
    pub rollout: Option<DaemonRollout>,
    pub rejected: Option<DaemonRejected>,
    pub preempted: Option<DaemonPreempted>,
    pub held: Vec<DaemonHeld>,
    pub last_error: Option<String>,
}

/// One top-level member of `/status`, `None` when absent, null or not of the expected
/// shape: a member one daemon version lacks or shapes otherwise spoils nothing else.
fn member<T: DeserializeOwned>(v: &serde_json::Value, name: &str) -> Option<T> {
    v.get(name)
        .filter(|v| !v.is_null())
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// A text member of an object.
fn text(v: &serde_json::Value, name: &str) -> Option<String> {
    v.get(name).and_then(|v| v.as_str()).map(str::to_string)
}

fn rollout_of(v: &serde_json::Value) -> Option<DaemonRollout> {
    if !v.is_object() {
        return None;
    }
    let outcome = text(v, "outcome");
    let waves = v
        .get("waves")
        .and_then(|w| w.as_array())
        .map(|waves| {
            waves
                .iter()
                .map(|w| {
                    let mut account_states: BTreeMap<String, usize> = BTreeMap::new();
                    let accounts = w.get("accounts").and_then(|a| a.as_object());
                    for a in accounts.into_iter().flat_map(|a| a.values()) {
                        let state = text(a, "state").unwrap_or_else(|| "unknown".into());
                        *account_states.entry(state).or_default() += 1;
                    }
                    DaemonWave {
                        name: text(w, "name").unwrap_or_default(),
                        state: text(w, "state"),
                        accounts: accounts.map_or(0, |a| a.len()),
                        account_states,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Some(DaemonRollout {
        commit: text(v, "commit"),
        // `in-progress` as the executor serializes it; `in_progress` as some say it.
        in_progress: outcome
            .as_deref()
            .is_some_and(|o| o.replace('_', "-") == "in-progress"),
        outcome,
        started_at: text(v, "startedAt"),
        finished_at: text(v, "finishedAt"),
        reason: text(v, "reason"),
        waves,
    })
}

/// The daemon's `/status` document read leniently: every field optional, unknown ones
/// ignored, each member on its own. Pure.
pub fn daemon_view(url: &str, status: &serde_json::Value) -> DaemonView {
    let lease = status.get("lease");
    let rollout = status.get("rollout").and_then(rollout_of);
    let mut rejected: Option<DaemonRejected> = member(status, "rejected");
    // The rejected commit's rollout says why it stopped when the record does not.
    if let (Some(r), Some(ro)) = (rejected.as_mut(), rollout.as_ref())
        && r.reason.is_none()
        && r.commit.is_some()
        && r.commit == ro.commit
    {
        r.reason.clone_from(&ro.reason);
    }
    DaemonView {
        url: url.to_string(),
        reachable: true,
        error: None,
        identity: text(status, "identity"),
        branch: text(status, "branch"),
        lease_holder: lease.and_then(|l| text(l, "holder")),
        head: member(status, "head"),
        last_applied: member(status, "last_applied"),
        queued: text(status, "queued"),
        rollout,
        rejected,
        preempted: member(status, "preempted"),
        held: member(status, "held").unwrap_or_default(),
        last_error: text(status, "last_error"),
    }
}

/// Asks the daemon at `url` (`http://HOST:PORT`) for its `/status`, within
/// [`DAEMON_TIMEOUT`] and [`DAEMON_MAX_BYTES`]. Never fails: what went wrong is the view's
/// `error`.
pub async fn daemon(url: &str) -> DaemonView {
    let unreachable = |error: String| DaemonView {
        url: url.to_string(),
        error: Some(error),
        ..DaemonView::default()
    };
    let base = url.trim_end_matches('/');
    if !base.starts_with("http://") {
        return unreachable(format!(
            "{url}: the daemon is asked over plain http://HOST:PORT"
        ));
    }
    let uri: hyper::Uri = match format!("{base}/status").parse() {
        Ok(u) => u,
        Err(e) => return unreachable(format!("{url}: {e}")),
    };
    match tokio::time::timeout(DAEMON_TIMEOUT, get_json(uri)).await {
        Err(_) => unreachable(format!(
            "no answer within {}",
            humantime::format_duration(DAEMON_TIMEOUT)
        )),
        Ok(Err(Failure::Connect(e))) => unreachable(e),
        Ok(Err(Failure::Answer(e))) => DaemonView {
            reachable: true,
            ..unreachable(e)
        },
        Ok(Ok(status)) => daemon_view(url, &status),
    }
}

enum Failure {
    /// No answer: the request did not get through.
    Connect(String),
    /// An answer that is not a status document.
    Answer(String),
}

async fn get_json(uri: hyper::Uri) -> Result<serde_json::Value, Failure> {
    use http_body_util::BodyExt as _;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<hyper::body::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let response = client.get(uri).await.map_err(|e| {
        // The legacy client's error hides the cause (connection refused, ...) in its source.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        Failure::Connect(text)
    })?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), DAEMON_MAX_BYTES)
        .collect()
        .await
        .map_err(|e| Failure::Answer(format!("reading /status: {e}")))?
        .to_bytes();
    if !status.is_success() {
        return Err(Failure::Answer(format!("/status answered {status}")));
    }
    serde_json::from_slice(&body)
        .map_err(|e| Failure::Answer(format!("/status is not a JSON document: {e}")))
}
