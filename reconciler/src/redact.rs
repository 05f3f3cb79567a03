//! The one redaction point: every text that leaves the program (diagnostics, plans, error
//! messages, logs) goes through [`scrub`], which recognises secret material by its shape and
//! replaces it with a keyed fingerprint `(sensitive:xxxxxxxxxxxx)`.
//!
//! Fields the schema marks secret (`Sensitive<T>`, `x-fleetgate-sensitive`) are redacted by
//! type where bundles are serialized for display ([`fleetgate_bundle::sensitive::redacting`]);
//! this module catches the rest: a secret pasted where it does not belong (a private key
//! inline in a flag description, a token in a backend URL) and echoed by a parser's error or
//! shown in a diff. Recognised shapes:
//! - PEM blocks (`-----BEGIN ...-----` to `-----END ...-----`, also cut short) and base64 DER
//!   private keys without their armour;
//! - private JWK members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`, `oth`);
//! - password hashes: argon2, bcrypt, scrypt, pbkdf2, yescrypt, sha-crypt, md5-crypt;
//! - URL userinfo, URL query and fragment values, webhook URLs whose path is the secret;
//! - tokens of well-known shape: AWS access key ids, GitHub, GitLab, Slack, Stripe, Google,
//!   npm, PyPI, SendGrid, OpenAI/Anthropic-style keys, JWTs, `Bearer`/`Basic` credentials;
//! - assignments to secret-named keys (`password=...`, `"client_secret": "..."`).
//!
//! Digests (`sha256:<hex>`), commit ids and public keys (a JWK's `n`, a certificate) are not
//! secrets and are left alone: no rule matches bare hex or arbitrary base64.
//!
//! The fingerprint is the HMAC of the secret under a key that is random per run (or
//! FLEETGATE_REDACTION_KEY): equal secrets print equal fingerprints within one run, so a
//! reader still tells "changed" from "unchanged", and nothing can be looked up across runs.
//!
//! A printed line is also made safe to show: [`one_line`] writes line breaks as spaces and
//! control and bidi characters as visible escapes, so a text from a pull request cannot
//! rewrite a terminal or a CI log.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{LazyLock, OnceLock};

use fleetgate_bundle::sensitive::fingerprint;
use regex::{Captures, Regex, RegexSet};
use serde_json::Value;

/// The prefix of every fingerprint; no rule matches a text that starts with it, so scrubbing
/// is idempotent.
const MARK: &str = "(sensitive:";

/// The redaction key of this run: FLEETGATE_REDACTION_KEY when set (outputs that must
/// compare across runs; keep it secret), else 32 random bytes drawn once per process.
pub fn run_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        if let Some(key) = std::env::var_os("FLEETGATE_REDACTION_KEY").filter(|k| !k.is_empty()) {
            return key.as_encoded_bytes().to_vec();
        }
        let mut key = vec![0u8; 32];
        if let Err(e) = getrandom::fill(&mut key) {
            // A key derived from anything guessable (time, pid) would let a fingerprint be
            // checked against guesses of a short secret: better to print nothing at all.
            panic!("no randomness for the redaction key ({e}); set FLEETGATE_REDACTION_KEY");
        }
        key
    })
}

/// [`scrub`] with this run's key.
pub fn scrub_run(text: &str) -> Cow<'_, str> {
    scrub(text, run_key())
}

fn fp(key: &[u8], secret: &str) -> String {
    fingerprint(key, secret.as_bytes())
}

/// A PEM block, whole or cut short: the armour line, then everything up to the matching END
/// line; without an END line, the base64 body that follows (lines joined by real or
/// JSON-escaped newlines).
const PEM: &str = concat!(
    r"-----BEGIN[A-Z0-9 ]*(?:-{1,5})?",
    r"(?:(?s:.*?)-----END[A-Z0-9 ]*-----",
    r"|(?:(?:\r?\n|\\r|\\n|[ \t])*[A-Za-z0-9+/=:,-]+)*)",
);

/// DER private keys in base64 without the PEM armour: PKCS#1 and PKCS#8 RSA
/// (`SEQUENCE { INTEGER 0 ...` with a two-byte length), PKCS#8 EC with a one-byte length,
/// SEC1 EC, PKCS#8 Ed25519/X25519. Certificates and public keys start differently.
const DER_KEY: &str = concat!(
    r"\b(?:MII[A-Za-z0-9+/]{2}[AQgw]IBA|MIG[A-Za-z0-9+/]AgEA|MHcCAQEE|MC4CAQAwBQYDK2V[wx])",
    r"(?:(?:\r?\n|\\r|\\n)?[A-Za-z0-9+/=]+)*",
);

