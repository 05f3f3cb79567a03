//! How overlays and patches change a manifest. The rules (docs/merge-rules.md):
//!
//! - **Maps merge deeply**: keys of the patch are merged into the base, recursively.
//! - **`key: null` removes** the key from the base.
//! - **Lists of named items merge by name**: when the base's items are maps with a `name`
//!   (or `id`) field, each patch item updates the base item of the same name, or is appended.
//!   `{name: x, $patch: delete}` removes item `x` (an error if there is none, to catch typos).
//! - **Other lists and scalars are replaced** by the patch's value.
//! - **`$patch: replace`** in a map replaces the whole map instead of merging; as the first
//!   item of a list (`- $patch: replace`) it replaces the whole list with the other items.
//!
//! Merging is done on spanned trees, so every value keeps the file and line it came from.
//! The result is decoded into the strict type afterwards: a patch cannot smuggle in a field
//! the type does not know.

use std::collections::HashMap;

use crate::config::diagnostics::Diagnostic;
use crate::config::yaml::{Node, Value};

pub const DIRECTIVE: &str = "$patch";

/// The fields that name items of a list, in order of preference.
const NAME_KEYS: [&str; 2] = ["name", "id"];

/// Merges `patch` into `base`.
pub fn merge(base: &mut Node, patch: &Node) -> Result<(), Diagnostic> {
    match &patch.value {
        Value::Map(entries) => {
            let directive = directive(patch)?;
            if directive == Some("delete") {
                return Err(Diagnostic::new(
                    patch
                        .key_span(DIRECTIVE)
                        .cloned()
                        .unwrap_or_else(|| patch.span.clone()),
                    "`$patch: delete` is only valid on an item of a list of named items",
                ));
            }
            if directive == Some("replace") || !matches!(base.value, Value::Map(_)) {
                *base = strip(patch)?;
                return Ok(());
            }
            for (key, value) in entries {
                if key.name == DIRECTIVE {
                    continue;
                }
                if value.is_null() {
                    base.remove(&key.name);
                    continue;
                }
                let existing = match &mut base.value {
                    Value::Map(base_entries) => {
                        base_entries.iter_mut().find(|(k, _)| k.name == key.name)
                    }
                    _ => None,
                };
                match existing {
                    Some((base_key, existing)) => {
                        merge(existing, value)?;
                        // A value the patch replaced (a scalar, a list that is not merged by
                        // name, a map with `$patch: replace`) now carries the patch's span;
                        // its key does too, so an error about the whole value (a duplicate
                        // in a list, a wrong type) points at the patch that wrote it. A map
                        // or named list merged item by item keeps the base's key.
                        if existing.span == value.span {
                            base_key.span = key.span.clone();
                        }
                    }
                    None => {
                        let value = strip(value)?;
                        if let Value::Map(base_entries) = &mut base.value {
                            base_entries.push((key.clone(), value));
                        }
                    }
                }
            }
            Ok(())
        }
        Value::Seq(items) => {
            let (replace, items) = match items.first() {
                Some(first) if directive(first)? == Some("replace") && is_only_directive(first) => {
                    (true, &items[1..])
                }
                _ => (false, &items[..]),
            };
            let name_key = match &base.value {
                Value::Seq(base_items) if !replace => named_list_key(base_items),
                _ => None,
            };
            match name_key {
                Some(name_key) => merge_named(base, items, name_key),
                None => {
                    // Replaced wholesale: a patch item may still not say `$patch: delete`.
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        if directive(item)? == Some("delete") {
                            return Err(Diagnostic::new(
                                item.span.clone(),
                                "`$patch: delete` names an item, but the list it patches has no named items",
                            ));
                        }
                        out.push(strip(item)?);
                    }
                    *base = Node::new(Value::Seq(out), patch.span.clone());
                    Ok(())
                }
            }
        }
        _ => {
            *base = patch.clone();
            Ok(())
        }
    }
}

