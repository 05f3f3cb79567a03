//! The metric catalog: every family the reconciler registers, with its help and type, kept
//! as it is registered. prometheus-client leaves families without series out of `/metrics`,
//! so docs/operator.md's metric table is made from this instead (a test checks it).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::registry::{Metric, Registry};

/// name (with its prefix) -> (help, type).
static CATALOG: Mutex<BTreeMap<String, (String, String)>> = Mutex::new(BTreeMap::new());

/// `registry.register(name, help, metric)`, remembered in the catalog as `prefix_name`
/// (`prefix`: the registry's own, e.g. `fleetgate`).
pub fn register(
    registry: &mut Registry,
    prefix: &str,
    name: &str,
    help: &str,
    metric: impl Metric,
) {
    let kind = metric.metric_type().as_str().to_string();
    CATALOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(format!("{prefix}_{name}"), (help.to_string(), kind));
    registry.register(name, help, metric);
}

/// Every family registered so far: (name, help, type), by name.
pub fn catalog() -> Vec<(String, String, String)> {
    CATALOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(n, (h, k))| (n.clone(), h.clone(), k.clone()))
        .collect()
}
