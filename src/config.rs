//! The command line, and its validation into typed settings.
//!
//! Every flag has a `PPB_*` environment twin. This is the only module that
//! reads the environment (through clap, and for `env:VAR` secrets).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::actions::{self, Action, Actions};
use crate::pagerduty::Severity;
use crate::secret::Secret;
use crate::translate;

/// The bridge's command line.
#[derive(Debug, Parser)]
#[command(
    name = "prefect-pagerduty-bridge",
    version,
    about = "Receives Prefect automation webhooks and delivers them as PagerDuty Events API v2 alerts.",
    long_about = "Receives Prefect automation webhooks and delivers them as PagerDuty Events API v2 \
                  alerts: triggers for failed, crashed and late runs and unhealthy work pools, \
                  queues and deployments, and resolves when they recover.\n\n\
                  Point a Prefect automation's call-webhook action at \
                  http://<bridge>/v1/prefect/<action> with the payload {{ event | tojson }}."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Prefect webhook intake and deliver alerts to PagerDuty.
    Serve(Box<ServeArgs>),
    /// Print, as a JSON array, the PagerDuty event(s) `serve` would send for one payload. Offline.
    Translate(TranslateArgs),
    /// Inspect a spool file offline: stats, dead letters, retry or purge them.
    Spool(SpoolArgs),
}

/// The default spool file, in the working directory.
pub const DEFAULT_SPOOL: &str = "prefect-pagerduty-bridge.redb";

/// `spool` flags.
#[derive(Debug, Args)]
pub struct SpoolArgs {
    /// The spool file (the bridge must not be running on it).
    #[arg(long, env = "PPB_SPOOL", default_value = DEFAULT_SPOOL, value_name = "PATH")]
    pub spool: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub op: SpoolOp,
}

/// `spool` operations.
#[derive(Debug, Subcommand)]
pub enum SpoolOp {
    /// Queued events, open alerts, dead letters and lifetime counters.
    Stats,
    /// List dead letters: action, dedup key, attempts, last status, PagerDuty's error.
    DeadLetters,
    /// Queue a dead letter again; the next `serve` sends it.
    Retry {
        /// Dead letter id.
        id: u64,
    },
    /// Delete one dead letter, or all of them.
    Purge {
        /// Dead letter id (all when omitted).
        id: Option<u64>,
    },
    /// Report damage: rows that do not decode and quarantined rows. Exits 1 when there is any.
    Check,
    /// Delete one record: an undelivered event or dead letter by id, or `quarantine:ID`.
    Drop {
        /// The record's id, or quarantine:ID.
        id: String,
    },
}

/// Flags shared by `serve` and `translate`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A named action: NAME=ROUTING_KEY[:SEVERITY]. SEVERITY is critical, error, warning, info or
    /// auto (default: derived from each Prefect event). ROUTING_KEY may be env:VAR or file:PATH
    /// to keep it out of `ps` and shell history. Repeat for more actions; several may share a key.
    #[arg(
        long = "action",
        env = "PPB_ACTIONS",
        value_name = "NAME=KEY[:SEVERITY]",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub actions: Vec<String>,

    /// Prefect UI base used to build links, e.g. http://prefect:4200 or
    /// https://app.prefect.cloud/account/<A>/workspace/<W>. Without it, links come only from URLs
    /// the payload carries.
    #[arg(long, env = "PPB_PREFECT_UI_URL", value_name = "URL")]
    pub prefect_ui_url: Option<url::Url>,

    /// PagerDuty `payload.source` for every alert.
    #[arg(long, env = "PPB_SOURCE", default_value = "prefect", value_name = "NAME")]
    pub source: String,
}

/// PagerDuty service regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Region {
    /// https://events.pagerduty.com
    Us,
    /// https://events.eu.pagerduty.com
    Eu,
}

