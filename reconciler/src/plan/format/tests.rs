//! The formats' escaping and limits.

use super::common::*;
use super::markdown::*;

#[test]
fn code_spans_outlast_every_backtick_run_and_keep_edge_spaces() {
    assert_eq!(md_code("a"), "`a`");
    assert_eq!(md_code("a`b"), "``a`b``");
    assert_eq!(md_code("``x"), "``` ``x ```");
    assert_eq!(md_code(" a "), "`  a  `");
    assert_eq!(md_code(""), "` `");
    assert_eq!(md_code("a\nb"), "`a b`");
    assert_eq!(
        md_code("<!-- fleetgate:plan -->"),
        "<code>&#60;&#33;&#45;&#45; fleetgate&#58;plan &#45;&#45;&#62;</code>"
    );
}

#[test]
fn fences_are_longer_than_any_backtick_run_inside() {
    assert_eq!(md_fence("+ a\n"), "```");
    assert_eq!(md_fence("+ ```\n"), "````");
    assert_eq!(md_fence("+ `````` x\n"), "```````");
}

#[test]
fn text_is_escaped_for_markdown_and_html() {
    assert_eq!(
        md_text("</details>**OK** [x](u)"),
        "&lt;\\/details&gt;\\*\\*OK\\*\\* \\[x\\]\\(u\\)"
    );
    assert_eq!(
        md_text("  # h\n- x  "),
        "&#32;&#32;\\#\u{2060} h \\- x&#32;&#32;"
    );
    assert_eq!(md_text("@bob"), "\\@\u{2060}bob");
    assert_eq!(md_html("a<b>&\"'"), "a&#60;b&#62;&#38;&#34;&#39;");
    assert_eq!(md_html("#1"), "&#35;\u{2060}1");
}

#[test]
fn hostile_characters_are_shown_not_obeyed() {
    assert_eq!(
        term("a\u{1b}[2Jb\u{202e}c\r\nd"),
        "a\\u{1b}[2Jb\\u{202e}c  d"
    );
    assert_eq!(term("plain"), "plain");
}

#[test]
fn long_strings_are_clipped_on_character_boundaries() {
    assert_eq!(clip("abcdef", 6), "abcdef");
    assert_eq!(clip("abcdefg", 6), "abc...");
    assert_eq!(clip("ééééééé", 6), "ééé...");
}

#[test]
fn link_destinations_cannot_end_early() {
    assert_eq!(
        md_link_dest("https://ci.example/a b>c\\d\n"),
        "<https://ci.example/a%20b%3Ec%5Cd%0A>"
    );
}
