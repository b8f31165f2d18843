//! What the gateway direction of the wire modules shares: the error a
//! client's request can fail to decode with, and the server-sent events the
//! stream encoders produce.
//!
//! Each protocol module ([`super::openai_chat`], [`super::anthropic`],
//! [`super::openai_responses`]) has, next to its client-side conversions:
//! - `decode_request`: a client's wire request → [`freehold_protocol::ChatRequest`]
//!   plus the protocol's serve options (`stream`…);
//! - `encode_response`: a complete [`freehold_protocol::ChatResponse`] → the
//!   protocol's response body;
//! - a stream encoder turning [`freehold_protocol::StreamEvent`]s into
//!   [`SseFrame`]s;
//! - `encode_error`: an [`freehold_protocol::LlmError`] → an HTTP status and
//!   the protocol's error body.
//!
//! Server-side tools (Anthropic `web_search_20250305`, Responses
//! `file_search`, `local_shell`…) are rejected with
//! [`DecodeError::UnsupportedTool`]: the gateway has no server to run them,
//! and dropping them silently would leave the client waiting for a result
//! that never comes. One exception: the Responses API's hosted web search,
//! which Codex offers in every request to `gpt-5…` models whether or not
//! the task needs it, is left out, so that the model answers without it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use freehold_protocol::{ContentPart, Document, DocumentSource, ErrorKind, ImageSource, LlmError};
use serde_json::Value;

/// The provider name an [`LlmError`] made from a [`DecodeError`] carries.
pub const GATEWAY_PROVIDER: &str = "gateway";

/// Why a client's request could not be turned into a
/// [`freehold_protocol::ChatRequest`]. Every variant names the field at
/// fault as a path into the request body (`messages[2].content[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A field the request needs is missing or empty.
    #[error("{field}: {what}")]
    Missing {
        /// The path of the field (or of the object lacking it).
        field: String,
        /// What is missing and why it is needed.
        what: String,
    },
    /// A field has a value this protocol does not allow.
    #[error("{field}: {reason}")]
    Invalid {
        /// The path of the field.
        field: String,
        /// What is wrong with it and what is expected.
        reason: String,
    },
    /// The request uses something valid in the protocol that the gateway
    /// cannot serve (a content type, a message role).
    #[error("{field}: {what} is not supported by this gateway")]
    Unsupported {
        /// The path of the field.
        field: String,
        /// What is not supported.
        what: String,
    },
    /// A server-side (built-in) tool: the gateway only serves tools that the
    /// client runs itself.
    #[error(
        "{field}: the server-side tool type `{kind}` is not supported by this gateway; \
         offer only client tools (functions with a JSON schema) that the client runs itself"
    )]
    UnsupportedTool {
        /// The path of the tool (`tools[1]`).
        field: String,
        /// The tool's `type`.
        kind: String,
    },
}

impl DecodeError {
    /// The path of the field at fault (`messages[2].content[0]`).
    pub fn field(&self) -> &str {
        match self {
            Self::Missing { field, .. }
            | Self::Invalid { field, .. }
            | Self::Unsupported { field, .. }
            | Self::UnsupportedTool { field, .. } => field,
        }
    }

    pub(crate) fn missing(field: impl Into<String>, what: impl Into<String>) -> Self {
        Self::Missing {
            field: field.into(),
            what: what.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, what: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            what: what.into(),
        }
    }
}

impl From<DecodeError> for LlmError {
    /// An [`ErrorKind::InvalidRequest`] of provider [`GATEWAY_PROVIDER`] with
    /// status 400, ready for the protocols' `encode_error`.
    fn from(error: DecodeError) -> Self {
        LlmError::new(
            ErrorKind::InvalidRequest,
            GATEWAY_PROVIDER,
            error.to_string(),
        )
        .with_status(400)
    }
}