/// A URL with userinfo, a query or a fragment (the parts that can carry a credential):
/// scheme, then everything up to a character that ends a URL in prose, JSON, YAML flow or a
/// Rust debug string.
const URL: &str = r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\x22'`<>\\@?#]*[@?#][^\s\x22'`<>\\]*";

/// Webhook URLs whose path is the credential.
const WEBHOOK: &str = concat!(
    r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+",
    r"|(discord(?:app)?\.com/api/webhooks/)[A-Za-z0-9/_-]+",
    r"|(webhook\.office\.com/webhookb2/)[A-Za-z0-9/@_-]+",
);

/// Password hashes in modular crypt format.
const HASH: &str = concat!(
    r"\$(?:argon2(?:id|i|d)\$(?:v=\d+\$)?m=|scrypt\$ln=|pbkdf2(?:-sha\d+)?\$\d+\$|(?:y|gy|7)\$[./A-Za-z0-9]{4})",
    r"[^\s`'<>\x22;)\]}]+",
    r"|\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{20,}",
    r"|\$[156]\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{16,}",
);

/// Tokens whose shape gives them away.
const TOKEN: &str = concat!(
    // AWS access key ids (long-term, temporary, and their kin).
    r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
    // GitHub (classic, OAuth, user, server, refresh; fine-grained), GitLab.
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}",
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"|\bglpat-[A-Za-z0-9_-]{20,}",
    // Slack tokens.
    r"|\bxox[abposer]-[A-Za-z0-9-]{10,}",
    // Stripe secret and restricted keys, webhook secrets.
    r"|\b[rs]k_(?:live|test)_[A-Za-z0-9]{10,}",
    r"|\bwhsec_[A-Za-z0-9+/=]{20,}",
    // Google API keys, OAuth client secrets and access tokens.
    r"|\bAIza[0-9A-Za-z_-]{35}",
    r"|\bGOCSPX-[A-Za-z0-9_-]{20,}",
    r"|\bya29\.[A-Za-z0-9_-]{20,}",
    // npm, PyPI, SendGrid, Twilio API keys.
    r"|\bnpm_[A-Za-z0-9]{36}",
    r"|\bpypi-AgE[A-Za-z0-9_-]{40,}",
    r"|\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",
    r"|\bSK[0-9a-fA-F]{32}\b",
    // OpenAI and Anthropic style keys.
    r"|\bsk-(?:proj|svcacct|admin|ant-[a-z0-9]+)-[A-Za-z0-9_-]{20,}",
    r"|\bsk-[A-Za-z0-9]{40,}",
    // JSON Web Tokens (the signature may be empty: alg none).
    r"|\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
);

/// `Bearer <credential>` and `Basic <credential>`.
const AUTH_SCHEME: &str = r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/-]+=*)";

/// `"oth": [...]` of a multi-prime RSA key: every member is private.
const JWK_OTH: &str = r#"((?:\\?")?\both(?:\\?")?\s*[:=]\s*)\[[^\]]*\]"#;

/// Private members of a JWK (`"d": "..."`, `d: ...`): the private exponent and CRT values
/// of RSA, the private scalar of EC and OKP, a symmetric key.
const JWK_PRIVATE: &str =
    r#"(\b|")((?:d|p|q|dp|dq|qi|k)(?:\\?")?\s*[:=]\s*(?:\\?")?)([A-Za-z0-9_+/=-]{16,})"#;

/// Names of keys whose value is a secret, in assignments and JSON members.
const SECRET_KEYS: &str = concat!(
    r"(?:password|passwd|passphrase|pwd|secret|client_?secret|api_?key|x-api-key|apikey",
    r"|access_?token|refresh_?token|id_?token|auth_?token|session_?token|token",
    r"|secret_?key|access_?key|secret_?access_?key|aws_secret_access_key|private_?key",
    r"|account_?key|shared_?access_?key|sig|signature|credentials?)",
);