impl Region {
    /// The Events API base URL of the region.
    pub fn base_url(self) -> &'static str {
        match self {
            Self::Us => "https://events.pagerduty.com",
            Self::Eu => "https://events.eu.pagerduty.com",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `serve` flags.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "PPB_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub common: CommonArgs,

    /// PagerDuty Events API base URL; the bridge appends /v2/enqueue.
    #[arg(
        long,
        env = "PPB_PAGERDUTY_URL",
        value_name = "URL",
        conflicts_with = "region"
    )]
    pub pagerduty_url: Option<url::Url>,

    /// PagerDuty service region: the friendly form of --pagerduty-url.
    #[arg(long, env = "PPB_REGION", value_enum)]
    pub region: Option<Region>,

    /// Translate and log each PagerDuty event instead of sending it.
    #[arg(long, env = "PPB_DRY_RUN")]
    pub dry_run: bool,

    /// Largest request body accepted (bytes, or with a KiB/MiB suffix); larger ones get 413.
    #[arg(long, env = "PPB_MAX_BODY", default_value = "1MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_body: usize,

    /// Most requests in flight to PagerDuty at once.
    #[arg(long, env = "PPB_MAX_IN_FLIGHT", default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_in_flight: u16,

    /// Most undelivered events held in the spool; beyond it the intake answers 503.
    #[arg(
        long,
        env = "PPB_QUEUE_CAPACITY",
        default_value_t = 1_000_000,
        value_name = "N"
    )]
    pub queue_capacity: usize,

    /// The durable spool file (created, mode 0600, if missing). One bridge per file.
    #[arg(long, env = "PPB_SPOOL", default_value = DEFAULT_SPOOL, value_name = "PATH")]
    pub spool: PathBuf,

    /// Most events per routing key, as N/s, N/min or N/h (PagerDuty allows ~120/min per key).
    #[arg(long, env = "PPB_PAGERDUTY_RATE", default_value = "120/min", value_name = "RATE", value_parser = parse_rate)]
    pub pagerduty_rate: (u32, Duration),

    /// Events a routing key may send at once, within --pagerduty-rate.
    #[arg(long, env = "PPB_PAGERDUTY_BURST", default_value_t = 10, value_name = "N")]
    pub pagerduty_burst: u32,

    /// Optional cap over all routing keys (PagerDuty's account-level limit), e.g. 600/min.
    #[arg(long, env = "PPB_PAGERDUTY_GLOBAL_RATE", value_name = "RATE", value_parser = parse_rate)]
    pub pagerduty_global_rate: Option<(u32, Duration)>,

    /// Pause of a routing key after PagerDuty answers 429 without Retry-After (with one, its
    /// value, at most --retry-max-interval). The key's pace is also lowered, and rises again.
    #[arg(long, env = "PPB_RATE_LIMIT_PAUSE", default_value = "1s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub rate_limit_pause: Duration,

    /// First retry delay after a 5xx or network error; doubles each attempt. While a routing key
    /// keeps failing, one send probes it this often and the others wait.
    #[arg(long, env = "PPB_RETRY_INITIAL_INTERVAL", default_value = "1s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub retry_initial_interval: Duration,

    /// Cap on the retry delay.
    #[arg(long, env = "PPB_RETRY_MAX_INTERVAL", default_value = "5m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub retry_max_interval: Duration,

    /// Give up on an event (dead letter) this long after it was accepted.
    #[arg(long, env = "PPB_MAX_EVENT_AGE", default_value = "24h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_event_age: Duration,

    /// How long a Prefect event id is remembered to drop repeats.
    #[arg(long, env = "PPB_DEDUP_TTL", default_value = "1h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub dedup_ttl: Duration,

    /// How many Prefect event ids are remembered.
    #[arg(long, env = "PPB_DEDUP_CAPACITY", default_value_t = 100_000, value_name = "N")]
    pub dedup_capacity: u64,

    /// Log format.
    #[arg(long, env = "PPB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Serve HTTPS with this PEM certificate chain (HTTP/2 and HTTP/1.1 via ALPN).
    #[arg(long, env = "PPB_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key (RSA, ECDSA or Ed25519) of --tls-cert.
    #[arg(long, env = "PPB_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// A token the Prefect Webhook block must send as `Authorization: Bearer <token>`.
    /// Repeat to rotate. May be env:VAR or file:PATH.
    #[arg(
        long = "webhook-token",
        env = "PPB_WEBHOOK_TOKENS",
        value_name = "TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_tokens: Vec<String>,

    /// An API token and its role, ROLE:TOKEN (viewer, user or admin); TOKEN may be env:VAR or
    /// file:PATH. Without any, the API answers loopback clients only.
    #[arg(
        long = "api-token",
        env = "PPB_API_TOKENS",
        value_name = "ROLE:TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,

    /// Listen on a non-loopback address without --webhook-token anyway.
    #[arg(long, env = "PPB_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Most time a request may take to arrive in full and be answered; slower ones get 408.
    #[arg(long, env = "PPB_REQUEST_TIMEOUT", default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Most client connections open at once. At the cap, connections idle (no request in flight)
    /// for a second or more are closed to make room; a new one that finds none within 1 s is closed.
    #[arg(long, env = "PPB_MAX_CONNECTIONS", default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,

    /// Most connections open at once from one client IP. Over it, that client's connections idle
    /// for a second or more are closed to make room; a new one waits up to 1 s, then is closed.
    #[arg(
        long,
        env = "PPB_MAX_CONNECTIONS_PER_IP",
        default_value_t = 512,
        value_name = "N"
    )]
    pub max_connections_per_ip: usize,

    /// Close a connection that has had no request in flight for this long (a new connection
    /// gets at most 10 s, or --request-timeout if shorter, to start its first request).
    #[arg(long, env = "PPB_IDLE_TIMEOUT", default_value = "60s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Per client IP: most requests, as N/s or N/min; more get 429 with Retry-After. Off by
    /// default: Prefect never retries a webhook, so a refused alert would be lost.
    #[arg(long, env = "PPB_INGRESS_RATE", value_name = "RATE", value_parser = parse_rate)]
    pub ingress_rate: Option<(u32, Duration)>,
}

