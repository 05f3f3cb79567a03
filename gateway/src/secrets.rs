//! The secrets a bundle refers to: the embedded IdP's signing keys and client secret hashes.
//! A bundle holds only where they are ([`SecretRef`]): a file, an environment variable, or
//! an AWS Secrets Manager secret read with the gateway's own role.
//!
//! They are read when a bundle is loaded, all at once and concurrently, before the bundle
//! is swapped in. A secret that cannot be read is not fatal to the bundle (public routes
//! and other issuers keep working) but its issuer or client is unavailable, and the gateway
//! tries again at every poll until it can read it (a throttled or briefly unreachable
//! Secrets Manager heals by itself). Values are held as [`Sensitive`], so no `Debug` or
//! log line can print them; errors name the reference, never the value.
//!
//! Imports [`crate::aws`] only.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;

use aws_config::BehaviorVersion;

use fleetgate_bundle::bundle::{Bundle, ClientSecret, SecretRef};
use fleetgate_bundle::sensitive::Sensitive;

/// Reads one secret. The real one is [`Secrets`]; tests may count calls.
pub trait SecretStore: Send + Sync {
    fn read<'a>(
        &'a self,
        r: &'a SecretRef,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;
}

/// The parts of an `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArn<'a> {
    pub region: &'a str,
    pub account: &'a str,
    /// The secret's name (with AWS's random suffix when the ARN is a full one).
    pub name: &'a str,
}

impl<'a> SecretArn<'a> {
    pub fn parse(arn: &'a str) -> Option<SecretArn<'a>> {
        let parts: Vec<&str> = arn.splitn(7, ':').collect();
        (parts.len() == 7
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "secretsmanager"
            && !parts[3].is_empty()
            && parts[5] == "secret"
            && !parts[6].is_empty())
        .then(|| SecretArn {
            region: parts[3],
            account: parts[4],
            name: parts[6],
        })
    }
}

/// Files, environment variables and AWS Secrets Manager.
///
/// With `dir` set, Secrets Manager references are read from `dir/<secret name>` instead of
/// the API: the layout of a Secrets Store CSI driver or External Secrets mount, and what
/// `fleetgate up` writes for the local fleet.
pub struct Secrets {
    dir: Option<PathBuf>,
    endpoint_url: Option<String>,
    config: tokio::sync::OnceCell<aws_config::SdkConfig>,
    /// One client per region (the region comes from the ARN).
    clients: Mutex<HashMap<String, aws_sdk_secretsmanager::Client>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("dir", &self.dir)
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets::new(None, None)
    }
}

impl Secrets {
    /// `endpoint_url`: a Secrets Manager-compatible endpoint (tests: moto).
    pub fn new(dir: Option<PathBuf>, endpoint_url: Option<String>) -> Secrets {
        Secrets {
            dir,
            endpoint_url,
            config: tokio::sync::OnceCell::new(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// With an already loaded SDK configuration (credentials, endpoint) for Secrets Manager.
    pub fn with_config(dir: Option<PathBuf>, config: aws_config::SdkConfig) -> Secrets {
        Secrets {
            dir,
            endpoint_url: None,
            config: tokio::sync::OnceCell::new_with(Some(config)),
            clients: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self, region: &str) -> aws_sdk_secretsmanager::Client {
        let config = self
            .config
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(crate::aws::https_client());
                if let Some(url) = &self.endpoint_url {
                    loader = loader.endpoint_url(url);
                }
                loader.load().await
            })
            .await;
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let conf = aws_sdk_secretsmanager::config::Builder::from(config)
                    .region(aws_sdk_secretsmanager::config::Region::new(
                        region.to_string(),
                    ))
                    .build();
                aws_sdk_secretsmanager::Client::from_conf(conf)
            })
            .clone()
    }

    async fn read_secrets_manager(&self, arn: &str) -> Result<String, String> {
        use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
        let parsed = SecretArn::parse(arn).ok_or_else(|| format!("{arn:?} is not a secret ARN"))?;
        if let Some(dir) = &self.dir {
            let path = dir_path(dir, parsed.name)
                .ok_or_else(|| format!("secret {arn}: name cannot be a path under {dir:?}"))?;
            return read_file(&path)
                .map_err(|e| format!("secret {arn} (from {}): {e}", path.display()));
        }
        let client = self.client(parsed.region).await;
        let out = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                let code = e.code().unwrap_or("error");
                let message = e.message().map(|m| format!(": {m}")).unwrap_or_default();
                format!("secret {arn}: {code}{message}")
            })?;
        if let Some(s) = out.secret_string {
            return Ok(s);
        }
        match out.secret_binary {
            Some(b) => String::from_utf8(b.into_inner())
                .map_err(|_| format!("secret {arn}: the binary value is not UTF-8 text")),
            None => Err(format!("secret {arn}: no value")),
        }
    }
}

fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| e.kind().to_string())
}

/// `dir/name`, where `name` (which may hold `/`) stays below `dir`.
pub fn dir_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let rel = Path::new(name);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

impl SecretStore for Secrets {
    fn read<'a>(
        &'a self,
        r: &'a SecretRef,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async move {
            match r {
                SecretRef::File(p) => {
                    read_file(Path::new(p)).map_err(|e| format!("secret file {p}: {e}"))
                }
                SecretRef::Env(v) => {
                    std::env::var(v).map_err(|_| format!("environment variable {v} is not set"))
                }
                SecretRef::AwsSecretsManager(arn) => self.read_secrets_manager(arn).await,
            }
        })
    }
}

/// Every secret a bundle refers to, read: the value, or why it could not be had.
#[derive(Debug, Default, Clone)]
pub struct Resolved {
    values: HashMap<SecretRef, Result<Sensitive<String>, String>>,
}

impl Resolved {
    pub fn get(&self, r: &SecretRef) -> Result<&str, String> {
        match self.values.get(r) {
            Some(Ok(v)) => Ok(v.expose().as_str()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("{r} was not read")),
        }
    }

    /// The references that could not be read, with why.
    pub fn failures(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .values
            .values()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        v.sort();
        v
    }

    /// A set of values given directly (tests of pure logic).
    pub fn from_values(values: impl IntoIterator<Item = (SecretRef, String)>) -> Resolved {
        Resolved {
            values: values
                .into_iter()
                .map(|(k, v)| (k, Ok(Sensitive(v))))
                .collect(),
        }
    }
}

/// The references of a bundle: the local issuer's signing keys, then clients' secrets.
pub fn references(bundle: &Bundle) -> Vec<&SecretRef> {
    let idp = &bundle.idp;
    let mut refs: Vec<&SecretRef> = idp
        .issuer
        .iter()
        .flat_map(|i| i.signing_keys.all().map(|(_, k)| &k.private_key))
        .collect();
    refs.extend(idp.clients.iter().filter_map(|c| match &c.secret {
        ClientSecret::Ref(r) => Some(r),
        ClientSecret::Argon2Hash(_) => None,
    }));
    refs.sort_by_key(|r| r.to_string());
    refs.dedup();
    refs
}

/// Reads every secret of `bundle`, concurrently.
pub async fn resolve(bundle: &Bundle, store: &dyn SecretStore) -> Resolved {
    let refs = references(bundle);
    let values = futures::future::join_all(refs.into_iter().map(|r| async move {
        let v = store.read(r).await.map(|s| Sensitive(s.trim().to_string()));
        (r.clone(), v)
    }))
    .await;
    Resolved {
        values: values.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_split_into_region_account_and_name() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:fleetgate/idp/key-AbCdEf";
        assert_eq!(
            SecretArn::parse(arn),
            Some(SecretArn {
                region: "eu-west-1",
                account: "123456789012",
                name: "fleetgate/idp/key-AbCdEf"
            })
        );
        assert_eq!(SecretArn::parse("arn:aws:s3:::bucket"), None);
        assert_eq!(
            SecretArn::parse("arn:aws:secretsmanager:eu-west-1:1:secret:"),
            None
        );
    }

    #[test]
    fn a_secret_name_never_leaves_the_directory() {
        let dir = Path::new("/run/secrets");
        assert_eq!(
            dir_path(dir, "fleetgate/idp/key"),
            Some(PathBuf::from("/run/secrets/fleetgate/idp/key"))
        );
        assert_eq!(dir_path(dir, "../etc/passwd"), None);
        assert_eq!(dir_path(dir, "a/../../b"), None);
        assert_eq!(dir_path(dir, "/etc/passwd"), None);
    }

    #[tokio::test]
    async fn a_secrets_dir_stands_in_for_secrets_manager_and_errors_never_quote_values() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("fleetgate/idp")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("fleetgate/idp/key"), "PEM-VALUE\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let secrets = Secrets::new(Some(dir.path().to_path_buf()), None);
        let found = SecretRef::AwsSecretsManager(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:fleetgate/idp/key".into(),
        );
        let missing = SecretRef::AwsSecretsManager(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:fleetgate/idp/none".into(),
        );
        assert_eq!(secrets.read(&found).await.as_deref(), Ok("PEM-VALUE\n"));
        let e = secrets.read(&missing).await.unwrap_err();
        assert!(
            e.contains("fleetgate/idp/none") && e.contains("not found"),
            "{e}"
        );
    }
}
