//! YAML documents as trees whose every node remembers where it was written.
//!
//! serde-saphyr parses (and rejects invalid YAML and duplicate keys, with their location);
//! this module keeps the result as a [`Node`] tree with a [`Span`] on every node and key.
//! Overlays and patches are merged on these trees, so after merging each value still knows
//! its file and line. Typed decoding then goes through `serde_path_to_error`, and the path of
//! a failure is walked back through the tree to the line that caused it.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_saphyr::{Spanned, Tagged};

use crate::config::diagnostics::{Diagnostic, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    /// For a number, the scalar as written (`0x1F`, `1_000`, `+12`): YAML reads all of
    /// these as numbers, and a field that must be written one way (an account id) checks
    /// the text. `None` for every other node.
    pub raw: Option<Box<str>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order. Keys are unique (the parser rejects duplicates).
    Map(Vec<(Key, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

impl Node {
    pub fn new(value: Value, span: Span) -> Node {
        Node {
            value,
            span,
            raw: None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.name == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn key_span(&self, key: &str) -> Option<&Span> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(k, _)| &k.span),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// Removes `key` from a map node, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        match &mut self.value {
            Value::Map(entries) => {
                let i = entries.iter().position(|(k, _)| k.name == key)?;
                Some(entries.remove(i).1)
            }
            _ => None,
        }
    }

    /// Sets `key` in a map node (replacing an existing value in place).
    pub fn set(&mut self, key: &str, value: Node) {
        if let Value::Map(entries) = &mut self.value {
            if let Some((_, v)) = entries.iter_mut().find(|(k, _)| k.name == key) {
                *v = value;
            } else {
                let span = value.span.clone();
                entries.push((
                    Key {
                        name: key.to_string(),
                        span,
                    },
                    value,
                ));
            }
        }
    }

    /// Builds a tree from JSON, every node carrying `span` (used for generated content,
    /// which points at the spec operation it was generated from).
    pub fn from_json(json: &serde_json::Value, span: &Span) -> Node {
        let value = match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(items) => {
                Value::Seq(items.iter().map(|i| Node::from_json(i, span)).collect())
            }
            serde_json::Value::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                name: k.clone(),
                                span: span.clone(),
                            },
                            Node::from_json(v, span),
                        )
                    })
                    .collect(),
            ),
        };
        Node::new(value, span.clone())
    }

    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::UInt(u) => serde_json::Value::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Decodes this node into a strict type. On failure, the diagnostic points at the node
    /// (or key) the failure is about and names its path, e.g. `spec.routes[2].timeout`.
    pub fn decode<T: DeserializeOwned>(&self, path_prefix: &str) -> Result<T, Diagnostic> {
        serde_path_to_error::deserialize(self.to_json()).map_err(|e| {
            let (key_span, value_span) = self.locate_both(e.path());
            let message = e.inner().to_string();
            // An unknown field is the key's fault; a bad value is the value's.
            let span = if message.starts_with("unknown field") {
                key_span
            } else {
                value_span
            };
            let path = join_path(path_prefix, &e.path().to_string());
            if path.is_empty() || path == "." {
                Diagnostic::new(span, message)
            } else {
                Diagnostic::new(span, format!("{path}: {message}"))
            }
        })
    }

    /// The span of the deepest node along a serde path: the key's span for containers
    /// (where a missing field is the container's fault), the value's for scalars.
    pub fn locate(&self, path: &serde_path_to_error::Path) -> Span {
        self.locate_both(path).1
    }

    /// (span of the last key on the path, span per [`Node::locate`]).
    fn locate_both(&self, path: &serde_path_to_error::Path) -> (Span, Span) {
        use serde_path_to_error::Segment;
        let mut node = self;
        let mut key_span = &self.span;
        let mut span = &self.span;
        for seg in path.iter() {
            let next = match seg {
                Segment::Seq { index } => match &node.value {
                    Value::Seq(items) => items.get(*index).map(|n| (n, &n.span)),
                    _ => None,
                },
                Segment::Map { key } | Segment::Enum { variant: key } => match &node.value {
                    Value::Map(entries) => entries
                        .iter()
                        .find(|(k, _)| &k.name == key)
                        .map(|(k, v)| (v, &k.span)),
                    // a unit enum variant written as a plain string
                    _ => None,
                },
                Segment::Unknown => None,
            };
            match next {
                Some((n, s)) => {
                    node = n;
                    key_span = s;
                    span = if matches!(n.value, Value::Map(_) | Value::Seq(_)) {
                        s
                    } else {
                        &n.span
                    };
                }
                None => break,
            }
        }
        (key_span.clone(), span.clone())
    }
}

