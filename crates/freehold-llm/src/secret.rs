//! API keys that cannot leak through `Debug`, `Display` or error messages.

use std::fmt;

/// An API key. Its `Debug` prints `ApiKey(<redacted>)`; it has no `Display`;
/// the only way to read it is [`ApiKey::expose`], used when building a request
/// header (which is then marked sensitive).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// What a key is replaced with wherever it would appear in text.
pub const REDACTED: &str = "<redacted>";

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Reads a key from an environment variable; `None` when the variable is
    /// unset or empty.
    pub fn from_env(variable: &str) -> Option<Self> {
        std::env::var(variable)
            .ok()
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .map(Self)
    }

    /// The key itself. Only for building request headers.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of this key (and of any long suffix or
    /// prefix of it, as providers print `sk-abc…xyz`) replaced by
    /// [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let key = self.0.as_str();
        if key.is_empty() {
            return text.to_owned();
        }
        let mut out = text.replace(key, REDACTED);
        // Providers echo parts of a wrong key ("Incorrect API key provided:
        // sk-proj-****abcd"); remove any 8+ character run of the key too.
        const WINDOW: usize = 8;
        if key.len() > WINDOW && key.is_ascii() {
            let mut start = 0;
            while start + WINDOW <= key.len() {
                let piece = &key[start..start + WINDOW];
                if out.contains(piece) {
                    out = out.replace(piece, REDACTED);
                }
                start += 1;
            }
        }
        out
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({REDACTED})")
    }
}

/// Redacts several keys from `text`.
pub fn redact_all<'a>(text: &str, keys: impl IntoIterator<Item = &'a ApiKey>) -> String {
    keys.into_iter()
        .fold(text.to_owned(), |text, key| key.redact(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = ApiKey::new("sk-secret-123456789");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert!(!format!("{:?}", Some(&key)).contains("secret"));
    }

    #[test]
    fn redact_removes_whole_and_partial_keys() {
        let key = ApiKey::new("sk-proj-ABCDEFGHIJKLMNOP");
        let text = "Incorrect API key provided: sk-proj-ABCDEFGHIJKLMNOP and sk-proj-****IJKLMNOP.";
        let redacted = key.redact(text);
        assert!(!redacted.contains("ABCDEFGH"), "{redacted}");
        assert!(!redacted.contains("IJKLMNOP"), "{redacted}");
        assert!(redacted.starts_with("Incorrect API key provided: <redacted>"));
    }
}