/// The rules, in the order they apply: armoured and DER keys first (their bodies would
/// otherwise be cut up by later rules), then URLs, hashes, tokens and assignments.
#[derive(Clone, Copy)]
enum Rule {
    Pem,
    DerKey,
    Url,
    Webhook,
    Hash,
    Token,
    AuthScheme,
    JwkOth,
    JwkPrivate,
    /// `"name": "value"` (JSON, YAML flow, debug strings), with JSON escapes in the value.
    Quoted,
    /// `name=value` (query strings, env files, connection strings).
    Assign,
}

struct Rules {
    /// One pass over the text tells which rules have anything to do.
    set: RegexSet,
    rules: Vec<(Rule, Regex)>,
}

static RULES: LazyLock<Rules> = LazyLock::new(|| {
    // The value ends at its closing quote, escaped (`\"`, JSON inside a JSON string) or not.
    let quoted =
        format!(r#"(?i)(\\?"{SECRET_KEYS}\\?"\s*:\s*\\?")([^"\\(][^"\\]*(?:\\[^"][^"\\]*)*)"#);
    let assign =
        format!(r"(?i)(\b{SECRET_KEYS}\s*=\s*)([^\s\x22'`&;,)}}\]<>\\(][^\s\x22'`&;,)}}\]<>\\]*)");
    let patterns: Vec<(Rule, String)> = vec![
        (Rule::Pem, PEM.into()),
        (Rule::DerKey, DER_KEY.into()),
        (Rule::Url, URL.into()),
        (Rule::Webhook, WEBHOOK.into()),
        (Rule::Hash, HASH.into()),
        (Rule::Token, TOKEN.into()),
        (Rule::AuthScheme, AUTH_SCHEME.into()),
        (Rule::JwkOth, JWK_OTH.into()),
        (Rule::JwkPrivate, JWK_PRIVATE.into()),
        (Rule::Quoted, quoted),
        (Rule::Assign, assign),
    ];
    // Word boundaries are ASCII ones: every shape is ASCII, and they keep the scan on the
    // fast engines whatever the text holds.
    let patterns: Vec<(Rule, String)> = patterns
        .into_iter()
        .map(|(r, p)| (r, p.replace(r"\b", r"(?-u:\b)")))
        .collect();
    let compile =
        |p: &str| Regex::new(p).unwrap_or_else(|e| unreachable!("redaction pattern {p}: {e}"));
    Rules {
        set: RegexSet::new(patterns.iter().map(|(_, p)| p))
            .unwrap_or_else(|e| unreachable!("redaction patterns: {e}")),
        rules: patterns.iter().map(|(r, p)| (*r, compile(p))).collect(),
    }
});

/// The text with every recognised secret replaced by its fingerprint under `key`.
/// Borrowed when nothing was found.
pub fn scrub<'a>(text: &'a str, key: &[u8]) -> Cow<'a, str> {
    let rules = &*RULES;
    let hits = rules.set.matches(text);
    if !hits.matched_any() {
        return Cow::Borrowed(text);
    }
    let mut out: Cow<'a, str> = Cow::Borrowed(text);
    for (i, (rule, re)) in rules.rules.iter().enumerate() {
        // Rules the first pass did not hit are skipped: what earlier rules put in is a
        // fingerprint, which no rule matches.
        if !hits.matched(i) || !re.is_match(&out) {
            continue;
        }
        let replaced = re
            .replace_all(&out, |c: &Captures<'_>| replace(*rule, c, key))
            .into_owned();
        out = Cow::Owned(replaced);
    }
    match out {
        Cow::Owned(s) if s == text => Cow::Borrowed(text),
        other => other,
    }
}

/// The replacement of one match: the secret part fingerprinted, names around it kept.
fn replace(rule: Rule, c: &Captures<'_>, key: &[u8]) -> String {
    let whole = &c[0];
    match rule {
        Rule::Pem | Rule::DerKey | Rule::Hash | Rule::Token => fp(key, whole),
        Rule::Url => scrub_url(whole, key),
        Rule::Webhook => {
            let prefix = c
                .get(1)
                .or(c.get(2))
                .or(c.get(3))
                .map_or("", |m| m.as_str());
            format!("{prefix}{}", fp(key, &whole[prefix.len()..]))
        }
        Rule::AuthScheme if looks_like_credential(&c[3]) => {
            format!("{}{}{}", &c[1], &c[2], fp(key, &c[3]))
        }
        Rule::AuthScheme => whole.to_string(),
        Rule::JwkOth => format!("{}{}", &c[1], fp(key, whole)),
        Rule::JwkPrivate => format!("{}{}{}", &c[1], &c[2], fp(key, &c[3])),
        Rule::Quoted | Rule::Assign => format!("{}{}", &c[1], fp(key, &c[2])),
    }
}

