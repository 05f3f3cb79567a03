//! Choosing a target from the command line: `file://DIR` or `aws`.

use fleetgate_bundle::{Bundle, Digest};

use crate::aws::{AwsSettings, AwsTarget};
use crate::manifest::FleetSpec;
use crate::target::{
    AccountRef, Bootstrapped, ETag, FileTarget, InstanceReport, Pointer, Target, TargetError,
};

/// Either target, behind one type so commands need not be generic.
#[derive(Debug)]
pub enum AnyTarget {
    File(FileTarget),
    Aws(Box<AwsTarget>),
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

impl TargetSpec {
    /// Connects: for `aws`, loads the hub's credentials and takes the role name, ExternalId,
    /// session length and bucket layout from `fleet`; the session name carries `commit`.
    /// `role_name` replaces fleet.yaml's `roleName` (a read-only role for plans and drift).
    pub async fn connect(
        &self,
        fleet: Option<&FleetSpec>,
        commit: &str,
        endpoint_url: Option<&str>,
        role_name: Option<&str>,
    ) -> anyhow::Result<AnyTarget> {
        match self {
            TargetSpec::File(dir) => Ok(AnyTarget::File(FileTarget::new(dir))),
            TargetSpec::Aws => {
                let Some(fleet) = fleet else {
                    anyhow::bail!(
                        "--target aws needs the repo's fleet.yaml (role, ExternalId, bucket)"
                    );
                };
                let mut settings = AwsSettings::from_fleet(fleet, commit);
                settings.endpoint_url = endpoint_url.map(str::to_string);
                if let Some(role) = role_name {
                    if role.is_empty() || role.contains(['/', ':', ' ']) {
                        anyhow::bail!(
                            "--role-name {role:?}: give a role's name (no path or ARN); it is assumed as arn:aws:iam::<account id>:role/<name>"
                        );
                    }
                    settings.role_name = role.to_string();
                }
                Ok(AnyTarget::Aws(Box::new(
                    AwsTarget::connect(settings).await?,
                )))
            }
        }
    }
}

impl Target for AnyTarget {
    fn location(&self) -> String {
        match self {
            AnyTarget::File(t) => Target::location(t),
            AnyTarget::Aws(t) => t.location(),
        }
    }

    async fn deployed_accounts(&self) -> Result<Vec<String>, TargetError> {
        match self {
            AnyTarget::File(t) => Target::deployed_accounts(t).await,
            AnyTarget::Aws(t) => t.deployed_accounts().await,
        }
    }

    async fn read_pointer(
        &self,
        account: &AccountRef,
    ) -> Result<Option<(Pointer, ETag)>, TargetError> {
        match self {
            AnyTarget::File(t) => Target::read_pointer(t, account).await,
            AnyTarget::Aws(t) => t.read_pointer(account).await,
        }
    }

    async fn read_bundle(
        &self,
        account: &AccountRef,
        digest: &Digest,
    ) -> Result<Option<Bundle>, TargetError> {
        match self {
            AnyTarget::File(t) => Target::read_bundle(t, account, digest).await,
            AnyTarget::Aws(t) => t.read_bundle(account, digest).await,
        }
    }

    async fn write_bundle(
        &self,
        account: &AccountRef,
        canonical: &[u8],
    ) -> Result<bool, TargetError> {
        match self {
            AnyTarget::File(t) => Target::write_bundle(t, account, canonical).await,
            AnyTarget::Aws(t) => t.write_bundle(account, canonical).await,
        }
    }

    async fn write_pointer(
        &self,
        account: &AccountRef,
        pointer: &Pointer,
        expected: Option<&ETag>,
    ) -> Result<ETag, TargetError> {
        match self {
            AnyTarget::File(t) => Target::write_pointer(t, account, pointer, expected).await,
            AnyTarget::Aws(t) => t.write_pointer(account, pointer, expected).await,
        }
    }

    async fn read_statuses(
        &self,
        account: &AccountRef,
    ) -> Result<Vec<InstanceReport>, TargetError> {
        match self {
            AnyTarget::File(t) => Target::read_statuses(t, account).await,
            AnyTarget::Aws(t) => t.read_statuses(account).await,
        }
    }

    async fn pointer_history(
        &self,
        account: &AccountRef,
        limit: usize,
    ) -> Result<Vec<Pointer>, TargetError> {
        match self {
            AnyTarget::File(t) => Target::pointer_history(t, account, limit).await,
            AnyTarget::Aws(t) => t.pointer_history(account, limit).await,
        }
    }

    async fn bootstrap(&self, account: &AccountRef) -> Result<Bootstrapped, TargetError> {
        match self {
            AnyTarget::File(t) => t.bootstrap(account).await,
            AnyTarget::Aws(t) => t.bootstrap(account).await,
        }
    }
}