/// One server-sent event, ready to be written to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct SseFrame {
    /// The `event:` line (Anthropic and Responses name every event; OpenAI
    /// Chat Completions names none).
    pub event: Option<String>,
    /// The `data:` payload.
    pub data: SseData,
}

/// The payload of an [`SseFrame`].
#[derive(Debug, Clone, PartialEq)]
pub enum SseData {
    /// A JSON object, written on one `data:` line.
    Json(Value),
    /// The `[DONE]` marker that ends an OpenAI Chat Completions stream.
    Done,
    /// A comment line (`: text`), which SSE parsers skip: a keepalive for
    /// protocols without a keepalive event of their own.
    Comment(&'static str),
}

impl SseFrame {
    /// A frame with an `event:` name.
    pub fn named(event: impl Into<String>, data: Value) -> Self {
        Self {
            event: Some(event.into()),
            data: SseData::Json(data),
        }
    }

    /// A frame without an `event:` name.
    pub fn data(data: Value) -> Self {
        Self {
            event: None,
            data: SseData::Json(data),
        }
    }

    /// The `data: [DONE]` frame.
    pub fn done() -> Self {
        Self {
            event: None,
            data: SseData::Done,
        }
    }

    /// A comment frame, `: text` (see [`SseData::Comment`]). `text` must
    /// hold no line break.
    pub fn comment(text: &'static str) -> Self {
        Self {
            event: None,
            data: SseData::Comment(text),
        }
    }

    /// Whether this is the `[DONE]` marker.
    pub fn is_done(&self) -> bool {
        self.data == SseData::Done
    }