fn merge_named(base: &mut Node, items: &[Node], name_key: &str) -> Result<(), Diagnostic> {
    let Value::Seq(base_items) = &mut base.value else {
        unreachable!("named lists are sequences")
    };
    // Items are found by name through an index, so a patch of m items into a list of n costs
    // O(n + m), not O(n * m): generated lists of 10,000s of routes are patched this way. A
    // deleted item leaves a hole until the end, so positions stay valid.
    let mut slots: Vec<Option<Node>> = std::mem::take(base_items).into_iter().map(Some).collect();
    let result = merge_named_slots(&mut slots, items, name_key);
    *base_items = slots.into_iter().flatten().collect();
    result
}

fn merge_named_slots(
    slots: &mut Vec<Option<Node>>,
    items: &[Node],
    name_key: &str,
) -> Result<(), Diagnostic> {
    // name -> positions of the items of that name, last first (so `pop` is the first one,
    // which is the one a patch item applies to).
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, slot) in slots.iter().enumerate().rev() {
        if let Some(name) = slot.as_ref().and_then(|b| item_name(b, name_key)) {
            by_name.entry(name.to_string()).or_default().push(i);
        }
    }
    for item in items {
        let Some(name) = item_name(item, name_key) else {
            return Err(Diagnostic::new(
                item.span.clone(),
                format!(
                    "this list merges by `{name_key}`, so each patch item needs a `{name_key}` \
                     (to replace the whole list, start it with `- $patch: replace`)"
                ),
            ));
        };
        let positions = by_name.entry(name.to_string()).or_default();
        let position = positions.last().copied();
        match (directive(item)?, position) {
            (Some("delete"), Some(i)) => {
                slots[i] = None;
                positions.pop();
            }
            (Some("delete"), None) => {
                return Err(Diagnostic::new(
                    item.span.clone(),
                    format!("`$patch: delete` of {name_key} {name:?}, but there is no such item"),
                ));
            }
            (Some("replace"), Some(i)) => slots[i] = Some(strip(item)?),
            (_, Some(i)) => {
                if let Some(existing) = slots[i].as_mut() {
                    merge(existing, item)?;
                }
            }
            (_, None) => {
                positions.push(slots.len());
                slots.push(Some(strip(item)?));
            }
        }
    }
    Ok(())
}

fn item_name<'a>(item: &'a Node, name_key: &str) -> Option<&'a str> {
    item.get(name_key).and_then(Node::as_str)
}

/// The key that names items of `items`, when every item is a map with one.
fn named_list_key(items: &[Node]) -> Option<&'static str> {
    if items.is_empty() {
        return None;
    }
    NAME_KEYS.into_iter().find(|key| {
        items
            .iter()
            .all(|i| i.get(key).and_then(Node::as_str).is_some())
    })
}

fn directive(node: &Node) -> Result<Option<&str>, Diagnostic> {
    let Some(d) = node.get(DIRECTIVE) else {
        return Ok(None);
    };
    match d.as_str() {
        Some(s @ ("delete" | "replace")) => Ok(Some(s)),
        _ => Err(Diagnostic::new(
            d.span.clone(),
            "`$patch` must be `delete` or `replace`",
        )),
    }
}

fn is_only_directive(node: &Node) -> bool {
    matches!(&node.value, Value::Map(e) if e.len() == 1)
}

