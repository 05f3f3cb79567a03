//! The one normalized request path. Pure: no I/O, no HTTP types.
//!
//! A request's path is normalized once, before anything looks at it, and that same string is
//! routed, authorized, logged and forwarded. Otherwise a path that the router and the backend
//! read differently (`/pub/../admin`, `/pub/%2e%2e/admin`) is authorized as one route and
//! served as another.
//!
//! What is done, in this order:
//! 1. Percent-encoded unreserved characters (RFC 3986 2.3: letters, digits, `-._~`) are
//!    decoded, since `%2e` and `.` mean the same; every other escape is kept, with its hex
//!    digits upper-cased (RFC 3986 6.2.2.1).
//! 2. Dot segments are removed (RFC 3986 5.2.4).
//!
//! What is refused, because no normalization makes it safe: an escape that decodes to `/`,
//! `\` or NUL (servers disagree on whether `%2F` separates segments), a raw `\`, a malformed
//! escape, a path that climbs above `/`, a path that does not start with `/`, and a segment
//! that is a dot segment once a `;` parameter is cut off (`..;` or `..%3B`, which Java
//! servlet containers read as `..`), and an empty segment (`//`, which many servers merge
//! into one `/`: `//admin` would be routed as one path and served as `/admin`).
//!
//! Imports nothing of this crate.

use std::borrow::Cow;
use std::fmt;

/// Why a path cannot be normalized safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    EncodedSeparator,
    Backslash,
    Nul,
    AboveRoot,
    DotSegmentWithParameter,
    EmptySegment,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "the path must start with '/'",
            PathError::BadEscape => "the path has a malformed percent-escape",
            PathError::EncodedSeparator => "the path has an encoded '/' or '\\'",
            PathError::Backslash => "the path has a '\\'",
            PathError::Nul => "the path has an encoded NUL",
            PathError::AboveRoot => "the path climbs above '/'",
            PathError::DotSegmentWithParameter => "the path has a dot segment with a ';' parameter",
            PathError::EmptySegment => "the path has an empty segment ('//')",
        })
    }
}

impl std::error::Error for PathError {}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 1: unreserved escapes decoded, the others upper-cased; the refusals above.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                    return Err(PathError::BadEscape);
                };
                let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                    return Err(PathError::BadEscape);
                };
                let b = h << 4 | l;
                match b {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0 => return Err(PathError::Nul),
                    b if unreserved(b) => out.push(char::from(b)),
                    b => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(char::from(HEX[usize::from(b >> 4)]));
                        out.push(char::from(HEX[usize::from(b & 0xf)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            _ => {
                // Copy the run up to the next special byte as one slice (keeps UTF-8 whole).
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b'%' | b'\\' | 0) {
                    i += 1;
                }
                out.push_str(&path[start..i]);
            }
        }
    }
    Ok(out)
}

/// Normalizes a request path (without its query), or says why it cannot be done safely.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // The common case, a path with nothing to decode and no dot segment, is returned as it is.
    let needs_work = path.contains('%')
        || path.contains('\\')
        || path.contains('\0')
        || path.contains("//")
        || path.split('/').any(|s| {
            let s = s.split(';').next().unwrap_or(s);
            s == "." || s == ".."
        });
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    // Step 2, RFC 3986 5.2.4 on a path that starts with '/': segments in order, "." dropped,
    // ".." drops the segment before it; a trailing "." or ".." leaves a trailing '/'.
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = decoded[1..].split('/').peekable();
    let mut trailing_slash = false;
    while let Some(seg) = parts.next() {
        let last = parts.peek().is_none();
        if seg.is_empty() && !last {
            return Err(PathError::EmptySegment);
        }
        let bare = seg.split(';').next().unwrap_or(seg);
        let encoded_param = seg.len() > 3 && {
            let l = seg.to_ascii_lowercase();
            l.starts_with(".%3b") || l.starts_with("..%3b")
        };
        if (seg != bare && (bare == "." || bare == "..")) || encoded_param {
            return Err(PathError::DotSegmentWithParameter);
        }
        match seg {
            "." => trailing_slash = last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = last;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dot_segments_are_removed_in_every_spelling() {
        for (raw, want) in [
            ("/orders/../admin/x", "/admin/x"),
            ("/orders/%2e%2e/admin/x", "/admin/x"),
            ("/orders/.%2e/admin/x", "/admin/x"),
            ("/orders/%2E./admin/x", "/admin/x"),
            ("/pub/../admin", "/admin"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/..a/b", "/..a/b"),
            ("/a/...", "/a/..."),
            ("/", "/"),
            ("/a/..", "/"),
            ("/%7Euser/%41", "/~user/A"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/a;v=1/b", "/a;v=1/b"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn what_cannot_be_normalized_safely_is_refused() {
        for (raw, why) in [
            ("/orders/..%2fadmin", PathError::EncodedSeparator),
            ("/orders/..%2Fadmin", PathError::EncodedSeparator),
            ("/orders/..%5cadmin", PathError::EncodedSeparator),
            ("/orders/..\\admin", PathError::Backslash),
            ("/a%00b", PathError::Nul),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/..", PathError::AboveRoot),
            ("/a/../../etc/passwd", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/pub/..;/admin", PathError::DotSegmentWithParameter),
            ("/pub/.;x=1/admin", PathError::DotSegmentWithParameter),
            ("/pub/..%3B/admin", PathError::DotSegmentWithParameter),
            ("/pub/.%2e%3b/admin", PathError::DotSegmentWithParameter),
            ("//admin/users", PathError::EmptySegment),
            ("/a//b", PathError::EmptySegment),
            ("orders", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ] {
            assert_eq!(normalize_path(raw), Err(why), "{raw}");
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E%2e".to_string()),
            Just(".%2e".to_string()),
            Just("".to_string()),
            Just("%41".to_string()),
            Just("%c3%a9".to_string()),
            Just("a;b=..".to_string()),
            "[a-zA-Z0-9._~;=%-]{0,6}",
        ]
    }

    proptest! {
        /// Normalizing twice changes nothing, and no output holds a dot segment, literal or
        /// encoded, nor an escape of an unreserved character.
        #[test]
        fn normalization_is_idempotent_and_leaves_no_dot_segment(
            segs in proptest::collection::vec(segment(), 0..8),
        ) {
            let raw = format!("/{}", segs.join("/"));
            if let Ok(once) = normalize_path(&raw) {
                prop_assert_eq!(normalize_path(&once), Ok(once.clone()));
                // Borrowed only when nothing changed.
                if let Cow::Borrowed(b) = &once {
                    prop_assert_eq!(*b, raw.as_str());
                }
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"), "{} -> {}", raw, once);
                for s in once.split('/') {
                    let bare = s.split(';').next().unwrap_or(s);
                    prop_assert!(bare != "." && bare != "..", "{} -> {}", raw, once);
                }
                let lower = once.to_ascii_lowercase();
                prop_assert!(!lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"));
            }
        }
    }
}
