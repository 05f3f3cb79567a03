//! Layout rules of the workspace's sources, checked on every `cargo test`:
//! - the pure stages (reconciler/src/{config,render,plan}, and bundle/src once it exists)
//!   name no runtime crate: tokio, hyper, axum, the AWS SDK (aws_sdk_*, aws_config,
//!   aws_smithy_*) or git2, anywhere in their code, tests included;
//! - no import cycle in reconciler/src, gateway/src (and bundle/src once it exists), neither
//!   between files nor between top-level modules (a folder, or a file at the top).
//!
//! A module is a file (`a/mod.rs` is module `a`; an inline module belongs to its file). A
//! file depends on another when its non-test code names a path into it: `crate::...`,
//! `super::...`, `self::...` or a path starting with one of its child modules, resolved to
//! the longest module path and through `pub use` re-exports to the module that defines the
//! item. `#[cfg(test)]` items, and the files their `mod x;` declare, are test code.
//!
//! Sources are read as Rust tokens (proc-macro2's lexer), so comments, doc comments and
//! strings never count, except a path in the string of an attribute
//! (`schema_with = "crate::schema::f"`), which the compiler resolves like any path.

#[path = "layout/modules.rs"]
mod modules;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use modules::{Crate, load, resolve};
use proc_macro2::{TokenStream, TokenTree};

/// A dependency graph: node names, and each edge with the first mention that makes it.
struct Graph {
    nodes: Vec<String>,
    edges: BTreeMap<(usize, usize), String>,
}

/// The graph of files, and the graph of top-level modules (`crate` is the root file).
fn graphs(krate: &Crate) -> (Graph, Graph) {
    let mut files = Graph {
        nodes: krate.files.clone(),
        edges: BTreeMap::new(),
    };
    let top = |file: usize| {
        krate.file_modules[file]
            .first()
            .cloned()
            .unwrap_or_else(|| "crate".to_string())
    };
    let mut tops: BTreeSet<String> = (0..krate.files.len()).map(top).collect();
    tops.insert("crate".to_string());
    let tops: Vec<String> = tops.into_iter().collect();
    let top_index = |file: usize| tops.iter().position(|t| *t == top(file)).unwrap_or(0);
    let mut folders = Graph {
        nodes: tops.clone(),
        edges: BTreeMap::new(),
    };
    for m in &krate.mentions {
        let Some(to) = resolve(krate, &m.path) else {
            continue;
        };
        let witness = format!("{}:{} names `{}`", krate.files[m.file], m.line, m.text);
        if to != m.file {
            files.edges.entry((m.file, to)).or_insert(witness.clone());
        }
        let (a, b) = (top_index(m.file), top_index(to));
        if a != b {
            folders.edges.entry((a, b)).or_insert(witness);
        }
    }
    (files, folders)
}

/// One cycle per strongly connected set of nodes, each printed with the mention that makes
/// each of its edges.
fn cycles(graph: &Graph) -> Vec<String> {
    let n = graph.nodes.len();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in graph.edges.keys() {
        next[a].push(b);
    }
    let reach = |from: usize| {
        let mut seen = vec![false; n];
        let mut stack = vec![from];
        while let Some(u) = stack.pop() {
            for &v in &next[u] {
                if !seen[v] {
                    seen[v] = true;
                    stack.push(v);
                }
            }
        }
        seen
    };
    let reaches: Vec<Vec<bool>> = (0..n).map(reach).collect();
    let mut reported = vec![false; n];
    let mut out = Vec::new();
    for start in 0..n {
        if reported[start] || !reaches[start][start] {
            continue;
        }
        let members: Vec<usize> = (0..n)
            .filter(|&v| reaches[start][v] && reaches[v][start])
            .collect();
        for &m in &members {
            reported[m] = true;
        }
        // The shortest way back to `start`, within its set.
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut queue = VecDeque::from([start]);
        while let Some(u) = queue.pop_front() {
            for &v in &next[u] {
                if parent[v].is_none() && members.contains(&v) {
                    parent[v] = Some(u);
                    queue.push_back(v);
                }
            }
        }
        let mut path = vec![start];
        let mut at = parent[start].unwrap_or(start);
        while at != start {
            path.push(at);
            at = parent[at].unwrap_or(start);
        }
        path.push(start);
        path.reverse();
        let names: Vec<&str> = path.iter().map(|&i| graph.nodes[i].as_str()).collect();
        let mut text = format!("  {}", names.join(" -> "));
        if members.len() + 1 > path.len() {
            let all: Vec<&str> = members.iter().map(|&i| graph.nodes[i].as_str()).collect();
            text.push_str(&format!(" (one of the cycles among {})", all.join(", ")));
        }
        for w in path.windows(2) {
            text.push_str(&format!("\n    {}", graph.edges[&(w[0], w[1])]));
        }
        out.push(text);
    }
    out
}

