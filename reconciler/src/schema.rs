//! JSON Schemas of the manifest kinds, generated from the Rust types. The checked-in copies
//! under `schemas/` are compared with these by a test, so they cannot go stale.
//!
//! Patches (an overlay's `gateway`/`idp`, an account's `patches`) get the schema of the
//! patched spec with nothing required and `$patch` allowed, so editors complete them too
//! (made next to the manifest types: [`crate::config::manifest::gateway_patch_schema`]).

use fleetgate_bundle::Bundle;
use fleetgate_bundle::bundle::{GatewayConfig, IdpConfig};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::config::manifest::{API_VERSION, AccountSpec, FleetSpec, Kind, Manifest, OverlaySpec};

/// Every schema file: (file name, schema).
pub fn all() -> Vec<(&'static str, Value)> {
    let mut out: Vec<(&'static str, Value)> = Kind::ALL
        .iter()
        .map(|&kind| {
            let schema = match kind {
                Kind::Fleet => manifest_schema::<FleetSpec>(kind),
                Kind::Gateway => manifest_schema::<GatewayConfig>(kind),
                Kind::IdentityProvider => manifest_schema::<IdpConfig>(kind),
                Kind::Overlay => manifest_schema::<OverlaySpec>(kind),
                Kind::Account => manifest_schema::<AccountSpec>(kind),
            };
            (kind.schema_file(), schema)
        })
        .collect();
    let mut bundle = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Bundle>();
    bundle.insert(
        "$id".into(),
        json!("https://fleetgate.dev/schemas/bundle.schema.json"),
    );
    out.push(("bundle.schema.json", bundle.to_value()));
    let mut plan = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::plan::Plan>();
    plan.insert(
        "$id".into(),
        json!("https://fleetgate.dev/schemas/plan.schema.json"),
    );
    out.push(("plan.schema.json", plan.to_value()));
    let mut invalid = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::plan::format::InvalidJson<'static>>();
    invalid.insert(
        "$id".into(),
        json!("https://fleetgate.dev/schemas/plan-invalid.schema.json"),
    );
    out.push(("plan-invalid.schema.json", invalid.to_value()));
    let mut drift = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::ops::drift::DriftReport>();
    drift.insert(
        "$id".into(),
        json!("https://fleetgate.dev/schemas/drift.schema.json"),
    );
    out.push(("drift.schema.json", drift.to_value()));
    out
}

fn manifest_schema<S: JsonSchema>(kind: Kind) -> Value {
    let mut root = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Manifest<S>>();
    root.insert(
        "$id".into(),
        json!(format!(
            "https://fleetgate.dev/schemas/{}",
            kind.schema_file()
        )),
    );
    root.insert("title".into(), json!(kind.as_str()));
    let mut value = root.to_value();
    // Pin the envelope: editors then flag a wrong kind or apiVersion right away.
    if let Some(props) = value.get_mut("properties") {
        props["apiVersion"] = json!({"const": API_VERSION});
        props["kind"] = json!({"const": kind.as_str()});
    }
    value
}

/// A schema as checked in: pretty JSON, keys sorted (explicitly: serde_json's key order
/// depends on which features the build unified), trailing newline.
pub fn to_file_text(schema: &Value) -> String {
    let mut sorted = schema.clone();
    sorted.sort_all_objects();
    let mut s = serde_json::to_string_pretty(&sorted).unwrap_or_default();
    s.push('\n');
    s
}
