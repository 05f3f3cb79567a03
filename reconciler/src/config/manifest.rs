//! The manifest kinds of a config repo, Kubernetes-style and strict.
//!
//! `Gateway` and `IdentityProvider` specs are the bundle crate's [`GatewayConfig`] and
//! [`IdpConfig`]: one definition of every field, shared by the manifest, the bundle and the
//! runtime. `Fleet`, `Overlay` and `Account` are the reconciler's own.
//!
//! A patch (an overlay's `gateway`/`idp`, an account's `patches`) is free-form JSON to
//! serde; its JSON Schema, the patched spec's with nothing required and `$patch` allowed,
//! is made here ([`gateway_patch_schema`], [`idp_patch_schema`]) for the types that hold it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use fleetgate_bundle::Duration;
use fleetgate_bundle::bundle::{GatewayConfig, IdpConfig};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::json;

pub const API_VERSION: &str = "fleetgate.dev/v1";

/// The files the singleton kinds are read from.
pub const FLEET_FILE: &str = "fleet.yaml";
pub const GATEWAY_FILE: &str = "base/gateway.yaml";
pub const IDP_FILE: &str = "base/idp.yaml";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Fleet,
    Gateway,
    IdentityProvider,
    Overlay,
    Account,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Fleet,
        Kind::Gateway,
        Kind::IdentityProvider,
        Kind::Overlay,
        Kind::Account,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fleet => "Fleet",
            Kind::Gateway => "Gateway",
            Kind::IdentityProvider => "IdentityProvider",
            Kind::Overlay => "Overlay",
            Kind::Account => "Account",
        }
    }

    /// File name of the kind's JSON Schema under `schemas/`.
    pub fn schema_file(self) -> &'static str {
        match self {
            Kind::Fleet => "fleet.schema.json",
            Kind::Gateway => "gateway.schema.json",
            Kind::IdentityProvider => "identity-provider.schema.json",
            Kind::Overlay => "overlay.schema.json",
            Kind::Account => "account.schema.json",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    /// Labels select accounts into waves (`Account`), and are free-form elsewhere.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The envelope every manifest shares. `S` is the kind's spec.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Manifest<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// `fleet.yaml`: how the fleet is reached and rolled out to.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetSpec {
    /// Role assumed in every account: `arn:aws:iam::<account id>:role/<roleName>`.
    pub role_name: String,
    /// ExternalId passed to AssumeRole (the accounts' trust policy requires it).
    pub external_id: String,
    /// Lifetime of assumed-role sessions (default 1h).
    #[serde(default = "default_session")]
    pub session_duration: Duration,
    /// Region of the hub (STS calls, the reconciler's own state).
    pub hub_region: String,
    /// The hub's own bucket (in `hubRegion`, reached with the hub's credentials) for the
    /// reconciler's state: the watch daemon's leases. `fleetgate watch --state-bucket`
    /// overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bucket: Option<String>,
    /// Regions accounts may be in; empty allows any.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Config bucket of each account; `${account.*}` variables, e.g.
    /// `fleetgate-config-${account.id}`.
    pub bucket: String,
    /// Key prefix in that bucket (default `fleetgate/${account.name}`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Accounts worked on at once (default 32).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Ordered rollout waves. Each account lands in the first wave that selects it.
    pub waves: Vec<Wave>,
    #[serde(default)]
    pub rollout: RolloutSpec,
    #[serde(default)]
    pub drift: DriftSpec,
    /// Where the watch daemon, `apply`, `rollback` and `release` tell people what happened
    /// (Slack, Microsoft Teams, a signed webhook, GitHub deployment statuses).
    #[serde(default, skip_serializing_if = "NotificationsSpec::is_empty")]
    pub notifications: NotificationsSpec,
    /// Letting a customer go: the accounts approved for decommission, and how long their
    /// stored state is kept before `fleetgate erase` may delete it.
    #[serde(default)]
    pub offboarding: OffboardingSpec,
}

