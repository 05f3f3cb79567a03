//! The secret corpus: 29 kinds of secret material planted in every position a manifest
//! takes a string (fleet.yaml, the base gateway and IdP, overlays, account files and their
//! patches, flag and scope descriptions, backend URLs, header values, claims, signing keys
//! inline and as `{file: ...}`, OpenAPI specs), then every command that prints anything is
//! run with the real binary: validate (text, json), render, plan (text, markdown, json)
//! against a `file://` target, apply to it, and drift (text, markdown, json). No planted
//! secret may appear on any stdout or stderr.
//!
//! Two halves: a valid repo whose secrets sit in free-text fields (they reach the bundles,
//! so plans show them in diffs and change details) applied, rotated and applied again; and
//! invalid repos whose errors quote the values that broke them.

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{ExampleFleet as Fleet, code, edit, git, show, stderr, stdout};

/// One kind of secret, written with `marker` inside the part that is secret.
struct Secret {
    kind: &'static str,
    value: String,
    marker: String,
}

/// How a kind is written around its marker.
type Make = fn(&str) -> String;

/// Every kind, each with a marker unique to the kind and the round (`A`, `B`): a grep for
/// the marker finds the secret in any output.
fn corpus(round: char) -> Vec<Secret> {
    let kinds: [(&str, Make); 29] = [
        ("PEM PKCS#8 private key", |m| {
            format!(
                "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC{m}\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"
            )
        }),
        ("PEM RSA private key", |m| {
            format!(
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA{m}\n-----END RSA PRIVATE KEY-----"
            )
        }),
        ("PEM EC private key", |m| {
            format!(
                "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI{m}oAoGCCqGSM49\n-----END EC PRIVATE KEY-----"
            )
        }),
        ("OpenSSH private key", |m| {
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE{m}\n-----END OPENSSH PRIVATE KEY-----"
            )
        }),
        ("PGP private key block", |m| {
            format!(
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQVYBG{m}\n=Ab12\n-----END PGP PRIVATE KEY BLOCK-----"
            )
        }),
        ("PEM cut short", |m| {
            format!("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhkiG9w0BBQ0w{m}")
        }),
        ("DER private key in base64", |m| {
            format!("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC{m}xyz")
        }),
        ("AWS access key id", |m| format!("AKIA{m}ZZZZZZ")),
        ("AWS temporary access key id", |m| format!("ASIA{m}YYYYYY")),
        ("GitHub token", |m| {
            format!("ghp_{m}abcdefghijklmnopqrstuvwxyz")
        }),
        ("GitHub fine-grained token", |m| {
            format!("github_pat_11{m}_abcdefghijklmnopqrstuv")
        }),
        ("GitLab token", |m| format!("glpat-{m}abcdefghijkl")),
        ("Slack token", |m| format!("xoxb-1234567890-{m}abcdef")),
        ("Slack webhook URL", |m| {
            format!("https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/{m}xyz")
        }),
        ("JSON Web Token", |m| {
            format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.{m}sig")
        }),
        ("Bearer credential", |m| format!("Bearer {m}.opaque-token")),
        ("Basic credential", |m| format!("Basic dXNlcjp{m}=")),
        ("Stripe secret key", |m| format!("sk_live_{m}abcdefgh")),
        ("Google API key", |m| {
            format!("AIza{m}abcdefghijklmnopqrstuvwxy")
        }),
        ("npm token", |m| {
            format!("npm_{m}abcdefghijklmnopqrstuvwxyz")
        }),
        ("SendGrid key", |m| {
            format!("SG.{m}abcdefgh.{m}ijklmnopqrstuv")
        }),
        ("OpenAI-style key", |m| {
            format!("sk-proj-{m}abcdefghijklmnop")
        }),
        ("argon2 hash", |m| {
            format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA{m}$aGFzaA{m}")
        }),
        ("bcrypt hash", |m| {
            format!("$2b$12${m}R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi")
        }),
        ("sha512-crypt hash", |m| {
            format!("$6$rounds=5000$saltsalt${m}abcdefghijklmnop")
        }),
        ("URL userinfo", |m| {
            format!("https://deploy:{m}@git.internal.example/config.git")
        }),
        ("URL query value", |m| {
            format!("https://b.example/x?api_key={m}&region=eu")
        }),
        ("password assignment", |m| {
            format!("DB_HOST=db.internal password={m}")
        }),
        ("private JWK", |m| {
            format!(r#"{{"kty":"RSA","e":"AQAB","n":"0vx7agoebGc","d":"{m}abcdefghijkl"}}"#)
        }),
    ];
    kinds
        .iter()
        .enumerate()
        .map(|(i, (kind, make))| {
            let marker = format!("PLANTED{:02}{round}", i + 1);
            Secret {
                kind,
                value: make(&marker),
                marker,
            }
        })
        .collect()
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

impl Fleet {
    fn commit(&self, message: &str) {
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-q", "-m", message]);
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .args(args)
            .env("FLEETGATE_CACHE_DIR", self.tmp.path().join("cache"))
            .env("FLEETGATE_APPLIED_BY", "secret-corpus")
            .env("NO_COLOR", "1")
            .env_remove("FLEETGATE_REDACTION_KEY")
            .output()
            .expect("fleetgate runs")
    }

    /// Every command that prints, in order; each output labelled with its command line.
    fn every_command(&self) -> Vec<(String, Output)> {
        let repo = self.repo.to_str().unwrap();
        let out_dir = self.tmp.path().join("rendered");
        let out_dir = out_dir.to_str().unwrap();
        let t = self.target.as_str();
        let commands: Vec<Vec<&str>> = vec![
            vec!["validate", "--repo", repo],
            vec!["validate", "--repo", repo, "--format", "json"],
            vec!["render", "--repo", repo],
            vec!["render", "--repo", repo, "--out", out_dir],
            vec!["plan", "--repo", repo, "--target", t],
            vec![
                "plan", "--repo", repo, "--target", t, "--format", "markdown",
            ],
            vec!["plan", "--repo", repo, "--target", t, "--format", "json"],
            vec![
                "apply",
                "--repo",
                repo,
                "--target",
                t,
                "--skip-health-gates",
            ],
            vec!["drift", "--repo", repo, "--target", t],
            vec![
                "drift", "--repo", repo, "--target", t, "--format", "markdown",
            ],
            vec!["drift", "--repo", repo, "--target", t, "--format", "json"],
        ];
        commands
            .into_iter()
            .map(|args| (args.join(" "), self.run(&args)))
            .collect()
    }
}

/// Fails naming the command, the kind and the line when any planted marker is printed.
fn assert_no_secret(outputs: &[(String, Output)], secrets: &[Secret]) {
    for (command, out) in outputs {
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            for s in secrets {
                if let Some(line) = text.lines().find(|l| l.contains(&s.marker)) {
                    panic!(
                        "`fleetgate {command}` printed the planted {} ({}):\n{line}",
                        s.kind, s.marker
                    );
                }
            }
        }
    }
}