/// The import cycles of the crate whose root is `root` (`lib.rs`) in `src`, or why it could
/// not be read.
fn import_cycles(src: &Path, root: &str) -> Vec<String> {
    let read = |rel: &str| std::fs::read_to_string(src.join(rel)).ok();
    let krate = match load(root, &read) {
        Ok(k) => k,
        Err(e) => return vec![format!("{}: {e}", src.display())],
    };
    let (files, folders) = graphs(&krate);
    let mut out = Vec::new();
    for (level, graph) in [("files", &files), ("top-level modules", &folders)] {
        let found = cycles(graph);
        if !found.is_empty() {
            out.push(format!(
                "import cycles between {level} of {}:\n{}",
                src.display(),
                found.join("\n")
            ));
        }
    }
    out
}

/// The crates whose names the pure stages must not mention.
fn is_runtime_crate(name: &str) -> bool {
    matches!(name, "tokio" | "hyper" | "axum" | "aws_config" | "git2")
        || ["tokio_", "hyper_", "axum_", "aws_sdk_", "aws_smithy_"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// `file:line: names `crate`` for every runtime crate a file's code names.
fn runtime_mentions(rel: &str, text: &str) -> Result<Vec<String>, String> {
    fn walk(rel: &str, stream: TokenStream, out: &mut Vec<String>) {
        for tt in stream {
            match tt {
                TokenTree::Ident(i) if is_runtime_crate(&i.to_string()) => {
                    out.push(format!("{rel}:{}: names `{i}`", i.span().start().line));
                }
                TokenTree::Group(g) => walk(rel, g.stream(), out),
                _ => {}
            }
        }
    }
    let stream = TokenStream::from_str(text).map_err(|e| format!("{rel}: {e}"))?;
    let mut out = Vec::new();
    walk(rel, stream, &mut out);
    Ok(out)
}

/// Every `.rs` file under `dir`, sorted.
fn rs_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                .path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the reconciler is in the workspace")
        .to_path_buf()
}

/// The runtime crates named in the `.rs` files under `dirs`.
fn runtime_mentions_under(dirs: &[PathBuf]) -> Vec<String> {
    let ws = workspace();
    let mut found = Vec::new();
    for file in dirs.iter().flat_map(|d| rs_files(d)) {
        let rel = file
            .strip_prefix(&ws)
            .unwrap_or(&file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{rel}: {e}"));
        match runtime_mentions(&rel, &text) {
            Ok(m) => found.extend(m),
            Err(e) => found.push(e),
        }
    }
    found
}

#[test]
fn the_pure_stages_name_no_runtime_crate() {
    let ws = workspace();
    let mut dirs: Vec<PathBuf> = ["config", "render", "plan"]
        .iter()
        .map(|d| ws.join("reconciler/src").join(d))
        .collect();
    dirs.push(ws.join("bundle/src"));
    for dir in &dirs {
        assert!(dir.is_dir(), "{} is not a directory", dir.display());
    }
    let found = runtime_mentions_under(&dirs);
    assert!(
        found.is_empty(),
        "the pure stages must not use tokio, hyper, axum, the AWS SDK or git2:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_reconciler_has_no_import_cycle() {
    let found = import_cycles(&workspace().join("reconciler/src"), "lib.rs");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_gateway_has_no_import_cycle() {
    let found = import_cycles(&workspace().join("gateway/src"), "lib.rs");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_bundle_contract_has_no_import_cycle() {
    let src = workspace().join("bundle/src");
    assert!(src.is_dir(), "{} is not a directory", src.display());
    let found = import_cycles(&src, "lib.rs");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The checks themselves, on crates written here: each finds what it must and nothing else.
mod checks {
    use super::*;

    fn cycles_of(files: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
        let files: BTreeMap<&str, &str> = files.iter().copied().collect();
        let read = |rel: &str| files.get(rel).map(|t| t.to_string());
        let krate = load("lib.rs", &read).expect("the test crate loads");
        let (by_file, by_folder) = graphs(&krate);
        (cycles(&by_file), cycles(&by_folder))
    }

    #[test]
    fn a_child_and_its_parent_naming_each_other_are_a_file_cycle() {
        let (files, folders) = cycles_of(&[
            ("lib.rs", "pub mod a;"),
            ("a/mod.rs", "pub mod b;\npub struct T;\nuse b::f;"),
            ("a/b.rs", "pub fn f(_: super::T) {}"),
        ]);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].starts_with("  a/mod.rs -> a/b.rs -> a/mod.rs"),
            "{}",
            files[0]
        );
        assert!(files[0].contains("a/mod.rs:3 names `b::f`"), "{}", files[0]);
        assert!(
            files[0].contains("a/b.rs:1 names `super::T`"),
            "{}",
            files[0]
        );
        assert!(folders.is_empty(), "one folder: {folders:?}");
    }

    #[test]
    fn two_folders_naming_each_other_are_a_cycle_at_both_levels() {
        let (files, folders) = cycles_of(&[
            ("lib.rs", "pub mod a;\npub mod c;"),
            ("a/mod.rs", "pub mod x;"),
            ("a/x.rs", "use crate::c::{y::{self, Y}};\npub struct X;"),
            ("c/mod.rs", "pub mod y;"),
            ("c/y.rs", "pub struct Y(crate::a::x::X);"),
        ]);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(
            files[0].starts_with("  a/x.rs -> c/y.rs -> a/x.rs"),
            "{files:?}"
        );
        assert_eq!(folders.len(), 1, "{folders:?}");
        assert!(folders[0].starts_with("  a -> c -> a"), "{folders:?}");
    }

    #[test]
    fn test_code_comments_and_strings_do_not_count() {
        let (files, folders) = cycles_of(&[
            ("lib.rs", "pub mod a;\npub mod c;"),
            (
                "a.rs",
                "//! See [`crate::c`].\n\
                 // crate::c::f()\n\
                 /* crate::c::f() */\n\
                 /// Unlike [`crate::c::f`].\n\
                 pub fn f() { let _ = \"crate::c::f\"; }\n\
                 #[cfg(test)]\nmod tests { use crate::c::f; }\n\
                 #[cfg(all(test, unix))]\nfn helper() { crate::c::f() }\n\
                 #[cfg(test)]\nmod more;",
            ),
            ("c.rs", "pub fn f() { crate::a::f() }"),
        ]);
        assert!(files.is_empty(), "{files:?}");
        assert!(folders.is_empty(), "{folders:?}");
    }

    #[test]
    fn code_outside_cfg_test_counts() {
        let (files, _) = cycles_of(&[
            ("lib.rs", "pub mod a;\npub mod c;"),
            ("a.rs", "#[cfg(not(test))]\nfn f() { crate::c::f() }"),
            ("c.rs", "pub fn f() { let _ = crate::a::f as fn(); }"),
        ]);
        assert_eq!(files.len(), 1, "{files:?}");
    }

    #[test]
    fn a_path_in_an_attribute_string_counts() {
        let (files, _) = cycles_of(&[
            ("lib.rs", "pub mod a;\npub mod c;"),
            (
                "a.rs",
                "#[derive(JsonSchema)]\npub struct S {\n    #[schemars(schema_with = \"crate::c::f\")]\n    x: u8,\n}",
            ),
            ("c.rs", "pub fn f(_: &crate::a::S) {}"),
        ]);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].contains("a.rs:3 names `crate::c::f`"), "{files:?}");
    }

    #[test]
    fn a_re_export_is_followed_to_the_module_that_defines_the_item() {
        let sources = [
            ("lib.rs", "pub mod a;\npub mod c;\npub use c::Y;"),
            ("a.rs", "pub struct X(crate::Y);"),
            ("c.rs", "pub struct Y;"),
        ];
        let (files, folders) = cycles_of(&sources);
        assert!(
            files.is_empty(),
            "the root re-exports, nothing else: {files:?}"
        );
        assert!(folders.is_empty(), "{folders:?}");
        let mut sources = sources.to_vec();
        sources[2] = ("c.rs", "pub struct Y;\nfn f(_: crate::a::X) {}");
        let (files, _) = cycles_of(&sources);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].starts_with("  a.rs -> c.rs -> a.rs"), "{files:?}");
    }

    #[test]
    fn runtime_crates_are_found_by_name_with_their_line() {
        let text = "//! Never tokio here.\n\
                    use tokio::sync::Mutex;\n\
                    // git2::Repository in a comment\n\
                    fn f() { let _ = aws_sdk_s3::Client::new; let _ = \"hyper::Body\"; }\n\
                    #[cfg(test)]\nmod tests { #[axum::debug_handler] fn h() {} }";
        let found = runtime_mentions("x.rs", text).expect("it lexes");
        assert_eq!(
            found,
            [
                "x.rs:2: names `tokio`",
                "x.rs:4: names `aws_sdk_s3`",
                "x.rs:6: names `axum`",
            ]
        );
        assert!(!is_runtime_crate("tokens") && !is_runtime_crate("aws_lc_rs"));
    }
}
