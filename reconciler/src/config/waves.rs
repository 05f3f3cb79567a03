//! Wave assignment: which rollout wave each account belongs to. Pure.
//!
//! Waves are ordered; an account lands in the first wave whose selector matches it, so it
//! lands in exactly one wave or, when none matches, in none (a validation error: an account
//! that no wave selects would never be deployed).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::diagnostics::{Diagnostic, Span};
use crate::config::doc::{Account, Doc, spec_span};
use crate::config::manifest::{FLEET_FILE, FleetSpec, Wave, WaveSelector};
use crate::config::yaml::Value;

impl WaveSelector {
    pub fn matches(&self, stage: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.stages.is_empty() || self.stages.iter().any(|s| s == stage))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Index of the wave that takes an account with this stage and labels.
pub fn wave_of(waves: &[Wave], stage: &str, labels: &BTreeMap<String, String>) -> Option<usize> {
    waves.iter().position(|w| w.select.matches(stage, labels))
}

/// Accounts grouped by wave, in wave order (account names sorted within a wave), or the
/// accounts no wave selects.
pub fn assign<'a>(
    waves: &[Wave],
    accounts: &[&'a Account],
) -> Result<Vec<Vec<&'a Account>>, Vec<&'a Account>> {
    let mut out: Vec<Vec<&Account>> = vec![Vec::new(); waves.len()];
    let mut unassigned = Vec::new();
    for account in accounts {
        let spec = &account.doc.spec;
        match wave_of(waves, &spec.stage, &account.doc.metadata.labels) {
            Some(i) => out[i].push(account),
            None => unassigned.push(*account),
        }
    }
    for wave in &mut out {
        wave.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if unassigned.is_empty() {
        Ok(out)
    } else {
        Err(unassigned)
    }
}

/// How many account names a message lists before it says "and N more".
const NAMES_SHOWN: usize = 10;

/// What a selector takes, in a reviewer's words: `stage prod`, `stages early or prod and
/// label tier=gold`, `every account`.
pub fn describe(select: &WaveSelector) -> String {
    let mut parts = Vec::new();
    match select.stages.as_slice() {
        [] => {}
        [one] => parts.push(format!("stage {one}")),
        many => parts.push(format!("stages {}", many.join(" or "))),
    }
    if !select.labels.is_empty() {
        let labels: Vec<String> = select
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.push(format!(
            "label{} {}",
            if labels.len() > 1 { "s" } else { "" },
            labels.join(", ")
        ));
    }
    if parts.is_empty() {
        "every account".to_string()
    } else {
        parts.join(" and ")
    }
}

/// Where a wave's selector is written: its `stages` (where a typo is), else its `labels`,
/// else `select`, else the wave itself.
fn selector_span(fleet: &Doc<FleetSpec>, index: usize) -> Span {
    let wave = match fleet.spec_node.get("waves").map(|w| &w.value) {
        Some(Value::Seq(items)) => items.get(index),
        _ => None,
    };
    let Some(wave) = wave else {
        return spec_span(fleet, "waves");
    };
    let select = wave.get("select");
    select
        .and_then(|s| s.get("stages").or_else(|| s.get("labels")))
        .or(select)
        .map(|n| n.span.clone())
        .unwrap_or_else(|| wave.span.clone())
}

fn names_with_stages(accounts: &[&Account]) -> String {
    let mut shown: Vec<String> = accounts
        .iter()
        .take(NAMES_SHOWN)
        .map(|a| format!("{} (stage {})", a.name, a.doc.spec.stage))
        .collect();
    if accounts.len() > NAMES_SHOWN {
        shown.push(format!("and {} more", accounts.len() - NAMES_SHOWN));
    }
    shown.join(", ")
}

/// Waves that select no account, and accounts that no wave selects.
///
/// A wave whose selector matches no account is reported at its selector in fleet.yaml: it
/// is almost always a typo there (`stages: [prdo]`), and the accounts it was meant to take
/// are named in that one message. Only when every wave selects something is an account that
/// none selects reported, once, at its own `stage`, with what the waves select: then the
/// account is the likelier place of the mistake. A fleet without accounts has nothing to
/// select yet and is not checked. `unloaded` account files (whose own errors are reported)
/// may be what a wave was meant to select; the wave's message says so.
pub fn check_assignment(
    fleet: &Doc<FleetSpec>,
    accounts: &[&Account],
    unloaded: usize,
) -> Vec<Diagnostic> {
    let waves = &fleet.spec.waves;
    if accounts.is_empty() || waves.is_empty() {
        return Vec::new();
    }
    let unassigned = match assign(waves, accounts) {
        Ok(_) => Vec::new(),
        Err(unassigned) => unassigned,
    };
    let stages: BTreeSet<&str> = accounts.iter().map(|a| a.doc.spec.stage.as_str()).collect();
    let stages = stages.into_iter().collect::<Vec<_>>().join(", ");
    let mut errors = Vec::new();
    for (i, wave) in waves.iter().enumerate() {
        let selects_any = accounts.iter().any(|a| {
            wave.select
                .matches(&a.doc.spec.stage, &a.doc.metadata.labels)
        });
        if selects_any {
            continue;
        }
        let mut message = format!(
            "wave {:?} selects no account: none has {} (the accounts' stages: {stages})",
            wave.name,
            describe(&wave.select)
        );
        if !unassigned.is_empty() {
            message.push_str(&format!(
                "; no wave selects {} account{}: {}",
                unassigned.len(),
                if unassigned.len() == 1 { "" } else { "s" },
                names_with_stages(&unassigned)
            ));
        }
        if unloaded > 0 {
            message.push_str(&format!(
                "; {unloaded} account file{} could not be loaded (see {}), which may be why",
                if unloaded == 1 { "" } else { "s" },
                if unloaded == 1 {
                    "its errors"
                } else {
                    "their errors"
                }
            ));
        }
        errors.push(Diagnostic::new(selector_span(fleet, i), message));
    }
    if !errors.is_empty() {
        return errors;
    }
    let selected: Vec<String> = waves
        .iter()
        .map(|w| format!("{} ({})", w.name, describe(&w.select)))
        .collect();
    for account in unassigned {
        errors.push(Diagnostic::new(
            spec_span(&account.doc, "stage"),
            format!(
                "no wave in {} selects account {} (stage {}); the waves select: {}",
                FLEET_FILE,
                account.name,
                account.doc.spec.stage,
                selected.join(", ")
            ),
        ));
    }
    errors
}

/// Where an account's bundles go: the fleet's bucket and prefix templates, expanded for the
/// account, must be a valid S3 bucket name and key prefix.
pub fn check_account_target(fleet: &Doc<FleetSpec>, account: &Account) -> Vec<Diagnostic> {
    let vars = account.vars();
    let mut errors = Vec::new();
    let at = |key: &str| spec_span(fleet, key);
    match vars.expand(&fleet.spec.bucket) {
        Err(e) => errors.push(Diagnostic::new(at("bucket"), e).for_account(&account.name)),
        Ok(bucket) => {
            let ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'
                })
                && bucket.as_bytes()[0].is_ascii_alphanumeric()
                && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric()
                && !bucket.contains("..");
            if !ok {
                errors.push(
                    Diagnostic::new(
                        at("bucket"),
                        format!("bucket {bucket:?} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.' or '-')"),
                    )
                    .for_account(&account.name),
                );
            }
        }
    }
    match vars.expand(&fleet.spec.prefix) {
        Err(e) => errors.push(Diagnostic::new(at("prefix"), e).for_account(&account.name)),
        Ok(prefix) => {
            if prefix.is_empty()
                || prefix.starts_with('/')
                || prefix.ends_with('/')
                || prefix.contains("//")
            {
                errors.push(
                    Diagnostic::new(at("prefix"), format!("prefix {prefix:?} must be non-empty, without leading, trailing or double '/'"))
                        .for_account(&account.name),
                );
            }
        }
    }
    errors
}

