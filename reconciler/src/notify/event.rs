//! What a notification says: the events, their envelope, and how each sink's payload is made
//! from them. Pure: no I/O, no clock (the envelope carries its time).

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::manifest::EventKind;

/// How many accounts a message names; the rest are counted ("and 412 more").
pub const MAX_NAMED_ACCOUNTS: usize = 20;

/// How urgent an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One account a failed wave names, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedAccount {
    pub account: String,
    pub detail: String,
}

/// One drifted account and its cause.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DriftedAccount {
    pub account: String,
    pub cause: String,
}

/// Something that happened to the fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// A rollout wrote its first wave.
    #[serde(rename = "rollout.started", rename_all = "camelCase")]
    RolloutStarted {
        commit: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        accounts: usize,
        waves: Vec<String>,
    },
    /// A wave passed its health gate and bake.
    #[serde(rename = "wave.passed", rename_all = "camelCase")]
    WavePassed {
        commit: String,
        wave: String,
        /// The wave's accounts that are healthy.
        accounts: usize,
        /// Accounts that failed within the wave's tolerance.
        tolerated_failures: usize,
        #[serde(serialize_with = "secs")]
        duration_seconds: Duration,
    },
    /// A wave breached its tolerance or health gate: later waves do not start.
    #[serde(rename = "wave.failed", rename_all = "camelCase")]
    WaveFailed {
        commit: String,
        wave: String,
        /// The gate's verdict, with its figures.
        reason: String,
        /// The accounts that failed, each with its figures (at most [`MAX_NAMED_ACCOUNTS`]).
        failed: Vec<FailedAccount>,
        failed_total: usize,
        /// The accounts put back on their previous bundle.
        rolled_back: usize,
        #[serde(serialize_with = "secs")]
        duration_seconds: Duration,
    },
    /// A rollout ended.
    #[serde(rename = "rollout.finished", rename_all = "camelCase")]
    RolloutFinished {
        commit: String,
        /// succeeded, rolled_back, halted, preempted (a newer commit took over) or
        /// interrupted (the daemon lost its lease; the new holder carries on).
        outcome: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        rolled_back: usize,
        #[serde(serialize_with = "secs")]
        duration_seconds: Duration,
    },
    /// `fleetgate rollback` moved accounts to an earlier bundle and held them there.
    #[serde(rename = "rollback.set", rename_all = "camelCase")]
    RollbackSet {
        /// The commit (or digest) rolled back to.
        to: String,
        accounts: Vec<String>,
        accounts_total: usize,
        by: String,
    },
    /// Holds were lifted: the accounts follow the branch again.
    #[serde(rename = "hold.released", rename_all = "camelCase")]
    HoldReleased {
        accounts: Vec<String>,
        accounts_total: usize,
        by: String,
    },
    /// A drift report found accounts that differ from git (sent again only when the set
    /// of accounts or causes changes).
    #[serde(rename = "drift.found", rename_all = "camelCase")]
    DriftFound {
        commit: String,
        accounts: Vec<DriftedAccount>,
        drifted_total: usize,
        unreachable_total: usize,
        /// What makes one drift the same as another: every off account with the kind of its
        /// cause (not its words, which count commits behind), from [`drift_fingerprint`].
        #[serde(skip)]
        fingerprint: u64,
    },
    /// The fleet is back in sync after a drift was reported.
    #[serde(rename = "drift.cleared", rename_all = "camelCase")]
    DriftCleared { commit: String },
    /// A watch daemon took its shard's lease (from another holder, when one is named).
    #[serde(rename = "lease.taken", rename_all = "camelCase")]
    LeaseTaken {
        lease: String,
        holder: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous: Option<String>,
    },
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10.0).round() / 10.0)
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::RolloutStarted { .. } | Event::RolloutFinished { .. } => EventKind::Rollout,
            Event::WavePassed { .. } | Event::WaveFailed { .. } => EventKind::Wave,
            Event::RollbackSet { .. } => EventKind::Rollback,
            Event::HoldReleased { .. } => EventKind::Hold,
            Event::DriftFound { .. } | Event::DriftCleared { .. } => EventKind::Drift,
            Event::LeaseTaken { .. } => EventKind::Lease,
        }
    }

    /// The event's name in payloads: `rollout.started`, `wave.failed`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Event::RolloutStarted { .. } => "rollout.started",
            Event::WavePassed { .. } => "wave.passed",
            Event::WaveFailed { .. } => "wave.failed",
            Event::RolloutFinished { .. } => "rollout.finished",
            Event::RollbackSet { .. } => "rollback.set",
            Event::HoldReleased { .. } => "hold.released",
            Event::DriftFound { .. } => "drift.found",
            Event::DriftCleared { .. } => "drift.cleared",
            Event::LeaseTaken { .. } => "lease.taken",
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            Event::WaveFailed { .. } => Severity::Critical,
            Event::RolloutFinished { outcome, .. }
                if outcome == "rolled_back" || outcome == "halted" =>
            {
                Severity::Critical
            }
            Event::RollbackSet { .. } | Event::DriftFound { .. } | Event::LeaseTaken { .. } => {
                Severity::Warning
            }
            _ => Severity::Info,
        }
    }

    /// The commit the event is about, when it is about one.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Event::RolloutStarted { commit, .. }
            | Event::WavePassed { commit, .. }
            | Event::WaveFailed { commit, .. }
            | Event::RolloutFinished { commit, .. }
            | Event::DriftFound { commit, .. }
            | Event::DriftCleared { commit } => Some(commit),
            Event::RollbackSet { .. } | Event::HoldReleased { .. } | Event::LeaseTaken { .. } => {
                None
            }
        }
    }

    /// One line for people: what happened, with the figures that matter.
    pub fn title(&self) -> String {
        match self {
            Event::RolloutStarted {
                commit,
                accounts,
                waves,
                ..
            } => format!(
                "Rollout of {} started: {accounts} account{} in {} wave{} ({})",
                short(commit),
                plural(*accounts),
                waves.len(),
                plural(waves.len()),
                waves.join(" → ")
            ),
            Event::WavePassed {
                commit,
                wave,
                accounts,
                tolerated_failures,
                duration_seconds,
            } => format!(
                "Wave {wave} of {} passed: {accounts} account{} healthy{} after {}",
                short(commit),
                plural(*accounts),
                if *tolerated_failures > 0 {
                    format!(", {tolerated_failures} failed within tolerance")
                } else {
                    String::new()
                },
                human(*duration_seconds)
            ),
            Event::WaveFailed {
                commit,
                wave,
                failed_total,
                rolled_back,
                ..
            } => format!(
                "Wave {wave} of {} FAILED: {failed_total} account{} failed, {rolled_back} rolled back",
                short(commit),
                plural(*failed_total)
            ),
            Event::RolloutFinished {
                commit,
                outcome,
                duration_seconds,
                rolled_back,
                ..
            } => match outcome.as_str() {
                "succeeded" => format!(
                    "Rollout of {} succeeded in {}",
                    short(commit),
                    human(*duration_seconds)
                ),
                "preempted" => format!(
                    "Rollout of {} stopped for a newer commit after {}",
                    short(commit),
                    human(*duration_seconds)
                ),
                "interrupted" => format!(
                    "Rollout of {} interrupted after {}: another daemon carries it on",
                    short(commit),
                    human(*duration_seconds)
                ),
                other => format!(
                    "Rollout of {} ended {}: {rolled_back} account{} rolled back",
                    short(commit),
                    other.replace('_', " "),
                    plural(*rolled_back)
                ),
            },
            Event::RollbackSet {
                to,
                accounts_total,
                by,
                ..
            } => format!(
                "{by} rolled {accounts_total} account{} back to {} and held them",
                plural(*accounts_total),
                short(to)
            ),
            Event::HoldReleased {
                accounts_total, by, ..
            } => format!(
                "{by} released the hold of {accounts_total} account{}",
                plural(*accounts_total)
            ),
            Event::DriftFound {
                drifted_total,
                unreachable_total,
                ..
            } => format!(
                "Drift: {drifted_total} account{} differ from git, {unreachable_total} unreachable",
                plural(*drifted_total)
            ),
            Event::DriftCleared { commit } => {
                format!("Drift cleared: every account runs {}", short(commit))
            }
            Event::LeaseTaken {
                lease,
                holder,
                previous,
            } => match previous {
                Some(p) => format!("{holder} took over the lease {lease} from {p}"),
                None => format!("{holder} took the lease {lease}"),
            },
        }
    }

    /// The lines under the title: the reason, the accounts.
    pub fn details(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self {
            Event::RolloutStarted {
                subject: Some(s), ..
            } => out.push(s.clone()),
            Event::WaveFailed {
                reason,
                failed,
                failed_total,
                ..
            } => {
                out.push(reason.clone());
                for f in failed {
                    out.push(format!("{}: {}", f.account, f.detail));
                }
                if *failed_total > failed.len() {
                    out.push(format!("and {} more", failed_total - failed.len()));
                }
            }
            Event::RolloutFinished {
                reason: Some(r), ..
            } => out.push(r.clone()),
            Event::RollbackSet {
                accounts,
                accounts_total,
                ..
            }
            | Event::HoldReleased {
                accounts,
                accounts_total,
                ..
            } => {
                out.push(named(accounts, *accounts_total));
            }
            Event::DriftFound {
                accounts,
                drifted_total,
                unreachable_total,
                ..
            } => {
                for a in accounts {
                    out.push(format!("{}: {}", a.account, a.cause));
                }
                let total = drifted_total + unreachable_total;
                if total > accounts.len() {
                    out.push(format!("and {} more", total - accounts.len()));
                }
            }
            _ => {}
        }
        out
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn named(accounts: &[String], total: usize) -> String {
    let mut s = accounts.join(", ");
    if total > accounts.len() {
        s.push_str(&format!(" and {} more", total - accounts.len()));
    }
    s
}

/// The first [`MAX_NAMED_ACCOUNTS`] of `names`, and how many there are.
pub fn bounded<I: IntoIterator<Item = String>>(names: I) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut total = 0;
    for n in names {
        if out.len() < MAX_NAMED_ACCOUNTS {
            out.push(n);
        }
        total += 1;
    }
    (out, total)
}

