//! Reading an input or output [`Item`], and an [`ItemContent`], in one pass.
//!
//! An item is tagged by its `type` field, and a message may come without
//! one (`{"role": "user", "content": "…"}`, which OpenAI accepts). Items
//! were read by first copying each into a [`Value`] tree, then reading the
//! variant from that through serde's tagged-enum derive, which copies it
//! into its own intermediate tree again; a message's content, a string or
//! an array of parts, went through a third copy to try each shape. A coding
//! agent's request is mostly items (Codex sends its context, every tool
//! call and every tool output as items: tens of kilobytes to megabytes), so
//! that was several copies of most of it.
//!
//! This reads the fields before `type` (none in what Codex and the SDKs
//! send) into values, then the variant's fields straight from the rest of
//! the object, the buffered ones first. A message without a `type` is
//! buffered whole and read from that. Content is read by its first token
//! ([`TextOr`]). (Answers from OpenAI's API are read from a `Value` whose
//! keys are sorted, so `type` comes late and most of an item is buffered:
//! correct, if not in one pass.)
//!
//! The outcome is the derive's for a well-formed item: the same variants,
//! an unknown `type` read as [`Item::Other`], a message without a `type`
//! read by its `role`, a missing or mistyped field an error (naming the
//! field inside the item where it comes after `type`). It differs for
//! malformed ones: a field given twice is an error (the derive's copy kept
//! the last), a second `type` is ignored (the derive kept the last), and an
//! item written as an array is refused.

use serde::de::value::{MapAccessDeserializer, StringDeserializer};
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{
    AdditionalToolsItem, CompactionItem, CompactionTriggerItem, ContentItem, CustomToolCallItem,
    FunctionCallItem, FunctionCallOutputItem, Item, ItemContent, MessageItem, ReasoningItem,
    ToolSearchCallItem, ToolSearchOutputItem,
};
use crate::wire::text_or::TextOr;

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ItemVisitor)
    }
}

impl<'de> Deserialize<'de> for ItemContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match TextOr::<ContentItem>::read(deserializer, "a string, or a list of content parts")?
            {
                TextOr::Text(text) => Self::Text(text),
                TextOr::Parts(parts) => Self::Parts(parts),
            },
        )
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an item: an object with a `type`, or a message with a `role`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        // The fields before `type`, as values.
        let mut before = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "type" {
                let kind: String = map.next_value()?;
                return read_kind(
                    &kind,
                    MapAccessDeserializer::new(Buffered::new(before, map)),
                );
            }
            let value: Value = map.next_value()?;
            before.push((key, value));
        }
        // No `type`: a message, if it has a `role`.
        if !before.iter().any(|(key, _)| key == "role") {
            return Err(A::Error::custom(
                "an input item needs a `type` (`message`, `function_call`, \
                 `function_call_output`, `reasoning`…), or a `role` for a message",
            ));
        }
        read_kind(
            "message",
            MapAccessDeserializer::new(Buffered::new(before, map)),
        )
    }
}

/// The item of kind `kind`, its fields read from `fields`.
fn read_kind<'de, D: Deserializer<'de>>(kind: &str, fields: D) -> Result<Item, D::Error> {
    Ok(match kind {
        "message" => Item::Message(MessageItem::deserialize(fields)?),
        "function_call" => Item::FunctionCall(FunctionCallItem::deserialize(fields)?),
        "function_call_output" => {
            Item::FunctionCallOutput(FunctionCallOutputItem::deserialize(fields)?)
        }
        "custom_tool_call" => Item::CustomToolCall(CustomToolCallItem::deserialize(fields)?),
        "custom_tool_call_output" => {
            Item::CustomToolCallOutput(FunctionCallOutputItem::deserialize(fields)?)
        }
        "reasoning" => Item::Reasoning(ReasoningItem::deserialize(fields)?),
        "additional_tools" => Item::AdditionalTools(AdditionalToolsItem::deserialize(fields)?),
        "tool_search_call" => Item::ToolSearchCall(ToolSearchCallItem::deserialize(fields)?),
        "tool_search_output" => Item::ToolSearchOutput(ToolSearchOutputItem::deserialize(fields)?),
        "compaction_trigger" => {
            Item::CompactionTrigger(CompactionTriggerItem::deserialize(fields)?)
        }
        "compaction" => Item::Compaction(CompactionItem::deserialize(fields)?),
        // Web search, file search, computer use…: read past.
        _ => {
            IgnoredAny::deserialize(fields)?;
            Item::Other
        }
    })
}

/// An object's fields: those read before its `type` (as values), then the
/// rest of it, still to be read.
struct Buffered<A> {
    before: std::vec::IntoIter<(String, Value)>,
    /// The value of the buffered key last given.
    value: Option<Value>,
    rest: A,
}