/// A number node's value as a decimal (for messages); empty for other nodes.
pub fn number_text(node: &Node) -> String {
    match node.value {
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        _ => String::new(),
    }
}

fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty() || rest == ".") {
        (true, _) => rest.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// Parses one YAML document. YAML syntax errors and duplicate keys come back located.
pub fn parse(file: &str, text: &str) -> Result<Node, Diagnostic> {
    let file: Arc<str> = Arc::from(file);
    let options = serde_saphyr::options! {
        // Snippets would repeat source lines in messages; we print file:line:col instead.
        with_snippet: false,
        // `012345678901` is an AWS account id, not an octal number.
        leading_zero_numbers_as_strings: true,
        // YAML 1.2 booleans only: `no` is a country code and `y` a key, not `false`/`true`.
        strict_booleans: true,
        reject_unsupported_tags: true,
        budget: Some(budget()),
        alias_limits: alias_limits(),
    };
    let raw: Spanned<RawNode> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let message = limit_message(&e)
                .unwrap_or_else(|| strip_location_suffix(&e.without_snippet().to_string()));
            Diagnostic::new(Span::new(&file, line, column), message)
        })?;
    // A document's root is a mapping (a manifest, a spec), so a tag on it is refused by the
    // callers' shape checks; tags are checked on every node below it.
    let root = Spanned {
        value: Tagged(raw.value, None),
        referenced: raw.referenced,
        defined: raw.defined,
    };
    convert(root, &file, text)
}

/// serde-saphyr appends or prefixes "line X column Y"; the diagnostic carries it already.
fn strip_location_suffix(message: &str) -> String {
    let m = message.trim();
    let m = match m.strip_prefix("error: ") {
        Some(rest) => rest,
        None => m,
    };
    let m = if let Some(rest) = m.strip_prefix("line ") {
        // "line 2 column 1: duplicate mapping key: a"
        rest.split_once(": ").map(|(_, msg)| msg).unwrap_or(m)
    } else {
        m
    };
    // Only a trailing "at line X, column Y" repeats the location; keep anything after it.
    let m = match m.rfind(" at line ") {
        Some(i)
            if m[i + 9..]
                .bytes()
                .all(|b| b.is_ascii_digit() || b", column".contains(&b)) =>
        {
            &m[..i]
        }
        _ => m,
    };
    let m = m.trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable");
    // An API hint, in the manifest author's terms.
    if m.starts_with("multiple YAML documents detected") {
        "a manifest file holds one YAML document (found a second one after `---`)".to_string()
    } else {
        m.to_string()
    }
}

/// What one YAML file may hold once parsed. The bytes of a file are bounded before it is
/// parsed (the per-file read limit); these bound the tree it becomes: its memory (nodes,
/// events, scalar bytes), the stack its conversion takes (depth), and what anchors and aliases
/// can multiply it into (every event an alias replays counts towards every limit, and the
/// replays themselves have a limit of their own). A realistic 21 MB OpenAPI document with
/// 10,000 paths is about 1.6 million nodes and 2 million events.
pub mod limits {
    /// Scalars, mappings and sequences, aliases' replays included.
    pub const MAX_NODES: usize = 4_000_000;
    /// Parser events: each node, plus the end of each mapping and sequence.
    pub const MAX_EVENTS: usize = 8_000_000;
    /// Total bytes of scalar text (keys and values), aliases' replays included.
    pub const MAX_SCALAR_BYTES: usize = 64 * 1024 * 1024;
    /// Mappings and sequences nested in each other.
    pub const MAX_DEPTH: usize = 64;
    /// Anchors (`&name`) defined in one file.
    pub const MAX_ANCHORS: usize = 50_000;
    /// Aliases (`*name`) written in one file.
    pub const MAX_ALIASES: usize = 50_000;
    /// Merge keys (`<<: *name`) written in one file.
    pub const MAX_MERGE_KEYS: usize = 10_000;
    /// Events all aliases of a file replay together (what an alias expands to, summed).
    pub const MAX_ALIAS_EXPANSION: usize = 1_000_000;
    /// Aliases expanded inside the expansion of another alias.
    pub const MAX_ALIAS_NESTING: usize = 64;
}

