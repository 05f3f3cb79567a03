//! The embedded IdP's part of the contract: the paths it answers (routes may not use them)
//! and what a client secret's argon2 hash must be (a PHC string whose costs are within the
//! gateway's caps). Parsing only: verifying a secret against a hash is the gateway's.
//!
//! Imports nothing of this crate.

use std::fmt;

pub const DISCOVERY: &str = "/.well-known/openid-configuration";
pub const METADATA: &str = "/.well-known/oauth-authorization-server";
pub const JWKS: &str = "/oauth2/jwks";
pub const TOKEN: &str = "/oauth2/token";
/// The paths the IdP answers; routes may not use them.
pub const PATHS: [&str; 4] = [DISCOVERY, METADATA, JWKS, TOKEN];

/// The most argon2 memory a client hash may ask for, in KiB (256 MiB): each worker thread
/// holds this much while it verifies.
pub const MAX_ARGON2_M_COST: u32 = 256 * 1024;
/// The most argon2 passes a client hash may ask for.
pub const MAX_ARGON2_T_COST: u32 = 16;
/// The most argon2 lanes a client hash may ask for.
pub const MAX_ARGON2_P_COST: u32 = 16;

/// argon2's parameter rules (RFC 9106, as the argon2 crate applies them to a PHC string):
/// the defaults of a parameter the string leaves out, and the bounds of each.
const DEFAULT_M_COST: u32 = 19 * 1024;
const DEFAULT_T_COST: u32 = 2;
const DEFAULT_P_COST: u32 = 1;
const MIN_M_COST: u32 = 8;
const MAX_P_COST: u32 = 0xFF_FFFF;
const MIN_OUTPUT_LEN: usize = 4;
const MAX_KEYID_LEN: usize = 8;
const MAX_DATA_LEN: usize = 32;
/// The argon2 versions there are: 0x10 and 0x13 (the default).
const VERSIONS: [u32; 2] = [0x10, 0x13];
const DEFAULT_VERSION: u32 = 0x13;

/// An argon2 variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Argon2Algorithm {
    Argon2d,
    Argon2i,
    #[default]
    Argon2id,
}

impl Argon2Algorithm {
    /// Its PHC identifier.
    pub fn as_str(self) -> &'static str {
        match self {
            Argon2Algorithm::Argon2d => "argon2d",
            Argon2Algorithm::Argon2i => "argon2i",
            Argon2Algorithm::Argon2id => "argon2id",
        }
    }

    fn of(ident: &str) -> Option<Argon2Algorithm> {
        match ident {
            "argon2d" => Some(Argon2Algorithm::Argon2d),
            "argon2i" => Some(Argon2Algorithm::Argon2i),
            "argon2id" => Some(Argon2Algorithm::Argon2id),
            _ => None,
        }
    }
}

/// What an argon2 verification costs: the parameters every client hash of one IdP shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    pub algorithm: Argon2Algorithm,
    /// 0x10 or 0x13.
    pub version: u32,
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// Output bytes.
    pub output_len: usize,
}

impl fmt::Display for Argon2Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} v={} m={},t={},p={} with a {}-byte output",
            self.algorithm.as_str(),
            self.version,
            self.m_cost,
            self.t_cost,
            self.p_cost,
            self.output_len
        )
    }
}

/// A client secret's argon2 hash read from its PHC string
/// (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`). No `Debug` shows the salt or the hash.
pub struct Argon2Phc {
    pub cost: Argon2Cost,
    /// The `keyid` parameter's bytes (empty when absent).
    pub keyid: Vec<u8>,
    /// The `data` parameter's bytes (empty when absent).
    pub data: Vec<u8>,
    pub salt: Vec<u8>,
    pub hash: password_hash::Output,
}

impl fmt::Debug for Argon2Phc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Argon2Phc")
            .field("cost", &self.cost)
            .finish_non_exhaustive()
    }
}

const NOT_PHC: &str = "not an argon2 hash in PHC format ($argon2id$v=19$...)";
const BAD_PARAMS: &str = "the argon2 hash's parameters are not valid";

impl Argon2Phc {
    /// Reads a PHC string whose parameters argon2 accepts and whose costs are within the
    /// caps. Errors never quote the value.
    pub fn parse(phc: &str) -> Result<Argon2Phc, String> {
        let parsed = password_hash::PasswordHash::new(phc).map_err(|_| NOT_PHC.to_string())?;
        let algorithm =
            Argon2Algorithm::of(parsed.algorithm.as_str()).ok_or_else(|| NOT_PHC.to_string())?;
        let version = match parsed.version {
            None => DEFAULT_VERSION,
            Some(v) if VERSIONS.contains(&v) => v,
            Some(v) => return Err(format!("argon2 version {v} is not one argon2 has")),
        };
        let (mut m_cost, mut t_cost, mut p_cost) = (DEFAULT_M_COST, DEFAULT_T_COST, DEFAULT_P_COST);
        let (mut keyid, mut data) = (Vec::new(), Vec::new());
        for (ident, value) in parsed.params.iter() {
            let bad = |_| BAD_PARAMS.to_string();
            match ident.as_str() {
                "m" => m_cost = value.decimal().map_err(bad)?,
                "t" => t_cost = value.decimal().map_err(bad)?,
                "p" => p_cost = value.decimal().map_err(bad)?,
                "keyid" => {
                    let mut buf = [0u8; MAX_KEYID_LEN];
                    keyid = value.b64_decode(&mut buf).map_err(bad)?.to_vec();
                }
                "data" => {
                    let mut buf = [0u8; MAX_DATA_LEN];
                    data = value.b64_decode(&mut buf).map_err(bad)?.to_vec();
                }
                _ => return Err(BAD_PARAMS.into()),
            }
        }
        let output_ok = parsed
            .hash
            .is_none_or(|h| h.len() >= MIN_OUTPUT_LEN && u32::try_from(h.len()).is_ok());
        if m_cost < MIN_M_COST
            || u64::from(m_cost) < u64::from(p_cost) * 8
            || t_cost < 1
            || !(1..=MAX_P_COST).contains(&p_cost)
            || !output_ok
        {
            return Err(BAD_PARAMS.into());
        }
        let (Some(salt), Some(hash)) = (parsed.salt, parsed.hash) else {
            return Err("the argon2 hash has no salt or no output".into());
        };
        let mut buf = [0u8; 64];
        let salt = salt
            .decode_b64(&mut buf)
            .map_err(|_| "the argon2 hash's salt is not valid".to_string())?
            .to_vec();
        let cost = Argon2Cost {
            algorithm,
            version,
            m_cost,
            t_cost,
            p_cost,
            output_len: hash.len(),
        };
        check_cost(&cost)?;
        Ok(Argon2Phc {
            cost,
            keyid,
            data,
            salt,
            hash,
        })
    }
}

/// Whether `cost` is within the caps (an error naming the parameter over its cap).
pub fn check_cost(cost: &Argon2Cost) -> Result<(), String> {
    for (name, value, max) in [
        ("m (memory, KiB)", cost.m_cost, MAX_ARGON2_M_COST),
        ("t (passes)", cost.t_cost, MAX_ARGON2_T_COST),
        ("p (lanes)", cost.p_cost, MAX_ARGON2_P_COST),
    ] {
        if value > max {
            return Err(format!(
                "argon2 parameter {name} is {value}, over the gateway's cap of {max}"
            ));
        }
    }
    Ok(())
}