/// The fingerprint of a drift: each off account's name with the kind of its cause, in any
/// order.
pub fn drift_fingerprint<'a>(off: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut all: Vec<(&str, &str)> = off.into_iter().collect();
    all.sort_unstable();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    all.hash(&mut h);
    h.finish()
}

/// An event as it is sent: with its id (the same on every retry, so receivers can drop
/// repeats), time and origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// 32 hex digits, unique per event.
    pub id: String,
    /// RFC 3339.
    pub at: String,
    /// Who acted: `fleetgate-watch <identity>`, or the user running `fleetgate apply`.
    pub source: String,
    /// The watch daemon's shard (`1/3`) when it runs one: its events are about that part of
    /// the fleet only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub event: Event,
}

impl Notice {
    /// The event's title, with the shard it is about.
    pub fn headline(&self) -> String {
        match &self.shard {
            Some(s) => format!("[shard {s}] {}", self.event.title()),
            None => self.event.title(),
        }
    }
}

/// The version of the generic webhook's body; a change of its meaning bumps it.
pub const WEBHOOK_FORMAT: u32 = 1;

/// The generic webhook's body.
pub fn webhook_body(n: &Notice) -> Value {
    let mut event = serde_json::to_value(&n.event).unwrap_or(Value::Null);
    let data = event
        .as_object_mut()
        .map(|o| {
            o.remove("type");
            Value::Object(o.clone())
        })
        .unwrap_or(Value::Null);
    let mut body = json!({
        "formatVersion": WEBHOOK_FORMAT,
        "id": n.id,
        "type": n.event.name(),
        "severity": n.event.severity(),
        "at": n.at,
        "source": n.source,
        "title": n.headline(),
        "data": data,
    });
    if let Some(shard) = &n.shard {
        body["shard"] = json!(shard);
    }
    body
}

