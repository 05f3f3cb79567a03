//! A crate's module tree, read from its sources as Rust tokens, and the paths into its own
//! modules that its non-test code names. See the parent's comment for what counts.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr as _;

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// A module's path from its crate's root (`[]` is the root).
pub type ModPath = Vec<String>;

/// Reads a file of a crate's src dir by its relative path (`a/mod.rs`).
pub type Read<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A crate's module tree and the paths its non-test code names.
#[derive(Default)]
pub struct Crate {
    /// Files, relative to the src dir, in the order they were reached.
    pub files: Vec<String>,
    /// The module each file is.
    pub file_modules: Vec<ModPath>,
    /// Every module, inline ones too, and the file it is written in.
    modules: BTreeMap<ModPath, usize>,
    /// `pub use` bindings: (module, name) -> the absolute path it re-exports.
    exports: BTreeMap<(ModPath, String), ModPath>,
    pub mentions: Vec<Mention>,
}

/// A path named in a file's non-test code.
pub struct Mention {
    pub file: usize,
    /// Made absolute (from the crate root).
    pub path: ModPath,
    pub line: usize,
    /// As written.
    pub text: String,
}

/// A path (or one path of a use tree) as written.
struct Found {
    segs: Vec<String>,
    /// The name a `use` of it binds (the last segment, or its `as` name); none for a glob.
    binding: Option<String>,
    line: usize,
}

/// Where a run of tokens is.
struct Scope<'a> {
    file: usize,
    module: &'a ModPath,
    children: &'a BTreeSet<String>,
}

/// Loads the crate whose root file is `root` (`lib.rs`), following its `mod` declarations.
pub fn load(root: &str, read: Read) -> Result<Crate, String> {
    let mut krate = Crate::default();
    load_file(&mut krate, root, Vec::new(), "", read)?;
    Ok(krate)
}

/// Loads the file of `module`; `dir` is where the files of its `mod x;` children are.
fn load_file(
    krate: &mut Crate,
    rel: &str,
    module: ModPath,
    dir: &str,
    read: Read,
) -> Result<(), String> {
    let text = read(rel).ok_or_else(|| format!("{rel}: cannot read"))?;
    let tokens: Vec<TokenTree> = TokenStream::from_str(&text)
        .map_err(|e| format!("{rel}: {e}"))?
        .into_iter()
        .collect();
    let file = krate.files.len();
    krate.files.push(rel.to_string());
    krate.file_modules.push(module.clone());
    walk_module(krate, &tokens, file, module, dir, read)
}

/// Registers a module written in `file` and reads its non-test items: child modules are
/// loaded, everything else is scanned for paths.
fn walk_module(
    krate: &mut Crate,
    tokens: &[TokenTree],
    file: usize,
    module: ModPath,
    dir: &str,
    read: Read,
) -> Result<(), String> {
    let mut start = 0;
    while let Some(attr) = attribute_at(tokens, start, true) {
        if is_cfg_test(attr) {
            return Ok(());
        }
        start += 3;
    }
    krate.modules.entry(module.clone()).or_insert(file);
    let items = items(&tokens[start..]);
    let children: BTreeSet<String> = items
        .iter()
        .filter_map(|item| mod_decl(item).map(|(name, _)| name))
        .collect();
    let scope = Scope {
        file,
        module: &module,
        children: &children,
    };
    for item in &items {
        let Some((name, body)) = mod_decl(item) else {
            scan_item(krate, &scope, item);
            continue;
        };
        let mut sub = module.clone();
        sub.push(name.clone());
        let sub_dir = format!("{dir}{name}/");
        match body {
            Some(body) => walk_module(krate, &body, file, sub, &sub_dir, read)?,
            None => {
                let flat = format!("{dir}{name}.rs");
                let rel = if read(&flat).is_some() {
                    flat
                } else {
                    format!("{dir}{name}/mod.rs")
                };
                load_file(krate, &rel, sub, &sub_dir, read)?;
            }
        }
    }
    Ok(())
}

/// The non-test items of a module body: each runs from its attributes to its first `;` or
/// `{...}` at the top level (a stray `;` after a braced item is an item of its own).
fn items(tokens: &[TokenTree]) -> Vec<&[TokenTree]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let start = i;
        let mut test = false;
        while let Some(attr) = attribute_at(tokens, i, false) {
            test |= is_cfg_test(attr);
            i += 2;
        }
        while i < tokens.len() {
            let end = is_punct(tokens.get(i), ';')
                || matches!(&tokens[i], TokenTree::Group(g) if g.delimiter() == Delimiter::Brace);
            i += 1;
            if end {
                break;
            }
        }
        if !test {
            out.push(&tokens[start..i]);
        }
    }
    out
}

