//! Wire formats, one module per protocol: the exact JSON each API sends and
//! receives, as serde types, with conversions to and from
//! [`freehold_protocol`] types.
//!
//! The types derive both `Serialize` and `Deserialize` so that they serve in
//! both directions: the clients in [`crate::client`] encode requests and
//! decode responses with them, and the gateway decodes its own clients'
//! requests and encodes responses with the same types. The gateway direction
//! (`decode_request`, `encode_response`, the stream encoders and
//! `encode_error` of [`openai_chat`], [`anthropic`] and
//! [`openai_responses`]) is described in [`serve`].

pub mod anthropic;
pub mod compaction;
pub mod embeddings;
pub mod gemini;
pub mod ollama;
pub mod openai_api;
pub mod openai_chat;
pub mod openai_responses;
pub mod serve;
mod text_or;

/// An end user's id ([`freehold_protocol::ChatRequest::end_user`]) as a
/// provider that takes at most `max` bytes of it gets it: as it is when it
/// fits, else [`hashed_end_user`], so that one user keeps one id. (A Claude
/// Code session's id runs past OpenAI's 64.)
pub(crate) fn end_user_within(id: &str, max: usize) -> String {
    if id.len() <= max {
        return id.to_owned();
    }
    hashed_end_user(id)
}

/// An end user's id as its SHA-256 in hex (64 characters): what a provider
/// gets in its place when it is too long for it. The provider still tells
/// one user from another.
pub fn hashed_end_user(id: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(id.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_end_user_id_too_long_for_a_provider_is_hashed_the_same_each_time() {
        assert_eq!(super::end_user_within("user_42", 64), "user_42");
        let long = "user_".repeat(30);
        let hashed = super::end_user_within(&long, 64);
        assert_eq!(hashed.len(), 64);
        assert!(hashed.chars().all(|c| c.is_ascii_hexdigit()), "{hashed}");
        assert_eq!(hashed, super::end_user_within(&long, 64));
        assert_ne!(hashed, super::end_user_within(&"user_".repeat(31), 64));
    }
}