/// Decommissions a reviewer approved, and erasure's grace period.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OffboardingSpec {
    /// How long after its decommission an account's stored state must be kept before
    /// `fleetgate erase` deletes it (default 30d; `0s` allows erasing at once). Until then a
    /// decommission can be rolled back.
    #[serde(default = "default_grace_period")]
    pub grace_period: Duration,
    /// Accounts to decommission: each one's file is removed from `accounts/` in the same
    /// change, and its entry stays here until the account is erased. The entry names what
    /// the removed file did, so the account can still be reached.
    #[serde(default)]
    pub decommission: Vec<DecommissionSpec>,
}

impl Default for OffboardingSpec {
    fn default() -> Self {
        OffboardingSpec {
            grace_period: default_grace_period(),
            decommission: Vec::new(),
        }
    }
}

fn default_grace_period() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

/// One account approved for decommission.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DecommissionSpec {
    /// The account's name, as its file in `accounts/` was named.
    pub account: String,
    /// Its 12-digit AWS account id.
    pub account_id: AccountId,
    pub region: String,
    /// The customer (tenant) it served: `fleetgate erase --tenant` selects on it.
    pub tenant: String,
    /// Why (a contract's end, an erasure request's ticket); recorded in the tombstone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Notification sinks and how delivery is retried. Delivery never blocks or fails a
/// rollout: a sink that cannot be reached only loses its messages (and counts them).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationsSpec {
    #[serde(default)]
    pub sinks: Vec<SinkSpec>,
    /// Attempts per message, the first included (default 5). Connection errors, timeouts,
    /// 408, 429 and 5xx answers are retried; other answers are final.
    #[serde(default = "default_notify_attempts")]
    pub attempts: u32,
    /// The wait before the first retry, doubled at each next one up to 1m (default 1s). A
    /// `Retry-After` answer header is honoured up to 1m.
    #[serde(default = "default_notify_backoff")]
    pub retry_backoff: Duration,
    /// Messages waiting per sink; past this, new ones are dropped and counted (default 256).
    #[serde(default = "default_notify_queue")]
    pub queue: u32,
}

impl Default for NotificationsSpec {
    fn default() -> Self {
        NotificationsSpec {
            sinks: Vec::new(),
            attempts: default_notify_attempts(),
            retry_backoff: default_notify_backoff(),
            queue: default_notify_queue(),
        }
    }
}

impl NotificationsSpec {
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}

fn default_notify_attempts() -> u32 {
    5
}

fn default_notify_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_notify_queue() -> u32 {
    256
}

/// One notification sink. Credentials (a Slack or Teams webhook URL is one) are given by
/// reference, never in git.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum SinkSpec {
    /// A Slack incoming webhook.
    #[serde(rename_all = "camelCase")]
    Slack {
        /// The sink's name in logs and metrics.
        name: String,
        /// The incoming webhook's URL.
        url: NotifySecret,
        /// The events sent (default: all).
        #[serde(default)]
        events: Vec<EventKind>,
    },
    /// A Microsoft Teams incoming webhook (Workflows), sent an Adaptive Card.
    #[serde(rename_all = "camelCase")]
    Teams {
        name: String,
        url: NotifySecret,
        #[serde(default)]
        events: Vec<EventKind>,
    },
    /// A JSON POST signed with HMAC-SHA256 of the body (`X-Fleetgate-Signature-256:
    /// sha256=<hex>`).
    #[serde(rename_all = "camelCase")]
    Webhook {
        name: String,
        /// http:// or https:// URL (not a secret: the signature authenticates the body).
        url: String,
        /// The HMAC key.
        secret: NotifySecret,
        #[serde(default)]
        events: Vec<EventKind>,
    },
    /// GitHub deployments of the config repo: one per rolled-out commit, with a status at
    /// each wave and at the end (rollout and wave events only).
    #[serde(rename_all = "camelCase")]
    GithubDeployments {
        name: String,
        /// `owner/repo`.
        repository: String,
        /// A token allowed to write deployments (`deployments: write`).
        token: NotifySecret,
        /// The API's base URL: https://api.github.com (the default), or exactly the
        /// reconciler's `FLEETGATE_NOTIFY_GITHUB_API_URL` (GitHub Enterprise:
        /// https://HOST/api/v3), so fleet.yaml cannot send the token anywhere else.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        api_url: Option<String>,
        /// The deployment environment (default `fleetgate`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        environment: Option<String>,
        #[serde(default)]
        events: Vec<EventKind>,
    },
}