/// A `Bearer`/`Basic` credential rather than a word that follows the scheme name in prose
/// ("bearer authentication", "basic rate-limiting"): long enough, and with a digit, both
/// cases, or base64 padding.
fn looks_like_credential(s: &str) -> bool {
    let bytes = s.as_bytes();
    s.len() >= 8
        && !s.starts_with(MARK)
        && (s.ends_with('=')
            || bytes.iter().any(u8::is_ascii_digit)
            || (bytes.iter().any(u8::is_ascii_uppercase)
                && bytes.iter().any(u8::is_ascii_lowercase)))
}

/// A URL with its userinfo and the values of its query and fragment fingerprinted; scheme,
/// host, path and parameter names stay readable.
fn scrub_url(url: &str, key: &[u8]) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) if !userinfo.starts_with(MARK) => {
            format!("{}@{host}", fp(key, userinfo))
        }
        _ => authority.to_string(),
    };
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (tail, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(&scrub_params(q, key));
    }
    if let Some(f) = fragment {
        out.push('#');
        // A fragment is an anchor unless it carries parameters (OAuth's implicit flow).
        if f.contains('=') {
            out.push_str(&scrub_params(f, key));
        } else {
            out.push_str(f);
        }
    }
    out
}

fn scrub_params(params: &str, key: &[u8]) -> String {
    params
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((_, value)) if value.is_empty() || value.starts_with(MARK) => p.to_string(),
            Some((name, value)) => format!("{name}={}", fp(key, value)),
            None if p.is_empty() || p.starts_with(MARK) => p.to_string(),
            None => fp(key, p),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Scrubs every string of a JSON value in place: object keys and values, and the private
/// members of any object that is a JWK (has `kty`) whatever their shape.
pub fn scrub_value(value: &mut Value, key: &[u8]) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = scrub(s, key) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_value(v, key)),
        Value::Object(map) => {
            let is_jwk = map.contains_key("kty");
            let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            for (k, mut v) in entries {
                if is_jwk && JWK_PRIVATE_MEMBERS.contains(&k.as_str()) {
                    let text = v.to_string();
                    v = Value::String(fp(key, &text));
                } else {
                    scrub_value(&mut v, key);
                }
                map.insert(scrub(&k, key).into_owned(), v);
            }
        }
        _ => {}
    }
}

const JWK_PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "k", "oth"];

/// [`scrub`] of a text in place.
pub fn scrub_in_place(text: &mut String, key: &[u8]) {
    if let Cow::Owned(clean) = scrub(text, key) {
        *text = clean;
    }
}

/// Scrubs an optional text in place.
pub fn scrub_opt(text: &mut Option<String>, key: &[u8]) {
    if let Some(t) = text {
        scrub_in_place(t, key);
    }
}

/// Standard error for `tracing`'s fmt layer, every event scrubbed before it is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubbedStderr;

/// One event's bytes, scrubbed with the run's key and written to `out` when the event is
/// complete (the fmt layer writes an event, then drops its writer).
#[derive(Debug)]
pub struct ScrubbedEvent<W: std::io::Write> {
    buf: Vec<u8>,
    out: W,
}

impl<W: std::io::Write> ScrubbedEvent<W> {
    pub fn new(out: W) -> ScrubbedEvent<W> {
        ScrubbedEvent {
            buf: Vec::new(),
            out,
        }
    }
}

impl<W: std::io::Write> std::io::Write for ScrubbedEvent<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let clean = scrub_run(&text);
        let result = self.out.write_all(clean.as_bytes());
        self.buf.clear();
        result.and_then(|()| self.out.flush())
    }
}

impl<W: std::io::Write> Drop for ScrubbedEvent<W> {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ScrubbedStderr {
    type Writer = ScrubbedEvent<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedEvent::new(std::io::stderr())
    }
}