fn output_of<'a>(outputs: &'a [(String, Output)], prefix: &str) -> &'a Output {
    &outputs
        .iter()
        .find(|(c, _)| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` run"))
        .1
}

/// Plants the corpus in every free-text position of a valid repo.
fn plant_valid(repo: &Path, secrets: &[Secret]) {
    let q = |i: usize| quoted(&secrets[i % secrets.len()].value);
    // Base gateway: one flag per kind, its description the secret.
    let flags: String = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "    leak-{i:02}:\n      enabled: false\n      description: {}\n",
                quoted(&s.value)
            )
        })
        .collect();
    edit(
        repo,
        "base/gateway.yaml",
        "  flags:\n",
        &format!("  flags:\n{flags}"),
    );
    // A backend whose URL path is the credential; a header value; a claim value.
    edit(
        repo,
        "base/gateway.yaml",
        "    reporting-v2: {url: \"http://reporting-v2.${account.region}.svc.internal:8080\"}",
        &format!(
            "    reporting-v2: {{url: \"http://reporting-v2.${{account.region}}.svc.internal:8080\"}}\n    hook: {{url: {}}}",
            quoted(&secrets[13].value)
        ),
    );
    edit(
        repo,
        "base/gateway.yaml",
        "match: {cookie: {name: fg-experiment, value: ranking-b}}",
        &format!(
            "match: {{header: {{name: authorization, value: {}}}}}",
            q(15)
        ),
    );
    edit(
        repo,
        "base/gateway.yaml",
        "tenant: [\"${account.tenant}\"]",
        &format!("tenant: [\"${{account.tenant}}\", {}]", q(7)),
    );
    // Base IdP: scope descriptions.
    let scopes: String = (0..secrets.len())
        .map(|i| format!("    - {{name: \"leak:{i:02}\", description: {}}}\n", q(i)))
        .collect();
    edit(
        repo,
        "base/idp.yaml",
        "  scopes:\n",
        &format!("  scopes:\n{scopes}"),
    );
    // An overlay: a flag of its own and a scope description.
    edit(
        repo,
        "overlays/enterprise/tier.yaml",
        "  gateway:\n    defaults:",
        &format!(
            "  gateway:\n    flags:\n      overlay-leak: {{enabled: true, description: {}}}\n    defaults:",
            q(9)
        ),
    );
    // An account: a label and a patch.
    edit(
        repo,
        "accounts/acme-prod.yaml",
        "    tier: enterprise",
        &format!("    tier: enterprise\n    note: {}", q(17)),
    );
    edit(
        repo,
        "accounts/acme-prod.yaml",
        "  patches:\n    gateway:\n",
        &format!(
            "  patches:\n    gateway:\n      flags:\n        patch-leak: {{enabled: true, description: {}}}\n",
            q(0)
        ),
    );
    // fleet.yaml's one free string; an OpenAPI spec's descriptions.
    edit(
        repo,
        "fleet.yaml",
        "externalId: fleetgate-saas-fleet",
        &format!("externalId: {}", q(11)),
    );
    edit(
        repo,
        "services/orders/2.0.0/openapi.yaml",
        "    exports for ERP reconciliation.",
        &format!(
            "    exports for ERP reconciliation. {}",
            secrets[4].value.replace('\n', " ")
        ),
    );
    // A generated route carries the spec's upstream path into the bundle.
    edit(
        repo,
        "services/orders/2.0.0/openapi.yaml",
        "      operationId: listOrders\n",
        &format!(
            "      operationId: listOrders\n      x-fleetgate-upstream-path: \"/v2/orders/{}\"\n",
            secrets[9].value
        ),
    );
    edit(
        repo,
        "services/orders/2.0.0/openapi.yaml",
        "          description: Filter by the ordering customer.",
        &format!("          description: {}", q(20)),
    );
}

#[test]
fn a_valid_repo_full_of_secrets_plans_applies_and_drifts_without_printing_one() {
    let fleet = Fleet::example();
    let a = corpus('A');
    plant_valid(&fleet.repo, &a);
    fleet.commit("secrets everywhere");

    let first = fleet.every_command();
    let validate = output_of(&first, "validate --repo");
    assert_eq!(code(validate), 0, "{}", show(validate));
    let plan = output_of(&first, "plan");
    assert_eq!(code(plan), 2, "{}", show(plan));
    // The values reached the plan, as fingerprints.
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("(sensitive:"),
        "{}",
        show(plan)
    );
    let apply = output_of(&first, "apply");
    assert_eq!(code(apply), 0, "{}", show(apply));
    assert_no_secret(&first, &a);
    // What the gateway needs still reaches it: the rendered bundle holds the values.
    let bundle = std::fs::read_to_string(fleet.tmp.path().join("rendered/acme-prod.json")).unwrap();
    assert!(bundle.contains(&a[9].marker), "the bundle lost a value");

    // Rotate every secret: updates whose change details and diffs name both values.
    let b = corpus('B');
    for file in [
        "base/gateway.yaml",
        "base/idp.yaml",
        "overlays/enterprise/tier.yaml",
        "accounts/acme-prod.yaml",
        "fleet.yaml",
        "services/orders/2.0.0/openapi.yaml",
    ] {
        let path = fleet.repo.join(file);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (sa, sb) in a.iter().zip(&b) {
            text = text.replace(&sa.marker, &sb.marker);
        }
        std::fs::write(&path, text).unwrap();
    }
    fleet.commit("rotate every secret");
    let second = fleet.every_command();
    let plan = output_of(&second, "plan");
    assert_eq!(code(plan), 2, "{}", show(plan));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(text.contains("update"), "{text}");
    let both: Vec<Secret> = a.into_iter().chain(b).collect();
    assert_no_secret(&second, &both);
}

/// Invalid repos: each plants secrets where decoding or checking fails, so the errors are
/// about the very values that must not be shown.
#[test]
fn errors_about_secret_values_never_quote_them() {
    let secrets = corpus('E');
    let s = |i: usize| quoted(&secrets[i].value);
    let pem = &secrets[0].value;
    // (what, file, find, replace)
    let cases: Vec<(&str, &str, &str, String)> = vec![
        (
            "an inline PEM private key",
            "base/idp.yaml",
            "privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-09\"}",
            format!("privateKey: {}", quoted(pem)),
        ),
        (
            "a PEM private key as {file: ...}",
            "base/idp.yaml",
            "privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-09\"}",
            format!("privateKey: {{file: {}}}", s(1)),
        ),
        (
            "a PEM private key as {awsSecretsManager: ...}",
            "base/idp.yaml",
            "privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-09\"}",
            format!("privateKey: {{awsSecretsManager: {}}}", s(2)),
        ),
        (
            "a backend URL with an API key in its query",
            "base/gateway.yaml",
            "reporting: {url: \"http://reporting.${account.region}.svc.internal:8080\"}",
            format!("reporting: {{url: {}}}", s(26)),
        ),
        (
            "a backend URL with credentials",
            "base/gateway.yaml",
            "reporting: {url: \"http://reporting.${account.region}.svc.internal:8080\"}",
            format!("reporting: {{url: {}}}", s(25)),
        ),
        (
            "a private JWK in a trusted issuer's JWKS",
            "overlays/enterprise/tier.yaml",
            "              e: AQAB\n",
            format!(
                "              e: AQAB\n              d: {}\n              p: {}\n",
                secrets[28].marker.clone() + "abcdefghijklmnop",
                secrets[28].marker.clone() + "qrstuvwxyz012345"
            ),
        ),
        (
            "a trusted issuer's JWKS URL with a token",
            "overlays/enterprise/tier.yaml",
            "        jwks:\n",
            format!(
                "        jwksUrl: \"https://sso.partner.example/jwks?access_token={}\"\n        jwks:\n",
                secrets[9].value
            ),
        ),
        (
            "a plain client secret",
            "base/idp.yaml",
            "secret: {ref: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/clients/reporting-job\"}}",
            format!("secret: {}", s(9)),
        ),
        (
            "a secret where a duration belongs",
            "base/gateway.yaml",
            "    timeout: 15s",
            format!("    timeout: {}", s(12)),
        ),
        (
            "a secret where an account id belongs",
            "accounts/acme-prod.yaml",
            "accountId: \"423456789012\"",
            format!("accountId: {}", s(7)),
        ),
        (
            "a secret where fleet.yaml wants a duration",
            "fleet.yaml",
            "sessionDuration: 1h",
            format!("sessionDuration: {}", s(17)),
        ),
        (
            "a secret as a bucket name",
            "fleet.yaml",
            "bucket: fleetgate-config-${account.id}",
            format!("bucket: {}", s(18)),
        ),
        (
            "a secret in an account patch's route",
            "accounts/acme-prod.yaml",
            "rateLimit: {requests: 50, per: 1s, burst: 50}",
            format!(
                "rateLimit: {{requests: 50, per: 1s, burst: 50}}\n          timeout: {}",
                s(14)
            ),
        ),
        (
            "a secret as an overlay's flag value",
            "overlays/enterprise/tier.yaml",
            "order-cancellation: true",
            format!("order-cancellation: {}", s(19)),
        ),
        (
            "a secret in an OpenAPI extension",
            "services/orders/2.0.0/openapi.yaml",
            "      operationId: listOrders\n",
            format!(
                "      operationId: listOrders\n      x-fleetgate-timeout: {}\n",
                s(11)
            ),
        ),
        (
            "a secret as a field name",
            "base/gateway.yaml",
            "  defaults:\n",
            format!("  {}: 1\n  defaults:\n", secrets[10].value),
        ),
        (
            "a YAML syntax error next to a secret",
            "base/gateway.yaml",
            "      description: The aggregated /overview endpoint.",
            format!("      description: \"{} [unterminated", secrets[15].value),
        ),
        (
            "every kind where a boolean belongs",
            "base/gateway.yaml",
            "  flags:\n",
            format!(
                "  flags:\n{}",
                secrets
                    .iter()
                    .enumerate()
                    .map(|(i, x)| format!("    bad-{i:02}: {{enabled: {}}}\n", quoted(&x.value)))
                    .collect::<String>()
            ),
        ),
    ];
    // Each case on its own: `validate` (text and JSON) reads the working tree.
    for (what, file, find, replace) in &cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        support::copy_dir(&support::example_repo_dir(), tmp.path());
        edit(tmp.path(), file, find, replace);
        let fleet = Fleet {
            repo: tmp.path().to_path_buf(),
            target: String::new(),
            tmp,
        };
        let repo = fleet.repo.to_str().unwrap();
        let outputs: Vec<(String, Output)> = [
            vec!["validate", "--repo", repo],
            vec!["validate", "--repo", repo, "--format", "json"],
        ]
        .into_iter()
        .map(|args| (args.join(" "), fleet.run(&args)))
        .collect();
        for (command, out) in &outputs {
            assert_eq!(code(out), 1, "{what}: `fleetgate {command}`\n{}", show(out));
            let all = format!("{}{}", stdout(out), stderr(out));
            assert!(
                all.contains(file),
                "{what}: the error names {file}\n{}",
                show(out)
            );
        }
        assert_no_secret(&outputs, &secrets);
    }

    // Cases that do not hide each other (one per file and stage), together in one commit,
    // through every command: the errors of plan, apply and drift on an invalid head too.
    let groups: [&[&str]; 2] = [
        &[
            "an inline PEM private key",
            "a secret where a duration belongs",
            "a secret where an account id belongs",
            "a secret where fleet.yaml wants a duration",
            "a secret as an overlay's flag value",
            "a secret in an OpenAPI extension",
        ],
        &[
            "a PEM private key as {file: ...}",
            "a backend URL with an API key in its query",
            "a private JWK in a trusted issuer's JWKS",
            "a secret in an account patch's route",
        ],
    ];
    for group in groups {
        let fleet = Fleet::example();
        let mut files = Vec::new();
        for (what, file, find, replace) in &cases {
            if group.contains(what) {
                edit(&fleet.repo, file, find, replace);
                files.push(*file);
            }
        }
        assert_eq!(files.len(), group.len(), "{group:?}");
        fleet.commit("secrets where they break things");
        let outputs = fleet.every_command();
        for (command, out) in &outputs {
            assert_eq!(code(out), 1, "`fleetgate {command}`\n{}", show(out));
        }
        let validate = output_of(&outputs, "validate --repo");
        for file in files {
            assert!(
                stderr(validate).contains(file),
                "an error names {file}\n{}",
                show(validate)
            );
        }
        assert_no_secret(&outputs, &secrets);
    }
}

#[test]
fn an_inline_private_key_is_refused_with_a_message_that_says_what_to_do() {
    let fleet = Fleet::example();
    let pem = &corpus('K')[0];
    edit(
        &fleet.repo,
        "base/idp.yaml",
        "privateKey: {awsSecretsManager: \"arn:aws:secretsmanager:${account.region}:${account.id}:secret:fleetgate/idp/signing-2026-09\"}",
        &format!("privateKey: {}", quoted(&pem.value)),
    );
    let out = fleet.run(&["validate", "--repo", fleet.repo.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        err.contains("base/idp.yaml:18:")
            && err.contains("privateKey is a reference")
            && err.contains("value not shown"),
        "{err}"
    );
    assert!(!err.contains(&pem.marker), "{err}");
}
