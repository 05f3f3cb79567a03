//! Values that must never be shown: client secret hashes, anything a reviewer should not read.
//!
//! A field typed `Sensitive<T>` is marked in three places at once, so the marking cannot drift
//! out of sync with the types:
//! - its JSON Schema carries `"x-fleetgate-sensitive": true` and `writeOnly`;
//! - `Debug` prints `<redacted>`; deserialization errors never echo the value;
//! - inside [`redacting`], serialization emits a short keyed fingerprint instead of the value,
//!   so a plan can say "changed" or "unchanged" without revealing anything.
//!
//! Imports nothing of this crate.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use hmac::{Hmac, Mac};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sensitive<T>(pub T);

impl<T> Sensitive<T> {
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

thread_local! {
    static REDACTION_KEY: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Runs `f` with sensitive values serialized as `(sensitive:<fingerprint>)`, where the
/// fingerprint is the first 12 hex digits of HMAC-SHA256(key, canonical JSON of the value).
/// Use one key for both sides of a comparison and a fresh random key per report, so the
/// fingerprint tells "changed" from "unchanged" but cannot be looked up.
pub fn redacting<R>(key: &[u8], f: impl FnOnce() -> R) -> R {
    struct Reset(Option<Vec<u8>>);
    impl Drop for Reset {
        fn drop(&mut self) {
            let prev = self.0.take();
            REDACTION_KEY.with(|k| *k.borrow_mut() = prev);
        }
    }
    let prev = REDACTION_KEY.with(|k| k.borrow_mut().replace(key.to_vec()));
    let _reset = Reset(prev);
    f()
}

/// The text that replaces a sensitive value under [`redacting`].
pub fn fingerprint(key: &[u8], canonical_value: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any size"),
    };
    mac.update(canonical_value);
    let tag = mac.finalize().into_bytes();
    format!("(sensitive:{})", &hex::encode(tag)[..12])
}

impl<T: Serialize> Serialize for Sensitive<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let key = REDACTION_KEY.with(|k| k.borrow().clone());
        match key {
            None => self.0.serialize(s),
            Some(key) => {
                let bytes = serde_json::to_vec(&self.0).map_err(serde::ser::Error::custom)?;
                s.serialize_str(&fingerprint(&key, &bytes))
            }
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sensitive<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Serde's own messages quote the offending value ("invalid type: string \"...\"");
        // a sensitive field must not, so the message is replaced wholesale.
        T::deserialize(d).map(Sensitive).map_err(|_| {
            serde::de::Error::custom("invalid value for a sensitive field (value not shown)")
        })
    }
}

impl<T: JsonSchema> JsonSchema for Sensitive<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Sensitive_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = T::json_schema(generator);
        schema.insert("x-fleetgate-sensitive".into(), true.into());
        schema.insert("writeOnly".into(), true.into());
        schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Holder {
        public: String,
        secret: Sensitive<String>,
    }

    #[test]
    fn plain_serialization_keeps_the_value_for_the_runtime() {
        let h = Holder {
            public: "p".into(),
            secret: Sensitive("s3cr3t".into()),
        };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"public":"p","secret":"s3cr3t"}"#
        );
    }

    #[test]
    fn redacted_serialization_hides_the_value_but_tracks_change() {
        let a = Holder {
            public: "p".into(),
            secret: Sensitive("s3cr3t".into()),
        };
        let b = Holder {
            public: "p".into(),
            secret: Sensitive("other".into()),
        };
        let ra = redacting(b"k", || serde_json::to_string(&a).unwrap());
        let ra2 = redacting(b"k", || serde_json::to_string(&a).unwrap());
        let rb = redacting(b"k", || serde_json::to_string(&b).unwrap());
        assert!(!ra.contains("s3cr3t"), "{ra}");
        assert!(ra.contains("(sensitive:"), "{ra}");
        assert_eq!(ra, ra2);
        assert_ne!(ra, rb);
        // and the scope ends with the closure
        assert!(serde_json::to_string(&a).unwrap().contains("s3cr3t"));
    }

    #[test]
    fn debug_and_errors_never_show_the_value() {
        let s = Sensitive("s3cr3t".to_string());
        assert_eq!(format!("{s:?}"), "<redacted>");
        let e = serde_json::from_str::<Sensitive<u32>>("\"s3cr3t\"").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
