//! Delivering notifications: one worker per sink, POSTing each message with a timeout and
//! retrying what may succeed later (connection errors, timeouts, 408, 429, 5xx) with
//! doubling waits, `Retry-After` honoured up to a minute.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;

use super::counters::NotifyMetrics;
use super::event::{self, Event, Notice};
use super::secrets::SecretStore;
use crate::config::manifest::SinkSpec;
use crate::config::notifications::check_url;

/// Each attempt's limit, connection and answer included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between attempts, `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How much of an answer's body is read (GitHub's deployment id is in it).
const MAX_ANSWER: usize = 64 * 1024;
/// Deployments remembered per GitHub sink (commit -> deployment id).
const GITHUB_DEPLOYMENTS: usize = 32;

pub(super) type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP/1 client for http:// and https:// (the platform's CA roots, rustls on ring).
pub(super) fn client() -> HttpClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let https = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "no platform CA certificates: https notification sinks will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            match config {
                Ok(c) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(c),
                Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
            }
        }
    };
    let connector = https.https_or_http().enable_http1().build();
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// 32 random hex digits.
pub(super) fn random_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = now.to_le_bytes();
    }
    hex::encode(b)
}

/// A sink with its credential read.
pub(super) enum Target {
    Slack {
        url: String,
    },
    Teams {
        url: String,
    },
    Webhook {
        url: String,
        key: Vec<u8>,
    },
    Github {
        api: String,
        repository: String,
        token: String,
        environment: String,
        /// commit -> deployment id, newest last.
        deployments: VecDeque<(String, u64)>,
    },
}

impl std::fmt::Debug for Target {
    /// The kind only: URLs of Slack and Teams webhooks are credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Slack { .. } => "Slack",
            Target::Teams { .. } => "Teams",
            Target::Webhook { .. } => "Webhook",
            Target::Github { .. } => "GitHub",
        })
    }
}