/// The attribute (`#[...]`, or with `inner` `#![...]`) starting at `tokens[i]`: its bracket.
fn attribute_at(tokens: &[TokenTree], i: usize, inner: bool) -> Option<&proc_macro2::Group> {
    if !is_punct(tokens.get(i), '#') {
        return None;
    }
    let at = if inner {
        if !is_punct(tokens.get(i + 1), '!') {
            return None;
        }
        i + 2
    } else {
        i + 1
    };
    match tokens.get(at) {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Bracket => Some(g),
        _ => None,
    }
}

/// `cfg(test)`, `cfg(all(test, ...))`; not `cfg(not(test))`.
fn is_cfg_test(attr: &proc_macro2::Group) -> bool {
    let tokens: Vec<TokenTree> = attr.stream().into_iter().collect();
    if !is_ident(tokens.first(), "cfg") {
        return false;
    }
    let mut idents = Vec::new();
    flatten_idents(attr.stream(), &mut idents);
    idents.iter().any(|i| i == "test") && !idents.iter().any(|i| i == "not")
}

fn flatten_idents(stream: TokenStream, out: &mut Vec<String>) {
    for tt in stream {
        match tt {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) => flatten_idents(g.stream(), out),
            _ => {}
        }
    }
}

/// `mod name;` (body `None`) or `mod name { ... }`, after any attributes and visibility.
fn mod_decl(item: &[TokenTree]) -> Option<(String, Option<Vec<TokenTree>>)> {
    let mut i = 0;
    while attribute_at(item, i, false).is_some() {
        i += 2;
    }
    i = skip_visibility(item, i);
    if !is_ident(item.get(i), "mod") {
        return None;
    }
    let Some(TokenTree::Ident(name)) = item.get(i + 1) else {
        return None;
    };
    match item.get(i + 2) {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
            Some((name.to_string(), Some(g.stream().into_iter().collect())))
        }
        _ => Some((name.to_string(), None)),
    }
}

fn skip_visibility(item: &[TokenTree], mut i: usize) -> usize {
    if is_ident(item.get(i), "pub") {
        i += 1;
        if matches!(item.get(i), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis)
        {
            i += 1;
        }
    }
    i
}

/// Records the paths an item names; a `pub use` also records what it re-exports.
fn scan_item(krate: &mut Crate, scope: &Scope, item: &[TokenTree]) {
    let mut i = 0;
    while attribute_at(item, i, false).is_some() {
        i += 2;
    }
    let public = is_ident(item.get(i), "pub");
    let re_export = public && is_ident(item.get(skip_visibility(item, i)), "use");
    let starts =
        |name: &str| matches!(name, "crate" | "super" | "self") || scope.children.contains(name);
    let mut found = Vec::new();
    scan(item, &starts, false, &mut found);
    for f in found {
        let Some(path) = absolute(scope, &f.segs) else {
            continue;
        };
        if re_export && let Some(name) = &f.binding {
            krate
                .exports
                .insert((scope.module.clone(), name.clone()), path.clone());
        }
        krate.mentions.push(Mention {
            file: scope.file,
            path,
            line: f.line,
            text: f.segs.join("::"),
        });
    }
}

