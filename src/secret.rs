//! A string that must never be shown in full: routing keys and tokens.
//!
//! `Debug` and `Display` print only the last four characters, so a secret
//! that reaches a log line, an error body or a panic message stays secret.
//! Use [`Secret::expose`] at the one place the real value is needed.
//! [`SecretSource`] says where one is read from (`env:`, `file:`, or given).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

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

/// A secret source or value that is not usable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSecret(String);

fn refuse(what: &str) -> InvalidSecret {
    InvalidSecret(what.to_owned())
}

/// Where a secret comes from: `env:VAR`, `file:PATH`, or the value itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    /// Given on the command line (visible in `ps`; prefer the others).
    Value(Secret),
    /// An environment variable.
    Env(String),
    /// A file (trailing white space is trimmed).
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(s) => write!(f, "Value({s})"),
            Self::Env(v) => write!(f, "Env({v})"),
            Self::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl FromStr for SecretSource {
    type Err = InvalidSecret;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(var) = s.strip_prefix("env:") {
            if var.is_empty() {
                return Err(refuse("env: needs a variable name, as in env:PD_KEY"));
            }
            return Ok(Self::Env(var.to_owned()));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(refuse("file: needs a path, as in file:/run/secrets/pd-key"));
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        check_secret(s).map(|()| Self::Value(Secret::new(s)))
    }
}

/// A secret is not empty and has no white space inside.
fn check_secret(value: &str) -> Result<(), InvalidSecret> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        Err(refuse("the secret is empty or contains white space"))
    } else {
        Ok(())
    }
}

/// A secret that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// `env:VAR` names an unset variable.
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// `file:PATH` cannot be read.
    #[error("cannot read the secret file {path}: {source}")]
    File {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// What was read is not a secret.
    #[error("{0}")]
    Invalid(InvalidSecret),
}

impl SecretSource {
    /// Reads the secret. This and clap are the only readers of the
    /// environment.
    ///
    /// # Errors
    /// An unset variable, an unreadable file, or a value that is empty or
    /// has white space inside.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let value = match self {
            Self::Value(s) => return Ok(s.clone()),
            Self::Env(var) => std::env::var(var).map_err(|_| SecretError::MissingEnv(var.clone()))?,
            Self::File(path) => std::fs::read_to_string(path).map_err(|source| SecretError::File {
                path: path.display().to_string(),
                source,
            })?,
        };
        let value = value.trim();
        check_secret(value).map_err(SecretError::Invalid)?;
        Ok(Secret::new(value))
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