    /// The frame as `text/event-stream` text: an optional `event:` line, one
    /// `data:` line (JSON has no raw newlines) and the blank line that ends
    /// the event; a comment is its one `: text` line and the blank line.
    pub fn to_sse_text(&self) -> String {
        let mut bytes = Vec::new();
        self.write_sse(&mut bytes);
        // Only JSON and ASCII were written.
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Appends the frame as `text/event-stream` text (see
    /// [`SseFrame::to_sse_text`]) to `out`, serializing the JSON in place.
    pub fn write_sse(&self, out: &mut Vec<u8>) {
        if let SseData::Comment(text) = &self.data {
            out.extend_from_slice(b": ");
            out.extend_from_slice(text.as_bytes());
            out.extend_from_slice(b"\n\n");
            return;
        }
        if let Some(event) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        match &self.data {
            // Writing a `Value` to a `Vec` cannot fail: its keys are
            // strings and the writer takes every byte.
            SseData::Json(value) => {
                let _ = serde_json::to_writer(&mut *out, value);
            }
            SseData::Done => out.extend_from_slice(b"[DONE]"),
            SseData::Comment(_) => {}
        }
        out.extend_from_slice(b"\n\n");
    }
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `prefix` followed by 24 random alphanumerics (`chatcmpl-…`, `msg_…`).
pub(crate) fn generated_id(prefix: &str) -> String {
    let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(24)
        .collect();
    format!("{prefix}{suffix}")
}

/// What separates a call's id from its signature in the id a gateway gives
/// its client ([`call_id_for_client`]).
const CALL_SIGNATURE_MARK: &str = "__sig_";

/// The id a gateway gives its client for a tool call: the provider's `id`,
/// followed, when the call carries a signature that must come back with it
/// (Gemini's thought signature), by that signature and a check of it:
/// `{id}__sig_{check}{signature}`. Clients hand a call's id back unchanged,
/// on the call and on its result, and none of the three protocols has
/// another place for it, so a conversation through the gateway brings
/// Gemini its signatures as a direct one would. The signature (base64) is
/// written in the URL-safe alphabet without padding, so the id keeps to
/// letters, digits, `_` and `-`, as Anthropic's ids do; the check (8 hex
/// digits of its FNV-1a hash) tells a signature that came back whole from
/// one a client cut (some shorten long ids and add a hash of their own),
/// which would make Gemini refuse the conversation. A signature that is not
/// base64 is left out.
pub fn call_id_for_client(id: &str, signature: Option<&str>) -> String {
    let Some(signature) = signature.filter(|signature| is_base64(signature)) else {
        return id.to_owned();
    };
    let encoded: String = signature
        .chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    format!(
        "{id}{CALL_SIGNATURE_MARK}{:08x}{encoded}",
        fnv1a(encoded.as_bytes())
    )
}

/// A tool call's id from a client: the provider's id and the signature
/// [`call_id_for_client`] put inside, in the standard base64 alphabet with
/// its padding. An id whose signature fails its check (a client cut or
/// changed it) is taken whole, without a signature: the call then goes to
/// Gemini with the placeholder that skips the check.
pub fn split_client_call_id(id: &str) -> (String, Option<String>) {
    // The first mark whose signature checks: a provider's id may hold the
    // mark's text itself.
    let split = id.match_indices(CALL_SIGNATURE_MARK).find_map(|(at, _)| {
        let call = &id[..at];
        let rest = &id[at + CALL_SIGNATURE_MARK.len()..];
        let check = rest
            .get(..8)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok());
        let encoded = rest.get(8..).unwrap_or_default();
        (!call.is_empty() && is_base64(encoded) && check == Some(fnv1a(encoded.as_bytes())))
            .then_some((call, encoded))
    });
    let Some((call, encoded)) = split else {
        if id.contains(CALL_SIGNATURE_MARK) {
            tracing::debug!("a call id whose signature fails its check: taken as it is");
        }
        return (id.to_owned(), None);
    };
    let mut standard: String = encoded
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !standard.len().is_multiple_of(4) {
        standard.push('=');
    }
    (call.to_owned(), Some(standard))
}

/// The 32-bit FNV-1a hash of `bytes`.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// What marks, in a reasoning signature a gateway gives its client, the
/// protocol whose provider made it ([`signature_for_client`]).
const ORIGIN_MARK: &str = "freehold-origin:";

/// The signature a client of `protocol` gets for reasoning signed by a
/// provider of `origin` (a protocol's `ORIGIN`: `anthropic`, `gemini`,
/// `openai-responses`): the signature itself when `origin` is `protocol`'s
/// own or unknown, so that a conversation handed straight to that protocol's
/// API still works; else `freehold-origin:{origin}:{signature}`, so that it
/// comes back knowing its origin ([`split_client_signature`]) and goes to no
/// provider of another protocol, which would refuse it.
pub fn signature_for_client(signature: &str, origin: Option<&str>, protocol: &str) -> String {
    match origin {
        Some(origin) if origin != protocol && !signature.is_empty() => {
            format!("{ORIGIN_MARK}{origin}:{signature}")
        }
        _ => signature.to_owned(),
    }
}

/// A reasoning signature from a client of `protocol`, and its origin: the
/// one [`signature_for_client`] marked, or else `protocol`'s own (the
/// client's own API made it, or the gateway before it marked signatures).
pub fn split_client_signature(signature: String, protocol: &str) -> (String, Option<String>) {
    let marked = signature
        .strip_prefix(ORIGIN_MARK)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(origin, _)| !origin.is_empty())
        .map(|(origin, signature)| (signature.to_owned(), origin.to_owned()));
    match marked {
        Some((signature, origin)) => (signature, Some(origin)),
        None => (signature, Some(protocol.to_owned())),
    }
}

/// Whether `text` is base64, in either alphabet, padded or not.
fn is_base64(text: &str) -> bool {
    let data = text.trim_end_matches('=');
    !data.is_empty()
        && data.len() % 4 != 1
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
}

/// An image URL as an [`ImageSource`]: `data:<type>;base64,<data>` URLs
/// become [`ImageSource::Base64`], anything else [`ImageSource::Url`].
pub(crate) fn image_from_url(url: &str) -> ImageSource {
    let inline = url.strip_prefix("data:").and_then(|rest| {
        let (header, data) = rest.split_once(',')?;
        let media_type = header.strip_suffix(";base64")?;
        Some((media_type, data))
    });
    match inline {
        Some((media_type, data)) => ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        },
        None => ImageSource::Url {
            url: url.to_owned(),
        },
    }
}

/// A file a client sent in OpenAI's shape (Chat Completions' `file` part,
/// the Responses API's `input_file`): its bytes as a `data:` URL (or bare
/// base64, a PDF), or a URL; `filename` its title. An image file is an
/// image, a text file ([`text_of_file`]) its text; anything else a
/// document. `None` when it has neither bytes nor URL (an uploaded file's
/// id: the gateway has no copy of it).
pub(crate) fn document_from_file(
    file_data: Option<String>,
    file_url: Option<String>,
    filename: Option<String>,
) -> Option<ContentPart> {
    let title = filename.filter(|name| !name.is_empty());
    let source = match (file_data.filter(|data| !data.is_empty()), file_url) {
        (Some(data), _) => match data
            .strip_prefix("data:")
            .and_then(|rest| rest.split_once(','))
            .and_then(|(header, data)| Some((header.strip_suffix(";base64")?, data)))
        {
            // `application/PDF;name=a.pdf` is `application/pdf`.
            Some((header, data)) => DocumentSource::Base64 {
                media_type: match header.split(';').next().unwrap_or_default().trim() {
                    "" => "application/pdf".into(),
                    media_type => media_type.to_ascii_lowercase(),
                },
                data: data.to_owned(),
            },
            // Bare base64, as some clients send a PDF.
            None => DocumentSource::Base64 {
                media_type: "application/pdf".into(),
                data,
            },
        },
        (None, Some(url)) if !url.is_empty() => DocumentSource::Url { url },
        _ => return None,
    };
    if let DocumentSource::Base64 { media_type, data } = &source {
        if media_type.starts_with("image/") {
            return Some(ContentPart::Image {
                source: ImageSource::Base64 {
                    media_type: media_type.clone(),
                    data: data.clone(),
                },
            });
        }
        if let Some(text) = text_of_file(media_type, data) {
            return Some(ContentPart::Text {
                text: match &title {
                    Some(title) => format!("{title}\n\n{text}"),
                    None => text,
                },
            });
        }
    }
    Some(ContentPart::Document(Document { source, title }))
}

/// The text of a file sent as base64, when its media type says it is text
/// ([`is_text_media_type`]; parameters such as `; charset=utf-8` aside)
/// and its bytes are UTF-8 without a NUL (UTF-16 without a byte-order mark
/// is valid UTF-8 full of NULs). A byte-order mark is dropped, and a
/// newline ends it if none does. As text,
/// every model reads it (few providers take a document that is not a PDF)
/// and the privacy detectors can look into it.
pub(crate) fn text_of_file(media_type: &str, data: &str) -> Option<String> {
    let media_type = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if !is_text_media_type(&media_type) || !starts_like_text(data) {
        return None;
    }
    let text = String::from_utf8(decode_base64_leniently(data)?).ok()?;
    if text.contains('\0') {
        return None;
    }
    let mut text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    // Its own paragraph: servers that take a message as one string get the
    // text after it on a line of its own, not glued to its last line.
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    Some(text)
}

/// Whether the first few kilobytes of a base64 payload can be the start of
/// a text: no NUL, and UTF-8 but for a character cut at the end. A binary
/// file sent as `application/octet-stream` (an archive, an image) fails
/// here on its first bytes, without the whole of it being decoded on the
/// request's path.
fn starts_like_text(data: &str) -> bool {
    // Base64 characters, a multiple of 4: 3 KiB of bytes.
    const SNIFFED: usize = 4096;
    // Bytes, not characters: what is not base64 (a non-ASCII character)
    // fails the decoding below rather than splitting a character.
    let head: Vec<u8> = data
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .take(SNIFFED)
        .collect();
    let head = &head[..head.len() / 4 * 4];
    // What does not decode is left to the whole payload's decoding.
    let Some(bytes) = std::str::from_utf8(head)
        .ok()
        .and_then(decode_base64_leniently)
    else {
        return true;
    };
    !bytes.contains(&0)
        && match std::str::from_utf8(&bytes) {
            Ok(_) => true,
            Err(error) => error.error_len().is_none(),
        }
}

/// Whether a media type (lowercase, without parameters) names text:
/// `text/…`; JSON, XML, YAML, TOML, CSV, SQL and source code; keys and
/// certificates in PEM; the structured-syntax suffixes (`…+json`, `…+xml`,
/// `…+yaml`); and `application/octet-stream`, what a file of no known type
/// (`.env`, `id_rsa`, `credentials`) is sent as, read as text only when its
/// bytes are ([`text_of_file`]).
fn is_text_media_type(media_type: &str) -> bool {
    const TEXT_APPLICATIONS: &[&str] = &[
        "json",
        "x-ndjson",
        "ndjson",
        "jsonl",
        "x-jsonlines",
        "xml",
        "yaml",
        "x-yaml",
        "toml",
        "x-toml",
        "javascript",
        "x-javascript",
        "ecmascript",
        "typescript",
        "x-typescript",
        "x-sh",
        "x-shellscript",
        "x-python",
        "x-ruby",
        "x-perl",
        "x-php",
        "x-httpd-php",
        "sql",
        "graphql",
        "x-tex",
        "x-latex",
        "csv",
        "x-csv",
        "rtf",
        "x-pem-file",
        "pgp-keys",
        "x-x509-ca-cert",
        "octet-stream",
    ];
    if media_type.starts_with("text/") {
        return true;
    }
    let Some(subtype) = media_type.strip_prefix("application/") else {
        return false;
    };
    TEXT_APPLICATIONS.contains(&subtype)
        || ["+json", "+xml", "+yaml"]
            .iter()
            .any(|suffix| subtype.ends_with(suffix))
}

/// Base64 as clients write it: either alphabet, padded or not, wrapped in
/// lines or not.
fn decode_base64_leniently(data: &str) -> Option<Vec<u8>> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let compact: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    GeneralPurpose::new(&STANDARD, config)
        .decode(&compact)
        .or_else(|_| GeneralPurpose::new(&URL_SAFE, config).decode(&compact))
        .ok()
}