/// Every path in `tokens` that starts with a name `starts` accepts. Doc attributes are
/// skipped; inside other attributes (`in_attr`) a string holding a path counts too.
fn scan(tokens: &[TokenTree], starts: &dyn Fn(&str) -> bool, in_attr: bool, out: &mut Vec<Found>) {
    let mut i = 0;
    while i < tokens.len() {
        let inner = is_punct(tokens.get(i + 1), '!');
        if let Some(attr) = attribute_at(tokens, i, inner) {
            let body: Vec<TokenTree> = attr.stream().into_iter().collect();
            if !is_ident(body.first(), "doc") {
                scan(&body, starts, true, out);
            }
            i += if inner { 3 } else { 2 };
            continue;
        }
        match &tokens[i] {
            TokenTree::Group(g) => {
                let body: Vec<TokenTree> = g.stream().into_iter().collect();
                scan(&body, starts, in_attr, out);
            }
            TokenTree::Literal(lit) if in_attr => {
                let text = lit.to_string();
                let inner = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
                if let Some(Ok(stream)) = inner.map(TokenStream::from_str) {
                    let body: Vec<TokenTree> = stream.into_iter().collect();
                    let mut paths = Vec::new();
                    scan(&body, starts, false, &mut paths);
                    let line = lit.span().start().line;
                    out.extend(paths.into_iter().map(|p| Found { line, ..p }));
                }
            }
            TokenTree::Ident(id) if starts(&id.to_string()) && path_starts_at(tokens, i) => {
                i = read_path(tokens, i, &[], out);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}

/// Whether `tokens[i]` begins a path: followed by `::` and a name, `{` or `*`; not itself
/// after `::` or `.` (a later segment, a method).
fn path_starts_at(tokens: &[TokenTree], i: usize) -> bool {
    let after_sep = i >= 2 && is_path_sep(tokens, i - 2);
    let after_dot = i >= 1 && is_punct(tokens.get(i - 1), '.');
    let next_ok = match tokens.get(i + 3) {
        Some(TokenTree::Ident(_)) => true,
        Some(TokenTree::Group(g)) => g.delimiter() == Delimiter::Brace,
        Some(TokenTree::Punct(p)) => p.as_char() == '*',
        _ => false,
    };
    !after_sep && !after_dot && is_path_sep(tokens, i + 1) && next_ok
}

/// Reads the path (or use tree) at `tokens[i]`, after `prefix`; pushes each whole path and
/// returns the index after it.
fn read_path(tokens: &[TokenTree], mut i: usize, prefix: &[String], out: &mut Vec<Found>) -> usize {
    let line = tokens[i].span().start().line;
    let mut segs = prefix.to_vec();
    loop {
        match tokens.get(i) {
            Some(TokenTree::Ident(id)) => segs.push(id.to_string()),
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let body: Vec<TokenTree> = g.stream().into_iter().collect();
                for part in body.split(|t| is_punct(Some(t), ',')) {
                    if !part.is_empty() {
                        read_path(part, 0, &segs, out);
                    }
                }
                return i + 1;
            }
            Some(TokenTree::Punct(p)) if p.as_char() == '*' => {
                out.push(Found {
                    segs,
                    binding: None,
                    line,
                });
                return i + 1;
            }
            _ => break,
        }
        i += 1;
        if !is_path_sep(tokens, i) {
            break;
        }
        i += 2;
    }
    // `self` in a use group names the group's prefix.
    if segs.len() > 1 && segs.last().is_some_and(|s| s == "self") {
        segs.pop();
    }
    let mut binding = segs.last().cloned();
    if is_ident(tokens.get(i), "as")
        && let Some(TokenTree::Ident(name)) = tokens.get(i + 1)
    {
        binding = Some(name.to_string());
        i += 2;
    }
    out.push(Found {
        segs,
        binding,
        line,
    });
    i
}

/// The path from the crate root; `None` when it does not start in this crate.
fn absolute(scope: &Scope, segs: &[String]) -> Option<ModPath> {
    let (first, rest) = segs.split_first()?;
    let mut path = match first.as_str() {
        "crate" => Vec::new(),
        "self" => scope.module.clone(),
        "super" => {
            let mut p = scope.module.clone();
            p.pop()?;
            p
        }
        child if scope.children.contains(child) => {
            let mut p = scope.module.clone();
            p.push(child.to_string());
            p
        }
        _ => return None,
    };
    let mut rest = rest.iter().peekable();
    while rest.next_if(|s| *s == "super").is_some() {
        path.pop()?;
    }
    path.extend(rest.cloned());
    Some(path)
}

/// The file that defines what `path` names: its longest module prefix, followed through
/// `pub use` re-exports.
pub fn resolve(krate: &Crate, path: &[String]) -> Option<usize> {
    let mut path = path.to_vec();
    // A re-export chain is short; the bound stops a re-export of itself.
    for _ in 0..16 {
        let n = (0..=path.len())
            .rev()
            .find(|&n| krate.modules.contains_key(&path[..n]))?;
        let module = path[..n].to_vec();
        let export = path
            .get(n)
            .and_then(|name| krate.exports.get(&(module.clone(), name.clone())));
        match export {
            Some(target) if target[..] != path[..=n] => {
                let mut next = target.clone();
                next.extend_from_slice(&path[n + 1..]);
                path = next;
            }
            _ => return krate.modules.get(&module).copied(),
        }
    }
    None
}

fn is_punct(tt: Option<&TokenTree>, c: char) -> bool {
    matches!(tt, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

fn is_ident(tt: Option<&TokenTree>, name: &str) -> bool {
    matches!(tt, Some(TokenTree::Ident(i)) if i == name)
}

/// `::` at `tokens[i]`.
fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!(tokens.get(i), Some(TokenTree::Punct(p)) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && is_punct(tokens.get(i + 1), ':')
}
