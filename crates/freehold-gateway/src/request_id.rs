//! Request ids: one for each request the gateway answers, sent back in the
//! answer's `request-id` and `x-request-id` headers (where Anthropic's and
//! OpenAI's SDKs read their `request_id`), written on the request's ledger
//! line and its log line, so that a client's error can be found in the
//! ledger (`freehold usage --request-id`).
//!
//! A client (or a reverse proxy in front of the gateway) may bring its own
//! in `x-request-id`; it is kept when it is short and plain (see
//! [`RequestId::from_client`]), and replaced otherwise.

use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue};

/// The headers a request id is sent back in: Anthropic's SDKs read
/// `request-id`, OpenAI's `x-request-id`.
pub const RESPONSE_HEADERS: [&str; 2] = ["request-id", "x-request-id"];

/// The header a client's own request id is read from.
pub const CLIENT_HEADER: &str = "x-request-id";

/// The longest client id kept.
const MAX_CLIENT_ID_BYTES: usize = 128;

/// One request's id, kept as the header value it is sent back as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A new id: `req_` and 32 random hex digits (from a fast per-thread
    /// generator, not a secret), unique in practice across gateways sharing
    /// a ledger without any coordination.
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Written in place rather than with `format!`: this runs for every
        // request.
        let mut id = [0u8; 36];
        id[..4].copy_from_slice(b"req_");
        let mut bits = fastrand::u128(..);
        for digit in id[4..].iter_mut().rev() {
            *digit = HEX[(bits & 0xf) as usize];
            bits >>= 4;
        }
        // Only ASCII letters, digits and `_`: always a valid header value.
        Self(HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("req_")))
    }

    /// The client's `x-request-id` when it is one to keep: 1 to 128 bytes
    /// of ASCII letters, digits and `-_.:` (what request-id schemes use),
    /// so that it cannot put anything else in a log line or the ledger.
    pub fn from_client(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(CLIENT_HEADER)?;
        let bytes = value.as_bytes();
        let plain = !bytes.is_empty()
            && bytes.len() <= MAX_CLIENT_ID_BYTES
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        plain.then(|| Self(value.clone()))
    }

    /// The client's id where it is one to keep, a new one otherwise.
    pub fn for_request(headers: &HeaderMap) -> Self {
        Self::from_client(headers).unwrap_or_else(Self::generate)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Both constructors take only visible ASCII.
        self.0.to_str().unwrap_or("")
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a request arrived and under which id: put in each request's
/// extensions by the outermost layer of [`crate::routes::app`], so that a
/// request's latency counts everything the gateway did with it.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The request's id.
    pub id: RequestId,
    /// When the gateway began on it.
    pub started: Instant,
}

impl Arrival {
    /// A request arriving now with `headers`.
    pub fn now(headers: &HeaderMap) -> Self {
        Self {
            id: RequestId::for_request(headers),
            started: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_and_plain() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36, "{a}");
        assert!(a.as_str().starts_with("req_"), "{a}");
        assert!(
            a.as_str()[4..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{a}"
        );
    }

    #[test]
    fn a_clients_plain_id_is_kept_and_anything_else_replaced() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CLIENT_HEADER, HeaderValue::from_str(value).unwrap());
            RequestId::for_request(&headers)
        };
        for kept in ["abc-123", "7f3e.trace:span_1", &"a".repeat(128)] {
            assert_eq!(with(kept).as_str(), kept);
        }
        for replaced in ["", "has space", "quote\"", "line\tbreak", &"a".repeat(129)] {
            let id = with(replaced);
            assert_ne!(id.as_str(), replaced);
            assert!(id.as_str().starts_with("req_"), "{id}");
        }
        assert!(
            RequestId::for_request(&HeaderMap::new())
                .as_str()
                .starts_with("req_")
        );
    }
}
