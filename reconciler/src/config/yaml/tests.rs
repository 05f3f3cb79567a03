//! Trees with positions, strict decoding, and what YAML may not do.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Route {
    name: String,
    timeout: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Doc {
    routes: Vec<Route>,
}

#[test]
fn every_node_knows_its_line_and_column() {
    let n = parse("f.yaml", "a: 1\nb:\n  - x: hi\n  - 2\n200: ok\n").unwrap();
    let b = n.get("b").unwrap();
    let Value::Seq(items) = &b.value else {
        panic!("{b:?}")
    };
    assert_eq!(
        (
            items[0].get("x").unwrap().span.line,
            items[0].get("x").unwrap().span.column
        ),
        (3, 8)
    );
    assert_eq!(items[1].span.line, 4);
    assert_eq!(n.get("200").unwrap().as_str(), Some("ok"));
}

#[test]
fn account_ids_with_leading_zeros_stay_strings() {
    let n = parse("f.yaml", "id: 012345678901\n").unwrap();
    assert_eq!(n.get("id").unwrap().as_str(), Some("012345678901"));
}

#[test]
fn syntax_and_duplicate_key_errors_are_located() {
    let e = parse("f.yaml", "a: 1\na: 2\n").unwrap_err();
    assert_eq!((e.span.line, e.span.column), (2, 1));
    assert!(e.message.contains("duplicate mapping key"), "{}", e.message);
    let e = parse("f.yaml", "a: [1\nb: 2\n").unwrap_err();
    assert_eq!(e.span.line, 2);
}

#[test]
fn typed_decode_errors_point_at_the_offending_key_or_value() {
    let n = parse(
        "f.yaml",
        "routes:\n  - name: a\n  - name: b\n    timout: 3\n",
    )
    .unwrap();
    let e = n.decode::<Doc>("spec").unwrap_err();
    assert_eq!((e.span.line, e.span.column), (4, 5), "{e}");
    assert!(
        e.message
            .starts_with("spec.routes[1].timout: unknown field `timout`"),
        "{e}"
    );

    let n = parse("f.yaml", "routes:\n  - name: a\n    timeout: soon\n").unwrap();
    let e = n.decode::<Doc>("").unwrap_err();
    assert_eq!((e.span.line, e.span.column), (3, 14), "{e}");
}

#[test]
fn numbers_keep_the_text_they_were_written_as() {
    let n = parse(
        "f.yaml",
        "a: 0x62A7DA2E14\nb: 4234_5678_9012\nc: {d: +123456789012, e: 1.2e11}\nf: [123456789012.0, 7]\ng: &x 12 # note\nh: *x\ni: \"12\"\n",
    )
    .unwrap();
    let raw = |n: &Node| n.raw.as_deref().map(str::to_string);
    assert_eq!(raw(n.get("a").unwrap()).as_deref(), Some("0x62A7DA2E14"));
    assert_eq!(raw(n.get("b").unwrap()).as_deref(), Some("4234_5678_9012"));
    let c = n.get("c").unwrap();
    assert_eq!(raw(c.get("d").unwrap()).as_deref(), Some("+123456789012"));
    assert_eq!(raw(c.get("e").unwrap()).as_deref(), Some("1.2e11"));
    let Value::Seq(f) = &n.get("f").unwrap().value else {
        panic!()
    };
    assert_eq!(raw(&f[0]).as_deref(), Some("123456789012.0"));
    assert_eq!(raw(&f[1]).as_deref(), Some("7"));
    assert_eq!(raw(n.get("g").unwrap()).as_deref(), Some("12"));
    assert_eq!(raw(n.get("h").unwrap()).as_deref(), Some("12"));
    assert_eq!(raw(n.get("i").unwrap()), None);
}

#[test]
fn tags_that_change_or_decode_a_value_are_refused_where_written() {
    for (doc, tag, line) in [
        ("a: 1\nkey: !!binary aGVsbG8=\n", "!!binary", 2),
        ("a:\n  - !!int \"12\"\n", "!!int", 2),
        ("a: !!bool \"true\"\n", "!!bool", 1),
        ("a: !!float 1\n", "!!float", 1),
        ("a:\n  b: !!null x\n", "!!null", 2),
        ("!!binary aGVsbG8=: x\n", "!!binary", 1),
    ] {
        let e = parse("f.yaml", doc).unwrap_err();
        assert_eq!(e.span.line, line, "{doc}: {e}");
        assert!(e.message.contains(tag), "{doc}: {e}");
    }
    let n = parse("f.yaml", "a: !!str 012\nb: !!map {c: 1}\nd: !!seq [1]\n").unwrap();
    assert_eq!(n.get("a").unwrap().as_str(), Some("012"));
}
