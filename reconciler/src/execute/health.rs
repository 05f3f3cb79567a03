//! The health gate's decisions, from gateway instances' status reports alone (pure):
//! which reports are fresh, whether an account serves a digest, whether its error ratios
//! pass the bake.

use std::time::{Duration, SystemTime};

use fleetgate_bundle::Digest;

use crate::config::manifest::{HealthGate, NoGatewayPolicy};
use crate::target::InstanceReport;

/// The reports written within `max_age` of `now`: older ones are from instances that are
/// gone (a report whose time does not parse counts as gone too).
pub fn fresh(
    reports: &[InstanceReport],
    now: SystemTime,
    max_age: Duration,
) -> Vec<InstanceReport> {
    reports
        .iter()
        .filter(|r| {
            humantime::parse_rfc3339(&r.written_at)
                .is_ok_and(|t| now.duration_since(t).map_or(true, |age| age <= max_age))
        })
        .cloned()
        .collect()
}

/// Whether an account's gateways serve `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// With a note when no gateway reports and the policy skips the account.
    Yes(Option<String>),
    NotYet(String),
    Fail(String),
}

/// The verify step's decision for one account, from its fresh reports.
pub fn serving(reports: &[InstanceReport], digest: &Digest, policy: NoGatewayPolicy) -> Serving {
    if reports.is_empty() {
        return match policy {
            NoGatewayPolicy::Skip => Serving::Yes(Some(
                "no gateway reports status: not verified (noGateway: skip)".into(),
            )),
            NoGatewayPolicy::Fail => {
                Serving::Fail("no gateway reports status (noGateway: fail)".into())
            }
            NoGatewayPolicy::Wait => Serving::NotYet("no gateway reports status yet".into()),
        };
    }
    let behind: Vec<String> = reports
        .iter()
        .filter(|r| r.digest.as_ref() != Some(digest))
        .map(|r| {
            let serves = r
                .digest
                .as_ref()
                .map_or_else(|| "nothing".to_string(), |d| d.short().to_string());
            match &r.last_reload_error {
                Some(e) => format!("{} serves {serves} (last reload error: {e})", r.instance),
                None => format!("{} serves {serves}", r.instance),
            }
        })
        .collect();
    if behind.is_empty() {
        Serving::Yes(None)
    } else {
        Serving::NotYet(format!(
            "{} of {} instance{} not on {} yet: {}",
            behind.len(),
            reports.len(),
            if reports.len() == 1 { "" } else { "s" },
            digest.short(),
            behind.join(", ")
        ))
    }
}

/// The bake step's decision for one account: its instances on `digest`, summed, against
/// the gate. Below `minRequests` there is not enough traffic to judge, which passes.
pub fn judge(reports: &[InstanceReport], digest: &Digest, gate: &HealthGate) -> Result<(), String> {
    let on: Vec<&InstanceReport> = reports
        .iter()
        .filter(|r| r.digest.as_ref() == Some(digest))
        .collect();
    let total: u64 = on
        .iter()
        .map(|r| r.requests_2xx + r.requests_3xx + r.requests_4xx + r.requests_5xx)
        .sum();
    if total == 0 || total < gate.min_requests {
        return Ok(());
    }
    let errors_5xx: u64 = on.iter().map(|r| r.requests_5xx).sum();
    let upstream: u64 = on.iter().map(|r| r.upstream_errors).sum();
    let ratio = |n: u64| n as f64 / total as f64;
    if ratio(errors_5xx) > gate.max_5xx_ratio {
        return Err(format!(
            "5xx ratio {:.3} ({errors_5xx} of {total} requests) is over the gate's {}",
            ratio(errors_5xx),
            gate.max_5xx_ratio
        ));
    }
    if ratio(upstream) > gate.max_upstream_error_ratio {
        return Err(format!(
            "upstream error ratio {:.3} ({upstream} of {total} requests) is over the gate's {}",
            ratio(upstream),
            gate.max_upstream_error_ratio
        ));
    }
    Ok(())
}