/// A copy of `node` without `$patch` directives, checking that none is misplaced.
fn strip(node: &Node) -> Result<Node, Diagnostic> {
    let value = match &node.value {
        Value::Map(entries) => {
            if let Some(d) = directive(node)?
                && d == "delete"
            {
                return Err(Diagnostic::new(
                    node.key_span(DIRECTIVE)
                        .cloned()
                        .unwrap_or_else(|| node.span.clone()),
                    "`$patch: delete` has nothing to delete here",
                ));
            }
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                if k.name != DIRECTIVE && !v.is_null() {
                    out.push((k.clone(), strip(v)?));
                }
            }
            Value::Map(out)
        }
        Value::Seq(items) => {
            let items = match items.first() {
                Some(first) if directive(first)? == Some("replace") && is_only_directive(first) => {
                    &items[1..]
                }
                _ => &items[..],
            };
            Value::Seq(items.iter().map(strip).collect::<Result<_, _>>()?)
        }
        other => other.clone(),
    };
    Ok(Node::new(value, node.span.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::parse;

    fn merged(base: &str, patch: &str) -> serde_json::Value {
        let mut b = parse("base.yaml", base).unwrap();
        let p = parse("patch.yaml", patch).unwrap();
        merge(&mut b, &p).unwrap();
        b.to_json()
    }

    fn merge_err(base: &str, patch: &str) -> Diagnostic {
        let mut b = parse("base.yaml", base).unwrap();
        let p = parse("patch.yaml", patch).unwrap();
        merge(&mut b, &p).unwrap_err()
    }

    #[test]
    fn maps_merge_deeply_and_null_removes() {
        let out = merged(
            "a: {x: 1, y: {z: 2, w: 3}}\nb: 1\n",
            "a: {y: {z: 20}, n: new}\nb: null\n",
        );
        assert_eq!(
            out,
            serde_json::json!({"a": {"x": 1, "y": {"z": 20, "w": 3}, "n": "new"}})
        );
    }

    #[test]
    fn named_lists_merge_by_name_append_and_delete() {
        let out = merged(
            "routes:\n- {name: a, timeout: 1s, path: /a}\n- {name: b, path: /b}\n",
            "routes:\n- {name: a, timeout: 5s}\n- {name: b, $patch: delete}\n- {name: c, path: /c}\n",
        );
        assert_eq!(
            out,
            serde_json::json!({"routes": [
                {"name": "a", "timeout": "5s", "path": "/a"},
                {"name": "c", "path": "/c"}
            ]})
        );
    }

    #[test]
    fn a_name_used_twice_is_patched_at_its_first_item_and_appends_can_be_patched() {
        let out = merged(
            "r:\n- {name: a, n: 1}\n- {name: b}\n- {name: a, n: 2}\n",
            "r:\n- {name: a, x: first}\n- {name: a, $patch: delete}\n- {name: a, y: second}\n- {name: c}\n- {name: c, z: 3}\n",
        );
        assert_eq!(
            out,
            serde_json::json!({"r": [
                {"name": "b"},
                {"name": "a", "n": 2, "y": "second"},
                {"name": "c", "z": 3}
            ]})
        );
    }

    #[test]
    fn clients_merge_by_id() {
        let out = merged(
            "clients:\n- {id: web, ttl: 1}\n",
            "clients:\n- {id: web, ttl: 2}\n",
        );
        assert_eq!(
            out,
            serde_json::json!({"clients": [{"id": "web", "ttl": 2}]})
        );
    }

    #[test]
    fn scalar_lists_are_replaced() {
        assert_eq!(
            merged("m: [GET, POST]\n", "m: [PUT]\n"),
            serde_json::json!({"m": ["PUT"]})
        );
    }

    #[test]
    fn replace_directives() {
        assert_eq!(
            merged("a: {x: 1, y: 2}\n", "a: {$patch: replace, z: 3}\n"),
            serde_json::json!({"a": {"z": 3}})
        );
        assert_eq!(
            merged(
                "r:\n- {name: a}\n- {name: b}\n",
                "r:\n- $patch: replace\n- {name: c}\n"
            ),
            serde_json::json!({"r": [{"name": "c"}]})
        );
    }

    #[test]
    fn an_item_can_be_replaced_instead_of_merged() {
        assert_eq!(
            merged(
                "r:\n- {name: a, x: 1, y: 2}\n",
                "r:\n- {name: a, $patch: replace, z: 3}\n"
            ),
            serde_json::json!({"r": [{"name": "a", "z": 3}]})
        );
    }

    #[test]
    fn a_one_of_value_is_switched_with_replace() {
        assert_eq!(
            merged(
                "privateKey: {awsSecretsManager: arn}\n",
                "privateKey: {$patch: replace, env: KEY}\n"
            ),
            serde_json::json!({"privateKey": {"env": "KEY"}})
        );
    }

    #[test]
    fn delete_outside_a_named_list_is_an_error() {
        let e = merge_err("a: {x: 1}\n", "a: {$patch: delete}\n");
        assert!(
            e.message
                .contains("only valid on an item of a list of named items"),
            "{e}"
        );
        let e = merge_err("m: [GET]\n", "m:\n- {name: x, $patch: delete}\n");
        assert!(e.message.contains("has no named items"), "{e}");
    }

    #[test]
    fn mistakes_are_located_errors() {
        let e = merge_err("r:\n- {name: a}\n", "r:\n- {name: zz, $patch: delete}\n");
        assert_eq!(e.span.file.as_ref(), "patch.yaml");
        assert_eq!(e.span.line, 2);
        assert!(e.message.contains("no such item"), "{e}");

        let e = merge_err("r:\n- {name: a}\n", "r:\n- {timeout: 1s}\n");
        assert!(e.message.contains("needs a `name`"), "{e}");

        let e = merge_err("a: {x: 1}\n", "a: {$patch: frobnicate}\n");
        assert!(e.message.contains("must be `delete` or `replace`"), "{e}");
    }

    #[test]
    fn merged_values_keep_the_span_of_the_file_that_set_them() {
        let mut b = parse(
            "base.yaml",
            "routes:\n- name: a\n  timeout: 1s\n  path: /a\n",
        )
        .unwrap();
        let p = parse("overlay.yaml", "\n\nroutes:\n- name: a\n  timeout: 5s\n").unwrap();
        merge(&mut b, &p).unwrap();
        let Value::Seq(routes) = &b.get("routes").unwrap().value else {
            panic!()
        };
        assert_eq!(
            routes[0].get("timeout").unwrap().span.file.as_ref(),
            "overlay.yaml"
        );
        assert_eq!(routes[0].get("timeout").unwrap().span.line, 5);
        assert_eq!(
            routes[0].get("path").unwrap().span.file.as_ref(),
            "base.yaml"
        );
    }

    #[test]
    fn a_replaced_value_and_its_key_carry_the_patch_span_a_merged_one_keeps_the_base_key() {
        let mut b = parse(
            "base.yaml",
            "hosts: [a, b]\ndefaults: {timeout: 1s, cors: {maxAge: 1m}}\nroutes:\n- {name: a, path: /a}\n",
        )
        .unwrap();
        let p = parse(
            "patch.yaml",
            "\nhosts: [c, c]\ndefaults:\n  timeout: 2s\n  cors: {$patch: replace, maxAge: 2m}\nroutes:\n- {name: a, path: /b}\n",
        )
        .unwrap();
        merge(&mut b, &p).unwrap();
        let key = |node: &Node, k: &str| {
            let s = node.key_span(k).unwrap();
            (s.file.to_string(), s.line)
        };
        // Replaced: the list and its key are the patch's.
        assert_eq!(key(&b, "hosts"), ("patch.yaml".into(), 2));
        assert_eq!(b.get("hosts").unwrap().span.file.as_ref(), "patch.yaml");
        // Merged key by key: the map's key stays the base's, the values are the patch's.
        assert_eq!(key(&b, "defaults"), ("base.yaml".into(), 2));
        let defaults = b.get("defaults").unwrap();
        assert_eq!(key(defaults, "cors"), ("patch.yaml".into(), 5));
        assert_eq!(defaults.get("timeout").unwrap().span.line, 4);
        // A named list merged by name keeps its key; the item's value is the patch's.
        assert_eq!(key(&b, "routes"), ("base.yaml".into(), 3));
    }
}
