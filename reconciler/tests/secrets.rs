//! A secret pasted into the repo by mistake is rejected without being repeated: CI logs and
//! PR checks show diagnostics, so a diagnostic must never quote a secret.

use fleetgate::config::example_fleet;
use fleetgate::{Repo, validate};

const PLANTED: &str = "hunter2-plaintext-Zq81";

fn diagnostics_after(find: &str, replace: &str, file: &str) -> Vec<String> {
    let mut src = example_fleet::example_repo();
    let text = String::from_utf8(src.files[file].clone()).expect("example files are UTF-8");
    assert_eq!(text.matches(find).count(), 1, "{find} in {file}");
    src.insert(file, &text.replace(find, replace));
    let repo = Repo::load(&src);
    validate(&repo)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_plain_secret_instead_of_a_hash_is_rejected_and_never_echoed() {
    let hash_line = "secret: {argon2Hash: \"$argon2id$v=19$m=19456,t=2,p=1$ZmxlZXRnYXRlLWRlbW8x$A68me9I+LlqZr7RRrOAfN7JHQxw3ORylYavJ1+KbeN8\"}";
    for replacement in [
        format!("secret: \"{PLANTED}\""),
        format!("secret: {{argon2Hash: \"{PLANTED}\"}}"),
        format!("secret: {{argon2Hash: 12345, note: \"{PLANTED}\"}}"),
    ] {
        let ds = diagnostics_after(hash_line, &replacement, "base/idp.yaml");
        assert!(!ds.is_empty(), "{replacement} must be rejected");
        for d in &ds {
            assert!(!d.contains(PLANTED), "diagnostic quotes the secret: {d}");
            assert!(d.starts_with("base/idp.yaml:"), "{d}");
        }
    }
}

#[test]
fn a_secret_pasted_into_an_overlay_is_never_echoed_even_by_variable_errors() {
    // Overlays are merged and have their variables expanded before the strict decode, so
    // this goes through the template code with the secret in hand.
    let hash_line = "secret: {argon2Hash: \"$argon2id$v=19$m=19456,t=2,p=1$ZmxlZXRnYXRlLWRlbW8y$VTz97xUZZZXECrHwoOnu+xgG2rhJgdQb+OaGUjrOIwM\"}";
    for replacement in [
        format!("secret: \"{PLANTED}${{pw\""),
        format!("secret: {{argon2Hash: \"{PLANTED}${{x}}\"}}"),
        format!("secret: \"{PLANTED}\""),
    ] {
        let ds = diagnostics_after(hash_line, &replacement, "overlays/enterprise/tier.yaml");
        assert!(!ds.is_empty(), "{replacement} must be rejected");
        for d in &ds {
            assert!(!d.contains(PLANTED), "diagnostic quotes the secret: {d}");
        }
    }
}

#[test]
fn bucket_templates_are_expanded_and_checked_for_every_account() {
    let ds = diagnostics_after(
        "bucket: fleetgate-config-${account.id}",
        "bucket: fleetgate-config-${account.zone}",
        "fleet.yaml",
    );
    assert_eq!(ds.len(), 1, "{ds:#?}");
    assert!(
        ds[0].contains("unknown variable ${account.zone}") && ds[0].contains("and 9 more"),
        "{}",
        ds[0]
    );
    let ds = diagnostics_after(
        "bucket: fleetgate-config-${account.id}",
        "bucket: Fleetgate_${account.name}",
        "fleet.yaml",
    );
    assert!(ds[0].contains("is not a valid S3 bucket name"), "{}", ds[0]);
}