/// `translate` flags.
#[derive(Debug, Args)]
pub struct TranslateArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// The action to translate for, when several are given (default: the first).
    #[arg(long, value_name = "NAME")]
    pub for_action: Option<String>,

    /// The value of the X-PREFECT-EVENT-ID header, as Prefect 1 sends it.
    #[arg(long, value_name = "ID")]
    pub event_id: Option<String>,

    /// The payload file; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    pub input: Option<PathBuf>,
}

/// A setting that does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--action` is not NAME=KEY[:SEVERITY].
    #[error("--action {0:?}: expected NAME=ROUTING_KEY[:SEVERITY]")]
    ActionSyntax(String),
    /// Bad action name.
    #[error(transparent)]
    ActionName(#[from] actions::InvalidName),
    /// Two actions with one name.
    #[error("--action {0:?} is given twice")]
    DuplicateAction(String),
    /// `env:VAR` names an unset variable.
    #[error("{action}: environment variable {var} is not set")]
    MissingEnv {
        /// Action name.
        action: String,
        /// Variable name.
        var: String,
    },
    /// `file:PATH` cannot be read.
    #[error("{action}: cannot read the secret file {path}: {source}")]
    KeyFile {
        /// Action name.
        action: String,
        /// File path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key is empty or has spaces.
    #[error("{0}: the secret is empty or contains white space")]
    BadKey(String),
    /// `--api-token` is not ROLE:TOKEN.
    #[error("--api-token: expected ROLE:TOKEN with ROLE viewer, user or admin")]
    ApiTokenSyntax,
    /// Only one of --tls-cert and --tls-key.
    #[error("--tls-cert and --tls-key go together")]
    TlsPair,
    /// Open to the network without a webhook token.
    #[error(
        "refusing to listen on {0} without --webhook-token: anyone who can reach it could page your on-call; \
         set --webhook-token, listen on a loopback address, or pass --allow-unauthenticated"
    )]
    Unauthenticated(SocketAddr),
    /// A URL that cannot be used.
    #[error("{flag} {url}: only http and https URLs without credentials are supported")]
    BadUrl {
        /// Which flag.
        flag: &'static str,
        /// The URL given.
        url: String,
    },
}

/// Parses every `--action`.
///
/// # Errors
/// The first action that does not parse, or whose key cannot be read.
pub fn parse_actions(specs: &[String]) -> Result<Actions, ConfigError> {
    let mut list = Vec::new();
    for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let action = parse_action(spec)?;
        if list.iter().any(|a: &Action| a.name == action.name) {
            return Err(ConfigError::DuplicateAction(action.name));
        }
        list.push(action);
    }
    Actions::try_new(list).map_err(ConfigError::DuplicateAction)
}

/// Parses one `NAME=ROUTING_KEY[:SEVERITY]`.
///
/// # Errors
/// See [`ConfigError`].
pub fn parse_action(spec: &str) -> Result<Action, ConfigError> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| ConfigError::ActionSyntax(crate::secret::redact(spec)))?;
    let name = name.trim();
    actions::check_name(name)?;
    let (key_spec, severity) = match rest.rsplit_once(':') {
        // `env:VAR` and `file:PATH` with no severity: the part after the
        // colon is the variable or path, not a severity.
        Some((prefix, _)) if prefix == "env" || prefix == "file" => (rest, None),
        Some((key, sev)) if sev.eq_ignore_ascii_case("auto") => (key, None),
        Some((key, sev)) => match sev.parse::<Severity>() {
            Ok(s) => (key, Some(s)),
            Err(_) => (rest, None),
        },
        None => (rest, None),
    };
    let key = read_secret(key_spec, &format!("action {name}"))?;
    Ok(Action {
        name: name.to_owned(),
        routing_key: key,
        severity,
    })
}

