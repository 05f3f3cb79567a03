//! The plan comment is shaped by fleetgate, never by the pull request: every string a config
//! repo (or a ref name, target or target error) puts into a plan is planted, one injection at
//! a time, in every place a plan can show it, and the markdown is parsed with a CommonMark/GFM
//! parser. Its structure (blocks, lists, table rows and cells, details, raw HTML tags, links,
//! images, code) must be exactly that of the same plan with a benign string. The text format
//! must not carry a control or bidi character to a terminal. An invalid head gives a comment
//! and a JSON document that list every error, from the real binary on a real git repo.

// Helpers outside #[test] functions panic on purpose too: a test that cannot set up fails.
#![allow(clippy::unwrap_used)]

#[path = "../../tests/src/lib.rs"]
#[allow(dead_code)] // shared helpers: not every test file uses each
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use fleetgate::config::diagnostics::Diagnostic;
use fleetgate::config::example_fleet;
use fleetgate::plan::{self, Desired, Plan, Revision, Warning, WarningKind, format};
use fleetgate::target::{AccountRef, ETag, ErrorClass, Observed};
use fleetgate::{Repo, render};
use fleetgate_bundle::Bundle;
use fleetgate_bundle::bundle::Flag;
use fleetgate_bundle::pointer::{Hold, Pointer};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use support::{code, example_git_repo, git, json, stderr, stdout};

/// Strings an author can write, each aimed at one way of breaking out of its place.
fn corpus() -> Vec<String> {
    let mut c: Vec<String> = [
        "</details>**OK** [x](https://e.example)",
        "</details>",
        "<details><summary>fake</summary>",
        "</summary></details></details>\n\n# Approved",
        "**OK**",
        "_em_ ~~strike~~",
        "[x](https://e.example)",
        "[x][1]\n\n[1]: https://e.example",
        "![i](https://e.example/i.png)",
        "<img src=x onerror=alert(1)>",
        "<a href=\"https://e.example\">click</a>",
        "```",
        "```\n# Heading in a fence break\n```",
        "~~~",
        "`code` ``two`` ```three```",
        "`",
        "a | b | c",
        "\\| escaped pipe",
        "\n# Heading",
        "\r\n## Heading after CRLF",
        "> quote",
        "\n> quote on its own line",
        "- [x] task",
        "\n- [x] task",
        "1. ordered",
        "\n2) ordered",
        "+ plus",
        "\nSetext\n===",
        "\nSetext\n---",
        "    indented code",
        "\n    indented code",
        "<!-- fleetgate:plan -->",
        "<!-- a comment that hides the rest",
        "https://autolink.example",
        "www.autolink.example",
        "<https://autolink.example>",
        "someone@example.com",
        "@mention @org/team",
        "#123 and GH-123",
        "\\",
        "trailing backslash\\",
        "two trailing spaces  ",
        "  leading spaces",
        "&amp; &lt;b&gt; &#60;script&#62; &copy;",
        "\u{202E}evil\u{202C} and \u{2066}isolate\u{2069}",
        "\u{1b}[2J\u{1b}[31mred\u{1b}[0m\u{7}",
        "carriage\rreturn",
        "nul\u{0}byte and \u{9b}c1",
        "line\u{2028}separator",
        "$x^2$ and $$y$$",
        "[^1]\n\n[^1]: footnote",
        ":smile: :+1:",
        "***",
        "\n---\n",
        "| a | b |\n|---|---|\n| c | d |",
        "<script>alert(1)</script>",
        "<div>\n\nblock\n\n</div>",
        "*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.push(format!("{}</details>**OK**", "x".repeat(5_000)));
    c.push("`".repeat(40));
    c
}

/// The example repo rendered once: (account, bundle), sorted by name.
fn rendered() -> &'static [(AccountRef, Bundle)] {
    static CELL: OnceLock<Vec<(AccountRef, Bundle)>> = OnceLock::new();
    CELL.get_or_init(|| {
        let repo = Repo::load(&example_fleet::example_repo());
        assert!(repo.diagnostics.is_empty(), "{:?}", repo.diagnostics);
        repo.account_names()
            .map(|n| {
                let r = render(&repo, n).unwrap();
                (AccountRef::from_repo(&repo, n).unwrap(), r.bundle)
            })
            .collect()
    })
}