fn emoji(s: Severity) -> &'static str {
    match s {
        Severity::Info => ":large_green_circle:",
        Severity::Warning => ":warning:",
        Severity::Critical => ":rotating_light:",
    }
}

/// Slack's incoming webhook body: a `text` fallback (notifications, screen readers) and
/// Block Kit blocks. mrkdwn's three control characters are escaped and every text is
/// `verbatim` (no automatic links, channel names or mentions), so nothing a commit subject
/// or fleet.yaml says becomes a link or a mention.
pub fn slack_body(n: &Notice) -> Value {
    let title = format!(
        "{} {}",
        emoji(n.event.severity()),
        escape_mrkdwn(&n.headline())
    );
    let mrkdwn = |text: String| json!({"type": "mrkdwn", "text": text, "verbatim": true});
    let mut blocks = vec![json!({
        "type": "section",
        "text": mrkdwn(format!("*{title}*")),
    })];
    let details = n.event.details();
    if !details.is_empty() {
        let text: Vec<String> = details.iter().map(|d| escape_mrkdwn(d)).collect();
        blocks.push(json!({
            "type": "section",
            "text": mrkdwn(clip(&text.join("\n"), 2900)),
        }));
    }
    let context = format!("{} · {} · {} · id {}", n.event.name(), n.source, n.at, n.id);
    blocks.push(json!({
        "type": "context",
        "elements": [mrkdwn(escape_mrkdwn(&context))],
    }));
    json!({"text": title, "blocks": blocks})
}

