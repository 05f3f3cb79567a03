//! Signing and verifying keys: the JWKs of external issuers as usable keys, the local
//! issuer's private PEM keys read into signing and public halves, and new keys for local
//! fleets. Imports [`crate::secrets`] (where the local keys are read from) only.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fleetgate_bundle::bundle::{JwtAlgorithm, LocalIssuer, SigningAlgorithm};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use serde_json::{Map, Value};

use crate::secrets::Resolved;

/// A verifying key and what it may verify.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    /// The key's own `alg`, when its JWK names one: a token must then use exactly it.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The keys of a JWKS document that this gateway can use. Keys meant for encryption
/// (`use: enc`) and keys jsonwebtoken cannot read are left out.
pub fn keys_of(set: &JwkSet) -> Vec<Key> {
    set.keys.iter().filter_map(key_of).collect()
}

fn key_of(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
    ) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    if key.family() == AlgorithmFamily::Hmac {
        // A JWKS of symmetric keys would hand out the secret: never a verifier's key here.
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg: jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse().ok()),
        key,
    })
}

pub fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

pub fn signing_algorithm(a: SigningAlgorithm) -> Algorithm {
    match a {
        SigningAlgorithm::RS256 => Algorithm::RS256,
        SigningAlgorithm::ES256 => Algorithm::ES256,
    }
}

/// A signing key's usable forms, made from its private PEM.
pub struct KeyMaterial {
    /// Only the active key signs; kept for every key to check the PEM once, up front.
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// The public JWK (without `kid`, `alg`, `use`).
    pub public_jwk: Map<String, Value>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("public_jwk", &self.public_jwk)
            .finish_non_exhaustive()
    }
}

/// Reads a PEM private key (PKCS#8, or PKCS#1 for RSA / SEC1 for P-256). Errors never
/// quote the key.
pub fn key_material(alg: SigningAlgorithm, pem: &str) -> Result<KeyMaterial, String> {
    match alg {
        SigningAlgorithm::RS256 => {
            use aws_lc_rs::signature::KeyPair as _;
            // jsonwebtoken reads PKCS#8 and PKCS#1 PEM to the PKCS#1 DER it signs with;
            // aws-lc checks that DER is a usable key and gives its public half.
            let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
                .map_err(|_| "not an RSA private key in PEM (PKCS#8 or PKCS#1)".to_string())?;
            let key = aws_lc_rs::rsa::KeyPair::from_der(encoding.as_bytes())
                .map_err(|_| "not a usable RSA private key (PKCS#8 or PKCS#1 PEM)".to_string())?;
            if key.public_modulus_len() < 256 {
                return Err("RSA keys must have at least 2048 bits".into());
            }
            let public = key.public_key();
            let n = public.modulus().big_endian_without_leading_zero().to_vec();
            let e = public.exponent().big_endian_without_leading_zero().to_vec();
            let mut jwk = Map::new();
            jwk.insert("kty".into(), "RSA".into());
            jwk.insert("n".into(), URL_SAFE_NO_PAD.encode(&n).into());
            jwk.insert("e".into(), URL_SAFE_NO_PAD.encode(&e).into());
            Ok(KeyMaterial {
                encoding,
                decoding: DecodingKey::from_rsa_raw_components(&n, &e),
                public_jwk: jwk,
            })
        }
        SigningAlgorithm::ES256 => {
            use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
            let key = p256::SecretKey::from_pkcs8_pem(pem)
                .or_else(|_| p256::SecretKey::from_sec1_pem(pem))
                .map_err(|_| "not a P-256 private key in PEM (PKCS#8 or SEC1)".to_string())?;
            let der = key
                .to_pkcs8_der()
                .map_err(|_| "the P-256 key cannot be encoded".to_string())?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &key.public_key(),
                false,
            );
            let (Some(x), Some(y)) = (point.x(), point.y()) else {
                return Err("the P-256 public key has no coordinates".into());
            };
            let mut jwk = Map::new();
            jwk.insert("kty".into(), "EC".into());
            jwk.insert("crv".into(), "P-256".into());
            jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
            jwk.insert("y".into(), URL_SAFE_NO_PAD.encode(y).into());
            Ok(KeyMaterial {
                encoding: EncodingKey::from_ec_der(der.as_bytes()),
                decoding: DecodingKey::from_ec_der(point.as_bytes()),
                public_jwk: jwk,
            })
        }
    }
}

/// A new private key for `alg` as PKCS#8 PEM (RSA: 2048 bits), for local fleets and tests.
pub fn generate_key(alg: SigningAlgorithm) -> Result<String, String> {
    use rand_core::OsRng;
    match alg {
        SigningAlgorithm::RS256 => {
            use aws_lc_rs::encoding::AsDer as _;
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| "the RSA key could not be generated".to_string())?;
            let der = key
                .as_der()
                .map_err(|_| "the RSA key could not be encoded".to_string())?;
            Ok(pem_encode("PRIVATE KEY", der.as_ref()))
        }
        SigningAlgorithm::ES256 => {
            use p256::pkcs8::EncodePrivateKey as _;
            p256::SecretKey::random(&mut OsRng)
                .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                .map(|p| p.to_string())
                .map_err(|e| e.to_string())
        }
    }
}

/// RFC 7468's textual encoding of `der` with `label`: base64 in lines of 64 characters.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The issuer's verifying keys (active, next, previous) by kid, for the gateway's own
/// `local` issuer, with the problems of keys that cannot be read.
pub fn verifying_keys(issuer: &LocalIssuer, secrets: &Resolved) -> (Vec<Key>, Vec<String>) {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for (role, k) in issuer.signing_keys.all() {
        match secrets
            .get(&k.private_key)
            .and_then(|pem| key_material(k.algorithm, pem))
        {
            Ok(m) => keys.push(Key {
                kid: Some(k.kid.clone()),
                alg: Some(signing_algorithm(k.algorithm)),
                key: m.decoding,
            }),
            Err(e) => problems.push(format!("{role} signing key {}: {e}", k.kid)),
        }
    }
    (keys, problems)
}
