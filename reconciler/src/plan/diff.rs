//! Unified diffs of pretty canonical bundles, made with `similar`.
//!
//! Hunk headers name the place in the bundle (`@@ gateway.routes[orders.list] @@`) rather
//! than line numbers: a reviewer sees what a hunk is about, and the same change in two
//! accounts whose bundles differ in length elsewhere yields the same text, so it groups.

use similar::{ChangeTag, TextDiff};

/// The diff from `old` to `new` (empty when equal). Lines keep their `\n`.
pub fn unified(old: &str, new: &str, context: usize) -> String {
    let diff = TextDiff::from_lines(old, new);
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let mut out = String::new();
    for group in diff.grouped_ops(context) {
        // Locate the hunk by its first changed line, in the new text when it has one.
        let place = group
            .iter()
            .find(|op| !matches!(op.tag(), similar::DiffTag::Equal))
            .map(|op| {
                let (o, n) = (op.old_range(), op.new_range());
                if !n.is_empty() {
                    json_path(&new_lines, n.start)
                } else {
                    json_path(&old_lines, o.start)
                }
            })
            .unwrap_or_default();
        if place.is_empty() {
            out.push_str("@@ @@\n");
        } else {
            out.push_str(&format!("@@ {place} @@\n"));
        }
        for op in &group {
            for change in diff.iter_changes(op) {
                out.push(match change.tag() {
                    ChangeTag::Equal => ' ',
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                });
                out.push_str(change.value());
                if change.missing_newline() {
                    out.push('\n');
                }
            }
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The JSON path of line `idx` of a two-space pretty-printed document: the keys of the
/// enclosing objects, and for list items their `name` or `id` (`gateway.routes[orders.list]`).
pub fn json_path(lines: &[&str], idx: usize) -> String {
    let Some(line) = lines.get(idx) else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    // The line's own key, when it opens something or is a field: it says more than its parent.
    let mut level = indent(line);
    if let Some(key) = key_of(line)
        && (line.trim_end().ends_with('{') || line.trim_end().ends_with('['))
    {
        parts.push(key.to_string());
    }
    for i in (0..idx).rev() {
        let l = lines[i];
        let ind = indent(l);
        if ind >= level {
            continue;
        }
        let t = l.trim_end();
        if !(t.ends_with('{') || t.ends_with('[')) {
            continue;
        }
        level = ind;
        if ind == 0 && key_of(l).is_none() {
            break; // the document itself
        }
        match key_of(l) {
            Some(key) => parts.push(key.to_string()),
            None => {
                // A list item: name it by its `name` or `id` field.
                let name = item_name(lines, i, ind).unwrap_or_else(|| "*".into());
                parts.push(format!("[{name}]"));
            }
        }
        if ind == 0 {
            break;
        }
    }
    parts.reverse();
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        out.push_str(&p);
    }
    out
}

/// `"key": ...` -> `key`.
fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start().strip_prefix('"')?;
    let end = t.find("\":")?;
    Some(&t[..end])
}

fn item_name(lines: &[&str], open: usize, ind: usize) -> Option<String> {
    for l in &lines[open + 1..] {
        let li = indent(l);
        if li <= ind {
            break;
        }
        if li == ind + 2 {
            for field in ["\"name\": \"", "\"id\": \""] {
                if let Some(rest) = l.trim_start().strip_prefix(field) {
                    return Some(rest.trim_end_matches(',').trim_end_matches('"').to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_are_named_by_place_and_carry_no_line_numbers() {
        let old = r#"{
  "gateway": {
    "routes": [
      {
        "methods": [
          "GET"
        ],
        "name": "orders.list",
        "path": "/orders",
        "timeout": "5s"
      }
    ]
  }
}
"#;
        let new = old.replace("\"5s\"", "\"10s\"");
        let d = unified(old, &new, 1);
        assert_eq!(
            d,
            "@@ gateway.routes[orders.list] @@\n         \"path\": \"/orders\",\n-        \"timeout\": \"5s\"\n+        \"timeout\": \"10s\"\n       }\n"
        );
        assert_eq!(unified(old, old, 3), "");
        // A whole new document diffs as additions.
        assert!(
            unified("", old, 3)
                .lines()
                .skip(1)
                .all(|l| l.starts_with('+'))
        );
    }
}