/// Characters that are never written as they are: controls (C0, DEL, C1: ESC starts a
/// terminal escape sequence, CR rewrites a line), the Unicode line and paragraph separators,
/// and the bidirectional controls that make text read in another order than it is stored.
pub(crate) fn hostile(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// The string on one line with nothing hidden: a line break or tab becomes a space, any
/// other [`hostile`] character its visible escape (`\u{1b}`, `\u{202e}`).
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hostile) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' | '\r' | '\t' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                out.push(' ')
            }
            c if hostile(c) => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"test-key";

    fn clean(text: &str) -> String {
        scrub(text, K).into_owned()
    }

    #[test]
    fn secret_shapes_are_replaced_by_fingerprints() {
        let cases: &[(&str, &str)] = &[
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAPLANTED01\nabc==\n-----END RSA PRIVATE KEY-----",
                "PLANTED01",
            ),
            (
                r#""privateKey": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqPLANTED02\n-----END PRIVATE KEY-----\n""#,
                "PLANTED02",
            ),
            (
                "unknown variant `-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIPLANTED03abc",
                "PLANTED03",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAPLANTED04\n-----END OPENSSH PRIVATE KEY-----",
                "PLANTED04",
            ),
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGPLANTED05\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----",
                "PLANTED05",
            ),
            (
                "key MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCPLANTED06 pasted",
                "PLANTED06",
            ),
            ("MC4CAQAwBQYDK2VwBCIEIPLANTED07abcdefghijkl", "PLANTED07"),
            (
                r#"{"kty":"RSA","n":"abc","d":"PLANTED08abcdefghijklmnop"}"#,
                "PLANTED08",
            ),
            ("k: PLANTED09abcdefghijklmnop", "PLANTED09"),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$PLANTED10hashhashhash",
                "PLANTED10",
            ),
            (
                "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2tPLANTED11",
                "PLANTED11",
            ),
            (
                "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$PLANTED12",
                "PLANTED12",
            ),
            ("$pbkdf2-sha256$29000$N2YuTWKcVIo$PLANTED13abc", "PLANTED13"),
            (
                "$6$rounds=5000$saltsalt$PLANTED14abcdefghijklmnop",
                "PLANTED14",
            ),
            ("https://deploy:PLANTED15@git.example/repo.git", "PLANTED15"),
            ("https://b.example/x?api_key=PLANTED16&v=2", "PLANTED16"),
            (
                "https://b.example/cb#access_token=PLANTED17&x=1",
                "PLANTED17",
            ),
            ("AKIAPLANTED18ABCDEFG", "AKIAPLANTED18"),
            ("ASIAPLANTED19ABCDEFG", "ASIAPLANTED19"),
            ("ghp_PLANTED20abcdefghijklmnopqrstuvwxyz0", "PLANTED20"),
            (
                "github_pat_11PLANTED21abcdefghijkl_mnopqrstuvwx",
                "PLANTED21",
            ),
            ("xoxb-1234567890-PLANTED22abc", "PLANTED22"),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.PLANTED23sig",
                "PLANTED23",
            ),
            ("Authorization: Bearer PLANTED24.abc", "PLANTED24"),
            ("Basic dXNlcjpQTEFOVEVEMjU=", "dXNlcjpQTEFOVEVEMjU"),
            ("sk_live_PLANTED26abcdefghij", "PLANTED26"),
            ("AIzaSyPLANTED27abcdefghijklmnopqrstuvwx", "PLANTED27"),
            ("glpat-PLANTED28abcdefghijklmn", "PLANTED28"),
            ("npm_PLANTED29abcdefghijklmnopqrstuvwxyz0", "PLANTED29"),
            ("SG.PLANTED30abcdefghij.klmnopqrstuvwxyz0123", "PLANTED30"),
            ("sk-proj-PLANTED31abcdefghijklmnop", "PLANTED31"),
            (
                "https://hooks.slack.com/services/T0/B0/PLANTED32xyz",
                "PLANTED32",
            ),
            ("DB_PASSWORD=x; password=PLANTED33", "PLANTED33"),
            (r#"{"client_secret": "PLANTED34"}"#, "PLANTED34"),
            (
                r#""description": "{\"kty\":\"EC\",\"d\":\"PLANTED36abcdefghijkl\"}""#,
                "PLANTED36",
            ),
            (r#""note": "{\"password\": \"PLANTED37\"}""#, "PLANTED37"),
            (
                "AccountName=a;AccountKey=PLANTED35abc==;EndpointSuffix=core",
                "PLANTED35",
            ),
        ];
        for (text, planted) in cases {
            let out = clean(text);
            assert!(!out.contains(planted), "{planted} survived: {out}");
            assert!(out.contains(MARK), "{out}");
            // Idempotent, and stable under one key.
            assert_eq!(clean(&out), out, "{text}");
            assert_eq!(clean(text), out);
        }
    }

    #[test]
    fn what_is_not_a_secret_is_left_alone() {
        for text in [
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "deployed at 741301c2f0e4b9a1d3c5e7f9a1b3c5d7e9f1a3b5 by ci",
            "https://payments.us-east-1.svc.internal:8443/v1/orders",
            "http://orders.eu-west-1.svc.internal:8080",
            "https://docs.example/guide#section-2",
            "route orders.list changed: timeout: 5s -> 10s",
            "spec.idp.clients[0].secret: unknown field `hash`",
            "\"tokenTtl\": \"10m\",",
            "\"n\": \"yCdO_VbAs1NDZGnzkHSAmWgKwKDbCJ82xa_YnL1VmK8RqmZm8gkvWAP638m_Ke38eysXXI1EnzWJnxUARuIsjSUFoG7SA8vdOh0QytBAIgwaj2rYEPR2LwaTCg7SLMwEr5asHjDKe9uNytSsC2mF1IP1xZj4DKS641m\"",
            "-----BEGIN CERTIFICATE----- is public, but redacted anyway",
            "tokens signed with bearer authentication stop validating",
            "enables basic rate-limiting for partner.example callers",
            "\"forwardClaims\": {\"sub\": \"X-Fleetgate-Subject\"}",
            "arn:aws:secretsmanager:us-east-1:423456789012:secret:fleetgate/idp/signing",
            "feature-flag task-management-for-enterprise-customers",
            "the secret file /run/secrets/key must be readable",
            "exactly one of {argon2Hash: \"$argon2id$...\"} or {ref: ...}",
            "price: $5$ per call, $2 per $10",
        ] {
            let out = clean(text);
            if text.starts_with("-----BEGIN CERTIFICATE") {
                assert!(out.starts_with(MARK), "{out}");
                continue;
            }
            assert_eq!(out, text);
        }
    }

    #[test]
    fn a_fingerprint_tells_changed_from_unchanged_within_a_key_only() {
        let a = clean("x AKIAAAAAAAAAAAAAAAAA y");
        let b = clean("x AKIABBBBBBBBBBBBBBBB y");
        assert_ne!(a, b);
        assert_eq!(a, clean("x AKIAAAAAAAAAAAAAAAAA y"));
        assert_ne!(
            a,
            scrub("x AKIAAAAAAAAAAAAAAAAA y", b"other key").into_owned()
        );
        // The query keeps its parameter names.
        let u = clean("https://b.example/x?api_key=S3CRET&region=eu");
        assert!(
            u.starts_with("https://b.example/x?api_key=(sensitive:"),
            "{u}"
        );
        assert!(u.contains("&region=(sensitive:"), "{u}");
    }

    #[test]
    fn log_events_are_scrubbed_before_they_are_written() {
        use std::io::Write as _;
        let mut out = Vec::new();
        {
            let mut event = ScrubbedEvent::new(&mut out);
            // The fmt layer may write an event in pieces: a secret cut in two is still found.
            write!(event, "level=warn url=https://h.example/x?token=PLANT").unwrap();
            writeln!(event, "ED40 done").unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("PLANTED40"), "{text}");
        assert!(text.starts_with("level=warn url=https://h.example/x?token=(sensitive:"));
        assert!(text.ends_with(" done\n"), "{text}");
    }

    #[test]
    fn json_values_are_scrubbed_including_jwk_private_members() {
        let mut v = serde_json::json!({
            "keys": [{"kty": "oct", "k": "c2hvcnQ", "kid": "a"}],
            "url": "https://u:p@h.example/",
            "description": "AKIAPLANTEDXABCDEFGH",
        });
        scrub_value(&mut v, K);
        let text = v.to_string();
        assert!(!text.contains("c2hvcnQ"), "{text}");
        assert!(!text.contains("u:p"), "{text}");
        assert!(!text.contains("PLANTED"), "{text}");
        assert!(text.contains("\"kid\":\"a\""), "{text}");
    }
}
