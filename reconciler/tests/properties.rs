//! Invariants, checked over generated inputs:
//! - render is deterministic and does not depend on the order of routes, scopes and clients
//!   in the base manifests, nor on the order a source lists files in (today `Repo::load`
//!   sorts the listing, so that half guards the loader against regressions);
//! - merging an empty patch, or a document into itself, changes nothing.

use std::collections::BTreeMap;

use fleetgate::config::diagnostics::Span;
use fleetgate::config::example_fleet;
use fleetgate::config::source::{ConfigSource, MemSource, SourceError};
use fleetgate::config::yaml::{Key, Node, Value};
use fleetgate::{Repo, render};
use proptest::prelude::*;

/// Lists files in a caller-chosen order.
struct Shuffled {
    inner: MemSource,
    order: Vec<usize>,
}

impl ConfigSource for Shuffled {
    fn files(&self) -> Result<Vec<String>, SourceError> {
        let files = self.inner.files()?;
        let mut keyed: Vec<(usize, String)> = files
            .into_iter()
            .enumerate()
            .map(|(i, f)| (self.order.get(i).copied().unwrap_or(i), f))
            .collect();
        keyed.sort();
        Ok(keyed.into_iter().map(|(_, f)| f).collect())
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, SourceError> {
        self.inner.read(path)
    }
}

fn digests(repo: &Repo) -> BTreeMap<String, String> {
    repo.account_names()
        .map(|n| {
            (
                n.to_string(),
                render(repo, n)
                    .unwrap_or_else(|e| panic!("{n}: {e:?}"))
                    .digest
                    .to_string(),
            )
        })
        .collect()
}

/// Rewrites a manifest as JSON (valid YAML) with the named lists at `lists` permuted.
fn permute_lists(src: &mut MemSource, file: &str, lists: &[&str], seed: u64) {
    let text = String::from_utf8(src.files[file].clone()).expect("utf-8");
    let mut doc: serde_json::Value = serde_saphyr::from_str(&text).expect("parses");
    for (n, list) in lists.iter().enumerate() {
        if let Some(serde_json::Value::Array(items)) = doc["spec"].get_mut(*list) {
            // A seeded Fisher-Yates shuffle.
            let mut state = seed
                .wrapping_add(n as u64)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1);
            for i in (1..items.len()).rev() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let j = (state >> 33) as usize % (i + 1);
                items.swap(i, j);
            }
        }
    }
    src.files.insert(
        file.to_string(),
        serde_json::to_vec_pretty(&doc).expect("serializes"),
    );
}

fn baseline() -> &'static BTreeMap<String, String> {
    static BASE: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| digests(&Repo::load(&example_fleet::example_repo())))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn render_is_independent_of_file_and_item_order(order in proptest::collection::vec(0usize..1000, 40), seed in any::<u64>()) {
        let mut src = example_fleet::example_repo();
        permute_lists(&mut src, "base/gateway.yaml", &["routes"], seed);
        permute_lists(&mut src, "base/idp.yaml", &["scopes", "clients"], seed);
        let repo = Repo::load(&Shuffled { inner: src, order });
        prop_assert!(repo.diagnostics.is_empty(), "{:?}", repo.diagnostics);
        prop_assert_eq!(&digests(&repo), baseline());
    }
}

fn span() -> Span {
    Span::file("prop.yaml")
}

/// Trees like manifests: maps, named lists, scalar lists, scalars. No nulls (they mean
/// "remove" in a patch) and no `$patch` keys.
fn tree() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        "[a-z]{0,6}".prop_map(Value::Str),
    ]
    .prop_map(|v| Node::new(v, span()));
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::btree_map("[a-z]{1,4}", inner.clone(), 0..5).prop_map(|m| {
                Node::new(
                    Value::Map(
                        m.into_iter()
                            .map(|(k, v)| {
                                (
                                    Key {
                                        name: k,
                                        span: span(),
                                    },
                                    v,
                                )
                            })
                            .collect(),
                    ),
                    span(),
                )
            }),
            // A list of named items.
            proptest::collection::btree_map("[a-z]{1,4}", inner.clone(), 1..4).prop_map(|m| {
                let items = m
                    .into_iter()
                    .map(|(name, v)| {
                        Node::new(
                            Value::Map(vec![
                                (
                                    Key {
                                        name: "name".into(),
                                        span: span(),
                                    },
                                    Node::new(Value::Str(name), span()),
                                ),
                                (
                                    Key {
                                        name: "value".into(),
                                        span: span(),
                                    },
                                    v,
                                ),
                            ]),
                            span(),
                        )
                    })
                    .collect();
                Node::new(Value::Seq(items), span())
            }),
            proptest::collection::vec(inner, 0..4).prop_map(|v| Node::new(Value::Seq(v), span())),
        ]
    })
}

proptest! {
    #[test]
    fn merging_an_empty_patch_changes_nothing(base in tree()) {
        let mut merged = base.clone();
        render::merge::merge(&mut merged, &Node::new(Value::Map(vec![]), span())).expect("merges");
        if matches!(base.value, Value::Map(_)) {
            prop_assert_eq!(merged.to_json(), base.to_json());
        }
    }

    #[test]
    fn merging_a_document_into_itself_changes_nothing(base in tree()) {
        let mut merged = base.clone();
        render::merge::merge(&mut merged, &base).expect("merges");
        prop_assert_eq!(merged.to_json(), base.to_json());
    }
}