fn budget() -> serde_saphyr::Budget {
    let mut b = serde_saphyr::Budget::default();
    b.max_nodes = limits::MAX_NODES;
    b.max_events = limits::MAX_EVENTS;
    b.max_total_scalar_bytes = limits::MAX_SCALAR_BYTES;
    b.max_depth = limits::MAX_DEPTH;
    b.max_anchors = limits::MAX_ANCHORS;
    b.max_aliases = limits::MAX_ALIASES;
    b.max_merge_keys = limits::MAX_MERGE_KEYS;
    // Replays are bounded by the limits above: a file with few anchors and many aliases is
    // not refused for its ratio alone.
    b.enforce_alias_anchor_ratio = false;
    b.max_recorded_anchor_events = limits::MAX_ALIAS_EXPANSION;
    b.max_recorded_anchor_bytes = limits::MAX_SCALAR_BYTES;
    b
}

fn alias_limits() -> serde_saphyr::options::AliasLimits {
    let mut l = serde_saphyr::options::AliasLimits::default();
    l.max_total_replayed_events = limits::MAX_ALIAS_EXPANSION;
    l.max_replay_stack_depth = limits::MAX_ALIAS_NESTING;
    l
}

/// A breached parser limit, named with its value. `None` for every other error.
fn limit_message(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::Error;
    use serde_saphyr::budget::BudgetBreach as B;
    let mut e = e;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = e {
        e = error;
    }
    let n = |v: usize| group_thousands(v as u64);
    let message = match e {
        Error::Budget { breach, .. } => match breach {
            B::Nodes { .. } => format!(
                "the document has more than {} nodes (scalars, mappings and sequences, aliases expanded)",
                n(limits::MAX_NODES)
            ),
            B::Events { .. } => format!(
                "the document has more than {} parser events (aliases expanded)",
                n(limits::MAX_EVENTS)
            ),
            B::ScalarBytes { .. } => format!(
                "the document has more than {} bytes of scalar text (aliases expanded)",
                n(limits::MAX_SCALAR_BYTES)
            ),
            B::Depth { .. } => {
                return Some(format!(
                    "nested too deeply: more than {} levels of mappings and sequences",
                    limits::MAX_DEPTH
                ));
            }
            B::Anchors { .. } => format!(
                "the document defines more than {} anchors",
                n(limits::MAX_ANCHORS)
            ),
            B::Aliases { .. } => format!(
                "the document uses more than {} aliases",
                n(limits::MAX_ALIASES)
            ),
            B::MergeKeys { .. } => format!(
                "the document uses more than {} merge keys (`<<`)",
                n(limits::MAX_MERGE_KEYS)
            ),
            B::RecordedAnchorEvents { .. } => format!(
                "the document's anchors hold more than {} parser events (aliases inside them expanded)",
                n(limits::MAX_ALIAS_EXPANSION)
            ),
            B::RecordedAnchorBytes { .. } => format!(
                "the document's anchors hold more than {} bytes of text (aliases inside them expanded)",
                n(limits::MAX_SCALAR_BYTES)
            ),
            other => return Some(format!("the document exceeds a parser limit ({other:?})")),
        },
        Error::AliasReplayLimitExceeded { .. } => format!(
            "aliases expand to more than {} parser events",
            n(limits::MAX_ALIAS_EXPANSION)
        ),
        Error::AliasReplayStackDepthExceeded { .. } => format!(
            "aliases are nested more than {} deep (an alias of an anchor that holds an alias...)",
            limits::MAX_ALIAS_NESTING
        ),
        _ => return None,
    };
    Some(format!("{message}: the limit for one file"))
}

/// `4000000` -> `4,000,000`.
pub(crate) fn group_thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The tags a manifest may carry: the non-specific `!` and the ones that only restate what
/// the node is. Every other tag changes a value's type (`!!int "12"`, `!!bool`, `!!float`,
/// `!!null`, `!!timestamp`) or decodes its content (`!!binary`), so what a reviewer reads
/// would not be what fleetgate uses: such a node is refused.
const ALLOWED_TAGS: [&str; 4] = [
    "!",
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
];

