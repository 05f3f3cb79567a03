//! Golden files of what people read: every example account's bundle (pretty canonical JSON)
//! and its digest. A change to render, merge or the example repo shows up here as a diff.

use std::path::Path;

use fleetgate::{DirSource, Repo, render, validate};

fn example() -> Repo {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-repo-example");
    Repo::load(&DirSource::new(root))
}

#[test]
fn the_example_repo_is_valid() {
    let repo = example();
    let result = validate(&repo);
    assert!(
        result.diagnostics.is_empty(),
        "{:#?}",
        result
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    );
    assert_eq!(result.rendered.len(), 10);
}

#[test]
fn every_example_account_renders_to_its_golden_bundle() {
    let repo = example();
    let mut digests = String::new();
    for name in repo.account_names() {
        let rendered = render(&repo, name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        insta::assert_snapshot!(format!("bundle-{name}"), rendered.bundle.pretty_json());
        digests.push_str(&format!("{name} {}\n", rendered.digest));
        // The digest is of the canonical bytes, and the canonical bytes are what a gateway
        // accepts under that digest.
        let reloaded = fleetgate_bundle::Bundle::from_stored(&rendered.canonical, &rendered.digest)
            .expect("stored form reloads");
        assert_eq!(reloaded, rendered.bundle);
    }
    insta::assert_snapshot!("digests", digests);
}

#[test]
fn render_records_what_it_read() {
    let repo = example();
    let r = render(&repo, "globex-prod").expect("renders");
    let inputs: Vec<&str> = r.inputs.iter().map(String::as_str).collect();
    assert_eq!(
        inputs,
        [
            "accounts/globex-prod.yaml",
            "base/gateway.yaml",
            "base/idp.yaml",
            "overlays/enterprise/",
            "overlays/enterprise/tier.yaml",
            "overlays/eu/",
            "overlays/eu/region.yaml",
            "services/customers/1.3.0/",
            "services/customers/1.3.0/openapi.yaml",
            "services/orders/2.0.0/",
            "services/orders/2.0.0/openapi.yaml",
            "services/payments/3.2.0/",
            "services/payments/3.2.0/openapi.yaml",
        ]
    );
    assert!(
        r.depends_on("overlays/eu/new-file.yaml"),
        "a new file in a selected overlay can change the bundle"
    );
    assert!(!r.depends_on("accounts/acme-prod.yaml"));
    assert!(!r.depends_on("services/payments/3.1.0/openapi.yaml"));
    assert!(
        !r.depends_on("fleet.yaml"),
        "fleet.yaml does not go into bundles"
    );
}

#[test]
fn secrets_never_reach_a_bundle_and_hashes_are_marked() {
    let repo = example();
    let r = render(&repo, "acme-prod").expect("renders");
    let text = String::from_utf8(r.canonical.clone()).expect("utf-8");
    // Signing keys are references; inline JWKS hold public members only.
    let bundle: serde_json::Value = serde_json::from_slice(&r.canonical).unwrap();
    assert!(
        bundle["idp"]["issuer"]["signingKeys"]["active"]["privateKey"]["awsSecretsManager"]
            .is_string()
    );
    for issuer in bundle["idp"]["trustedIssuers"].as_array().unwrap() {
        for key in issuer["jwks"]["keys"].as_array().unwrap() {
            for member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(
                    key.get(member).is_none(),
                    "private member {member} in a bundle"
                );
            }
        }
    }
    // The client secret hash is present for the gateway, but redacted when shown.
    assert!(text.contains("$argon2id$"));
    let redacted = fleetgate_bundle::sensitive::redacting(b"plan-key", || r.bundle.pretty_json());
    assert!(!redacted.contains("$argon2id$"), "{redacted}");
    assert!(redacted.contains("(sensitive:"));
}