impl SinkSpec {
    pub fn name(&self) -> &str {
        match self {
            SinkSpec::Slack { name, .. }
            | SinkSpec::Teams { name, .. }
            | SinkSpec::Webhook { name, .. }
            | SinkSpec::GithubDeployments { name, .. } => name,
        }
    }

    /// The event kinds configured (empty: every kind the sink takes).
    pub fn events(&self) -> &[EventKind] {
        match self {
            SinkSpec::Slack { events, .. }
            | SinkSpec::Teams { events, .. }
            | SinkSpec::Webhook { events, .. }
            | SinkSpec::GithubDeployments { events, .. } => events,
        }
    }

    /// The secret references the sink reads.
    pub fn secrets(&self) -> Vec<&NotifySecret> {
        match self {
            SinkSpec::Slack { url, .. } | SinkSpec::Teams { url, .. } => vec![url],
            SinkSpec::Webhook { secret, .. } => vec![secret],
            SinkSpec::GithubDeployments { token, .. } => vec![token],
        }
    }
}

/// Where a notification credential is: an environment variable of the reconciler whose
/// name starts with `FLEETGATE_NOTIFY_`, or a file under the directory
/// `FLEETGATE_NOTIFY_SECRETS_DIR` (default `/var/run/secrets/fleetgate`), given relative to
/// it. Nothing else can be named: not the reconciler's other secrets, nor any file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum NotifySecret {
    Env(String),
    File(String),
}

impl fmt::Display for NotifySecret {
    /// Where the secret is, never what it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifySecret::Env(v) => write!(f, "environment variable {v}"),
            NotifySecret::File(p) => write!(f, "file {p}"),
        }
    }
}

/// What a sink is told about.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// A rollout started or finished (succeeded, rolled back, halted, preempted).
    Rollout,
    /// A wave passed its health gate, or failed it (and what was rolled back).
    Wave,
    /// `fleetgate rollback` moved accounts and set holds.
    Rollback,
    /// Holds released (`fleetgate release`, or the branch moved past them).
    Hold,
    /// Drift found, changed or cleared (a drift that stays the same is sent once).
    Drift,
    /// A watch daemon took over its shard's lease.
    Lease,
}

/// How a rollout watches and undoes itself.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutSpec {
    /// What a wave that breaches its failure tolerance or health gate rolls back.
    #[serde(default)]
    pub rollback: RollbackScope,
    /// How often gateway status reports are read during a health gate (default 5s).
    #[serde(default = "default_gate_poll")]
    pub poll_interval: Duration,
    /// Reports older than this are from instances that are gone and are not counted
    /// (default 2m; gateways write theirs on every poll).
    #[serde(default = "default_report_max_age")]
    pub report_max_age: Duration,
}

fn default_gate_poll() -> Duration {
    Duration::from_secs(5)
}

