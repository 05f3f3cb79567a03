//! Reading notification credentials: an environment variable `FLEETGATE_*`, or a file inside
//! the notification secrets directory; nothing else.

use crate::config::manifest::NotifySecret;
use crate::config::notifications::check_reference;

/// Where a credential is read from: the process environment and the secrets directory.
#[derive(Debug, Clone)]
pub struct SecretStore {
    /// `FLEETGATE_NOTIFY_SECRETS_DIR`, default `/var/run/secrets/fleetgate`.
    pub dir: std::path::PathBuf,
}

impl Default for SecretStore {
    fn default() -> Self {
        SecretStore {
            dir: std::env::var_os("FLEETGATE_NOTIFY_SECRETS_DIR")
                .map(Into::into)
                .unwrap_or_else(|| "/var/run/secrets/fleetgate".into()),
        }
    }
}

impl SecretStore {
    /// The secret's value, trimmed; the error names the reference, never a value.
    pub fn read(&self, r: &NotifySecret) -> Result<String, String> {
        if let Some(why) = check_reference(r) {
            return Err(why);
        }
        let value = match r {
            NotifySecret::Env(name) => {
                std::env::var(name).map_err(|_| format!("{r} is not set"))?
            }
            NotifySecret::File(path) => {
                let full = self.dir.join(path);
                let meta = std::fs::metadata(&full)
                    .map_err(|e| format!("{r} (in {}): {e}", self.dir.display()))?;
                if meta.len() > 64 * 1024 {
                    return Err(format!("{r} is over 64 KiB"));
                }
                std::fs::read_to_string(&full)
                    .map_err(|e| format!("{r} (in {}): {e}", self.dir.display()))?
            }
        };
        let value = value.trim().to_string();
        if value.is_empty() {
            return Err(format!("{r} is empty"));
        }
        Ok(value)
    }
}