/// `bundle` with `p` planted in a flag description and name, a route name, every backend
/// URL, a host and a label.
fn plant(bundle: &Bundle, p: &str) -> Bundle {
    let mut b = bundle.clone();
    let gw = &mut b.gateway;
    for flag in gw.flags.values_mut() {
        flag.description = Some(p.to_string());
    }
    gw.flags.insert(
        format!("flag-{p}"),
        Flag {
            enabled: true,
            description: Some(p.to_string()),
        },
    );
    for backend in gw.backends.values_mut() {
        backend.url = format!("https://backend.example/{p}");
    }
    if let Some(route) = gw.routes.first_mut() {
        route.name = format!("route-{p}");
    }
    gw.hosts.push(format!("{p}.example"));
    b.account.labels.insert("planted".into(), p.to_string());
    b
}

fn pointer(bundle: &Bundle, hold: Option<Hold>) -> Pointer {
    Pointer {
        digest: bundle.digest(),
        commit: Some("2222222222222222222222222222222222222222".into()),
        previous: None,
        applied_by: "test".into(),
        applied_at: "2026-11-24T00:00:00Z".into(),
        hold,
        decommissioned: None,
    }
}

fn deployed(bundle: &Bundle, hold: Option<Hold>) -> Observed {
    Observed::Deployed {
        pointer: pointer(bundle, hold),
        etag: ETag("etag".into()),
        bundle: Box::new(bundle.clone()),
    }
}

/// A plan with `p` in every place a plan can hold an author's string: account names, ref
/// names, the target, wave names, flag descriptions and names, route names, backend URLs,
/// hosts, labels (in changes and diffs), unreachable reasons, hold reasons, orphans and
/// warnings. Every action is present: updates (grouped), creates, unreachable, held, drifted.
fn plan_with(p: &str) -> Plan {
    let all = rendered();
    let mut desired = Vec::new();
    let mut observed = BTreeMap::new();
    let mut wave_of = BTreeMap::new();
    let mut fleet = BTreeSet::new();
    // Six more accounts like the last: one group of seven with identical changes.
    let accounts = all
        .iter()
        .chain(std::iter::repeat_n(&all[all.len() - 1], 6));
    for (i, (account, bundle)) in accounts.enumerate() {
        // The index first: the order of accounts does not depend on the string.
        let name = format!("{i:02}-{}-{p}", account.name);
        let mut new = plant(bundle, p);
        let mut base_digest = None;
        let obs = match i {
            // Created: its summary names the account as the bundle does.
            0 | 1 => {
                new.account.name = name.clone();
                Observed::New
            }
            2 => Observed::Unreachable {
                reason: format!("{name}: cannot read the pointer: {p}"),
                class: ErrorClass::Other,
            },
            3 => deployed(
                bundle,
                Some(Hold {
                    by: p.to_string(),
                    at: "2026-11-24T00:00:00Z".into(),
                    reason: p.to_string(),
                    to: p.to_string(),
                    branch_head: None,
                }),
            ),
            // Drifted: deployed is neither the base nor the head.
            4 => {
                base_digest = Some(all[0].1.digest());
                deployed(bundle, None)
            }
            _ => deployed(bundle, None),
        };
        let account = AccountRef {
            name: name.clone(),
            ..account.clone()
        };
        desired.push(Desired {
            base_digest,
            ..Desired::new(account, &new, &new.canonical_json(), new.digest())
        });
        observed.insert(name.clone(), obs);
        wave_of.insert(name.clone(), usize::from(i >= 5));
        fleet.insert(name);
    }
    let mut deployed_names = fleet.clone();
    deployed_names.insert(format!("orphan-{p}"));
    let wave = |name: String| -> fleetgate::config::manifest::Wave {
        serde_json::from_value(serde_json::json!({ "name": name })).unwrap()
    };
    let context = plan::Context {
        repo: "config".into(),
        base: Some(Revision {
            rev: format!("base-{p}"),
            commit: "0000000000000000000000000000000000000000".into(),
        }),
        head: Revision {
            rev: format!("refs/heads/{p}"),
            commit: "1111111111111111111111111111111111111111".into(),
        },
        target: format!("file://deployed/{p}"),
        fleet,
        deployed: deployed_names,
        decommission: Default::default(),
        rendered: plan::RenderCounts {
            base: desired.len(),
            head: desired.len(),
        },
        waves: vec![wave(format!("canary-{p}")), wave(format!("prod-{p}"))],
        concurrency: 4,
        wave_of,
    };
    let options = plan::Options {
        redaction_key: b"test-key".to_vec(),
        ..plan::Options::default()
    };
    let mut plan = plan::plan(&context, &desired, &observed, &options);
    // Risk messages quote bundle values; one with the string, for every account.
    plan.warnings.push(Warning {
        kind: WarningKind::RouteLosesAuth,
        message: format!("route {p} no longer requires authentication"),
        accounts: plan.accounts.iter().map(|a| a.name.clone()).collect(),
    });
    plan
}

