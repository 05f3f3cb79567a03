//! The example config repo (embedded at build time) and a deterministic generator of big
//! fleets for tests and benchmarks: the example's fleet, base, overlays and services, with
//! N generated accounts in place of its ten.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::config::source::MemSource;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/example_files.rs"));
}

/// The files of `config-repo-example/` as built into this binary: (path, text).
pub fn example_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    embedded::FILES.iter().copied()
}

/// The files of `config-repo-example/`, as built into this binary.
pub fn example_repo() -> MemSource {
    let mut src = MemSource::default();
    for (path, text) in embedded::FILES {
        src.insert(path, text);
    }
    src
}

/// What a generated fleet looks like.
#[derive(Debug, Clone)]
pub struct FleetParams {
    pub accounts: usize,
    /// Changes which accounts get which pins, overlays and patches; same seed, same repo.
    pub seed: u64,
}

const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "eu-central-1"];
const ORDERS: [&str; 2] = ["1.4.0", "2.0.0"];
const CUSTOMERS: [&str; 2] = ["1.2.0", "1.3.0"];

/// SplitMix64: a tiny, well-known generator; enough to spread choices deterministically.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates the fleet in memory. 1% of accounts (at least one) are canaries, 10% early
/// adopters (at least one from 3 accounts on, so every wave selects an account), the rest
/// production; a fifth are enterprise; accounts in EU regions select the
/// `eu` overlay; every tenth carries a last-mile patch.
pub fn generate(params: &FleetParams) -> MemSource {
    let mut src = example_repo();
    src.files.retain(|path, _| !path.starts_with("accounts/"));
    let n = params.accounts;
    let canaries = (n / 100).max(1);
    let early = if n >= 3 { (n / 10).max(1) } else { 0 };
    for i in 0..n {
        let r = mix(params.seed, i as u64);
        let stage = if i < canaries {
            "canary"
        } else if i < canaries + early {
            "early"
        } else {
            "prod"
        };
        let name = format!("tenant-{i:05}-{stage}");
        let region = REGIONS[(r % 4) as usize];
        let enterprise = (r >> 8).is_multiple_of(5);
        let mut overlays = Vec::new();
        if enterprise {
            overlays.push("enterprise");
        }
        if region.starts_with("eu-") {
            overlays.push("eu");
        }
        let mut pins = BTreeMap::new();
        pins.insert("orders", ORDERS[((r >> 16) % 2) as usize]);
        pins.insert("customers", CUSTOMERS[((r >> 17) % 2) as usize]);
        if !enterprise {
            pins.insert("payments", "3.1.0");
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "# yaml-language-server: $schema=../../schemas/account.schema.json\n\
             apiVersion: fleetgate.dev/v1\nkind: Account\nmetadata:\n  name: {name}\n  labels:\n    tier: {tier}\n\
             spec:\n  accountId: \"{id:012}\"\n  region: {region}\n  stage: {stage}\n  tenant: tenant-{i:05}\n  overlays: [{overlays}]\n  services:\n",
            tier = if enterprise { "enterprise" } else { "standard" },
            id = 100_000_000_000u64 + i as u64,
            overlays = overlays.join(", "),
        );
        for (service, version) in &pins {
            let _ = writeln!(text, "    {service}: \"{version}\"");
        }
        if i % 10 == 9 {
            let _ = write!(
                text,
                "  patches:\n    gateway:\n      routes:\n        - name: orders.listOrders\n          rateLimit: {{requests: {}, per: 1s}}\n",
                20 + (r >> 20) % 200
            );
        }
        src.insert(&format!("accounts/{name}.yaml"), &text);
    }
    src
}

/// Writes a source's files under `dir` (which must be absent or empty).
pub fn write_to(src: &MemSource, dir: &Path) -> std::io::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} is not empty; choose a new directory", dir.display()),
        ));
    }
    for (path, bytes) in &src.files {
        let dest = dir.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(dest, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_seeded() {
        let a = generate(&FleetParams {
            accounts: 50,
            seed: 7,
        });
        let b = generate(&FleetParams {
            accounts: 50,
            seed: 7,
        });
        let c = generate(&FleetParams {
            accounts: 50,
            seed: 8,
        });
        assert_eq!(a.files, b.files);
        assert_ne!(a.files, c.files);
        assert_eq!(
            a.files
                .keys()
                .filter(|p| p.starts_with("accounts/"))
                .count(),
            50
        );
    }
}