/// Adaptive Cards render a Markdown subset, in which `[text](url)` is a link: the pair is
/// broken (`] (`), so event text stays text.
fn no_card_links(s: &str) -> String {
    s.replace("](", "] (")
}

/// Microsoft Teams (Workflows "post to a channel when a webhook request is received"): a
/// message with one Adaptive Card. No text of the event can become a link.
pub fn teams_body(n: &Notice) -> Value {
    let color = match n.event.severity() {
        Severity::Info => "Good",
        Severity::Warning => "Warning",
        Severity::Critical => "Attention",
    };
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": no_card_links(&n.headline()),
        "weight": "Bolder",
        "size": "Medium",
        "color": color,
        "wrap": true,
    })];
    let details = n.event.details();
    if !details.is_empty() {
        body.push(json!({
            "type": "TextBlock",
            "text": no_card_links(&clip(&details.join("\n\n"), 2900)),
            "wrap": true,
        }));
    }
    body.push(json!({
        "type": "FactSet",
        "facts": [
            {"title": "Event", "value": n.event.name()},
            {"title": "Source", "value": no_card_links(&n.source)},
            {"title": "At", "value": n.at},
            {"title": "Id", "value": n.id},
        ],
    }));
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }],
    })
}

/// A GitHub deployment status's state and description for an event, when the event moves
/// the commit's deployment.
pub fn github_status(event: &Event) -> Option<(&'static str, String)> {
    let state = match event {
        Event::RolloutStarted { .. } | Event::WavePassed { .. } => "in_progress",
        Event::WaveFailed { .. } => "failure",
        Event::RolloutFinished { outcome, .. } => match outcome.as_str() {
            "succeeded" => "success",
            // Superseded by a newer commit, or carried on by another daemon.
            "preempted" | "interrupted" => "inactive",
            _ => "failure",
        },
        _ => return None,
    };
    // GitHub refuses descriptions over 140 characters.
    Some((state, clip(&event.title(), 140)))
}

/// The body that creates a commit's GitHub deployment (`POST /repos/{repo}/deployments`).
pub fn github_deployment_body(commit: &str, environment: &str, source: &str) -> Value {
    json!({
        "ref": commit,
        "environment": environment,
        "description": clip(&format!("fleetgate rollout of {}", short(commit)), 140),
        "auto_merge": false,
        "required_contexts": [],
        "payload": {"source": source},
        "production_environment": true,
    })
}

