//! An IdP signing key that cannot be read: `/status` and the status report name the
//! reference, never a value, while the rest of the bundle serves.

use std::time::Duration;

use crate::support::*;

#[test]
fn status_names_an_unreadable_signing_key_reference_and_no_value() {
    let mut issuer = local_issuer();
    issuer["signingKeys"]["active"]["privateKey"] =
        serde_json::json!({"file": "/nonexistent/key.pem"});
    let b = bundle(
        serde_json::json!({"hosts": [HOST]}),
        serde_json::json!({"issuer": issuer}),
    );
    let gw = Gw::start(&b, &[]);
    let status = gw.status();
    let failures: Vec<&str> = status["secret_failures"]
        .as_array()
        .unwrap_or_else(|| panic!("no secret_failures in /status: {status}"))
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(failures.len(), 1, "{status}");
    assert!(failures[0].contains("/nonexistent/key.pem"), "{status}");
    assert!(
        status["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("/nonexistent/key.pem")),
        "{status}"
    );
    // The status report written next to the pointer says the same.
    let report = gw.dir.join("status/gw-1.json");
    wait_for("the status report", || report.exists());
    std::thread::sleep(Duration::from_millis(300));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["secret_failures"], status["secret_failures"]);
    // No key material anywhere: the fixture's key is not in the answer either way, and no
    // PEM armour is.
    assert!(!status.to_string().contains("PRIVATE KEY"));
}
