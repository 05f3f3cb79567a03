//! The token endpoint's pure parts: the request (RFC 6749 §4.4, client authenticated by
//! `client_secret_basic` or `client_secret_post`), its RFC 6749 §5.2 errors, the scope
//! decision and the access token's claims (RFC 9068).
//!
//! Imports nothing of this crate.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fleetgate_bundle::bundle::AccountInfo;
use fleetgate_bundle::sensitive::Sensitive;
use http::StatusCode;
use http::header::{self, HeaderMap};
use serde_json::{Map, Value, json};

/// An RFC 6749 §5.2 error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// Ask for Basic credentials (`WWW-Authenticate`), after a failed Basic attempt.
    pub challenge: bool,
}

impl OAuthError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
    ) -> Self {
        OAuthError {
            status,
            code,
            description: description.into(),
            challenge: false,
        }
    }

    pub(super) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// One message for an unknown client and a wrong secret: which one it was is not
    /// the caller's to learn.
    pub(super) fn invalid_client(basic: bool) -> Self {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            description: "client authentication failed".into(),
            challenge: basic,
        }
    }
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Post,
}

/// A parsed token request. The secret is [`Sensitive`]: no `Debug` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: Sensitive<String>,
    pub method: AuthMethod,
    /// The `scope` parameter as sent (space-delimited), if any.
    pub scope: Option<String>,
}

fn decode_component(s: &str) -> Option<String> {
    // RFC 6749 §2.3.1: Basic credentials are form-urlencoded first.
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Reads a token request from its headers and form body (pure).
pub fn parse_token_request(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        if v.is_empty() {
            // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
            continue;
        }
        if params.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} is given more than once"
            )));
        }
    }
    match params.get("grant_type").map(String::as_str) {
        None => return Err(OAuthError::invalid_request("grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only the client_credentials grant is supported",
            ));
        }
    }
    let basic = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or_default();
            let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError {
                    challenge: true,
                    ..OAuthError::invalid_client(true)
                });
            }
            let decoded = STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let pair = decoded.as_deref().and_then(|d| d.split_once(':'));
            let Some((id, secret)) = pair
                .and_then(|(id, secret)| Some((decode_component(id)?, decode_component(secret)?)))
            else {
                return Err(OAuthError::invalid_client(true));
            };
            Some((id, secret))
        }
    };
    let posted = params.contains_key("client_secret");
    let (client_id, client_secret, method) = match basic {
        Some(_) if posted => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not both Basic and client_secret",
            ));
        }
        Some((id, secret)) => {
            if params.get("client_id").is_some_and(|p| *p != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the Basic credentials",
                ));
            }
            (id, secret, AuthMethod::Basic)
        }
        None => match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone(), AuthMethod::Post),
            _ => {
                return Err(OAuthError {
                    challenge: true,
                    ..OAuthError::invalid_client(false)
                });
            }
        },
    };
    if client_id.is_empty() {
        return Err(OAuthError::invalid_client(method == AuthMethod::Basic));
    }
    Ok(TokenRequest {
        client_id,
        client_secret: Sensitive(client_secret),
        method,
        scope: params.get("scope").cloned(),
    })
}

/// The scopes to grant (pure): the requested ones, each allowed for the client, or all of
/// the client's scopes when none are requested (RFC 6749 §3.3's pre-defined default).
pub fn grant_scopes(
    requested: Option<&str>,
    allowed: &[String],
) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.to_vec());
    };
    let mut granted = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == s) {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope {s:?} is not allowed for this client"),
            ));
        }
        if !granted.iter().any(|g| g == s) {
            granted.push(s.to_string());
        }
    }
    Ok(granted)
}

/// What a token request was granted.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    pub client_id: &'a str,
    pub scopes: &'a [String],
    pub ttl: Duration,
}

/// The access token's claims (pure).
pub fn claims(
    issuer: &str,
    audiences: &[String],
    account: &AccountInfo,
    grant: Grant<'_>,
    now: u64,
    jti: &str,
) -> Map<String, Value> {
    let Grant {
        client_id,
        scopes,
        ttl,
    } = grant;
    let aud = match audiences {
        [one] => Value::from(one.as_str()),
        many => Value::from(many.to_vec()),
    };
    let claims = json!({
        "iss": issuer,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "nbf": now,
        "exp": now + ttl.as_secs().max(1),
        "jti": jti,
        "client_id": client_id,
        "scope": scopes.join(" "),
        "tenant": account.tenant,
        "account": account.name,
        "account_id": account.id,
    });
    match claims {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