/// Reads a secret given as `env:VAR`, `file:PATH` or the value itself.
///
/// # Errors
/// An unset variable, an unreadable file, or an empty value or one with
/// white space inside.
pub fn read_secret(spec: &str, what: &str) -> Result<Secret, ConfigError> {
    let value = if let Some(var) = spec.strip_prefix("env:") {
        std::env::var(var).map_err(|_| ConfigError::MissingEnv {
            action: what.to_owned(),
            var: var.to_owned(),
        })?
    } else if let Some(path) = spec.strip_prefix("file:") {
        std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
            action: what.to_owned(),
            path: path.to_owned(),
            source,
        })?
    } else {
        spec.to_owned()
    };
    let value = value.trim();
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(ConfigError::BadKey(what.to_owned()));
    }
    Ok(Secret::new(value))
}

/// Parses `1048576`, `512KiB`, `1MiB`, `1MB`, `64k`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 1048576, 512KiB or 1MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("{s:?}: unknown unit; use B, KiB or MiB")),
    };
    n.checked_mul(mult)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// Parses a rate: `120/min`, `2/s`, `7200/h`, or `N/<duration>` such as `10/30s`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let err = || format!("{s:?} is not a rate like 120/min, 2/s or 10/30s");
    let (n, per) = s.trim().split_once('/').ok_or_else(err)?;
    let n: u32 = n.trim().parse().map_err(|_| err())?;
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => humantime::parse_duration(other).map_err(|_| err())?,
    };
    if n == 0 || per.is_zero() {
        return Err(format!("{s:?}: the rate must be above zero"));
    }
    Ok((n, per))
}

/// Checks a URL given on the command line.
///
/// # Errors
/// When it is not plain http(s).
pub fn check_url(flag: &'static str, url: &url::Url) -> Result<(), ConfigError> {
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none();
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadUrl {
            flag,
            url: url.to_string(),
        })
    }
}

/// Translation options from the shared flags.
///
/// # Errors
/// When `--prefect-ui-url` is not plain http(s).
pub fn translate_options(common: &CommonArgs) -> Result<translate::Options, ConfigError> {
    if let Some(u) = &common.prefect_ui_url {
        check_url("--prefect-ui-url", u)?;
    }
    Ok(translate::Options {
        source: common.source.clone(),
        ui_base: common.prefect_ui_url.clone(),
    })
}

/// Validated `serve` settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Actions by name.
    pub actions: Actions,
    /// Translation options.
    pub translate: translate::Options,
    /// Events API base.
    pub pagerduty_url: url::Url,
    /// Log instead of sending.
    pub dry_run: bool,
    /// Body limit, bytes.
    pub max_body: usize,
    /// Spool file.
    pub spool: PathBuf,
    /// Most undelivered events held.
    pub queue_capacity: usize,
    /// Delivery settings.
    pub(crate) delivery: crate::deliver::Settings,
    /// Idempotency cache TTL.
    pub dedup_ttl: Duration,
    /// Idempotency cache size.
    pub dedup_capacity: u64,
    /// Tokens.
    pub tokens: crate::server::auth::Tokens,
    /// PEM certificate chain and key, for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whole-request time limit.
    pub request_timeout: Duration,
    /// Connection cap.
    pub max_connections: usize,
    /// Connection cap per client IP.
    pub max_connections_per_ip: usize,
    /// Idle connection deadline.
    pub idle_timeout: Duration,
    /// Per-IP request rate.
    pub ingress_rate: Option<(u32, Duration)>,
}

/// Parses `ROLE:TOKEN`.
///
/// # Errors
/// A bad role or syntax, or an unreadable secret.
pub fn parse_api_token(spec: &str) -> Result<(crate::server::auth::Role, Secret), ConfigError> {
    let (role, token) = spec.split_once(':').ok_or(ConfigError::ApiTokenSyntax)?;
    let role = role.parse().map_err(|_| ConfigError::ApiTokenSyntax)?;
    Ok((role, read_secret(token, "--api-token")?))
}

