//! The AWS target: every account's own S3 bucket, reached through a role assumed in that
//! account. Same layout and rules as the file target (docs/architecture.md, "Deployed-state layout"):
//!
//! ```text
//! s3://<bucket>/<prefix>/bundles/<sha256>.json   written first, with If-None-Match: *
//! s3://<bucket>/<prefix>/current.json            If-Match: <ETag read by observe>
//!                                                (If-None-Match: * when there was none)
//! ```
//!
//! Hub credentials come from the SDK's default chain (env, profile, SSO, web identity,
//! IMDS). Per account: `AssumeRole` on `arn:aws:iam::<id>:role/<roleName>` with the fleet's
//! ExternalId and a session name carrying the commit; the session is cached per account and
//! renewed before it expires. Throttling and 5xx are retried by the SDK's standard retry
//! (backoff with jitter; `AWS_MAX_ATTEMPTS` raises the attempts); what still fails is
//! classified ([`ErrorClass`]) and stays that account's failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, ProvideCredentials as _, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};
use fleetgate_bundle::{Bundle, Digest};

use crate::target::aws_errors::{classify, is_no_such_key, is_precondition_failed, status};
use crate::target::aws_requests::{Counters, Counting};
use crate::target::{
    AccountRef, Bootstrapped, ETag, ErrorClass, InstanceReport, Pointer, StoredObject, Target,
    TargetError,
};

/// How the fleet is reached: fleet.yaml's settings plus the command line's.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// `arn:aws:iam::<id>:role/<role_name>` in every account.
    pub role_name: String,
    pub external_id: String,
    /// Asked of STS for each session (15 minutes to 12 hours).
    pub session_duration: Duration,
    /// `fleetgate-<short sha>`: CloudTrail in the account shows which commit acted.
    pub session_name: String,
    /// Region of the STS calls.
    pub hub_region: String,
    /// One endpoint for both STS and S3 (moto, LocalStack, an S3-compatible store); path-style
    /// addressing when set. `None` leaves it to `AWS_ENDPOINT_URL` or the real AWS.
    pub endpoint_url: Option<String>,
    /// The longest one attempt of one call may take; a timed-out attempt is retried.
    pub request_timeout: Duration,
}

impl AwsSettings {
    /// The settings fleet.yaml gives, for a run at `commit`.
    pub fn from_fleet(spec: &crate::config::manifest::FleetSpec, commit: &str) -> AwsSettings {
        AwsSettings {
            role_name: spec.role_name.clone(),
            external_id: spec.external_id.clone(),
            session_duration: spec.session_duration.0,
            session_name: session_name(commit),
            hub_region: spec.hub_region.clone(),
            endpoint_url: None,
            request_timeout: Duration::from_secs(20),
        }
    }
}

/// `fleetgate-<first 12 of the commit>`, within STS's `[\w+=,.@-]{2,64}`.
pub fn session_name(commit: &str) -> String {
    let short: String = commit
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    if short.is_empty() {
        "fleetgate".to_string()
    } else {
        format!("fleetgate-{short}")
    }
}

/// Every account's bucket through its assumed role.
#[derive(Debug)]
pub struct AwsTarget {
    hub: aws_config::SdkConfig,
    sts: aws_sdk_sts::Client,
    settings: AwsSettings,
    path_style: bool,
    /// Per account id and region: the S3 client of the current session. The inner lock
    /// makes concurrent callers for one account share one AssumeRole.
    sessions: Mutex<HashMap<(String, String), SessionSlot>>,
    /// Calls, retries, throttles and timeouts of every client of this target.
    counters: Arc<Counters>,
}

/// One account's session, renewed under its lock.
type SessionSlot = Arc<tokio::sync::Mutex<Option<Session>>>;

#[derive(Debug, Clone)]
struct Session {
    s3: aws_sdk_s3::Client,
    expires: Option<SystemTime>,
}

/// Sessions are renewed this long before STS says they expire (or a quarter of their
/// lifetime, if shorter), so no call starts with credentials about to lapse.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

