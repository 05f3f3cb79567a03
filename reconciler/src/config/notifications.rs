//! fleet.yaml's `notifications`, checked before anything is read or sent (pure).

use crate::config::manifest::{EventKind, NotificationsSpec, NotifySecret, SinkSpec};

/// What a notification credential's environment variable starts with: a namespace of its
/// own, so no reference can name the reconciler's other secrets (its webhook secret, its
/// redaction key) or anything else of its environment.
pub const ENV_PREFIX: &str = "FLEETGATE_NOTIFY_";

/// At most this many sinks (each has a queue and a worker).
pub const MAX_SINKS: usize = 16;

/// What is wrong with a secret reference, before anything is read: env names must start
/// with `FLEETGATE_`, files must be relative paths inside the secrets directory.
pub fn check_reference(r: &NotifySecret) -> Option<String> {
    match r {
        NotifySecret::Env(name) => {
            let ok = name.starts_with(ENV_PREFIX)
                && name.len() > ENV_PREFIX.len()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            (!ok).then(|| {
                format!("env {name:?}: name an environment variable {ENV_PREFIX}<NAME> (upper case, digits, _)")
            })
        }
        NotifySecret::File(path) => {
            let p = std::path::Path::new(path);
            let ok = !path.is_empty()
                && p.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            (!ok).then(|| {
                format!("file {path:?}: give a path relative to the notification secrets directory, without '..'")
            })
        }
    }
}

/// Problems of fleet.yaml's `notifications`, each with the key it is about.
pub fn check(spec: &NotificationsSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if spec.sinks.len() > MAX_SINKS {
        out.push((
            "notifications.sinks".into(),
            format!("at most {MAX_SINKS} sinks"),
        ));
    }
    if !(1..=20).contains(&spec.attempts) {
        out.push((
            "notifications.attempts".into(),
            "attempts must be 1 to 20".into(),
        ));
    }
    if !(1..=100_000).contains(&spec.queue) {
        out.push((
            "notifications.queue".into(),
            "queue must be 1 to 100000".into(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, sink) in spec.sinks.iter().enumerate() {
        let key = format!("notifications.sinks[{i}]");
        let name = sink.name();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            out.push((
                key.clone(),
                format!("sink name {name:?}: 1 to 64 letters, digits, '-' or '_'"),
            ));
        }
        if !names.insert(name) {
            out.push((key.clone(), format!("sink name {name:?} is used twice")));
        }
        for r in sink.secrets() {
            if let Some(why) = check_reference(r) {
                out.push((key.clone(), why));
            }
        }
        match sink {
            SinkSpec::Webhook { url, .. } => {
                if let Some(why) = check_url(url) {
                    out.push((key.clone(), format!("url: {why}")));
                }
            }
            SinkSpec::GithubDeployments {
                repository,
                api_url,
                events,
                ..
            } => {
                let parts: Vec<&str> = repository.split('/').collect();
                let part_ok = |p: &str| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                };
                if parts.len() != 2 || !parts.iter().all(|p| part_ok(p)) {
                    out.push((
                        key.clone(),
                        format!("repository {repository:?} must be owner/repo"),
                    ));
                }
                if let Some(u) = api_url
                    && let Some(why) = check_url(u)
                {
                    out.push((key.clone(), format!("apiUrl: {why}")));
                }
                if events
                    .iter()
                    .any(|e| !matches!(e, EventKind::Rollout | EventKind::Wave))
                {
                    out.push((
                        key.clone(),
                        "GitHub deployments take rollout and wave events only".into(),
                    ));
                }
            }
            SinkSpec::Slack { .. } | SinkSpec::Teams { .. } => {}
        }
    }
    out
}

pub fn check_url(url: &str) -> Option<String> {
    match url.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => None,
        _ => Some(format!("{url:?} is not an http:// or https:// URL")),
    }
}