fn default_report_max_age() -> Duration {
    Duration::from_secs(120)
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            rollback: RollbackScope::default(),
            poll_interval: default_gate_poll(),
            report_max_age: default_report_max_age(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RollbackScope {
    /// The accounts the failing wave changed go back to their previous bundle; earlier waves,
    /// which passed their gates, stay.
    #[default]
    Wave,
    /// The failing wave's accounts and every earlier wave's of this rollout go back.
    All,
    /// Stop and leave every account as it is, for a person to decide.
    None,
}

fn default_session() -> Duration {
    Duration::from_secs(3600)
}

fn default_prefix() -> String {
    "fleetgate/${account.name}".to_string()
}

fn default_concurrency() -> u32 {
    32
}

#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Wave {
    pub name: String,
    /// Which accounts: all conditions must hold. An empty selector takes every account not
    /// taken by an earlier wave.
    #[serde(default)]
    pub select: WaveSelector,
    /// Accounts of this wave changed at once (default: the fleet's concurrency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Failed accounts tolerated before the wave stops and rolls back: a count (`2`) or a
    /// percentage (`"10%"`). Default 0.
    #[serde(default)]
    pub failure_tolerance: FailureTolerance,
    /// How long the wave's gateways must stay healthy before the next wave starts.
    #[serde(default)]
    pub bake_time: Duration,
    #[serde(default)]
    pub health_gate: HealthGate,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WaveSelector {
    /// The account's `stage` is one of these.
    #[serde(default)]
    pub stages: Vec<String>,
    /// The account has all these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum FailureTolerance {
    #[default]
    None,
    Count(u32),
    Percent(u8),
}

impl FailureTolerance {
    /// Failed accounts allowed in a wave of `size` accounts.
    pub fn allowed(self, size: usize) -> usize {
        match self {
            FailureTolerance::None => 0,
            FailureTolerance::Count(n) => n as usize,
            FailureTolerance::Percent(p) => size * p as usize / 100,
        }
    }
}

impl<'de> Deserialize<'de> for FailureTolerance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Text(String),
        }
        let invalid = || {
            serde::de::Error::custom(
                "failureTolerance is a count (e.g. 2) or a percentage (e.g. \"10%\")",
            )
        };
        match Raw::deserialize(d).map_err(|_| invalid())? {
            Raw::Count(0) => Ok(FailureTolerance::None),
            Raw::Count(n) => Ok(FailureTolerance::Count(n)),
            Raw::Text(s) => {
                let p: u8 = s
                    .trim()
                    .strip_suffix('%')
                    .ok_or_else(invalid)?
                    .trim()
                    .parse()
                    .map_err(|_| invalid())?;
                if p > 100 {
                    return Err(serde::de::Error::custom(
                        "failureTolerance cannot exceed 100%",
                    ));
                }
                Ok(if p == 0 {
                    FailureTolerance::None
                } else {
                    FailureTolerance::Percent(p)
                })
            }
        }
    }
}

impl JsonSchema for FailureTolerance {
    fn schema_name() -> Cow<'static, str> {
        "FailureTolerance".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A count of accounts (e.g. 2) or a percentage of the wave (e.g. \"10%\").",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]{1,3}\\s*%\\s*$" }
            ]
        })
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthGate {
    /// Highest tolerated share of 5xx answers since the new bundle was loaded (default 0.01).
    #[serde(default = "default_ratio")]
    pub max_5xx_ratio: f64,
    /// Highest tolerated share of upstream errors (default 0.01).
    #[serde(default = "default_ratio")]
    pub max_upstream_error_ratio: f64,
    /// How long to wait for every gateway to report the new digest (default 5m).
    #[serde(default = "default_gate_timeout")]
    pub timeout: Duration,
    /// What to do with accounts where no gateway reports status.
    #[serde(default)]
    pub no_gateway: NoGatewayPolicy,
    /// Requests an account must have served on the new bundle before its ratios are judged
    /// (default 10): one 500 out of two requests says little.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_min_requests() -> u64 {
    10
}

fn default_ratio() -> f64 {
    0.01
}

fn default_gate_timeout() -> Duration {
    Duration::from_secs(300)
}

