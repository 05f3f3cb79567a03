//! The checked-in JSON Schemas are exactly what the types generate, and the example repo's
//! manifests satisfy them (so an editor using the schemas agrees with `fleetgate validate`).

use std::path::{Path, PathBuf};

use fleetgate::config::manifest::Kind;
use fleetgate::{ConfigSource, DirSource};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("reconciler/ has a parent")
        .to_path_buf()
}

#[test]
fn checked_in_schemas_match_the_types() {
    let dir = workspace().join("schemas");
    let update = std::env::var_os("FLEETGATE_UPDATE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    let generated = fleetgate::schema::all();
    for (name, schema) in &generated {
        let path = dir.join(name);
        let want = fleetgate::schema::to_file_text(schema);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            if update {
                std::fs::write(&path, &want).expect("schemas/ is writable");
            } else {
                stale.push(name.to_string());
            }
        }
    }
    let on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("schemas/ exists")
        .map(|e| {
            e.expect("readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".schema.json"))
        .collect();
    for name in &on_disk {
        if !generated.iter().any(|(g, _)| g == name) {
            stale.push(format!("{name} (no type generates it any more)"));
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ is stale: {stale:?}. Regenerate with `cargo run -p fleetgate -- schemas --out schemas` \
         (or FLEETGATE_UPDATE_SCHEMAS=1 cargo test -p fleetgate --test schemas) and commit the result."
    );
}

#[test]
fn example_manifests_satisfy_their_schemas() {
    let root = workspace().join("config-repo-example");
    let src = DirSource::new(&root);
    let schemas: Vec<(Kind, jsonschema::Validator)> = Kind::ALL
        .iter()
        .map(|&kind| {
            let text =
                std::fs::read_to_string(workspace().join("schemas").join(kind.schema_file()))
                    .expect("schema file");
            let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
            (
                kind,
                jsonschema::validator_for(&schema).expect("schema compiles"),
            )
        })
        .collect();
    let mut checked = 0;
    for path in src.files().expect("example repo is readable") {
        if !path.ends_with(".yaml") || path.starts_with("services/") {
            continue;
        }
        let text = String::from_utf8(src.read(&path).expect("readable")).expect("utf-8");
        assert!(
            text.starts_with("# yaml-language-server: $schema="),
            "{path} must start with a yaml-language-server $schema line"
        );
        let value: serde_json::Value = serde_saphyr::from_str(&text).expect("example YAML parses");
        let kind = value["kind"].as_str().expect("kind");
        let (_, validator) = schemas
            .iter()
            .find(|(k, _)| k.as_str() == kind)
            .expect("known kind");
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{path} does not satisfy its schema:\n{}",
            errors.join("\n")
        );
        // The $schema line points at this kind's schema.
        let schema_ref = text
            .lines()
            .next()
            .and_then(|l| l.split("$schema=").nth(1))
            .expect("$schema line");
        assert!(
            schema_ref.ends_with(&format!(
                "schemas/{}",
                Kind::ALL
                    .iter()
                    .find(|k| k.as_str() == kind)
                    .expect("kind")
                    .schema_file()
            )),
            "{path}: {schema_ref}"
        );
        assert!(
            root.join(Path::new(&path).parent().expect("in a dir"))
                .join(schema_ref)
                .exists(),
            "{path}: {schema_ref} does not resolve"
        );
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} manifests checked");
}

#[test]
fn sensitive_fields_are_marked_in_the_schemas() {
    let bundle = fleetgate::schema::all()
        .into_iter()
        .find(|(n, _)| *n == "bundle.schema.json")
        .expect("bundle schema")
        .1;
    assert!(
        bundle
            .to_string()
            .contains("\"x-fleetgate-sensitive\":true"),
        "client secret hashes must be marked sensitive"
    );
}
