//! The value types of the command line, each one `FromStr` with its tests
//! beside it. A value that does not parse is refused with what is accepted;
//! nothing is rounded, clamped or guessed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::actions::{self, Action};
use crate::pagerduty::Severity;
use crate::server::auth::Role;

/// Why a value does not parse: what was given and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

fn refuse(what: impl fmt::Display) -> ValueError {
    ValueError(what.to_string())
}

/// A number of bytes: `1048576`, `512KiB`, `1MiB`, `500KB`, `1MB`. `KB` and
/// `MB` are powers of 1000, `KiB` and `MiB` of 1024 (case does not matter);
/// a bare `K` or `M` is refused as ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let accepted = "a size like 1048576, 500KB, 512KiB, 1MB or 1MiB";
        let n: u64 = digits
            .parse()
            .map_err(|_| refuse(format_args!("{s:?} is not {accepted}")))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" => 1024,
            "mb" => 1000 * 1000,
            "mib" => 1024 * 1024,
            "gb" => 1000 * 1000 * 1000,
            "gib" => 1024 * 1024 * 1024,
            "k" | "m" | "g" => {
                return Err(refuse(format_args!(
                    "{s:?}: {unit:?} is ambiguous; write {u}B (powers of 1000) or {u}iB (powers of 1024)",
                    u = unit.trim().to_ascii_uppercase()
                )));
            }
            _ => {
                return Err(refuse(format_args!(
                    "{s:?}: unknown unit; use B, KB, KiB, MB or MiB"
                )));
            }
        };
        n.checked_mul(mult)
            .map(Self)
            .ok_or_else(|| refuse(format_args!("{s:?} is too large")))
    }
}

/// A rate: `N/s`, `N/min`, `N/h`, or `N/<duration>` such as `10/30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many.
    pub n: u32,
    /// Per how long.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || refuse(format_args!("{s:?} is not a rate like 120/min, 2/s or 10/30s"));
        let (n, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if n == 0 || per.is_zero() {
            return Err(refuse(format_args!("{s:?}: a rate must be above zero")));
        }
        Ok(Self { n, per })
    }
}

impl Rate {
    /// As (count, period).
    pub fn pair(self) -> (u32, Duration) {
        (self.n, self.per)
    }
}

/// A length of time: `30s`, `5m`, `1h 30m`, `250ms`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(Self).map_err(|e| {
            refuse(format_args!(
                "{s:?} is not a duration like 250ms, 30s, 5m, 1h or 7d ({e})"
            ))
        })
    }
}

pub use crate::secret::{InvalidSecret, SecretSource};

impl From<InvalidSecret> for ValueError {
    fn from(e: InvalidSecret) -> Self {
        refuse(e)
    }
}

/// An action's severity: one of PagerDuty's, or `auto` (derived from each
/// Prefect event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSeverity(pub Option<Severity>);

impl FromStr for ActionSeverity {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self(None));
        }
        s.parse::<Severity>().map(|s| Self(Some(s))).map_err(|_| {
            refuse(format_args!(
                "{s:?} is not critical, error, warning, info or auto"
            ))
        })
    }
}

/// `--action NAME=KEY[:SEVERITY]`, KEY a [`SecretSource`]. A trailing
/// `:SEVERITY` is split off only when it is one; `env:VAR` and `file:PATH`
/// alone are the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// The action's name.
    pub name: String,
    /// Where its routing key comes from.
    pub key: SecretSource,
    /// Its severity.
    pub severity: ActionSeverity,
}

impl FromStr for ActionSpec {
    type Err = ValueError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        let (name, rest) = spec.split_once('=').ok_or_else(|| {
            refuse(format_args!(
                "{:?}: expected NAME=ROUTING_KEY[:SEVERITY]",
                crate::secret::redact(spec)
            ))
        })?;
        let name = name.trim();
        actions::check_name(name).map_err(refuse)?;
        let (key, severity) = match rest.rsplit_once(':') {
            Some((prefix, _)) if prefix == "env" || prefix == "file" => (rest, ActionSeverity(None)),
            Some((key, sev)) => match sev.parse::<ActionSeverity>() {
                Ok(sev) => (key, sev),
                Err(_) => (rest, ActionSeverity(None)),
            },
            None => (rest, ActionSeverity(None)),
        };
        let key = key
            .parse()
            .map_err(|e: InvalidSecret| refuse(format_args!("action {name}: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            key,
            severity,
        })
    }
}

impl ActionSpec {
    /// Reads its key and checks it is a PagerDuty integration key.
    ///
    /// # Errors
    /// A key that cannot be read, or is not an integration key.
    pub fn resolve(&self) -> Result<Action, ValueError> {
        let key = self
            .key
            .read()
            .map_err(|e| refuse(format_args!("action {}: {e}", self.name)))?;
        crate::pagerduty::check_routing_key(key.expose()).map_err(|why| {
            refuse(format_args!(
                "action {}: the routing key is not usable: {why}",
                self.name
            ))
        })?;
        Ok(Action {
            name: self.name.clone(),
            routing_key: key,
            severity: self.severity.0,
        })
    }
}

/// `--api-token ROLE:TOKEN`, TOKEN a [`SecretSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenSpec {
    /// The role it grants.
    pub role: Role,
    /// Where the token comes from.
    pub token: SecretSource,
}