/// Problems of fleet.yaml on its own.
pub fn check_fleet(fleet: &Doc<FleetSpec>) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let spec = &fleet.spec;
    let at = |key: &str| spec_span(fleet, key);
    if spec.waves.is_empty() {
        errors.push(Diagnostic::new(at("waves"), "define at least one wave"));
    }
    let mut names = BTreeSet::new();
    for (i, wave) in spec.waves.iter().enumerate() {
        let span = match fleet.spec_node.get("waves").map(|w| &w.value) {
            Some(Value::Seq(items)) => items.get(i).map(|n| n.span.clone()),
            _ => None,
        }
        .unwrap_or_else(|| at("waves"));
        if !names.insert(wave.name.as_str()) {
            errors.push(Diagnostic::new(
                span.clone(),
                format!("wave name {:?} is used twice", wave.name),
            ));
        }
        if wave.max_concurrency == Some(0) {
            errors.push(Diagnostic::new(
                span.clone(),
                "maxConcurrency must be at least 1",
            ));
        }
        let g = &wave.health_gate;
        for (what, r) in [
            ("max5xxRatio", g.max_5xx_ratio),
            ("maxUpstreamErrorRatio", g.max_upstream_error_ratio),
        ] {
            if !(0.0..=1.0).contains(&r) {
                errors.push(Diagnostic::new(
                    span.clone(),
                    format!("{what} must be between 0 and 1"),
                ));
            }
        }
        // A catch-all wave before others leaves them empty: almost certainly a mistake.
        if wave.select == WaveSelector::default() && i + 1 < spec.waves.len() {
            errors.push(Diagnostic::new(
                span,
                format!(
                    "wave {:?} selects every account, so the waves after it can never get any",
                    wave.name
                ),
            ));
        }
    }
    if spec.concurrency == 0 {
        errors.push(Diagnostic::new(
            at("concurrency"),
            "concurrency must be at least 1",
        ));
    }
    if spec.role_name.is_empty() || spec.role_name.contains(['/', ':', ' ']) {
        errors.push(Diagnostic::new(
            at("roleName"),
            "roleName must be a bare IAM role name",
        ));
    }
    if spec.external_id.len() < 2 || spec.external_id.len() > 1224 {
        errors.push(Diagnostic::new(
            at("externalId"),
            "externalId must be 2 to 1224 characters (an AWS limit)",
        ));
    }
    for (key, message) in crate::config::notifications::check(&spec.notifications) {
        errors.push(Diagnostic::new(
            at("notifications"),
            format!("{key}: {message}"),
        ));
    }
    let session = spec.session_duration.0.as_secs();
    if !(900..=43_200).contains(&session) {
        errors.push(Diagnostic::new(
            at("sessionDuration"),
            "sessionDuration must be between 15m and 12h (AWS limits)",
        ));
    }
    errors
}

