//! Bytes held between stages, packed: a rendered bundle waits in memory from render to the
//! write (or to the plan's diff), and a plan's per-account diff from the plan to its
//! document. Bundles are JSON, so LZ4 packs them to about a fifth at a few hundred MB/s
//! each way: at 10,000 accounts that is the difference between a plan that fits in
//! 256 MiB and one that does not.

use std::sync::Arc;

/// Packed bytes (LZ4 block format, the length first). Cheap to clone: the bytes are shared.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Packed(Arc<[u8]>);

impl Packed {
    pub fn new(bytes: &[u8]) -> Packed {
        if bytes.is_empty() {
            return Packed::default();
        }
        Packed(lz4_flex::compress_prepend_size(bytes).into())
    }

    /// The bytes as they were given.
    pub fn unpack(&self) -> Vec<u8> {
        if self.0.is_empty() {
            return Vec::new();
        }
        // Only ever made by `new`, in this process: a block that does not unpack is a bug,
        // not input.
        lz4_flex::decompress_size_prepended(&self.0).expect("packed in this process")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes held.
    pub fn packed_len(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.0.len())
    }
}

/// Packed UTF-8 text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PackedText(Packed);

impl PackedText {
    pub fn new(text: &str) -> PackedText {
        PackedText(Packed::new(text.as_bytes()))
    }

    pub fn unpack(&self) -> String {
        String::from_utf8(self.0.unpack()).expect("packed from a str")
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for PackedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.unpack())
    }
}

impl std::fmt::Display for PackedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.unpack())
    }
}

impl From<String> for PackedText {
    fn from(text: String) -> PackedText {
        PackedText::new(&text)
    }
}

impl From<&str> for PackedText {
    fn from(text: &str) -> PackedText {
        PackedText::new(text)
    }
}

impl serde::Serialize for PackedText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.unpack())
    }
}

impl schemars::JsonSchema for PackedText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        String::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_bytes_and_text_come_back_as_they_were() {
        let json = br#"{"routes":[{"name":"a"},{"name":"a"},{"name":"a"}]}"#.repeat(50);
        let p = Packed::new(&json);
        assert_eq!(p.unpack(), json);
        assert!(p.packed_len() < json.len() / 4, "{}", p.packed_len());
        assert!(Packed::new(b"").is_empty());
        assert_eq!(Packed::new(b"").unpack(), b"");
        let t = PackedText::new("héllo\n");
        assert_eq!(t.unpack(), "héllo\n");
        assert_eq!(serde_json::to_string(&t).unwrap(), r#""héllo\n""#);
        assert_eq!(format!("{t:?}"), r#""héllo\n""#);
    }
}