fn parser(md: &str) -> Parser<'_> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_MATH
        | Options::ENABLE_GFM
        | Options::ENABLE_SMART_PUNCTUATION;
    Parser::new_ext(md, options)
}

/// The HTML tags of a raw HTML event, in order: `<details`, `</summary`, `<!--`.
fn tags(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        let end = rest
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c.is_whitespace() || c == '>')
            .map_or(rest.len(), |(j, _)| j);
        out.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    out
}

/// The document's structure: every block and inline container's start and end (with
/// heading levels, list starts, table alignments, code block info strings, link and image
/// destinations), breaks, rules, task markers, math, code spans, and the tags of raw HTML.
/// Text and code contents are left out: they are where the strings belong. Along the way,
/// text that GitHub would turn into a mention, an issue link or an autolink fails the test
/// (GitHub does that after rendering, on text outside code, links and HTML tags).
///
/// A name that cannot be a code span (it has a `<`) is a `<code>` element: both count as
/// `code`.
fn structure(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut in_code, mut in_block) = (false, false);
    for event in parser(md) {
        match event {
            Event::InlineHtml(h) if &*h == "<code>" && !in_code => {
                in_code = true;
                out.push("code".to_string());
            }
            Event::InlineHtml(h) if &*h == "</code>" && in_code => in_code = false,
            Event::Text(_) if in_code || in_block => {}
            Event::Text(t) => {
                check_refs(md, &t);
                check_autolinks(md, &t);
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                in_block = true;
                out.push(format!("start CodeBlock({kind:?})"));
            }
            Event::End(TagEnd::CodeBlock) => {
                in_block = false;
                out.push("End(CodeBlock)".to_string());
            }
            Event::Code(_) => out.push("code".to_string()),
            Event::Html(h) | Event::InlineHtml(h) => {
                // Raw HTML is not parsed for autolinks; mentions are found in its text.
                check_refs(md, &decode_numeric(&h));
                out.extend(tags(&h));
            }
            Event::Start(tag) => out.push(format!("start {tag:?}")),
            other => out.push(format!("{other:?}")),
        }
    }
    out
}

