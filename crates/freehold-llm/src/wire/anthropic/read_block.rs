//! Reading a [`ContentBlock`] in one pass.
//!
//! A block is tagged by its `type` field. serde's derive for such an enum
//! (`#[serde(tag = "type")]`) first copies every block into an
//! intermediate tree, to find the tag wherever it is, and then reads the
//! variant from that copy. A coding agent's request is mostly blocks (its
//! system prompt, its messages' text, tool calls and tool results, tens of
//! kilobytes to megabytes), so that was a copy of most of it. The SDKs and
//! agents write `type` first: this reads it, then the rest of the object
//! straight into the variant's fields. A block whose `type` comes later is
//! gathered into a [`Value`] first, as the derive would, and read from
//! that.
//!
//! The outcome is the derive's for a well-formed block, and for an unknown
//! `type`, or none: the block is kept whole as [`ContentBlock::Other`]. It
//! differs for a malformed block of a known kind, which the derive kept
//! whole as `Other` in every case (and the gateway's decoder then refused
//! with the field's path):
//!
//! - without a field its kind needs, it is `Other` holding the fields it
//!   had that the kind has (unknown fields and nulls left out);
//! - a field of the wrong type, a duplicate field where `type` comes
//!   first, or an element that is not an object, is an error naming what
//!   was expected: in a request, a 400 either way. Keeping such a block
//!   whole would take the copy of every block that this avoids.
//!
//! Answers from a server, which may be less strict than Anthropic's, are
//! read with [`leniently`]: a block that cannot be read as a known kind is
//! kept whole, every field as it came, as before.

use serde::de::value::MapAccessDeserializer;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{ContentBlock, ToolResultContent, WireDocumentSource, WireImageSource};

impl<'de> Deserialize<'de> for ContentBlock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(BlockVisitor)
    }
}

struct BlockVisitor;