impl AwsTarget {
    /// Loads the hub's credentials from the default chain and checks that there are some:
    /// without them every account would fail the same way.
    pub async fn connect(settings: AwsSettings) -> Result<AwsTarget, anyhow::Error> {
        // Every attempt of every call is bounded; a timed-out attempt is retried by the
        // SDK's standard strategy (backoff with jitter, AWS_MAX_ATTEMPTS, default 3), so one
        // lost answer costs an attempt, not the account.
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(5)))
            .operation_attempt_timeout(settings.request_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .timeout_config(timeouts)
            .region(Region::new(settings.hub_region.clone()));
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let hub = loader.load().await;
        let Some(provider) = hub.credentials_provider() else {
            anyhow::bail!("no AWS credentials provider for the hub");
        };
        if let Err(e) = provider.provide_credentials().await {
            anyhow::bail!(
                "no AWS credentials for the hub ({}): set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, \
                 AWS_WEB_IDENTITY_TOKEN_FILE/AWS_ROLE_ARN, or run where an instance or pod role is available",
                crate::target::aws_errors::chain(&e)
            );
        }
        let path_style = hub.endpoint_url().is_some();
        let counters = Arc::new(Counters::default());
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&hub)
                .interceptor(Counting(counters.clone()))
                .build(),
        );
        Ok(AwsTarget {
            sts,
            hub,
            settings,
            path_style,
            sessions: Mutex::new(HashMap::new()),
            counters,
        })
    }

    /// An S3 client with the hub's own credentials (not an account's): the hub's state
    /// bucket.
    pub fn hub_s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.hub)
                .force_path_style(self.path_style)
                .build(),
        )
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    fn role_arn(&self, account: &AccountRef) -> String {
        format!(
            "arn:aws:iam::{}:role/{}",
            account.id, self.settings.role_name
        )
    }

    /// The account's S3 client, assuming its role when there is no fresh session.
    async fn s3(&self, account: &AccountRef) -> Result<aws_sdk_s3::Client, TargetError> {
        let slot = {
            let mut sessions = self
                .sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            sessions
                .entry((account.id.clone(), account.region.clone()))
                .or_default()
                .clone()
        };
        let mut session = slot.lock().await;
        if let Some(s) = session.as_ref()
            && s.fresh(SystemTime::now(), self.settings.session_duration)
        {
            return Ok(s.s3.clone());
        }
        let fresh = self.assume(account).await?;
        let s3 = fresh.s3.clone();
        *session = Some(fresh);
        Ok(s3)
    }

    async fn assume(&self, account: &AccountRef) -> Result<Session, TargetError> {
        let seconds = self.settings.session_duration.as_secs().clamp(900, 43_200);
        let out = self
            .sts
            .assume_role()
            .role_arn(self.role_arn(account))
            .role_session_name(&self.settings.session_name)
            .external_id(&self.settings.external_id)
            .duration_seconds(i32::try_from(seconds).unwrap_or(3600))
            .send()
            .await
            .map_err(|e| {
                let (class, message) = classify(&e);
                TargetError::Remote {
                    account: account.name.clone(),
                    // Throttling and network trouble keep their class; any refusal means
                    // the role cannot be assumed.
                    class: match class {
                        ErrorClass::Throttled
                        | ErrorClass::ServerError
                        | ErrorClass::Network
                        | ErrorClass::Timeout => class,
                        _ => ErrorClass::RoleNotAssumable,
                    },
                    message: format!(
                        "AssumeRole {} (ExternalId set, session {}): {message}",
                        self.role_arn(account),
                        self.settings.session_name
                    ),
                }
            })?;
        let Some(c) = out.credentials() else {
            return Err(TargetError::Remote {
                account: account.name.clone(),
                class: ErrorClass::RoleNotAssumable,
                message: format!(
                    "AssumeRole {} returned no credentials",
                    self.role_arn(account)
                ),
            });
        };
        let expires = SystemTime::try_from(*c.expiration()).ok();
        let credentials = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            expires,
            "fleetgate-assume-role",
        );
        let config = aws_sdk_s3::config::Builder::from(&self.hub)
            .region(Region::new(account.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(self.path_style)
            .interceptor(Counting(self.counters.clone()))
            .build();
        Ok(Session {
            s3: aws_sdk_s3::Client::from_conf(config),
            expires,
        })
    }

    fn key(account: &AccountRef, rest: &str) -> String {
        format!("{}/{rest}", account.prefix)
    }

    fn bundle_key(account: &AccountRef, digest: &Digest) -> String {
        Self::key(account, &format!("bundles/{}.json", digest.hex()))
    }

    fn remote<E>(account: &AccountRef, what: &str, e: &SdkError<E>) -> TargetError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (class, message) = classify(e);
        TargetError::Remote {
            account: account.name.clone(),
            class,
            message: format!("{what}: {message}"),
        }
    }

    /// An object's bytes and ETag; `None` when the key does not exist.
    async fn get(
        &self,
        account: &AccountRef,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, TargetError> {
        let s3 = self.s3(account).await?;
        let what = || format!("GetObject s3://{}/{key}", account.bucket);
        let out = match s3
            .get_object()
            .bucket(&account.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_no_such_key(&e) => return Ok(None),
            Err(e) => return Err(Self::remote(account, &what(), &e)),
        };
        let etag = out.e_tag().map(str::to_string);
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| TargetError::Remote {
                account: account.name.clone(),
                class: ErrorClass::Network,
                message: format!("{}: reading the body: {e}", what()),
            })?
            .into_bytes()
            .to_vec();
        Ok(Some((bytes, etag)))
    }
}