/// The message of an error as a client should see it: the provider, kind and
/// message, without the operator hint when the error came from decoding.
pub(crate) fn client_message(error: &LlmError) -> String {
    if error.provider == GATEWAY_PROVIDER && !error.message.is_empty() {
        error.message.clone()
    } else {
        error.to_string()
    }
}

/// Helpers for the protocol modules' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use freehold_protocol::{ChatResponse, LlmError, ResponseBuilder, StreamEvent};

    use super::SseFrame;
    use crate::assemble::{Decoded, StreamAssembler, WireDecoder};
    use crate::sse::{SseDecoder, SseEvent};

    /// Writes the frames as SSE text and reads them back with the client's
    /// decoder, one byte at a time.
    pub(crate) fn replay<D: WireDecoder<SseEvent>>(
        frames: &[SseFrame],
        decoder: D,
    ) -> Result<ChatResponse, LlmError> {
        let mut builder = ResponseBuilder::default();
        for event in &replay_events(frames, decoder)? {
            builder.push(event);
        }
        Ok(builder.finish())
    }

    /// [`replay`]'s events, before they are put together.
    pub(crate) fn replay_events<D: WireDecoder<SseEvent>>(
        frames: &[SseFrame],
        mut decoder: D,
    ) -> Result<Vec<StreamEvent>, LlmError> {
        let text: String = frames.iter().map(SseFrame::to_sse_text).collect();
        let mut sse = SseDecoder::new();
        let mut assembler = StreamAssembler::new();
        let mut events = Vec::new();
        'outer: for byte in text.as_bytes() {
            for event in sse.feed(std::slice::from_ref(byte)) {
                match decoder.decode(event, &mut assembler)? {
                    Decoded::More => events.extend(assembler.take()),
                    Decoded::Done => break 'outer,
                }
            }
        }
        events.extend(assembler.finish().ok_or_else(|| decoder.truncated())?);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_files_are_known_by_their_media_type() {
        for text in [
            "text/plain",
            "text/markdown",
            "application/json",
            "application/ld+json",
            "application/vnd.api+json",
            "application/xml",
            "application/atom+xml",
            "application/x-yaml",
            "application/toml",
            "application/x-sh",
            "application/sql",
        ] {
            assert!(is_text_media_type(text), "{text}");
        }
        for binary in [
            "application/pdf",
            "application/zip",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ] {
            assert!(!is_text_media_type(binary), "{binary}");
        }
        // Text in a text file's media type, but not UTF-8, or UTF-16
        // (NULs): no text.
        assert_eq!(text_of_file("text/plain", "//4A"), None);
        assert_eq!(text_of_file("text/plain", "YQBiAA=="), None);
        // Parameters aside, any case; a byte-order mark dropped.
        assert_eq!(
            text_of_file("Application/JSON; charset=utf-8", "e30="),
            Some("{}\n".into())
        );
        assert_eq!(text_of_file("text/csv", "77u/YSxi"), Some("a,b\n".into()));
        // A file of no known type is text when its bytes are.
        assert_eq!(
            text_of_file("application/octet-stream", "S0VZPTE="),
            Some("KEY=1\n".into())
        );
        assert_eq!(text_of_file("application/octet-stream", "UEsDBAAA"), None);
        assert_eq!(text_of_file("application/json", "e30"), Some("{}\n".into()));
        assert_eq!(text_of_file("text/plain", "YQo="), Some("a\n".into()));
        assert_eq!(text_of_file("text/plain", ""), Some(String::new()));
        assert_eq!(text_of_file("application/pdf", "e30="), None);

        // Longer than what is sniffed: a text, a character of which is cut
        // at the sniff's end, is still text; a binary file is found on its
        // first bytes.
        use base64::Engine;
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let long_text = format!("{}€ and more", "a".repeat(3071));
        assert_eq!(
            text_of_file("application/octet-stream", &encode(long_text.as_bytes())),
            Some(format!("{long_text}\n"))
        );
        let mut archive = b"PK\x03\x04\x14\x00".to_vec();
        archive.resize(100_000, b'a');
        assert!(!starts_like_text(&encode(&archive)));
        assert_eq!(
            text_of_file("application/octet-stream", &encode(&archive)),
            None
        );
        let mut late_nul = vec![b'a'; 100_000];
        late_nul[90_000] = 0;
        assert!(starts_like_text(&encode(&late_nul)));
        assert_eq!(
            text_of_file("application/octet-stream", &encode(&late_nul)),
            None
        );
        // Not base64 at all, a character across the sniff's cut: no text,
        // and no panic.
        assert_eq!(text_of_file("text/plain", "ab€"), None);
        assert_eq!(text_of_file("text/plain", "abc€"), None);
    }

    #[test]
    fn a_signature_from_another_protocols_provider_comes_back_with_its_origin() {
        // A client's own protocol's signatures go as they are.
        for origin in [Some("anthropic"), None] {
            let sent = signature_for_client("EqQBCkgIARAB", origin, "anthropic");
            assert_eq!(sent, "EqQBCkgIARAB");
        }
        // An empty signature stays empty (it signs nothing).
        assert_eq!(signature_for_client("", Some("gemini"), "anthropic"), "");
        let sent = signature_for_client("CiQBcsjafE+/x9Q=", Some("gemini"), "anthropic");
        assert_eq!(sent, "freehold-origin:gemini:CiQBcsjafE+/x9Q=");
        assert_eq!(
            split_client_signature(sent, "anthropic"),
            ("CiQBcsjafE+/x9Q=".to_owned(), Some("gemini".to_owned()))
        );
        assert_eq!(
            split_client_signature("gAAAAABo".into(), "openai-responses"),
            ("gAAAAABo".to_owned(), Some("openai-responses".to_owned()))
        );
    }

    #[test]
    fn a_call_signature_travels_inside_the_clients_call_id() {
        for signature in ["CiQBcsjafE+/x9Q=", "Cg==", "EjQKMgEB/w", "a+b/cw"] {
            let id = call_id_for_client("call_0", Some(signature));
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')),
                "{id}"
            );
            let (call, back) = split_client_call_id(&id);
            assert_eq!(call, "call_0");
            // Standard base64 comes back as it was, padding included.
            let data = signature.trim_end_matches('=');
            let padded = format!("{data}{}", "=".repeat((4 - data.len() % 4) % 4));
            assert_eq!(back.as_deref(), Some(padded.as_str()), "{signature}");
        }
        let id = call_id_for_client("call_0", Some("CiQ+/w=="));
        assert_eq!(id, format!("call_0__sig_{:08x}CiQ-_w", fnv1a(b"CiQ-_w")));
        // A signature a client cut, or whose check it changed, is no
        // signature: the id is taken whole.
        let long = call_id_for_client("call_0_abcdefghijkl", Some(&"QUJD".repeat(30)));
        let shortened = format!("{}_deadbeef", &long[..55]);
        let changed = long.replacen("__sig_", "__sig_0", 1);
        for id in [
            shortened.as_str(),
            changed.as_str(),
            &long[..long.len() - 1],
        ] {
            assert_eq!(split_client_call_id(id), (id.to_owned(), None), "{id}");
        }
        // No signature, or one that is not base64: the id as it is.
        assert_eq!(call_id_for_client("toolu_01", None), "toolu_01");
        for not_base64 in ["not base64!", "", "a+b/c"] {
            assert_eq!(call_id_for_client("toolu_01", Some(not_base64)), "toolu_01");
        }
        for plain in [
            "toolu_01",
            "call_abc",
            "__sig_",
            "x__sig_",
            "x__sig_é",
            "é__sig_x",
        ] {
            assert_eq!(split_client_call_id(plain), (plain.to_owned(), None));
        }
        // A provider's id that holds the mark itself.
        let id = call_id_for_client("a__sig_b", Some("Q0FMTA=="));
        assert_eq!(
            split_client_call_id(&id),
            ("a__sig_b".to_owned(), Some("Q0FMTA==".to_owned()))
        );
    }

    #[test]
    fn frames_render_as_event_stream_text() {
        assert_eq!(
            SseFrame::named("ping", serde_json::json!({"type": "ping"})).to_sse_text(),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        assert_eq!(SseFrame::done().to_sse_text(), "data: [DONE]\n\n");
        assert_eq!(
            SseFrame::comment("keepalive").to_sse_text(),
            ": keepalive\n\n"
        );
    }

    #[test]
    fn decode_errors_name_the_field() {
        let error = DecodeError::missing("messages[2].content[0]", "tool_result needs tool_use_id");
        assert_eq!(
            error.to_string(),
            "messages[2].content[0]: tool_result needs tool_use_id"
        );
        let llm = LlmError::from(error);
        assert_eq!(llm.kind, ErrorKind::InvalidRequest);
        assert_eq!(
            client_message(&llm),
            "messages[2].content[0]: tool_result needs tool_use_id"
        );
    }

    #[test]
    fn data_urls_become_inline_images() {
        assert_eq!(
            image_from_url("data:image/png;base64,AAAA"),
            ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            }
        );
        assert_eq!(
            image_from_url("https://x/y.png"),
            ImageSource::Url {
                url: "https://x/y.png".into()
            }
        );
    }
}
