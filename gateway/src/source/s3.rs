//! The gateway's S3 source, `s3://bucket/prefix`: the account's own config bucket, read
//! with the gateway's own credentials (instance or pod role, from the SDK's default chain).
//! The pointer is polled with a conditional GET on its ETag, so an unchanged pointer costs
//! one `304 Not Modified`.
//!
//! Imports [`super::types`] and [`crate::aws`].

use aws_config::BehaviorVersion;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata as _};

use fleetgate_bundle::pointer::Pointer;

use super::types::{BundleSource, Fetched, SourceError, SourceVersion};
use crate::aws::https_client;

/// `s3://bucket/prefix` (the prefix holding `current.json` and `bundles/`).
#[derive(Debug, Clone)]
pub struct S3Source {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Source {
    /// Parses `s3://bucket/prefix` and loads credentials and region from the default chain.
    /// `endpoint_url` (or `AWS_ENDPOINT_URL`) points it at an S3-compatible store, with
    /// path-style addressing.
    pub async fn connect(location: &str, endpoint_url: Option<&str>) -> anyhow::Result<S3Source> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        S3Source::new(location, &loader.load().await)
    }

    /// The source with an already loaded SDK configuration.
    pub fn new(location: &str, config: &aws_config::SdkConfig) -> anyhow::Result<S3Source> {
        let Some(rest) = location.strip_prefix("s3://") else {
            anyhow::bail!("{location:?} is not s3://bucket/prefix");
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        if bucket.is_empty() || prefix.is_empty() {
            anyhow::bail!("{location:?}: give both the bucket and the prefix: s3://bucket/prefix");
        }
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(config.endpoint_url().is_some())
            .build();
        Ok(S3Source {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    fn error(&self, message: String) -> SourceError {
        SourceError {
            source_name: self.describe(),
            message,
        }
    }

    async fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
    ) -> Result<Option<(Vec<u8>, String)>, SourceError> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(etag) = if_none_match {
            req = req.if_none_match(etag);
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(304) => {
                return Ok(None);
            }
            Err(e) => {
                let code = e.code().unwrap_or("error").to_string();
                return Err(self.error(format!(
                    "GetObject {key}: {code}: {}",
                    DisplayErrorContext(&e)
                )));
            }
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| self.error(format!("GetObject {key}: reading the body: {e}")))?
            .into_bytes()
            .to_vec();
        Ok(Some((bytes, etag)))
    }
}

impl BundleSource for S3Source {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn fetch(&self, known: Option<&SourceVersion>) -> Result<Option<Fetched>, SourceError> {
        let key = format!("{}/current.json", self.prefix);
        let Some((pointer_bytes, etag)) = self.get(&key, known.map(|v| v.0.as_str())).await? else {
            return Ok(None);
        };
        let version = SourceVersion(etag);
        if known == Some(&version) {
            return Ok(None);
        }
        let pointer: Pointer = serde_json::from_slice(&pointer_bytes)
            .map_err(|e| self.error(format!("{key}: not a valid pointer: {e}")))?;
        // A tombstone: nothing to load (the bundle may be erased already).
        if pointer.is_tombstone() {
            return Ok(Some(Fetched {
                version,
                pointer,
                bytes: Vec::new(),
            }));
        }
        let bundle_key = format!("{}/bundles/{}.json", self.prefix, pointer.digest.hex());
        let Some((bytes, _)) = self.get(&bundle_key, None).await? else {
            return Err(self.error(format!("{bundle_key}: not modified without a condition")));
        };
        Ok(Some(Fetched {
            version,
            pointer,
            bytes,
        }))
    }
    async fn write_status(&self, instance: &str, body: Vec<u8>) -> Result<(), SourceError> {
        let key = format!("{}/status/{instance}.json", self.prefix);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.error(format!("PutObject {key}: {}", DisplayErrorContext(&e))))?;
        Ok(())
    }
}