/// hyper 1 with rustls on ring, the platform's root certificates, pooled connections: the
/// one HTTP client stack of fleetgate's AWS calls (the gateway builds the same).
pub fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

impl Session {
    fn fresh(&self, now: SystemTime, lifetime: Duration) -> bool {
        let margin = RENEW_BEFORE.min(lifetime / 4);
        match self.expires {
            Some(expires) => now + margin < expires,
            None => true,
        }
    }
}

/// `x-amz-meta-*` values are HTTP header values: keep them printable ASCII.
fn meta(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl Target for AwsTarget {
    fn requests(&self) -> Option<crate::target::RequestStats> {
        Some(self.counters.stats())
    }

    fn location(&self) -> String {
        match self.hub.endpoint_url() {
            Some(url) => format!("aws ({url})"),
            None => "aws".to_string(),
        }
    }

    /// S3 cannot list other accounts: orphans are found from git's history instead
    /// (accounts removed recently whose pointer is still there).
    async fn deployed_accounts(&self) -> Result<Vec<String>, TargetError> {
        Ok(Vec::new())
    }

    async fn read_pointer(
        &self,
        account: &AccountRef,
    ) -> Result<Option<(Pointer, ETag)>, TargetError> {
        let Some((bytes, etag)) = self
            .get(account, &Self::key(account, "current.json"))
            .await?
        else {
            return Ok(None);
        };
        let pointer: Pointer =
            serde_json::from_slice(&bytes).map_err(|e| TargetError::CorruptPointer {
                account: account.name.clone(),
                message: e.to_string(),
            })?;
        let Some(etag) = etag else {
            return Err(TargetError::CorruptPointer {
                account: account.name.clone(),
                message: "S3 returned current.json without an ETag".into(),
            });
        };
        Ok(Some((pointer, ETag(etag))))
    }

    async fn read_bundle(
        &self,
        account: &AccountRef,
        digest: &Digest,
    ) -> Result<Option<Bundle>, TargetError> {
        let Some((bytes, _)) = self
            .get(account, &Self::bundle_key(account, digest))
            .await?
        else {
            return Ok(None);
        };
        crate::target::check_stored_bundle(&account.name, &bytes, digest).map(Some)
    }

    async fn write_bundle(
        &self,
        account: &AccountRef,
        canonical: &[u8],
    ) -> Result<bool, TargetError> {
        let digest = Digest::of(canonical);
        let key = Self::bundle_key(account, &digest);
        let s3 = self.s3(account).await?;
        let put = s3
            .put_object()
            .bucket(&account.bucket)
            .key(&key)
            .if_none_match("*")
            .content_type("application/json")
            .metadata("fleetgate-digest", digest.to_string())
            .body(ByteStream::from(canonical.to_vec()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if is_precondition_failed(&e) => {
                // Already stored (an earlier apply, or one that crashed before its pointer
                // write): fine if identical, tampering if not.
                match self.get(account, &key).await? {
                    Some((existing, _)) if existing == canonical => Ok(false),
                    Some((existing, _)) => Err(TargetError::TamperedBundle {
                        account: account.name.clone(),
                        digest,
                        actual: Digest::of(&existing),
                    }),
                    None => Err(Self::remote(
                        account,
                        &format!("PutObject s3://{}/{key}", account.bucket),
                        &e,
                    )),
                }
            }
            Err(e) => Err(Self::remote(
                account,
                &format!("PutObject s3://{}/{key}", account.bucket),
                &e,
            )),
        }
    }

    async fn write_pointer(
        &self,
        account: &AccountRef,
        pointer: &Pointer,
        expected: Option<&ETag>,
    ) -> Result<ETag, TargetError> {
        let key = Self::key(account, "current.json");
        let mut bytes =
            serde_json::to_vec_pretty(pointer).map_err(|e| TargetError::CorruptPointer {
                account: account.name.clone(),
                message: e.to_string(),
            })?;
        bytes.push(b'\n');
        let s3 = self.s3(account).await?;
        let mut put = s3
            .put_object()
            .bucket(&account.bucket)
            .key(&key)
            .content_type("application/json")
            .metadata("fleetgate-digest", pointer.digest.to_string())
            .metadata("fleetgate-applied-by", meta(&pointer.applied_by))
            .metadata("fleetgate-applied-at", meta(&pointer.applied_at))
            .body(ByteStream::from(bytes));
        if let Some(commit) = &pointer.commit {
            put = put.metadata("fleetgate-commit", meta(commit));
        }
        if let Some(previous) = &pointer.previous {
            put = put.metadata("fleetgate-previous", previous.to_string());
        }
        put = match expected {
            Some(etag) => put.if_match(&etag.0),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(out) => Ok(ETag(out.e_tag().unwrap_or_default().to_string())),
            Err(e) if is_precondition_failed(&e) => {
                // Idempotent compare-and-swap: when the answer to this very write was lost
                // and the SDK's retry found its own write there, the pointer holds exactly
                // what this run wrote (digest, commit, who and when to the second): that is
                // this run's success, not someone else's conflict.
                let found = match self.read_pointer(account).await {
                    Ok(Some((now, etag))) if &now == pointer => return Ok(etag),
                    Ok(Some((_, etag))) => etag.0,
                    Ok(None) => "no pointer".to_string(),
                    Err(_) => "an unreadable pointer".to_string(),
                };
                Err(TargetError::Conflict {
                    account: account.name.clone(),
                    expected: expected
                        .map(|t| t.0.clone())
                        .unwrap_or_else(|| "no pointer".into()),
                    found,
                })
            }
            Err(e) => {
                // No answer that says what happened (a timeout or a dropped connection
                // after the retries): read it back. A pointer that holds exactly this
                // write landed, and the account's outcome says so.
                let failed = Self::remote(
                    account,
                    &format!("PutObject s3://{}/{key}", account.bucket),
                    &e,
                );
                if matches!(
                    failed.class(),
                    ErrorClass::Timeout | ErrorClass::Network | ErrorClass::ServerError
                ) && let Ok(Some((now, etag))) = self.read_pointer(account).await
                    && &now == pointer
                {
                    return Ok(etag);
                }
                Err(failed)
            }
        }
    }

    async fn read_statuses(
        &self,
        account: &AccountRef,
    ) -> Result<Vec<InstanceReport>, TargetError> {
        let s3 = self.s3(account).await?;
        let prefix = Self::key(account, "status/");
        let mut keys = Vec::new();
        let mut pages = s3
            .list_objects_v2()
            .bucket(&account.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                Self::remote(
                    account,
                    &format!("ListObjectsV2 s3://{}/{prefix}", account.bucket),
                    &e,
                )
            })?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter(|k| k.ends_with(".json"))
                    .map(str::to_string),
            );
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // An instance that went away between the list and the get is simply gone.
            if let Some((bytes, _)) = self.get(account, &key).await?
                && let Some(report) = crate::target::parse_status(
                    &account.name,
                    &format!("s3://{}/{key}", account.bucket),
                    &bytes,
                )
            {
                out.push(report);
            }
        }
        out.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(out)
    }

    async fn pointer_history(
        &self,
        account: &AccountRef,
        limit: usize,
    ) -> Result<Vec<Pointer>, TargetError> {
        let s3 = self.s3(account).await?;
        let key = Self::key(account, "current.json");
        let what = || format!("ListObjectVersions s3://{}/{key}", account.bucket);
        // Versions come newest first; only this exact key's (the prefix also matches
        // current.json.tmp and the like).
        let mut versions: Vec<String> = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = s3
                .list_object_versions()
                .bucket(&account.bucket)
                .prefix(&key)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| Self::remote(account, &what(), &e))?;
            versions.extend(
                page.versions()
                    .iter()
                    .filter(|v| v.key() == Some(key.as_str()))
                    .filter_map(|v| v.version_id().map(str::to_string)),
            );
            if versions.len() >= limit || page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        versions.truncate(limit);
        let mut out = Vec::with_capacity(versions.len());
        for version in versions {
            let got = s3
                .get_object()
                .bucket(&account.bucket)
                .key(&key)
                .version_id(&version)
                .send()
                .await
                .map_err(|e| {
                    Self::remote(
                        account,
                        &format!(
                            "GetObject s3://{}/{key}?versionId={version}",
                            account.bucket
                        ),
                        &e,
                    )
                })?;
            let bytes = got.body.collect().await.map_err(|e| TargetError::Remote {
                account: account.name.clone(),
                class: ErrorClass::Network,
                message: format!("reading s3://{}/{key}: {e}", account.bucket),
            })?;
            // A version that does not parse is history someone else wrote: skipped.
            if let Ok(p) = serde_json::from_slice::<Pointer>(&bytes.into_bytes()) {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn bootstrap(&self, account: &AccountRef) -> Result<Bootstrapped, TargetError> {
        let s3 = self.s3(account).await?;
        let bucket = &account.bucket;
        let what = |op: &str| format!("{op} s3://{bucket}");
        let exists = match s3.head_bucket().bucket(bucket).send().await {
            Ok(_) => true,
            Err(e) if status(&e) == Some(404) => false,
            Err(e) => {
                let (class, message) = classify(&e);
                // HeadBucket has no body: a 403 is a bucket someone else owns (or a role
                // without s3:ListBucket).
                let message = if status(&e) == Some(403) {
                    "HTTP 403: the bucket exists but this account's role may not use it (owned by another account?)".to_string()
                } else {
                    message
                };
                return Err(TargetError::Remote {
                    account: account.name.clone(),
                    class,
                    message: format!("{}: {message}", what("HeadBucket")),
                });
            }
        };
        if !exists {
            let mut create = s3.create_bucket().bucket(bucket);
            // us-east-1 is the one region that refuses a location constraint.
            if account.region != "us-east-1" {
                create = create.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(
                            account.region.as_str(),
                        ))
                        .build(),
                );
            }
            match create.send().await {
                Ok(_) => {}
                Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => {}
                Err(e) => return Err(Self::remote(account, &what("CreateBucket"), &e)),
            }
        }
        s3.put_public_access_block()
            .bucket(bucket)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Self::remote(account, &what("PutPublicAccessBlock"), &e))?;
        s3.put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| Self::remote(account, &what("PutBucketVersioning"), &e))?;
        let built = |e: aws_sdk_s3::error::BuildError| TargetError::Remote {
            account: account.name.clone(),
            class: ErrorClass::Other,
            message: format!("building the encryption request: {e}"),
        };
        let by_default = ServerSideEncryptionByDefault::builder()
            .sse_algorithm(ServerSideEncryption::Aes256)
            .build()
            .map_err(built)?;
        let encryption = ServerSideEncryptionConfiguration::builder()
            .rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(by_default)
                    .build(),
            )
            .build()
            .map_err(built)?;
        s3.put_bucket_encryption()
            .bucket(bucket)
            .server_side_encryption_configuration(encryption)
            .send()
            .await
            .map_err(|e| Self::remote(account, &what("PutBucketEncryption"), &e))?;
        Ok(if exists {
            Bootstrapped::AlreadyThere
        } else {
            Bootstrapped::Created
        })
    }
    async fn list_stored(&self, account: &AccountRef) -> Result<Vec<StoredObject>, TargetError> {
        let s3 = self.s3(account).await?;
        let prefix = Self::key(account, "");
        let what = format!("ListObjectVersions s3://{}/{prefix}", account.bucket);
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        // Bounded: 100,000 pages of 1,000 versions.
        for _ in 0..100_000 {
            let page = s3
                .list_object_versions()
                .bucket(&account.bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| Self::remote(account, &what, &e))?;
            let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
            let markers = page
                .delete_markers()
                .iter()
                .map(|m| (m.key(), m.version_id()));
            for (key, version) in versions.chain(markers) {
                if let Some(key) = key.and_then(|k| k.strip_prefix(&prefix)) {
                    out.push(StoredObject {
                        key: key.to_string(),
                        version: version.map(str::to_string),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete_stored(
        &self,
        account: &AccountRef,
        objects: &[StoredObject],
    ) -> Result<(), TargetError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let s3 = self.s3(account).await?;
        let what = format!("DeleteObjects s3://{}/{}/", account.bucket, account.prefix);
        for batch in objects.chunks(1000) {
            let ids = batch
                .iter()
                .map(|o| {
                    ObjectIdentifier::builder()
                        .key(Self::key(account, &o.key))
                        .set_version_id(o.version.clone())
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TargetError::Remote {
                    account: account.name.clone(),
                    class: ErrorClass::Other,
                    message: format!("{what}: {e}"),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| TargetError::Remote {
                    account: account.name.clone(),
                    class: ErrorClass::Other,
                    message: format!("{what}: {e}"),
                })?;
            let answer = s3
                .delete_objects()
                .bucket(&account.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| Self::remote(account, &what, &e))?;
            if let Some(first) = answer.errors().first() {
                return Err(TargetError::Remote {
                    account: account.name.clone(),
                    class: ErrorClass::Other,
                    message: format!(
                        "{what}: {} of {} not deleted, first {}: {}",
                        answer.errors().len(),
                        batch.len(),
                        first.key().unwrap_or("?"),
                        first.code().unwrap_or("?")
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_carry_the_commit_within_sts_limits() {
        assert_eq!(
            session_name("0123456789abcdef0123456789abcdef01234567"),
            "fleetgate-0123456789ab"
        );
        assert_eq!(session_name(""), "fleetgate");
        assert!(session_name(&"f".repeat(100)).len() <= 64);
    }

    #[test]
    fn sessions_are_renewed_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        let session = |expires| Session {
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .build(),
            ),
            expires,
        };
        assert!(session(Some(now + hour)).fresh(now, hour));
        assert!(!session(Some(now + Duration::from_secs(60))).fresh(now, hour));
        assert!(!session(Some(now - hour)).fresh(now, hour));
        // A 20-minute session is renewed 5 minutes early, not 5 minutes of a quarter.
        let short = Duration::from_secs(20 * 60);
        assert!(!session(Some(now + Duration::from_secs(4 * 60))).fresh(now, short));
        assert!(session(Some(now + Duration::from_secs(6 * 60))).fresh(now, short));
    }

    #[test]
    fn metadata_values_stay_printable_ascii() {
        assert_eq!(meta("jörg@host ci"), "j?rg@host ci");
    }
}
