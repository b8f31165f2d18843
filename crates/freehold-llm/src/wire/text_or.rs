//! Reading a value the APIs take as a string or as an array of typed parts
//! (Anthropic's `system` and contents, Chat Completions' message content,
//! the Responses API's `input`) in one pass.
//!
//! serde's `untagged` enums read such a value by first copying it into an
//! intermediate tree and then trying each variant on that copy. A coding
//! agent's request is mostly such values (its system prompt, its messages,
//! its tool results, tens of kilobytes to megabytes), so that was a copy of
//! most of it. This looks at the value's first token instead: a string is
//! the text, an array is read element by element.

use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};

/// A string, or the parts of an array.
pub(crate) enum TextOr<T> {
    Text(String),
    Parts(Vec<T>),
}

impl<'de, T: Deserialize<'de>> TextOr<T> {
    /// Reads one; `expecting` names what was expected, for the error (the
    /// derive said "data did not match any variant").
    pub(crate) fn read<D: Deserializer<'de>>(
        deserializer: D,
        expecting: &'static str,
    ) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextOrVisitor {
            expecting,
            parts: PhantomData,
        })
    }
}

struct TextOrVisitor<T> {
    expecting: &'static str,
    parts: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for TextOrVisitor<T> {
    type Value = TextOr<T>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(TextOr::Text(text.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(TextOr::Text(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // A size hint comes from the sender: trust it only so far.
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(part) = seq.next_element()? {
            parts.push(part);
        }
        Ok(TextOr::Parts(parts))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `TextOr<u32>` as a deserializable value, for the tests.
    #[derive(Debug, PartialEq)]
    enum Read {
        Text(String),
        Parts(Vec<u32>),
    }

    impl<'de> Deserialize<'de> for Read {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            Ok(
                match TextOr::read(deserializer, "a string or an array of numbers")? {
                    TextOr::Text(text) => Self::Text(text),
                    TextOr::Parts(parts) => Self::Parts(parts),
                },
            )
        }
    }

    #[test]
    fn strings_and_arrays_are_read_and_anything_else_named() {
        // Text with escapes (read through the parser's scratch buffer),
        // without (borrowed from the input), and from an owned value.
        assert_eq!(
            serde_json::from_str::<Read>(r#""a \"quoted\"\nline""#).unwrap(),
            Read::Text("a \"quoted\"\nline".into())
        );
        assert_eq!(
            serde_json::from_str::<Read>(r#""plain""#).unwrap(),
            Read::Text("plain".into())
        );
        assert_eq!(
            serde_json::from_value::<Read>(json!("owned")).unwrap(),
            Read::Text("owned".into())
        );
        assert_eq!(
            serde_json::from_str::<Read>("[1, 2, 3]").unwrap(),
            Read::Parts(vec![1, 2, 3])
        );
        assert_eq!(
            serde_json::from_str::<Read>("[]").unwrap(),
            Read::Parts(vec![])
        );
        let wrong = serde_json::from_str::<Read>("{}").unwrap_err().to_string();
        assert!(
            wrong.contains("invalid type: map, expected a string or an array of numbers"),
            "{wrong}"
        );
        // A part's own error is reported, not the whole value's.
        let part = serde_json::from_str::<Read>(r#"[1, "two"]"#)
            .unwrap_err()
            .to_string();
        assert!(
            part.contains("invalid type: string \"two\", expected u32"),
            "{part}"
        );
    }
}