/// Whether a bucket or prefix template can be expanded for a decommissioned account: from
/// its name, id, region and tenant only (the approval names nothing else).
pub fn decommission_placeable(template: &str) -> bool {
    !template.contains("account.stage") && !template.contains("account.labels")
}

/// Where an account's state is: its bucket and key prefix, from fleet.yaml's templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub name: String,
    pub bucket: String,
    pub prefix: String,
}

/// Where an approved account's state is (`None` when the templates cannot be filled in).
pub fn placement(
    fleet: &FleetSpec,
    d: &crate::config::manifest::DecommissionSpec,
) -> Option<Placement> {
    let vars = crate::config::template::Vars::for_account(
        &d.account,
        &d.account_id.0,
        &d.region,
        "",
        &d.tenant,
        &Default::default(),
    );
    Some(Placement {
        name: d.account.clone(),
        bucket: vars.expand(&fleet.bucket).ok()?,
        prefix: vars.expand(&fleet.prefix).ok()?,
    })
}

/// Problems of fleet.yaml's `offboarding`: an approval names an account once, never one
/// still in `accounts/` (its file is removed in the same change), and a region fleet.yaml
/// allows.
pub fn check_offboarding(
    fleet: &Doc<FleetSpec>,
    in_git: impl Fn(&str) -> bool,
    live: &[Placement],
) -> Vec<Diagnostic> {
    let spec = &fleet.spec;
    let mut errors = Vec::new();
    let items = match fleet
        .spec_node
        .get("offboarding")
        .and_then(|o| o.get("decommission"))
        .map(|d| &d.value)
    {
        Some(Value::Seq(items)) => Some(items),
        _ => None,
    };
    let placeable = decommission_placeable(&spec.bucket) && decommission_placeable(&spec.prefix);
    if !spec.offboarding.decommission.is_empty() && !placeable {
        errors.push(Diagnostic::new(
            spec_span(fleet, "offboarding"),
            "bucket and prefix use ${account.stage} or ${account.labels.*}, which a decommission approval does not name: an approved account could not be found",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, d) in spec.offboarding.decommission.iter().enumerate() {
        let span = items
            .and_then(|items| items.get(i))
            .map(|n| n.span.clone())
            .unwrap_or_else(|| spec_span(fleet, "offboarding"));
        if !seen.insert(d.account.as_str()) {
            errors.push(Diagnostic::new(
                span.clone(),
                format!("account {:?} is approved for decommission twice", d.account),
            ));
        }
        let name_ok = !d.account.is_empty()
            && d.account.len() <= 128
            && !d.account.starts_with('.')
            && d.account
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            errors.push(Diagnostic::new(
                span.clone(),
                format!(
                    "account {:?}: a name as accounts/<name>.yaml had it (letters, digits, '-', '_', '.')",
                    d.account
                ),
            ));
        }
        // Where the approved account's state is: never where a live account's is, nor
        // inside or around it, or its tombstone and erasure would reach a live tenant.
        if placeable && let Some(mine) = placement(spec, d) {
            for other in live {
                let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
                if other.bucket == mine.bucket
                    && (nested(&mine.prefix, &other.prefix) || nested(&other.prefix, &mine.prefix))
                {
                    errors.push(
                        Diagnostic::new(
                            span.clone(),
                            format!(
                                "account {:?} would be at s3://{}/{}/, which is live account {:?}'s state (s3://{}/{}/): an approval must name the removed account's own id and name",
                                d.account, mine.bucket, mine.prefix, other.name, other.bucket, other.prefix
                            ),
                        )
                        .for_account(&d.account),
                    );
                }
            }
        }
        if in_git(&d.account) {
            errors.push(
                Diagnostic::new(
                    span.clone(),
                    format!(
                        "account {:?} is approved for decommission but accounts/{}.yaml is still there: remove the file in the same change",
                        d.account, d.account
                    ),
                )
                .for_account(&d.account),
            );
        }
        if d.tenant.trim().is_empty() {
            errors.push(Diagnostic::new(span.clone(), "tenant must not be empty"));
        }
        if !spec.regions.is_empty() && !spec.regions.contains(&d.region) {
            errors.push(Diagnostic::new(
                span,
                format!(
                    "region {:?} is not one of fleet.yaml's regions ({})",
                    d.region,
                    spec.regions.join(", ")
                ),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::manifest::{FailureTolerance, HealthGate};

    fn wave(name: &str, stages: &[&str], labels: &[(&str, &str)]) -> Wave {
        Wave {
            name: name.into(),
            select: WaveSelector {
                stages: stages.iter().map(|s| s.to_string()).collect(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            max_concurrency: None,
            failure_tolerance: FailureTolerance::None,
            bake_time: Default::default(),
            health_gate: HealthGate::default(),
        }
    }

    #[test]
    fn first_matching_wave_wins() {
        let waves = [
            wave("canary", &["canary"], &[]),
            wave("gold", &[], &[("tier", "gold")]),
            wave("rest", &[], &[]),
        ];
        let gold = BTreeMap::from([("tier".to_string(), "gold".to_string())]);
        assert_eq!(wave_of(&waves, "canary", &gold), Some(0));
        assert_eq!(wave_of(&waves, "prod", &gold), Some(1));
        assert_eq!(wave_of(&waves, "prod", &BTreeMap::new()), Some(2));
        assert_eq!(wave_of(&waves[..2], "prod", &BTreeMap::new()), None);
    }

    const STAGES: [&str; 4] = ["canary", "early", "prod", "dev"];
    const TIERS: [&str; 3] = ["gold", "silver", "bronze"];

    fn labels(tier: Option<usize>) -> BTreeMap<String, String> {
        tier.map(|t| BTreeMap::from([("tier".to_string(), TIERS[t].to_string())]))
            .unwrap_or_default()
    }

    proptest::proptest! {
        /// Every account lands in exactly one wave, the first whose selector takes it, or in
        /// none when no wave does; grouping by it partitions the fleet.
        #[test]
        fn each_account_lands_in_exactly_one_wave(
            waves in proptest::collection::vec(
                (proptest::collection::vec(0..4usize, 0..3), proptest::option::of(0..3usize)),
                1..5,
            ),
            accounts in proptest::collection::vec((0..4usize, proptest::option::of(0..3usize)), 0..40),
        ) {
            let waves: Vec<Wave> = waves
                .iter()
                .enumerate()
                .map(|(i, (stages, tier))| {
                    let stages: Vec<&str> = stages.iter().map(|s| STAGES[*s]).collect();
                    let tier: Vec<(&str, &str)> = tier.iter().map(|t| ("tier", TIERS[*t])).collect();
                    wave(&format!("w{i}"), &stages, &tier)
                })
                .collect();
            let mut groups: Vec<Vec<usize>> = vec![Vec::new(); waves.len() + 1];
            for (n, (stage, tier)) in accounts.iter().enumerate() {
                let (stage, labels) = (STAGES[*stage], labels(*tier));
                let matching: Vec<usize> = waves
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.select.matches(stage, &labels))
                    .map(|(i, _)| i)
                    .collect();
                let got = wave_of(&waves, stage, &labels);
                proptest::prop_assert_eq!(got, matching.first().copied());
                groups[got.unwrap_or(waves.len())].push(n);
            }
            let mut all: Vec<usize> = groups.concat();
            all.sort_unstable();
            proptest::prop_assert_eq!(all, (0..accounts.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn tolerance_counts_and_percentages() {
        assert_eq!(FailureTolerance::Percent(10).allowed(87), 8);
        assert_eq!(FailureTolerance::Count(2).allowed(1), 2);
        assert_eq!(FailureTolerance::None.allowed(100), 0);
    }
}