/// The body of a deployment status (`POST /repos/{repo}/deployments/{id}/statuses`).
pub fn github_status_body(state: &str, description: &str, environment: &str) -> Value {
    json!({
        "state": state,
        "description": description,
        "environment": environment,
        "auto_inactive": state == "success",
    })
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack mrkdwn's escapes: `&`, `<` and `>` (so no text can become a link or a mention).
fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Event {
        Event::WaveFailed {
            commit: "0123456789abcdef0123".into(),
            wave: "canary".into(),
            reason: "health gate: 5xx ratio 0.31 over the limit 0.05".into(),
            failed: vec![FailedAccount {
                account: "acme-prod".into(),
                detail: "5xx 31 of 100 requests".into(),
            }],
            failed_total: 3,
            rolled_back: 3,
            duration_seconds: Duration::from_secs(95),
        }
    }

    fn notice(event: Event) -> Notice {
        Notice {
            id: "00".repeat(16),
            at: "2026-12-05T10:00:00Z".into(),
            source: "fleetgate-watch w-0".into(),
            shard: None,
            event,
        }
    }

    #[test]
    fn a_failed_wave_is_critical_and_names_its_figures() {
        let e = failed();
        assert_eq!(e.severity(), Severity::Critical);
        assert_eq!(e.kind(), EventKind::Wave);
        assert_eq!(
            e.title(),
            "Wave canary of 0123456789ab FAILED: 3 accounts failed, 3 rolled back"
        );
        assert_eq!(
            e.details(),
            [
                "health gate: 5xx ratio 0.31 over the limit 0.05",
                "acme-prod: 5xx 31 of 100 requests",
                "and 2 more"
            ]
        );
        assert_eq!(
            github_status(&e).map(|(s, _)| s),
            Some("failure"),
            "a failed wave fails the deployment"
        );
    }

    #[test]
    fn the_webhook_body_is_the_event_with_its_envelope() {
        let body = webhook_body(&notice(failed()));
        assert_eq!(body["type"], "wave.failed");
        assert_eq!(body["severity"], "critical");
        assert_eq!(body["formatVersion"], 1);
        assert_eq!(body["data"]["wave"], "canary");
        assert_eq!(body["data"]["durationSeconds"], 95.0);
        assert_eq!(body["data"]["failed"][0]["account"], "acme-prod");
        assert!(body["data"].get("type").is_none());
    }

    #[test]
    fn slack_text_cannot_become_a_link_or_mention() {
        let e = Event::HoldReleased {
            accounts: vec!["<!channel>".into(), "<https://evil|x>".into()],
            accounts_total: 2,
            by: "a&b".into(),
        };
        let body = slack_body(&notice(e)).to_string();
        assert!(!body.contains("<!channel>") && !body.contains("<https://evil"));
        assert!(body.contains("&lt;!channel&gt;") && body.contains("a&amp;b"));
    }

    #[test]
    fn account_lists_are_bounded() {
        let (named, total) = bounded((0..500).map(|i| format!("a{i}")));
        assert_eq!((named.len(), total), (MAX_NAMED_ACCOUNTS, 500));
        let e = Event::RollbackSet {
            to: "abc".into(),
            accounts: named,
            accounts_total: total,
            by: "ops".into(),
        };
        assert!(e.details()[0].ends_with("and 480 more"));
    }

    #[test]
    fn teams_gets_an_adaptive_card() {
        let body = teams_body(&notice(failed()));
        let card = &body["attachments"][0];
        assert_eq!(
            card["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["body"][0]["color"], "Attention");
    }

    #[test]
    fn github_descriptions_fit_its_limit() {
        let e = Event::RolloutStarted {
            commit: "c".repeat(40),
            subject: None,
            accounts: 1000,
            waves: (0..40).map(|i| format!("wave-number-{i}")).collect(),
        };
        let (state, description) = github_status(&e).unwrap_or_else(|| panic!("a status"));
        assert_eq!(state, "in_progress");
        assert_eq!(description.chars().count(), 140);
        assert!(github_status(&Event::DriftCleared { commit: "c".into() }).is_none());
    }
}
