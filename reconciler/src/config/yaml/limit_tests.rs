//! The parser's budgets: every limit is reached with a message naming it, and its file.

use super::*;
use serde_saphyr::budget::BudgetBreach;

fn breach(breach: BudgetBreach) -> String {
    limit_message(&serde_saphyr::Error::Budget {
        breach,
        location: serde_saphyr::Location::UNKNOWN,
    })
    .expect("a limit message")
}

#[test]
fn each_breached_limit_is_named_with_its_value() {
    assert_eq!(
        breach(BudgetBreach::Nodes { nodes: 4_000_001 }),
        "the document has more than 4,000,000 nodes (scalars, mappings and sequences, aliases expanded): the limit for one file"
    );
    assert_eq!(
        breach(BudgetBreach::Events { events: 8_000_001 }),
        "the document has more than 8,000,000 parser events (aliases expanded): the limit for one file"
    );
    assert_eq!(
        breach(BudgetBreach::ScalarBytes {
            total_scalar_bytes: 1 << 26
        }),
        "the document has more than 67,108,864 bytes of scalar text (aliases expanded): the limit for one file"
    );
    assert_eq!(
        breach(BudgetBreach::Aliases { aliases: 50_001 }),
        "the document uses more than 50,000 aliases: the limit for one file"
    );
    assert!(
        !breach(BudgetBreach::Documents { documents: 2 }).contains("anchors and aliases"),
        "no guess at the cause"
    );
}

#[test]
fn a_document_without_anchors_is_never_blamed_on_them() {
    // Deserializing recurses per level; an unoptimized build needs more than a test
    // thread's 2 MiB for 64 levels, so this runs on a stack the size of a main thread's.
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            let deep = format!("a: {}1{}\n", "[".repeat(65), "]".repeat(65));
            let e = parse("f.yaml", &deep).unwrap_err();
            assert_eq!(
                e.message,
                "nested too deeply: more than 64 levels of mappings and sequences"
            );
            let ok = format!("a: {}1{}\n", "[".repeat(63), "]".repeat(63));
            assert!(parse("f.yaml", &ok).is_ok());
        })
        .expect("a thread")
        .join()
        .expect("no panic");
}

#[test]
fn alias_expansion_is_bounded() {
    let mut laughs = String::from("l0: &l0 [lol]\n");
    for i in 1..=9 {
        let items = vec![format!("*l{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("l{i}: &l{i} [{items}]\n"));
    }
    let e = parse("f.yaml", &laughs).unwrap_err();
    assert!(
        e.message.contains("anchors hold more than 1,000,000 parser events (aliases inside them expanded): the limit for one file"),
        "{e}"
    );
    let wide = format!(
        "big: &big [{}]\ncopies: [{}]\n",
        vec!["lol"; 1_000].join(", "),
        vec!["*big"; 2_000].join(", ")
    );
    let e = parse("f.yaml", &wide).unwrap_err();
    assert_eq!(
        e.message,
        "aliases expand to more than 1,000,000 parser events: the limit for one file"
    );
    assert_eq!(e.span.file.as_ref(), "f.yaml");
}

#[test]
fn thousands_are_grouped() {
    assert_eq!(group_thousands(0), "0");
    assert_eq!(group_thousands(999), "999");
    assert_eq!(group_thousands(1_000), "1,000");
    assert_eq!(group_thousands(67_108_864), "67,108,864");
}