/// `&#NN;` references decoded (all the entities fleetgate writes into HTML).
fn decode_numeric(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(i) = rest.find("&#") {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest[2..].find(';').and_then(|end| {
            let n: u32 = rest[2..2 + end].parse().ok()?;
            Some((char::from_u32(n)?, 3 + end))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push_str("&#");
                rest = &rest[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// GitHub's mentions and issue references, found after rendering in any text outside code.
fn check_refs(md: &str, text: &str) {
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied().unwrap_or(' ');
        assert!(
            !(*c == '@' && next.is_ascii_alphanumeric()),
            "a mention in {text:?}\n{md}"
        );
        assert!(
            !(*c == '#' && next.is_ascii_digit()),
            "an issue reference in {text:?}\n{md}"
        );
    }
}

/// GFM's extended autolinks (`https://...`, `www....`), found in markdown text.
fn check_autolinks(md: &str, text: &str) {
    for autolink in ["://", "www."] {
        assert!(
            !text.contains(autolink),
            "an autolink in {text:?} (an escape splits a text event where GitHub's autolink \
             extension stops too)\n{md}"
        );
    }
}

/// No character that reorders or hides text, or drives a terminal.
fn assert_clean(out: &str, what: &str) {
    let bad: Vec<char> = out
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(
                    c,
                    '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{2028}' | '\u{2029}'
                )
                || ('\u{202A}'..='\u{202E}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
        })
        .collect();
    assert!(bad.is_empty(), "{what} carries {bad:?}:\n{out}");
}

const BENIGN: &str = "benign";

#[test]
fn no_string_changes_the_structure_of_the_plan_comment() {
    let benign = plan_with(BENIGN);
    let benign_md = format::markdown(&benign, usize::MAX, None);
    let expected = structure(&benign_md);
    // The plan's own structure, so the comparison means something.
    for part in [
        "start Table(",
        "start TableRow",
        "start Link",
        "start Heading",
        "<details",
        "</summary",
        "start CodeBlock(Fenced(Borrowed(\"diff\")))",
        "start List(None)",
        "code",
    ] {
        assert!(
            expected.iter().any(|e| e.starts_with(part))
                || (part == "start Link" && !benign_md.contains("](")),
            "the benign comment has no {part}:\n{benign_md}"
        );
    }
    assert!(
        benign_md.contains("show all"),
        "a group of more than 5 accounts:\n{benign_md}"
    );
    assert!(
        benign_md.contains("### Notes") && benign_md.contains("### Orphaned"),
        "{benign_md}"
    );
    for p in corpus() {
        let planted = plan_with(&p);
        assert_eq!(
            (planted.groups.len(), planted.accounts.len()),
            (benign.groups.len(), benign.accounts.len()),
            "the same plan for {p:?}"
        );
        let md = format::markdown(&planted, usize::MAX, None);
        assert_eq!(
            structure(&md),
            expected,
            "{p:?} changes the comment's structure:\n{md}"
        );
        assert_eq!(
            md.matches(format::MARKDOWN_MARKER).count(),
            1,
            "{p:?}: the sticky marker once:\n{md}"
        );
        assert_clean(&md, &format!("the markdown of {p:?}"));

        // Cut to size, with a full-plan link that carries the string too: under the limit,
        // the one link is the plan's own, and the block structure is still whole.
        let url = format!("https://ci.example/{p}");
        let small = format::markdown(&planted, 12_000, Some(&url));
        assert!(small.len() <= 12_000, "{p:?}: {} bytes", small.len());
        assert_eq!(small.matches(format::MARKDOWN_MARKER).count(), 1);
        let s = structure(&small);
        let links: Vec<&String> = s.iter().filter(|e| e.starts_with("start Link")).collect();
        assert!(
            links.iter().all(|l| l.contains("https://ci.example/")),
            "{p:?}: {links:?}\n{small}"
        );
        assert!(!s.iter().any(|e| e.starts_with("start Image")), "{small}");
        let opened = s.iter().filter(|e| *e == "<details").count();
        assert_eq!(opened, s.iter().filter(|e| *e == "</details").count());
        assert!(
            s.iter().all(|e| !e.starts_with('<')
                || [
                    "<details",
                    "</details",
                    "<summary",
                    "</summary",
                    "<b",
                    "</b",
                    "<!--"
                ]
                .contains(&e.as_str())),
            "{p:?}: only the plan's own HTML: {s:?}"
        );
    }
}

#[test]
fn no_string_reaches_a_terminal_as_control_characters() {
    for p in corpus() {
        let text = format::text(&plan_with(&p), false);
        assert_clean(&text, &format!("the text plan of {p:?}"));
        // One line per item: a string cannot add a line that looks like the plan's own.
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("# Heading") || l == "==="),
            "{p:?}:\n{text}"
        );
    }
    let text = format::text(&plan_with("\u{1b}[2J\u{202E}"), false);
    assert!(
        text.contains("\\u{1b}[2J\\u{202e}"),
        "shown, not hidden:\n{text}"
    );
}

#[test]
fn the_error_comment_keeps_its_structure_and_its_size() {
    let errors = |p: &str, n: usize| -> Vec<Diagnostic> {
        (0..n)
            .map(|i| {
                Diagnostic::in_file(&format!("accounts/{p}-{i}.yaml"), format!("bad value {p}"))
                    .for_account(&format!("acct-{p}"))
            })
            .collect()
    };
    let head = Revision {
        rev: "HEAD".into(),
        commit: "1111111111111111111111111111111111111111".into(),
    };
    let md = |p: &str, n: usize| {
        let errors = errors(p, n);
        format::invalid_markdown(
            &format::InvalidHead {
                repo: "config",
                base: None,
                head: &Revision {
                    rev: format!("refs/heads/{p}"),
                    ..head.clone()
                },
                errors: &errors,
            },
            format::MARKDOWN_LIMIT,
        )
    };
    let expected = structure(&md(BENIGN, 3));
    assert_eq!(
        expected.iter().filter(|e| *e == "start Item").count(),
        3,
        "one item per error: {expected:?}"
    );
    for p in corpus() {
        let out = md(&p, 3);
        assert_eq!(structure(&out), expected, "{p:?}:\n{out}");
        assert_eq!(out.matches(format::MARKDOWN_MARKER).count(), 1, "{out}");
        assert_clean(&out, &p);
    }
    // More errors than fit: under the limit, the rest counted.
    let out = md(&"y".repeat(300), 2_000);
    assert!(out.len() <= format::MARKDOWN_LIMIT, "{} bytes", out.len());
    let shown = out.matches("\n- `accounts/").count();
    assert!(shown > 10 && shown < 2_000, "{shown}");
    assert!(
        out.contains(&format!("and {} more errors not shown", 2_000 - shown)),
        "{}",
        &out[out.len() - 400..]
    );
}

/// Runs the real binary with a private cache and no color.
fn run(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetgate"))
        .args(args)
        .env("FLEETGATE_CACHE_DIR", tmp.join("cache"))
        .env("FLEETGATE_REDACTION_KEY", "test-key")
        .env("NO_COLOR", "1")
        .output()
        .expect("fleetgate runs")
}

#[test]
fn an_invalid_head_gives_a_comment_and_a_json_document_of_every_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    example_git_repo(&repo);
    // Two files broken: a YAML syntax error, and an unknown field whose name is an injection.
    support::edit(
        &repo,
        "accounts/acme-prod.yaml",
        "stage: prod",
        "stage: [prod",
    );
    support::edit(
        &repo,
        "accounts/globex-prod.yaml",
        "spec:\n",
        "spec:\n  \"</details>**OK** [x](https://e.example) <!-- fleetgate:plan -->\": 1\n",
    );
    git(&repo, &["commit", "-q", "-am", "break two accounts"]);
    let target = format!("file://{}", tmp.path().join("deployed").display());
    let r = repo.to_str().unwrap();
    let plan = |format: &str| {
        run(
            tmp.path(),
            &["plan", "--repo", r, "--target", &target, "--format", format],
        )
    };

    // What validate finds in the same tree is what the plan reports.
    let validate = run(tmp.path(), &["validate", "--repo", r, "--format", "json"]);
    assert_eq!(code(&validate), 1, "{}", stderr(&validate));
    let expected: Vec<(String, u64, u64, String)> = json(&validate)["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap().to_string(),
                e["line"].as_u64().unwrap(),
                e["column"].as_u64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(expected.len() >= 2, "{expected:?}");
    assert!(expected.iter().any(|e| e.0 == "accounts/acme-prod.yaml"));
    assert!(expected.iter().any(|e| e.0 == "accounts/globex-prod.yaml"));

    let out = plan("json");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["valid"], false, "{doc}");
    assert_eq!(doc["formatVersion"], 1);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/plan-invalid.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let problems: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(
        problems.is_empty(),
        "the document fits its schema: {problems:?}"
    );
    assert!(doc.get("summary").is_none(), "no plan: {doc}");
    assert_eq!(doc["head"]["rev"], "HEAD");
    assert_eq!(doc["head"]["commit"].as_str().unwrap().len(), 40);
    let got: Vec<(String, u64, u64, String)> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["accounts"].is_array(), "{e}");
            (
                e["file"].as_str().unwrap().to_string(),
                e["line"].as_u64().unwrap(),
                e["column"].as_u64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, expected, "every error, located as validate locates it");
    assert!(
        stderr(&out).contains("accounts/acme-prod.yaml:"),
        "still on stderr"
    );

    let out = plan("markdown");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let md = stdout(&out);
    assert_eq!(md.matches(format::MARKDOWN_MARKER).count(), 1, "{md}");
    for (file, line, column, _) in &expected {
        assert!(
            md.contains(&format!("`{file}:{line}:{column}`")),
            "{file}:{line}:{column} in\n{md}"
        );
    }
    let s = structure(&md);
    assert_eq!(
        s.iter().filter(|e| *e == "start Item").count(),
        expected.len(),
        "one item per error: {s:?}\n{md}"
    );
    assert!(
        s.iter().all(|e| !e.starts_with('<') || e == "<!--"),
        "no HTML but the marker: {s:?}\n{md}"
    );
    assert!(
        !s.iter()
            .any(|e| e.starts_with("start Link") || e.starts_with("start Image"))
    );

    // The same to a file with --out.
    let file = tmp.path().join("plan.md");
    let out = run(
        tmp.path(),
        &[
            "plan",
            "--repo",
            r,
            "--target",
            &target,
            "--format",
            "markdown",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), md);

    // Text: the errors on stderr only, as before.
    let out = plan("text");
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("accounts/globex-prod.yaml:"),
        "{}",
        stderr(&out)
    );
}