impl<'de> Visitor<'de> for BlockVisitor {
    type Value = ContentBlock;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a content block: an object with a `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContentBlock, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(ContentBlock::Other(Value::Object(Map::new())));
        };
        if first == "type" {
            let kind: Value = map.next_value()?;
            if let Some(known) = kind.as_str().and_then(Kind::of) {
                return known.read(MapAccessDeserializer::new(map));
            }
            let mut object = Map::new();
            object.insert(first, kind);
            gather(&mut map, &mut object)?;
            return Ok(ContentBlock::Other(Value::Object(object)));
        }
        let mut object = Map::new();
        object.insert(first, map.next_value()?);
        gather(&mut map, &mut object)?;
        match object
            .get("type")
            .and_then(Value::as_str)
            .and_then(Kind::of)
        {
            Some(known) => known.read(Value::Object(object)).map_err(A::Error::custom),
            None => Ok(ContentBlock::Other(Value::Object(object))),
        }
    }
}

/// Reads a block of a server's answer: as a value first, then as a
/// block, kept as it came when it cannot be read (answers are small; the
/// copy costs little there).
pub(super) fn leniently<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ContentBlock, D::Error> {
    Ok(block_or_whole(Value::deserialize(deserializer)?))
}

/// [`leniently`] for each block of an answer's `content`.
pub(super) fn leniently_all<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ContentBlock>, D::Error> {
    let values = Vec::<Value>::deserialize(deserializer)?;
    Ok(values.into_iter().map(block_or_whole).collect())
}

/// `value` as a block, or whole as [`ContentBlock::Other`] when it is not
/// one of a known kind, with every field it came with (where reading a
/// known kind without a field it needs keeps only the kind's fields).
fn block_or_whole(value: Value) -> ContentBlock {
    match ContentBlock::deserialize(&value) {
        Ok(ContentBlock::Other(_)) | Err(_) => ContentBlock::Other(value),
        Ok(block) => block,
    }
}

/// Adds the rest of `map`'s entries to `object`.
fn gather<'de, A: MapAccess<'de>>(
    map: &mut A,
    object: &mut Map<String, Value>,
) -> Result<(), A::Error> {
    while let Some((key, value)) = map.next_entry::<String, Value>()? {
        object.insert(key, value);
    }
    Ok(())
}

/// The block kinds read into their own variant.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Image,
    ToolUse,
    ToolResult,
    Thinking,
    RedactedThinking,
    Document,
}

impl Kind {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "text" => Self::Text,
            "image" => Self::Image,
            "tool_use" => Self::ToolUse,
            "tool_result" => Self::ToolResult,
            "thinking" => Self::Thinking,
            "redacted_thinking" => Self::RedactedThinking,
            "document" => Self::Document,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::ToolUse => "tool_use",
            Self::ToolResult => "tool_result",
            Self::Thinking => "thinking",
            Self::RedactedThinking => "redacted_thinking",
            Self::Document => "document",
        }
    }

    /// Reads the block's fields (any `type` among them is left aside). A
    /// block without a field its kind needs is kept whole as
    /// [`ContentBlock::Other`], as serde's derive keeps it, for the decoder
    /// to say what is missing.
    fn read<'de, D: Deserializer<'de>>(self, fields: D) -> Result<ContentBlock, D::Error> {
        let block = match self {
            Self::Text => {
                let read = TextFields::deserialize(fields)?;
                match read.text {
                    Some(text) => Ok(ContentBlock::Text {
                        text,
                        citations: read.citations,
                        cache_control: read.cache_control,
                    }),
                    None => Err(self.whole(&read)),
                }
            }
            Self::Image => {
                let read = ImageFields::deserialize(fields)?;
                match read.source {
                    Some(source) => Ok(ContentBlock::Image {
                        source,
                        cache_control: read.cache_control,
                    }),
                    None => Err(self.whole(&read)),
                }
            }
            Self::ToolUse => {
                let read = ToolUseFields::deserialize(fields)?;
                match (read.id, read.name) {
                    (Some(id), Some(name)) => Ok(ContentBlock::ToolUse {
                        id,
                        name,
                        input: read.input,
                        cache_control: read.cache_control,
                    }),
                    (id, name) => Err(self.whole(&ToolUseFields { id, name, ..read })),
                }
            }
            Self::ToolResult => {
                let read = ToolResultFields::deserialize(fields)?;
                match read.tool_use_id {
                    Some(tool_use_id) => Ok(ContentBlock::ToolResult {
                        tool_use_id,
                        content: read.content,
                        is_error: read.is_error,
                        cache_control: read.cache_control,
                    }),
                    None => Err(self.whole(&read)),
                }
            }
            Self::Thinking => {
                let read = ThinkingFields::deserialize(fields)?;
                match read.thinking {
                    Some(thinking) => Ok(ContentBlock::Thinking {
                        thinking,
                        signature: read.signature.unwrap_or_default(),
                    }),
                    None => Err(self.whole(&read)),
                }
            }
            Self::RedactedThinking => {
                let read = RedactedThinkingFields::deserialize(fields)?;
                match read.data {
                    Some(data) => Ok(ContentBlock::RedactedThinking { data }),
                    None => Err(self.whole(&read)),
                }
            }
            Self::Document => {
                let read = DocumentFields::deserialize(fields)?;
                match read.source {
                    Some(source) => Ok(ContentBlock::Document {
                        source,
                        title: read.title,
                        context: read.context,
                        citations: read.citations,
                        cache_control: read.cache_control,
                    }),
                    None => Err(self.whole(&read)),
                }
            }
        };
        Ok(block.unwrap_or_else(ContentBlock::Other))
    }

    /// A block of this kind whose fields are `read`, whole, as a value.
    fn whole(self, read: &impl Serialize) -> Value {
        let mut object = match serde_json::to_value(read) {
            Ok(Value::Object(object)) => object,
            // The field structs are objects of strings and values.
            _ => Map::new(),
        };
        object.insert("type".to_owned(), Value::String(self.name().to_owned()));
        Value::Object(object)
    }
}

// Each kind's fields, as on its `ContentBlock` variant (documented there).
// Those a kind needs are optional here, so that a block without one is
// kept whole rather than refused ([`Kind::read`]).

#[derive(Serialize, Deserialize)]
struct TextFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    citations: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct ImageFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<WireImageSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct ToolUseFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct ToolResultFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool_use_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<ToolResultContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    is_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct ThinkingFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thinking: Option<String>,
    // Null taken for none: some servers write it so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RedactedThinkingFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct DocumentFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<WireDocumentSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    citations: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<Value>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(value: Value) -> Result<ContentBlock, String> {
        // From text, as a request's body is read, and from a value.
        let from_text =
            serde_json::from_str::<ContentBlock>(&value.to_string()).map_err(|e| e.to_string());
        let from_value = serde_json::from_value::<ContentBlock>(value).map_err(|e| e.to_string());
        assert_eq!(from_text, from_value);
        from_text
    }

    #[test]
    fn every_kind_reads_the_same_with_its_type_first_or_last() {
        let blocks = [
            json!({"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}),
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}),
            json!({"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}}),
            json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "x", "is_error": true}),
            json!({"type": "tool_result", "tool_use_id": "toolu_1",
                   "content": [{"type": "text", "text": "y"}]}),
            json!({"type": "thinking", "thinking": "hmm", "signature": "sig"}),
            json!({"type": "redacted_thinking", "data": "opaque"}),
            json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
                   "title": "t"}),
        ];
        for block in blocks {
            let first = read(block.clone()).unwrap();
            assert!(!matches!(first, ContentBlock::Other(_)), "{block}");
            // The same object with `type` written last.
            let mut object = block.as_object().unwrap().clone();
            let kind = object.remove("type").unwrap();
            object.insert("type".into(), kind);
            let text = serde_json::to_string(&object).unwrap();
            assert!(
                text.ends_with(&format!("\"type\":{}}}", block["type"])),
                "{text}"
            );
            let last: ContentBlock = serde_json::from_str(&text).unwrap();
            assert_eq!(first, last, "{block}");
            // And it is written back as it came.
            assert_eq!(serde_json::to_value(&first).unwrap(), block);
        }
    }

    #[test]
    fn a_servers_malformed_blocks_are_kept_whole() {
        use crate::wire::anthropic::{MessageStreamEvent, MessagesResponse};
        // A signature of null, a number for text, a string for a block.
        let blocks = json!([
            {"type": "thinking", "thinking": "hm", "signature": null},
            {"type": "text", "text": 5},
            "loose text",
            {"type": "tool_use", "id": "toolu_1", "server_field": 1},
            {"type": "text", "text": "fine"},
        ]);
        let response: MessagesResponse = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": blocks, "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }))
        .unwrap();
        assert_eq!(
            response.content,
            [
                ContentBlock::Thinking {
                    thinking: "hm".into(),
                    signature: String::new()
                },
                ContentBlock::Other(blocks[1].clone()),
                ContentBlock::Other(blocks[2].clone()),
                // Without its name, and with a field of the server's own.
                ContentBlock::Other(blocks[3].clone()),
                ContentBlock::text("fine"),
            ]
        );
        let event: MessageStreamEvent = serde_json::from_str(
            r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": 5}}"#,
        )
        .unwrap();
        assert_eq!(
            event,
            MessageStreamEvent::ContentBlockStart {
                index: 0,
                content_block: ContentBlock::Other(json!({"type": "text", "text": 5})),
            }
        );
    }

    #[test]
    fn unknown_or_missing_types_are_kept_whole_and_known_ones_checked() {
        let server = json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}});
        assert_eq!(read(server.clone()).unwrap(), ContentBlock::Other(server));
        let untyped = json!({"text": "no type"});
        assert_eq!(read(untyped.clone()).unwrap(), ContentBlock::Other(untyped));
        let numbered = json!({"type": 5, "text": "a number"});
        assert_eq!(
            read(numbered.clone()).unwrap(),
            ContentBlock::Other(numbered)
        );
        assert_eq!(read(json!({})).unwrap(), ContentBlock::Other(json!({})));

        // A known kind without a field it needs is kept whole, type first
        // or last, for the decoder to name what is missing.
        let missing =
            json!({"type": "tool_result", "content": "r", "cache_control": {"type": "ephemeral"}});
        assert_eq!(read(missing.clone()).unwrap(), ContentBlock::Other(missing));
        let half_a_call: ContentBlock =
            serde_json::from_str(r#"{"id": "toolu_1", "input": {"a": 1}, "type": "tool_use"}"#)
                .unwrap();
        assert_eq!(
            half_a_call,
            ContentBlock::Other(json!({"type": "tool_use", "id": "toolu_1", "input": {"a": 1}}))
        );
        // A field of the wrong type is an error naming what was expected.
        let wrong = serde_json::from_str::<ContentBlock>(r#"{"type": "text", "text": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("invalid type: integer `5`, expected a string"),
            "{wrong}"
        );
        let not_an_object = serde_json::from_str::<ContentBlock>("\"text\"")
            .unwrap_err()
            .to_string();
        assert!(not_an_object.contains("a content block"), "{not_an_object}");
    }
}