fn check_tag(tag: &Option<String>, span: &Span) -> Result<(), Diagnostic> {
    match tag {
        Some(t) if !ALLOWED_TAGS.contains(&t.as_str()) => {
            let shown = match t.strip_prefix("tag:yaml.org,2002:") {
                Some(short) => format!("!!{short}"),
                None => t.clone(),
            };
            Err(Diagnostic::new(
                span.clone(),
                format!(
                    "the tag {shown} is not accepted: tags that change a value's type or decode \
                     its content are refused; write the value itself"
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn span_of(file: &Arc<str>, location: &serde_saphyr::Location) -> Span {
    Span::new(file, location.line(), location.column())
}

/// The source text of a scalar (where it is defined: an alias points at its anchor's node).
fn scalar_text(text: &str, location: &serde_saphyr::Location) -> Option<Box<str>> {
    let span = location.span();
    let start = usize::try_from(span.byte_offset()?).ok()?;
    let len = usize::try_from(span.byte_len()?).ok()?;
    let raw = text.get(start..start.checked_add(len)?)?.trim();
    // An anchor's span may start at `&name`; the scalar is what follows it.
    let raw = match raw.strip_prefix('&') {
        Some(rest) => rest
            .split_once(char::is_whitespace)
            .map(|(_, v)| v.trim())?,
        None => raw,
    };
    Some(raw.into())
}

fn convert(raw: RawChild, file: &Arc<str>, text: &str) -> Result<Node, Diagnostic> {
    let span = span_of(file, &raw.referenced);
    let Tagged(node, tag) = raw.value;
    check_tag(&tag, &span)?;
    let mut number = false;
    let value = match node {
        RawNode::Null => Value::Null,
        RawNode::Bool(b) => Value::Bool(b),
        RawNode::Int(i) => {
            number = true;
            Value::Int(i)
        }
        RawNode::UInt(u) => {
            number = true;
            Value::UInt(u)
        }
        RawNode::Float(f) => {
            number = true;
            Value::Float(f)
        }
        RawNode::Str(s) => Value::Str(s),
        RawNode::Seq(items) => Value::Seq(
            items
                .into_iter()
                .map(|n| convert(n, file, text))
                .collect::<Result<_, _>>()?,
        ),
        RawNode::Map(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let key_span = span_of(file, &k.referenced);
                let Tagged(RawKey(name), key_tag) = k.value;
                check_tag(&key_tag, &key_span)?;
                out.push((
                    Key {
                        name,
                        span: key_span,
                    },
                    convert(v, file, text)?,
                ));
            }
            Value::Map(out)
        }
    };
    let raw = if number {
        scalar_text(text, &raw.defined)
    } else {
        None
    };
    Ok(Node { value, span, raw })
}

/// A child node with where it was written and its explicit tag, if any.
type RawChild = Spanned<Tagged<RawNode>>;

/// What serde-saphyr fills in, with a span on each child.
enum RawNode {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<RawChild>),
    Map(Vec<(Spanned<Tagged<RawKey>>, RawChild)>),
}

/// Mapping keys: strings, or scalars used as keys (`200:` in an OpenAPI response map).
struct RawKey(String);

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<RawNode, E> {
                Ok(RawNode::Null)
            }
            fn visit_none<E>(self) -> Result<RawNode, E> {
                Ok(RawNode::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<RawNode, D::Error> {
                RawNode::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawNode, E> {
                Ok(RawNode::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawNode, E> {
                Ok(RawNode::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawNode, E> {
                Ok(RawNode::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawNode, E> {
                Ok(RawNode::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawNode, E> {
                Ok(RawNode::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawNode, E> {
                Ok(RawNode::Str(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<RawNode, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element::<RawChild>()? {
                    items.push(item);
                }
                Ok(RawNode::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<RawNode, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry::<Spanned<Tagged<RawKey>>, RawChild>()? {
                    entries.push(entry);
                }
                Ok(RawNode::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawKey, E> {
                Ok(RawKey(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawKey, E> {
                Ok(RawKey(v.to_string()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<RawKey, E> {
                Err(E::custom("a mapping key must not be null"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod limit_tests;

#[cfg(test)]
mod tests;
