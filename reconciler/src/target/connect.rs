//! Choosing a target from the command line: `file://DIR` or `aws`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::manifest::FleetSpec;
use crate::target::aws::{AwsSettings, AwsTarget};
use crate::target::{FileTarget, Target};

/// A connected target: the trait object every stage uses, and where state that belongs
/// next to it lives (the watch daemon's lease).
#[derive(Clone)]
pub struct Connected {
    pub target: Arc<dyn Target>,
    pub home: Home,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("target", &self.target.location())
            .finish_non_exhaustive()
    }
}

/// Where a target's own state lives.
#[derive(Clone, Debug)]
pub enum Home {
    /// `file://DIR`: the directory.
    Dir(PathBuf),
    /// `aws`: the hub account, through its S3 client.
    Hub(aws_sdk_s3::Client),
}

/// What the connection is for: only `apply` (and the daemon) create a missing `file://`
/// directory ([`FileTarget::create_if_missing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Read,
    Apply,
}

/// What `--target` names, before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    File(String),
    Aws,
}

impl std::str::FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<TargetSpec, String> {
        match s {
            "aws" => Ok(TargetSpec::Aws),
            _ => match s.strip_prefix("file://") {
                Some(dir) if !dir.is_empty() => Ok(TargetSpec::File(dir.to_string())),
                _ => Err(format!(
                    "unsupported target {s:?}: use file://DIR (a local directory in the accounts' S3 layout) \
                     or aws (each account's bucket from fleet.yaml, through its assumed role)"
                )),
            },
        }
    }
}

/// How the accounts are reached, beyond fleet.yaml: the command line's settings.
#[derive(Debug, Clone)]
pub struct Access {
    /// S3 and STS endpoint (moto, an S3-compatible store); `None`: `AWS_ENDPOINT_URL` or AWS.
    pub endpoint_url: Option<String>,
    /// Replaces fleet.yaml's `roleName` (`--role-name`).
    pub role_name: Option<String>,
    /// The longest one attempt of one AWS call may take; a timed-out attempt is retried
    /// like a throttled one (`--request-timeout`).
    pub request_timeout: std::time::Duration,
}

impl Default for Access {
    fn default() -> Access {
        Access {
            endpoint_url: None,
            role_name: None,
            request_timeout: std::time::Duration::from_secs(20),
        }
    }
}

impl TargetSpec {
    /// Connects: for `aws`, loads the hub's credentials and takes the role name, ExternalId,
    /// session length and bucket layout from `fleet`; the session name carries `commit`.
    /// `role_name` replaces fleet.yaml's `roleName` (a read-only role for plans and drift).
    pub async fn connect(
        &self,
        fleet: Option<&FleetSpec>,
        commit: &str,
        access: &Access,
        purpose: Purpose,
    ) -> anyhow::Result<Connected> {
        match self {
            TargetSpec::File(dir) => {
                let mut target = FileTarget::new(dir);
                if purpose == Purpose::Apply {
                    target = target.create_if_missing();
                }
                Ok(Connected {
                    home: Home::Dir(target.root().to_path_buf()),
                    target: Arc::new(target),
                })
            }
            TargetSpec::Aws => {
                let Some(fleet) = fleet else {
                    anyhow::bail!(
                        "--target aws needs the repo's fleet.yaml (role, ExternalId, bucket)"
                    );
                };
                let mut settings = AwsSettings::from_fleet(fleet, commit);
                settings.endpoint_url = access.endpoint_url.clone();
                settings.request_timeout = access.request_timeout;
                if let Some(role) = access.role_name.as_deref() {
                    if role.is_empty() || role.contains(['/', ':', ' ']) {
                        anyhow::bail!(
                            "--role-name {role:?}: give a role's name (no path or ARN); it is assumed as arn:aws:iam::<account id>:role/<name>"
                        );
                    }
                    settings.role_name = role.to_string();
                }
                let target = AwsTarget::connect(settings).await?;
                Ok(Connected {
                    home: Home::Hub(target.hub_s3()),
                    target: Arc::new(target),
                })
            }
        }
    }
}
