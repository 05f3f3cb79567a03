//! Unit tests of the bundle format: canonical JSON.

use super::*;

fn assert_sorted(v: &serde_json::Value, at: &str) {
    match v {
        serde_json::Value::Object(map) => {
            let keys: Vec<&String> = map.keys().collect();
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "keys of {at} are not sorted");
            for (k, child) in map {
                assert_sorted(child, &format!("{at}.{k}"));
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                assert_sorted(child, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

#[test]
fn canonical_json_sorts_keys_at_every_level_whatever_serde_json_features_are_on() {
    let jwks = serde_json::json!({"keys": [{"n": "x", "e": "AQAB", "kty": "RSA"}]});
    let bundle = Bundle {
        api_version: BUNDLE_API_VERSION.into(),
        account: AccountInfo {
            name: "a".into(),
            id: "123456789012".into(),
            region: "r".into(),
            stage: "s".into(),
            tenant: "t".into(),
            labels: BTreeMap::from([("z".into(), "1".into()), ("a".into(), "2".into())]),
        },
        gateway: GatewayConfig::default(),
        idp: IdpConfig {
            trusted_issuers: vec![TrustedIssuer {
                name: "p".into(),
                issuer: "https://p".into(),
                jwks_url: None,
                jwks: Some(jwks),
                audiences: vec!["x".into()],
                algorithms: vec![JwtAlgorithm::RS256],
            }],
            ..IdpConfig::default()
        },
    };
    let canonical: serde_json::Value = serde_json::from_slice(&bundle.canonical_json()).unwrap();
    assert_sorted(&canonical, "bundle");
    let pretty: serde_json::Value = serde_json::from_str(&bundle.pretty_json()).unwrap();
    assert_sorted(&pretty, "bundle");
    assert!(bundle.canonical_json().starts_with(b"{\"account\":"));
}