impl<A> Buffered<A> {
    fn new(before: Vec<(String, Value)>, rest: A) -> Self {
        Self {
            before: before.into_iter(),
            value: None,
            rest,
        }
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Buffered<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if let Some((key, value)) = self.before.next() {
            self.value = Some(value);
            let key: StringDeserializer<A::Error> = key.into_deserializer();
            return seed.deserialize(key).map(Some);
        }
        self.rest.next_key_seed(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value).map_err(A::Error::custom),
            None => self.rest.next_value_seed(seed),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Reads `value` from its text, as a request is read. (A `json!`
    /// value writes its keys sorted, which puts `type` after most fields:
    /// these exercise the buffered path; `type` first is tested from raw
    /// text below.)
    fn read(value: Value) -> Result<Item, String> {
        serde_json::from_str(&value.to_string()).map_err(|error| error.to_string())
    }

    #[test]
    fn items_read_whatever_the_place_of_their_type() {
        let first = read(
            json!({"type": "function_call", "call_id": "call_1", "name": "shell",
                                "arguments": "{}"}),
        )
        .unwrap();
        // OpenAI's answers put the id first; a message may have no type.
        let later = read(
            json!({"id": "fc_1", "call_id": "call_1", "type": "function_call",
                                "name": "shell", "arguments": "{}"}),
        )
        .unwrap();
        let Item::FunctionCall(call) = &later else {
            panic!("{later:?}");
        };
        assert_eq!(call.id.as_deref(), Some("fc_1"));
        assert_eq!(call.call_id, "call_1");
        assert_eq!(
            first,
            Item::FunctionCall(FunctionCallItem {
                id: None,
                ..call.clone()
            })
        );
        let untyped = read(json!({"role": "user", "content": "hi"})).unwrap();
        assert_eq!(
            untyped,
            Item::Message(MessageItem {
                id: None,
                role: "user".into(),
                content: ItemContent::Text("hi".into()),
                status: None,
            })
        );
        let parts = read(json!({"content": [{"type": "input_text", "text": "hi"}],
                                "type": "message", "role": "user"}))
        .unwrap();
        assert_eq!(
            parts,
            Item::Message(MessageItem {
                id: None,
                role: "user".into(),
                content: ItemContent::Parts(vec![ContentItem::InputText { text: "hi".into() }]),
                status: None,
            })
        );
    }

    #[test]
    fn every_kind_reads_as_its_variant_and_others_as_other() {
        let kinds = [
            (
                json!({"type": "message", "role": "assistant", "content": []}),
                "Message",
            ),
            (
                json!({"type": "function_call_output", "call_id": "c", "output": "ok"}),
                "FunctionCallOutput",
            ),
            (
                json!({"type": "custom_tool_call", "call_id": "c", "name": "apply_patch",
                    "input": "*** Begin Patch"}),
                "CustomToolCall",
            ),
            (
                json!({"type": "custom_tool_call_output", "call_id": "c", "output": "done"}),
                "CustomToolCallOutput",
            ),
            (
                json!({"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}]}),
                "Reasoning",
            ),
            (
                json!({"type": "additional_tools", "tools": []}),
                "AdditionalTools",
            ),
            (
                json!({"type": "tool_search_call", "call_id": "c", "arguments": {}}),
                "ToolSearchCall",
            ),
            (
                json!({"type": "tool_search_output", "call_id": "c", "tools": []}),
                "ToolSearchOutput",
            ),
            (json!({"type": "compaction_trigger"}), "CompactionTrigger"),
            (
                json!({"type": "compaction", "encrypted_content": "x"}),
                "Compaction",
            ),
            (
                json!({"type": "web_search_call", "action": {"query": "q"}, "status": "done"}),
                "Other",
            ),
        ];
        for (value, variant) in kinds {
            let item = read(value.clone()).unwrap();
            assert!(
                format!("{item:?}").starts_with(variant),
                "{value} read as {item:?}"
            );
        }
    }

    /// From text as the SDKs and Codex write it, `type` first (a `json!`
    /// value sorts its keys, which puts `type` last), alone or after
    /// other fields: the same items as from a `Value`.
    #[test]
    fn type_first_reads_straight_into_the_variant() {
        let texts = [
            r#"{"type":"function_call","call_id":"c","name":"f","arguments":"{}"}"#,
            r#"{"id":"fc_1","type":"function_call","call_id":"c","name":"f","arguments":"{}"}"#,
            r#"{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}"#,
            r#"{"role":"user","type":"message","content":"hi","status":"completed"}"#,
            r#"{"type":"function_call_output","call_id":"c","output":"done"}"#,
            r#"{"type":"web_search_call","action":{"query":"q"},"status":"completed"}"#,
        ];
        for text in texts {
            let from_text: Item = serde_json::from_str(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            let from_value: Item = serde_json::from_value(value).unwrap();
            assert_eq!(from_text, from_value, "{text}");
        }
        let Item::FunctionCall(call) = serde_json::from_str::<Item>(texts[1]).unwrap() else {
            panic!("a function call");
        };
        assert_eq!(
            (call.id.as_deref(), call.name.as_str()),
            (Some("fc_1"), "f")
        );
        // A field after `type` of the wrong type, and one given twice.
        let wrong = serde_json::from_str::<Item>(
            r#"{"id":"fc","type":"function_call_output","call_id":"c","output":3}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            wrong.contains("a string, or a list of content parts"),
            "{wrong}"
        );
        let twice = serde_json::from_str::<Item>(
            r#"{"type":"function_call","call_id":"a","call_id":"b","name":"f"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(twice.contains("duplicate field `call_id`"), "{twice}");
    }

    #[test]
    fn mistakes_are_named() {
        let untyped = read(json!({"content": "hi"})).unwrap_err();
        assert!(untyped.contains("needs a `type`"), "{untyped}");
        let no_role = read(json!({"type": "message", "content": "hi"})).unwrap_err();
        assert!(no_role.contains("missing field `role`"), "{no_role}");
        let bad_output = read(json!({"type": "function_call_output", "call_id": "c",
                                     "output": 3}))
        .unwrap_err();
        assert!(
            bad_output.contains("a string, or a list of content parts"),
            "{bad_output}"
        );
        let bad_type = read(json!({"type": 3})).unwrap_err();
        assert!(bad_type.contains("expected a string"), "{bad_type}");
        // A buffered field of the wrong type is named too.
        let buffered =
            read(json!({"call_id": 3, "type": "function_call", "name": "f"})).unwrap_err();
        assert!(buffered.contains("expected a string"), "{buffered}");
    }
}