impl ServeConfig {
    /// Validates `serve` flags.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let pagerduty_url = match (&args.pagerduty_url, args.region) {
            (Some(u), _) => u.clone(),
            (None, region) => {
                let base = region.unwrap_or(Region::Us).base_url();
                url::Url::parse(base).map_err(|_| ConfigError::BadUrl {
                    flag: "--region",
                    url: base.to_owned(),
                })?
            }
        };
        check_url("--pagerduty-url", &pagerduty_url)?;
        Ok(Self {
            listen: args.listen,
            actions: parse_actions(&args.common.actions)?,
            translate: translate_options(&args.common)?,
            pagerduty_url,
            dry_run: args.dry_run,
            max_body: args.max_body,
            spool: args.spool.clone(),
            queue_capacity: args.queue_capacity.max(1),
            delivery: crate::deliver::Settings {
                max_in_flight: usize::from(args.max_in_flight),
                rate: args.pagerduty_rate,
                burst: args.pagerduty_burst.max(1),
                global_rate: args.pagerduty_global_rate,
                rate_limit_pause: args.rate_limit_pause,
                retry_initial: args.retry_initial_interval.max(Duration::from_millis(1)),
                retry_max: args.retry_max_interval.max(args.retry_initial_interval),
                max_event_age: args.max_event_age,
            },
            dedup_ttl: args.dedup_ttl,
            dedup_capacity: args.dedup_capacity.max(1),
            tokens: crate::server::auth::Tokens {
                webhook: args
                    .webhook_tokens
                    .iter()
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| read_secret(t, "--webhook-token"))
                    .collect::<Result<_, _>>()?,
                api: args
                    .api_tokens
                    .iter()
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| parse_api_token(t))
                    .collect::<Result<_, _>>()?,
            },
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                (None, None) => None,
                _ => return Err(ConfigError::TlsPair),
            },
            request_timeout: args.request_timeout.max(Duration::from_millis(100)),
            max_connections: args.max_connections.max(1),
            max_connections_per_ip: args.max_connections_per_ip.max(1),
            idle_timeout: args.idle_timeout,
            ingress_rate: args.ingress_rate,
        })
        .and_then(|c: Self| {
            if c.tokens.webhook.is_empty() && !c.listen.ip().is_loopback() && !args.allow_unauthenticated {
                return Err(ConfigError::Unauthenticated(c.listen));
            }
            Ok(c)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_with_and_without_severity() {
        let a = parse_action("prod=0123456789abcdef0123456789abcdef:critical").expect("parses");
        assert_eq!(a.name, "prod");
        assert_eq!(a.routing_key.expose(), "0123456789abcdef0123456789abcdef");
        assert_eq!(a.severity, Some(Severity::Critical));
        let b = parse_action("dev=0123456789abcdef0123456789abcdef").expect("parses");
        assert_eq!(b.severity, None);
        let c = parse_action("x=0123456789abcdef0123456789abcdef:auto").expect("parses");
        assert_eq!(c.severity, None);
    }

    #[test]
    fn env_and_file_forms_without_severity_are_not_read_as_one() {
        // Variables no test sets: the error names the variable it looked for.
        let var = "PPB_TEST_ACTION_KEY_CRITICAL";
        let a = parse_action(&format!("x=env:{var}"));
        assert!(
            matches!(&a, Err(ConfigError::MissingEnv { var: v, .. }) if v == var),
            "env:{var} must name the variable {var}: {a:?}"
        );
        let b = parse_action("x=env:CRITICAL");
        assert!(
            matches!(&b, Err(ConfigError::MissingEnv { var, .. }) if var == "CRITICAL")
                || b.as_ref().is_ok_and(|a| a.severity.is_none()),
            "env:CRITICAL is the variable CRITICAL, not the key `env` at critical: {b:?}"
        );
    }

    #[test]
    fn key_files_are_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").expect("write");
        let a = parse_action(&format!("f=file:{}:warning", path.display())).expect("parses");
        assert_eq!(a.routing_key.expose(), "0123456789abcdef0123456789abcdef");
        assert_eq!(a.severity, Some(Severity::Warning));
        assert!(matches!(
            parse_action("f=file:/nonexistent/key"),
            Err(ConfigError::KeyFile { .. })
        ));
    }

    #[test]
    fn bad_actions_are_refused_without_echoing_the_key() {
        let err = parse_action("noequals0123456789abcdef").expect_err("no =");
        assert!(!err.to_string().contains("0123456789abcdef"));
        assert!(parse_action("a b=k").is_err());
        assert!(parse_action("a=").is_err());
        assert!(parse_action("a=env:PPB_TEST_SURELY_UNSET_VAR").is_err());
        assert!(parse_actions(&["a=k1234".into(), "a=k5678".into()]).is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GiB").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("120/min"), Ok((120, Duration::from_secs(60))));
        assert_eq!(parse_rate("2/s"), Ok((2, Duration::from_secs(1))));
        assert_eq!(parse_rate("10/30s"), Ok((10, Duration::from_secs(30))));
        assert!(parse_rate("0/min").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5/fortnight").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
