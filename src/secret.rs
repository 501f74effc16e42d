//! A string that must never be shown in full: routing keys and tokens.
//!
//! `Debug` and `Display` print only the last four characters, so a secret
//! that reaches a log line, an error body or a panic message stays secret.
//! Use [`Secret::expose`] at the one place the real value is needed.

use std::fmt;

/// A secret value; formatting shows at most its last four characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the wire. Never format this into logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A redacted form safe for logs: `…` followed by the last four characters.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

/// Redacts any secret string to `…` plus its last four characters.
///
/// Short secrets (under 12 characters) show nothing of themselves, since four
/// characters of a very short value give away too much of it.
pub fn redact(value: &str) -> String {
    let count = value.chars().count();
    if count < 12 {
        return "…".to_owned();
    }
    let tail: String = value.chars().skip(count - 4).collect();
    format!("…{tail}")
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.redacted())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_shows_only_the_last_four_characters() {
        let key = Secret::new("R0UTINGKEY00000000000000000abcd");
        assert_eq!(format!("{key}"), "…abcd");
        assert_eq!(format!("{key:?}"), "Secret(…abcd)");
        assert!(!format!("{key:?}").contains("R0UTING"));
    }

    #[test]
    fn short_secrets_show_nothing() {
        assert_eq!(redact("abc"), "…");
        assert_eq!(redact("12345678901"), "…");
        assert_eq!(redact("é23456789012"), "…9012");
    }
}