impl Default for HealthGate {
    fn default() -> Self {
        HealthGate {
            max_5xx_ratio: default_ratio(),
            max_upstream_error_ratio: default_ratio(),
            timeout: default_gate_timeout(),
            no_gateway: NoGatewayPolicy::default(),
            min_requests: default_min_requests(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NoGatewayPolicy {
    /// Keep waiting until the gate's timeout, then count the account as failed.
    #[default]
    Wait,
    /// Treat the account as healthy.
    Skip,
    /// Count the account as failed at once.
    Fail,
}

#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DriftSpec {
    /// How often the watch daemon checks for drift (default 6h).
    #[serde(default = "default_drift_interval")]
    pub interval: Duration,
    /// How many commits back a deployed digest is looked up to say "N commits behind".
    #[serde(default = "default_history_depth")]
    pub history_depth: u32,
}

fn default_drift_interval() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn default_history_depth() -> u32 {
    50
}

impl Default for DriftSpec {
    fn default() -> Self {
        DriftSpec {
            interval: default_drift_interval(),
            history_depth: default_history_depth(),
        }
    }
}

/// `overlays/<name>/*.yaml`: changes applied to every account that selects the overlay.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OverlaySpec {
    /// Service version pins (`service: version`; `null` un-pins).
    #[serde(default)]
    pub services: BTreeMap<String, Option<String>>,
    /// Feature flag values (`flag: true|false`).
    #[serde(default)]
    pub flags: BTreeMap<String, bool>,
    /// A patch of the Gateway spec (merge rules: docs/merge-rules.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "gateway_patch_schema")]
    pub gateway: Option<serde_json::Value>,
    /// A patch of the IdentityProvider spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "idp_patch_schema")]
    pub idp: Option<serde_json::Value>,
}

/// `accounts/<name>.yaml`: one AWS account running one gateway and IdP.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccountSpec {
    /// The 12-digit AWS account id (quote it if it starts with 0).
    pub account_id: AccountId,
    pub region: String,
    /// Rollout stage, e.g. canary, early, prod; waves select on it.
    pub stage: String,
    /// The customer (tenant) this account serves; goes into tokens as a claim.
    pub tenant: String,
    /// Overlays applied in this order, after the base and before `patches`.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Service version pins; they override the overlays' (`null` un-pins).
    #[serde(default)]
    pub services: BTreeMap<String, Option<String>>,
    /// Feature flag values; they override the overlays'.
    #[serde(default)]
    pub flags: BTreeMap<String, bool>,
    /// Last-mile patches, applied last.
    #[serde(default)]
    pub patches: AccountPatches,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccountPatches {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "gateway_patch_schema")]
    pub gateway: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "idp_patch_schema")]
    pub idp: Option<serde_json::Value>,
}

/// A 12-digit AWS account id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub String);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let s = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(s) => s,
        };
        if fleetgate_bundle::compile::is_account_id(&s) {
            Ok(AccountId(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "account id {s:?} must be exactly 12 digits (quote ids that start with 0)"
            )))
        }
    }
}

impl JsonSchema for AccountId {
    fn schema_name() -> Cow<'static, str> {
        "AccountId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A 12-digit AWS account id (quote it if it starts with 0).",
            "oneOf": [
                { "type": "string", "pattern": "^[0-9]{12}$" },
                { "type": "integer", "minimum": 100000000000u64, "maximum": 999999999999u64 }
            ]
        })
    }
}

/// Gateway and IdentityProvider specs are the bundle crate's types.
pub type GatewaySpec = GatewayConfig;
pub type IdentityProviderSpec = IdpConfig;

pub fn gateway_patch_schema(_: &mut SchemaGenerator) -> Schema {
    patch_schema::<GatewayConfig>("A patch of the Gateway spec (docs/merge-rules.md).")
}

pub fn idp_patch_schema(_: &mut SchemaGenerator) -> Schema {
    patch_schema::<IdpConfig>("A patch of the IdentityProvider spec (docs/merge-rules.md).")
}

fn patch_schema<T: JsonSchema>(description: &str) -> Schema {
    let mut settings = SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
        obj.insert("description".into(), json!(description));
    }
    loosen(&mut schema);
    Schema::try_from(schema).unwrap_or_default()
}

/// Nothing required; `$patch` allowed wherever an object is; `null` allowed for removal.
fn loosen(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(obj) => {
            obj.remove("required");
            for (_, child) in obj.iter_mut() {
                loosen(child);
            }
            if let Some(serde_json::Value::Object(props)) = obj.get_mut("properties") {
                // `key: null` removes the key from what is patched.
                for prop in props.values_mut() {
                    let description = prop.as_object_mut().and_then(|o| o.remove("description"));
                    let mut wrapped = json!({"anyOf": [prop.take(), {"type": "null"}]});
                    if let Some(d) = description {
                        wrapped["description"] = d;
                    }
                    *prop = wrapped;
                }
                props.insert("$patch".into(), json!({"enum": ["delete", "replace"]}));
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(loosen),
        _ => {}
    }
}