impl Target {
    pub(super) fn resolve(sink: &SinkSpec, secrets: &SecretStore) -> Result<Target, String> {
        let url_of = |v: String| -> Result<String, String> {
            match check_url(&v) {
                None => Ok(v),
                // The value is a credential: say where it came from, not what it is.
                Some(_) => Err("its value is not an http:// or https:// URL".into()),
            }
        };
        Ok(match sink {
            SinkSpec::Slack { url, .. } => Target::Slack {
                url: url_of(secrets.read(url)?)?,
            },
            SinkSpec::Teams { url, .. } => Target::Teams {
                url: url_of(secrets.read(url)?)?,
            },
            SinkSpec::Webhook { url, secret, .. } => Target::Webhook {
                url: url.clone(),
                key: secrets.read(secret)?.into_bytes(),
            },
            SinkSpec::GithubDeployments {
                repository,
                token,
                api_url,
                environment,
                ..
            } => Target::Github {
                api: github_api(api_url.as_deref())?,
                repository: repository.clone(),
                token: secrets.read(token)?,
                environment: environment.clone().unwrap_or_else(|| "fleetgate".into()),
                deployments: VecDeque::new(),
            },
        })
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `key`, as the generic webhook's
/// `X-Fleetgate-Signature-256` (and GitHub's `X-Hub-Signature-256`) carry it.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The environment variable naming the one GitHub API, besides https://api.github.com, a
/// `githubDeployments` sink may send its token to (GitHub Enterprise): set by whoever runs
/// the reconciler, never by fleet.yaml, so a change to fleet.yaml cannot send the token
/// elsewhere.
pub const GITHUB_API_ENV: &str = "FLEETGATE_NOTIFY_GITHUB_API_URL";

/// A sink's `apiUrl`, if it may receive the token: GitHub's, or the operator's own.
fn github_api(configured: Option<&str>) -> Result<String, String> {
    let norm = |u: &str| u.trim().trim_end_matches('/').to_string();
    let wanted = norm(configured.unwrap_or("https://api.github.com"));
    let allowed = std::env::var(GITHUB_API_ENV).ok().map(|u| norm(&u));
    if wanted == "https://api.github.com" || allowed.as_deref() == Some(wanted.as_str()) {
        return Ok(wanted);
    }
    Err(format!(
        "apiUrl {wanted:?} is neither https://api.github.com nor the {GITHUB_API_ENV} of the reconciler's environment"
    ))
}

/// One request of a delivery.
struct Call {
    url: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

/// How an attempt ended.
enum Attempt {
    /// 2xx, with the answer's body.
    Done(Bytes),
    /// Worth another try, after at least this long (`Retry-After`).
    Again(String, Option<Duration>),
    /// Final.
    Refused(String),
}

/// One sink's worker.
pub(super) struct Worker {
    pub(super) name: String,
    pub(super) target: Target,
    pub(super) client: HttpClient,
    pub(super) attempts: u32,
    pub(super) backoff: Duration,
    pub(super) metrics: NotifyMetrics,
}

impl Worker {
    /// Delivers every message until the queue is closed and empty.
    pub(super) async fn run(mut self, mut rx: tokio::sync::mpsc::Receiver<Arc<Notice>>) {
        while let Some(notice) = rx.recv().await {
            self.metrics.queued.dec();
            match self.deliver(&notice).await {
                Ok(true) => self.metrics.count(&self.name, "delivered"),
                // Nothing for this sink to say (a GitHub event without a commit it knows).
                Ok(false) => {}
                Err(why) => {
                    tracing::warn!(sink = %self.name, event = notice.event.name(), id = %notice.id, error = %why, "notification not delivered");
                    self.metrics.count(&self.name, "failed");
                }
            }
        }
    }

    /// Sends `n`; `Ok(false)` when the sink had nothing to send for it.
    async fn deliver(&mut self, n: &Notice) -> Result<bool, String> {
        let body = |v: &Value| scrubbed(v).into_bytes();
        let common = |n: &Notice| {
            vec![
                ("content-type", "application/json".to_string()),
                (
                    "user-agent",
                    format!("fleetgate/{}", env!("CARGO_PKG_VERSION")),
                ),
                ("x-fleetgate-event", n.event.name().to_string()),
                ("x-fleetgate-delivery", n.id.clone()),
            ]
        };
        match &self.target {
            Target::Slack { url } => {
                let call = Call {
                    url: url.clone(),
                    body: body(&event::slack_body(n)),
                    headers: common(n),
                };
                self.send(&call).await.map(|_| true)
            }
            Target::Teams { url } => {
                let call = Call {
                    url: url.clone(),
                    body: body(&event::teams_body(n)),
                    headers: common(n),
                };
                self.send(&call).await.map(|_| true)
            }
            Target::Webhook { url, key } => {
                let bytes = body(&event::webhook_body(n));
                let mut headers = common(n);
                headers.push(("x-fleetgate-signature-256", sign(key, &bytes)));
                let call = Call {
                    url: url.clone(),
                    body: bytes,
                    headers,
                };
                self.send(&call).await.map(|_| true)
            }
            Target::Github { .. } => self.github(n).await,
        }
    }

    /// GitHub: the commit's deployment (created at its first event), then a status.
    async fn github(&mut self, n: &Notice) -> Result<bool, String> {
        let Target::Github {
            api,
            repository,
            token,
            environment,
            deployments,
        } = &self.target
        else {
            return Ok(false);
        };
        let (Some(commit), Some((state, description))) =
            (n.event.commit(), event::github_status(&n.event))
        else {
            return Ok(false);
        };
        // A rollback to a digest names no commit GitHub knows.
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("accept", "application/vnd.github+json".to_string()),
            ("x-github-api-version", "2022-11-28".to_string()),
            ("authorization", format!("Bearer {token}")),
            (
                "user-agent",
                format!("fleetgate/{}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        // Each shard's daemon rolls out its own accounts: a deployment (and environment) of
        // its own, so one shard's success never hides another's failure.
        let environment = match &n.shard {
            Some(shard) => format!("{environment}-shard-{}", shard.replace('/', "-of-")),
            None => environment.clone(),
        };
        let (api, repository) = (api.clone(), repository.clone());
        let known = deployments
            .iter()
            .find(|(c, _)| c == commit)
            .map(|(_, id)| *id);
        let id = match known {
            Some(id) => id,
            None => {
                let create = Call {
                    url: format!("{api}/repos/{repository}/deployments"),
                    body: scrubbed(&event::github_deployment_body(
                        commit,
                        &environment,
                        &n.source,
                    ))
                    .into_bytes(),
                    headers: headers.clone(),
                };
                let answer = self.send(&create).await?;
                let id = serde_json::from_slice::<Value>(&answer)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_u64))
                    .ok_or("GitHub's answer to creating the deployment has no id")?;
                if let Target::Github { deployments, .. } = &mut self.target {
                    if deployments.len() >= GITHUB_DEPLOYMENTS {
                        deployments.pop_front();
                    }
                    deployments.push_back((commit.to_string(), id));
                }
                id
            }
        };
        let status = Call {
            url: format!("{api}/repos/{repository}/deployments/{id}/statuses"),
            body: scrubbed(&event::github_status_body(
                state,
                &description,
                &environment,
            ))
            .into_bytes(),
            headers,
        };
        self.send(&status).await.map(|_| true)
    }

    /// POSTs `call` until it succeeds, is refused, or the attempts are spent.
    async fn send(&self, call: &Call) -> Result<Bytes, String> {
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            let why = match attempt_once(&self.client, call).await {
                Attempt::Done(b) => return Ok(b),
                Attempt::Refused(why) => return Err(why),
                Attempt::Again(why, after) => {
                    if attempt >= self.attempts {
                        return Err(format!("{why} (after {attempt} attempts)"));
                    }
                    wait = after.map_or(wait, |a| a.max(wait)).min(MAX_BACKOFF);
                    why
                }
            };
            tracing::info!(sink = %self.name, attempt, retry_in = ?wait, error = %why, "notification delivery failed; retrying");
            self.metrics.count(&self.name, "retried");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }
}

/// The JSON text of `v` with every string through the redaction point.
fn scrubbed(v: &Value) -> String {
    let mut v = v.clone();
    crate::redact::scrub_value(&mut v, crate::redact::run_key());
    v.to_string()
}

async fn attempt_once(client: &HttpClient, call: &Call) -> Attempt {
    let mut req = Request::builder().method(Method::POST).uri(&call.url);
    for (k, v) in &call.headers {
        req = req.header(*k, v);
    }
    let req = match req.body(Full::new(Bytes::from(call.body.clone()))) {
        Ok(r) => r,
        Err(_) => {
            return Attempt::Refused("the request cannot be built (bad URL or header)".into());
        }
    };
    let answer = async {
        let resp = client.request(req).await.map_err(|e| {
            // The error's text may quote the URL, a credential for Slack and Teams.
            let kind = if e.is_connect() {
                "cannot connect"
            } else {
                "connection failed"
            };
            kind.to_string()
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, String>((status, retry_after, body))
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, answer).await {
        Err(_) => Attempt::Again(
            format!(
                "no answer within {}",
                humantime::format_duration(ATTEMPT_TIMEOUT)
            ),
            None,
        ),
        Ok(Err(why)) => Attempt::Again(why, None),
        Ok(Ok((status, _, body))) if status.is_success() => Attempt::Done(body),
        Ok(Ok((status, retry_after, _)))
            if status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT =>
        {
            Attempt::Again(format!("answered {status}"), retry_after)
        }
        Ok(Ok((status, _, _))) => Attempt::Refused(format!("answered {status}")),
    }
}

/// The event of a wave that ended: passed, or failed the rollout (`failure`, its reason;
/// `failed`, its accounts that failed as they failed, before a rollback marked every account
/// it reached rolled back).
pub fn wave_event(
    commit: &str,
    wave: &crate::execute::report::WaveReport,
    took: Duration,
    failure: Option<&str>,
    failed: &[event::FailedAccount],
) -> Option<Event> {
    use crate::execute::report::{AccountState, WaveState};
    if let Some(reason) = failure {
        return Some(Event::WaveFailed {
            commit: commit.to_string(),
            wave: wave.name.clone(),
            reason: reason.to_string(),
            failed: failed
                .iter()
                .take(event::MAX_NAMED_ACCOUNTS)
                .cloned()
                .collect(),
            failed_total: wave.failed.max(failed.len()),
            rolled_back: wave
                .accounts
                .values()
                .filter(|a| a.state == AccountState::RolledBack)
                .count(),
            duration_seconds: took,
        });
    }
    (wave.state == WaveState::Succeeded).then(|| Event::WavePassed {
        commit: commit.to_string(),
        wave: wave.name.clone(),
        accounts: wave
            .accounts
            .values()
            .filter(|a| a.state == AccountState::Healthy)
            .count(),
        tolerated_failures: wave.failed,
        duration_seconds: took,
    })
}