impl FromStr for ApiTokenSpec {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || refuse("expected ROLE:TOKEN with ROLE viewer, user or admin");
        let (role, token) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(Self {
            role: role.parse().map_err(|_| bad())?,
            token: token.parse()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{Secret, SecretError};

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn sizes_mean_what_their_units_say() {
        let size = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(size("100"), Ok(100));
        assert_eq!(size("100B"), Ok(100));
        assert_eq!(size("500KB"), Ok(500_000));
        assert_eq!(size("512KiB"), Ok(512 * 1024));
        assert_eq!(size("1MB"), Ok(1_000_000));
        assert_eq!(size("1MiB"), Ok(1 << 20));
        assert_eq!(size("1 mib"), Ok(1 << 20));
        assert_eq!(size("2GiB"), Ok(2 << 30));
        for bad in [
            "",
            "lots",
            "1.5MiB",
            "-1",
            "64k",
            "1M",
            "1TB",
            "99999999999999999999GiB",
        ] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
        let err = size("64k").expect_err("ambiguous");
        assert!(
            err.to_string().contains("KB") && err.to_string().contains("KiB"),
            "{err}"
        );
    }

    #[test]
    fn rates_parse_and_refuse_zero() {
        let rate = |s: &str| s.parse::<Rate>().map(Rate::pair);
        assert_eq!(rate("120/min"), Ok((120, Duration::from_secs(60))));
        assert_eq!(rate("2/s"), Ok((2, Duration::from_secs(1))));
        assert_eq!(rate("7200/h"), Ok((7200, Duration::from_secs(3600))));
        assert_eq!(rate("10/30s"), Ok((10, Duration::from_secs(30))));
        for bad in ["0/min", "5/0s", "fast", "5/fortnight", "/s", "-1/s"] {
            assert!(rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spans_parse() {
        assert_eq!("250ms".parse::<Span>(), Ok(Span(Duration::from_millis(250))));
        assert_eq!("1h 30m".parse::<Span>(), Ok(Span(Duration::from_secs(5400))));
        assert_eq!("0s".parse::<Span>(), Ok(Span(Duration::ZERO)));
        assert!("soon".parse::<Span>().is_err());
        assert!("5".parse::<Span>().is_err(), "a number without a unit is refused");
    }

    #[test]
    fn secret_sources_are_told_apart_and_read() {
        assert_eq!("env:PD_KEY".parse(), Ok(SecretSource::Env("PD_KEY".into())));
        assert_eq!("file:/k".parse(), Ok(SecretSource::File("/k".into())));
        assert_eq!(KEY.parse(), Ok(SecretSource::Value(Secret::new(KEY))));
        for bad in ["", "a b", "env:", "file:"] {
            assert!(bad.parse::<SecretSource>().is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{KEY}\n")).expect("write");
        let from_file = SecretSource::File(path).read().expect("reads");
        assert_eq!(from_file.expose(), KEY);
        assert!(matches!(
            SecretSource::Env("PPB_TEST_SURELY_UNSET_VAR".into()).read(),
            Err(SecretError::MissingEnv(v)) if v == "PPB_TEST_SURELY_UNSET_VAR"
        ));
        assert!(matches!(
            SecretSource::File("/nonexistent/key".into()).read(),
            Err(SecretError::File { .. })
        ));
    }

    #[test]
    fn severities_include_auto() {
        assert_eq!("auto".parse(), Ok(ActionSeverity(None)));
        assert_eq!("Critical".parse(), Ok(ActionSeverity(Some(Severity::Critical))));
        assert!("urgent".parse::<ActionSeverity>().is_err());
    }

    #[test]
    fn actions_parse_with_and_without_severity() {
        let a: ActionSpec = format!("prod={KEY}:critical").parse().expect("parses");
        assert_eq!(a.name, "prod");
        assert_eq!(a.severity, ActionSeverity(Some(Severity::Critical)));
        let action = a.resolve().expect("resolves");
        assert_eq!(action.routing_key.expose(), KEY);
        let b: ActionSpec = format!("dev={KEY}").parse().expect("parses");
        assert_eq!(b.severity, ActionSeverity(None));
        let c: ActionSpec = format!("x={KEY}:auto").parse().expect("parses");
        assert_eq!(c.severity, ActionSeverity(None));
    }

    #[test]
    fn env_and_file_alone_are_the_key_not_a_key_and_severity() {
        let a: ActionSpec = "x=env:CRITICAL".parse().expect("parses");
        assert_eq!(a.key, SecretSource::Env("CRITICAL".into()));
        assert_eq!(a.severity, ActionSeverity(None));
        let b: ActionSpec = "x=env:PD_KEY:warning".parse().expect("parses");
        assert_eq!(b.key, SecretSource::Env("PD_KEY".into()));
        assert_eq!(b.severity, ActionSeverity(Some(Severity::Warning)));
    }

    #[test]
    fn bad_actions_are_refused_without_echoing_the_key() {
        let err = format!("noequals{KEY}").parse::<ActionSpec>().expect_err("no =");
        assert!(!err.to_string().contains("0123456789abcdef"), "{err}");
        assert!("a b=k".parse::<ActionSpec>().is_err());
        assert!("a=".parse::<ActionSpec>().is_err());
        // A key PagerDuty would refuse is refused here, by the one rule.
        let short: ActionSpec = "a=k1234".parse().expect("parses");
        let err = short.resolve().expect_err("not a routing key");
        assert!(err.to_string().contains("32"), "{err}");
        assert!(!err.to_string().contains("k1234"), "{err}");
        let typo: ActionSpec = format!("a={KEY}:critcal").parse().expect("parses");
        assert!(
            typo.resolve().is_err(),
            "a misspelt severity is not read as part of the key"
        );
    }

    #[test]
    fn api_tokens_need_a_role() {
        let t: ApiTokenSpec = "admin:file:/run/secrets/t".parse().expect("parses");
        assert_eq!(t.role, Role::Admin);
        assert_eq!(t.token, SecretSource::File("/run/secrets/t".into()));
        for bad in ["token-only", "root:abc", "viewer:"] {
            assert!(bad.parse::<ApiTokenSpec>().is_err(), "{bad:?}");
        }
    }
}
