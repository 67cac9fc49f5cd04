//! A string field of a report, borrowed from the report's bytes when it
//! has no escapes.
//!
//! serde borrows a `Cow<'a, str>` only when it is a field's whole type:
//! inside an `Option`, a `Vec` or a map it always allocates. Decoders read
//! most fields as `Option<Text>`, which borrows wherever it can.

use serde::de::{Deserialize, Deserializer, Error, Visitor};
use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

/// A report's string, borrowed when it can be.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    /// The string, owned.
    pub fn into_owned(self) -> String {
        self.0.into_owned()
    }
}

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Fields<'a> {
        #[serde(borrow, default)]
        plain: Option<Text<'a>>,
        #[serde(borrow, default)]
        escaped: Option<Text<'a>>,
        #[serde(borrow, default)]
        many: Vec<Text<'a>>,
    }

    #[test]
    fn borrows_inside_options_and_vectors_and_owns_what_had_escapes() {
        let json = r#"{"plain": "a.py", "escaped": "line\nbreak", "many": ["x", "y\"z"]}"#;
        let f: Fields<'_> = serde_json::from_str(json).unwrap();
        assert!(matches!(f.plain, Some(Text(Cow::Borrowed("a.py")))));
        let escaped = f.escaped.unwrap();
        assert!(matches!(escaped.0, Cow::Owned(_)));
        assert_eq!(escaped, "line\nbreak");
        assert!(matches!(f.many[0].0, Cow::Borrowed("x")));
        assert_eq!(f.many[1], "y\"z");
    }

    #[test]
    fn a_non_string_is_an_error_naming_what_was_expected() {
        let e = serde_json::from_str::<Fields<'_>>(r#"{"plain": 3}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("expected a string"), "{e}");
    }
}
