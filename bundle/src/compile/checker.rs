//! The [`Checker`] that every check of [`compile`](super) reports to, with the checks
//! shared by the bundle's sections: names, durations, header names, URLs, hosts, secret
//! references and account ids.
//!
//! Imports [`types`](super::types) (the paths and errors it records), [`crate::bundle`] and
//! [`crate::duration`]; [`gateway`](super::gateway), [`idp`](super::idp) and the parent
//! import it.

use crate::bundle::SecretRef;
use crate::duration::Duration;

use super::types::{BundlePath, CompileError};

pub(super) struct Checker {
    pub(super) errors: Vec<CompileError>,
}

impl Checker {
    pub(super) fn err(&mut self, path: &BundlePath, message: impl Into<String>) {
        self.errors.push(CompileError {
            path: path.clone(),
            message: message.into(),
        });
    }

    pub(super) fn name(&mut self, path: &BundlePath, what: &str, name: &str) {
        if name.is_empty() {
            self.err(path, format!("{what} name must not be empty"));
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-/".contains(&b))
        {
            self.err(
                path,
                format!("{what} name {name:?} may only use letters, digits and . _ : - /"),
            );
        }
    }

    pub(super) fn positive(&mut self, path: &BundlePath, what: &str, d: Duration) {
        if d.is_zero() {
            self.err(path, format!("{what} must be greater than zero"));
        }
    }

    pub(super) fn header_name(&mut self, path: &BundlePath, name: &str) {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.err(path, format!("{name:?} is not a valid HTTP header name"));
        }
    }

    pub(super) fn url(&mut self, path: &BundlePath, what: &str, raw: &str) -> Option<url::Url> {
        // Before anything that quotes the URL: credentials in it must not reach a message.
        let authority = raw.split_once("://").map_or(raw, |(_, rest)| rest);
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            self.err(
                path,
                format!("{what} must not carry credentials in the URL (value not shown)"),
            );
            return None;
        }
        match url::Url::parse(raw) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                self.err(
                    path,
                    format!("{what} {raw:?} must be an http:// or https:// URL"),
                );
                None
            }
            Ok(u) if u.host().is_none() => {
                self.err(path, format!("{what} {raw:?} has no host"));
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                // Credentials in a URL end up in logs and plans: keep them in secret refs.
                self.err(
                    path,
                    format!("{what} must not carry credentials in the URL"),
                );
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                self.err(
                    path,
                    format!("{what} {raw:?} must not have a query or fragment"),
                );
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                self.err(path, format!("{what} {raw:?} is not a valid URL: {e}"));
                None
            }
        }
    }

    pub(super) fn host(&mut self, path: &BundlePath, host: &str) {
        let ok = !host.is_empty()
            && host.len() <= 253
            && !host.contains(['/', ':', '*', ' '])
            && url::Host::parse(host).is_ok();
        if ok && (!host.is_ascii() || host.bytes().any(|b| b.is_ascii_uppercase() || b == b'%')) {
            // Requests carry the lowercase ASCII (punycode) form; anything else never matches.
            self.err(path, format!("{host:?}: write host names in lowercase ASCII (punycode for international names)"));
        } else if !ok {
            self.err(
                path,
                format!("{host:?} is not a host name (no scheme, port, path or wildcard)"),
            );
        }
    }

    pub(super) fn secret_ref(&mut self, path: &BundlePath, r: &SecretRef) {
        let (SecretRef::File(v) | SecretRef::Env(v) | SecretRef::AwsSecretsManager(v)) = r;
        if v.contains("-----BEGIN") || v.contains(['\n', '\r']) {
            // A key pasted where its reference belongs: say so without quoting it.
            self.err(
                path,
                "holds secret material instead of a reference to it: name the file, \
                 environment variable or Secrets Manager secret that holds it (value not shown)",
            );
            return;
        }
        match r {
            SecretRef::File(p) if !p.starts_with('/') => {
                self.err(path, format!("secret file {p:?} must be an absolute path"))
            }
            SecretRef::Env(v)
                if v.is_empty()
                    || v.as_bytes()[0].is_ascii_digit()
                    || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                self.err(path, format!("{v:?} is not an environment variable name"))
            }
            SecretRef::AwsSecretsManager(arn) => {
                // arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
                let parts: Vec<&str> = arn.splitn(7, ':').collect();
                let ok = parts.len() == 7
                    && parts[0] == "arn"
                    && parts[1].starts_with("aws")
                    && parts[2] == "secretsmanager"
                    && !parts[3].is_empty()
                    && is_account_id(parts[4])
                    && parts[5] == "secret"
                    && !parts[6].is_empty();
                if !ok {
                    self.err(
                        path,
                        format!(
                            "{arn:?} is not a Secrets Manager secret ARN \
                             (arn:aws:secretsmanager:<region>:<account id>:secret:<name>)"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}
