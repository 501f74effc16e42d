//! The command line ([`Cli`]), its value types (`values`: each a
//! `FromStr` with its tests) and its validation into the settings the bridge
//! runs on (`ServeConfig`).
//!
//! Every flag has a `PPB_*` environment twin. This is the only module that
//! reads the environment (through clap, and for `env:VAR` secrets). A value
//! that does not hold is refused, naming the flag and what it accepts, and
//! the process exits with status 2: nothing is clamped or reinterpreted.

mod serve;
pub(crate) mod values;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::logging::LogFormat;
pub use serve::ConfigError;
pub(crate) use serve::{ServeConfig, actions, egress, prefect_client, secret, translate_options};
use values::{ByteSize, Rate, Span};

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
    /// Work with the Prefect server the bridge serves: check the automations that call it.
    Prefect(PrefectArgs),
    /// Ask a running bridge whether it is alive (GET /healthz): exit 0 when it answers 200, 1
    /// otherwise. For container health checks in images without a shell or curl.
    Healthcheck(HealthcheckArgs),
}

/// `healthcheck` flags.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The health URL. Default: /healthz on loopback at the port of --listen, https when
    /// --tls-cert is set (as `serve` reads them, so the same environment serves both).
    #[arg(long, env = "PPB_HEALTHCHECK_URL", value_name = "URL")]
    pub(crate) url: Option<url::Url>,

    /// Where `serve` listens.
    #[arg(
        long,
        env = "PPB_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub(crate) listen: SocketAddr,

    /// `serve`'s certificate: when set, the default URL is https. On loopback the certificate
    /// is not verified (it names the service, not 127.0.0.1); elsewhere it is.
    #[arg(long, env = "PPB_TLS_CERT", value_name = "PATH")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// Longest to wait for the answer.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    pub(crate) timeout: Span,

    #[command(flatten)]
    pub(crate) egress: EgressArgs,
}

/// How to reach Prefect's API.
#[derive(Debug, Args)]
pub struct PrefectConnArgs {
    /// Prefect's API: OSS `http://host:4200/api`, Cloud
    /// `https://api.prefect.cloud/api/accounts/<A>/workspaces/<W>`. For `serve`: recover the
    /// webhooks Prefect dropped (off without it).
    #[arg(long, env = "PPB_PREFECT_API_URL", value_name = "URL")]
    pub(crate) prefect_api_url: Option<url::Url>,

    /// Prefect Cloud API key (sent as a Bearer token); may be env:VAR or file:PATH.
    #[arg(
        long,
        env = "PPB_PREFECT_API_KEY",
        value_name = "SECRET",
        hide_env_values = true,
        conflicts_with = "prefect_auth_string"
    )]
    pub(crate) prefect_api_key: Option<String>,

    /// Prefect OSS basic-auth string `user:password` (PREFECT_SERVER_API_AUTH_STRING); may be
    /// env:VAR or file:PATH.
    #[arg(
        long,
        env = "PPB_PREFECT_AUTH_STRING",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub(crate) prefect_auth_string: Option<String>,

    /// The address Prefect reaches this bridge at; when given, only Webhook blocks posting there
    /// count as this bridge's.
    #[arg(long, env = "PPB_BRIDGE_URL", value_name = "URL")]
    pub(crate) bridge_url: Option<url::Url>,
}

/// How the bridge's own requests leave (to PagerDuty, Prefect, itself).
#[derive(Debug, Args, Clone, Default)]
pub struct EgressArgs {
    /// A PEM file of CA certificates to trust besides the system's (or SSL_CERT_FILE's), e.g.
    /// a TLS-intercepting egress proxy's. Proxies come from HTTPS_PROXY, HTTP_PROXY and
    /// NO_PROXY.
    #[arg(long, env = "PPB_CA_FILE", value_name = "PATH")]
    pub(crate) ca_file: Option<PathBuf>,
}

/// `prefect` flags.
#[derive(Debug, Args)]
pub struct PrefectArgs {
    /// What to do.
    #[command(subcommand)]
    pub(crate) op: PrefectOp,
}

/// `prefect` operations.
#[derive(Debug, Subcommand)]
pub enum PrefectOp {
    /// Create or update, idempotently, the Webhook blocks and automations that page through this
    /// bridge (per action: flow-run failures with their recovery, late runs, work pool / queue /
    /// deployment health), with the recommended payload. Needs --bridge-url.
    Setup {
        /// How to reach Prefect.
        #[command(flatten)]
        conn: PrefectConnArgs,
        /// How requests leave.
        #[command(flatten)]
        egress: EgressArgs,
        /// An action to wire (repeatable): the last segment of /v1/prefect/{action}.
        #[arg(long = "action", value_name = "NAME", required = true)]
        actions: Vec<String>,
        /// The bridge's webhook token, sent by Prefect as `Authorization: Bearer`; may be
        /// env:VAR or file:PATH.
        #[arg(
            long,
            env = "PPB_WEBHOOK_TOKEN",
            value_name = "SECRET",
            hide_env_values = true
        )]
        webhook_token: Option<String>,
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete what setup made for these actions, and nothing else.
        #[arg(long)]
        remove: bool,
        /// Wait up to this long for Prefect's API to answer first (for a one-shot service
        /// started beside a Prefect server that is still starting).
        #[arg(long, default_value = "0s", value_name = "DURATION")]
        wait: Span,
    },
    /// Report every automation calling this bridge with a problem (empty or non-JSON payload, no
    /// recovery state, disabled, an action the bridge lacks, many calls on one event). Exits 0
    /// when clean, 1 when it found problems, 2 when it could not check.
    Check {
        /// How to reach Prefect.
        #[command(flatten)]
        conn: PrefectConnArgs,
        /// How requests leave.
        #[command(flatten)]
        egress: EgressArgs,
        /// A viewer token for the bridge's API (with --bridge-url, to list its actions); may be
        /// env:VAR or file:PATH.
        #[arg(long, env = "PPB_BRIDGE_TOKEN", value_name = "SECRET", hide_env_values = true)]
        bridge_token: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The default spool file, in the working directory.
pub const DEFAULT_SPOOL: &str = "prefect-pagerduty-bridge.redb";

/// `spool` flags.
#[derive(Debug, Args)]
pub struct SpoolArgs {
    /// The spool file (the bridge must not be running on it).
    #[arg(long, env = "PPB_SPOOL", default_value = DEFAULT_SPOOL, value_name = "PATH")]
    pub(crate) spool: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub(crate) op: SpoolOp,
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
    // Secret-bearing flags stay strings for clap, whose errors echo the
    // value; they are parsed (with redacted errors) by `ServeConfig`.
    pub(crate) actions: Vec<String>,

    /// Prefect UI base used to build links, e.g. http://prefect:4200 or
    /// https://app.prefect.cloud/account/<A>/workspace/<W>. Without it, links come only from URLs
    /// the payload carries.
    #[arg(long, env = "PPB_PREFECT_UI_URL", value_name = "URL")]
    pub(crate) prefect_ui_url: Option<url::Url>,

    /// PagerDuty `payload.source` for every alert.
    #[arg(long, env = "PPB_SOURCE", default_value = "prefect", value_name = "NAME")]
    pub(crate) source: String,
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
    pub(crate) listen: SocketAddr,

    #[command(flatten)]
    pub(crate) common: CommonArgs,

    /// PagerDuty Events API base URL; the bridge appends /v2/enqueue.
    #[arg(
        long,
        env = "PPB_PAGERDUTY_URL",
        value_name = "URL",
        conflicts_with = "region"
    )]
    pub(crate) pagerduty_url: Option<url::Url>,

    /// PagerDuty service region: the friendly form of --pagerduty-url.
    #[arg(long, env = "PPB_REGION", value_enum)]
    pub(crate) region: Option<Region>,

    /// Translate and log each PagerDuty event instead of sending it.
    #[arg(long, env = "PPB_DRY_RUN")]
    pub(crate) dry_run: bool,

    /// Largest request body accepted: bytes, or with KB/MB (powers of 1000) or KiB/MiB (of 1024),
    /// at most 64MiB; larger bodies get 413.
    #[arg(long, env = "PPB_MAX_BODY", default_value = "1MiB", value_name = "SIZE")]
    pub(crate) max_body: ByteSize,

    /// Most memory all webhook bodies being read and translated may take at once. A body
    /// reserves four times its Content-Length (or --max-body when it has none: what parsing and
    /// translating it may cost) before it is read; others wait their turn, within
    /// --request-timeout. At least --max-body; default 16MiB, or 4 × --max-body if more.
    #[arg(long, env = "PPB_BODY_MEMORY", value_name = "SIZE")]
    pub(crate) body_memory: Option<ByteSize>,

    /// Most requests in flight to PagerDuty at once.
    #[arg(long, env = "PPB_MAX_IN_FLIGHT", default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) max_in_flight: u16,

    /// Most undelivered events held in the spool; beyond it the intake answers 503.
    #[arg(long, env = "PPB_QUEUE_CAPACITY", default_value = "1000000", value_name = "N")]
    pub(crate) queue_capacity: std::num::NonZeroUsize,

    /// The durable spool file (created, mode 0600, if missing). One bridge per file.
    #[arg(long, env = "PPB_SPOOL", default_value = DEFAULT_SPOOL, value_name = "PATH")]
    pub(crate) spool: PathBuf,

    /// Most events per routing key, as N/s, N/min or N/h (PagerDuty allows ~120/min per key).
    #[arg(
        long,
        env = "PPB_PAGERDUTY_RATE",
        default_value = "120/min",
        value_name = "RATE"
    )]
    pub(crate) pagerduty_rate: Rate,

    /// Events a routing key may send at once, from 1 to the count of --pagerduty-rate (default:
    /// 10, or that count if lower). Each window keeps room for one send the network delays, so
    /// a burst of the whole count sends one fewer at once.
    #[arg(long, env = "PPB_PAGERDUTY_BURST", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) pagerduty_burst: Option<u32>,

    /// Optional cap over all routing keys (PagerDuty's account-level limit), e.g. 600/min.
    #[arg(long, env = "PPB_PAGERDUTY_GLOBAL_RATE", value_name = "RATE")]
    pub(crate) pagerduty_global_rate: Option<Rate>,

    /// Pause of a routing key after PagerDuty answers 429 without Retry-After (with one, its
    /// value, at most --retry-max-interval). The key's pace is also lowered, and rises again.
    #[arg(
        long,
        env = "PPB_RATE_LIMIT_PAUSE",
        default_value = "1s",
        value_name = "DURATION"
    )]
    pub(crate) rate_limit_pause: Span,

    /// First retry delay after a 5xx or network error; doubles each attempt. While a routing key
    /// keeps failing, one send probes it this often and the others wait.
    #[arg(
        long,
        env = "PPB_RETRY_INITIAL_INTERVAL",
        default_value = "1s",
        value_name = "DURATION"
    )]
    pub(crate) retry_initial_interval: Span,

    /// Cap on the retry delay, and on a Retry-After PagerDuty sends (default: 5m, or
    /// --retry-initial-interval if longer).
    #[arg(long, env = "PPB_RETRY_MAX_INTERVAL", value_name = "DURATION")]
    pub(crate) retry_max_interval: Option<Span>,

    /// Give up on an event (dead letter) this long after it was accepted.
    #[arg(
        long,
        env = "PPB_MAX_EVENT_AGE",
        default_value = "24h",
        value_name = "DURATION"
    )]
    pub(crate) max_event_age: Span,

    /// How long a Prefect event id is remembered to drop repeats (0s: not at all).
    #[arg(long, env = "PPB_DEDUP_TTL", default_value = "1h", value_name = "DURATION")]
    pub(crate) dedup_ttl: Span,

    /// How many Prefect event ids are remembered.
    #[arg(long, env = "PPB_DEDUP_CAPACITY", default_value = "100000", value_name = "N")]
    pub(crate) dedup_capacity: std::num::NonZeroU64,

    /// How long an alert stays open after its last trigger. After it the alert is forgotten: a
    /// resolve for it is ignored (PagerDuty's incident stays as it is) and its row is pruned,
    /// so alerts whose runs never recover do not pile up.
    #[arg(
        long,
        env = "PPB_OPEN_ALERT_TTL",
        default_value = "30d",
        value_name = "DURATION"
    )]
    pub(crate) open_alert_ttl: Span,

    /// Log format.
    #[arg(long, env = "PPB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Which log lines to write: a level (error, warn, info, debug, trace), or per-module
    /// directives such as `prefect_pagerduty_bridge=debug,info`.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_name = "FILTER")]
    pub log_filter: String,

    /// Serve HTTPS with this PEM certificate chain (HTTP/2 and HTTP/1.1 via ALPN).
    #[arg(long, env = "PPB_TLS_CERT", value_name = "PATH", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The PEM private key (RSA, ECDSA or Ed25519) of --tls-cert.
    #[arg(long, env = "PPB_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// A token the Prefect Webhook block must send as `Authorization: Bearer <token>`.
    /// Repeat to rotate. May be env:VAR or file:PATH.
    #[arg(
        long = "webhook-token",
        env = "PPB_WEBHOOK_TOKENS",
        value_name = "TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) webhook_tokens: Vec<String>,

    /// An API token and its role, ROLE:TOKEN (viewer, user or admin); TOKEN may be env:VAR or
    /// file:PATH. Without any, the API answers loopback clients only.
    #[arg(
        long = "api-token",
        env = "PPB_API_TOKENS",
        value_name = "ROLE:TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) api_tokens: Vec<String>,

    /// How often routing keys and tokens given as file:PATH or env:VAR are read again, so a
    /// rotated Kubernetes Secret or rewritten file takes effect without a restart. A source that
    /// becomes unreadable keeps its last good value (and logs an error).
    #[arg(
        long,
        env = "PPB_SECRET_REFRESH",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub(crate) secret_refresh: Span,

    /// Listen on a non-loopback address without --webhook-token anyway.
    #[arg(long, env = "PPB_ALLOW_UNAUTHENTICATED")]
    pub(crate) allow_unauthenticated: bool,

    /// Most time a request may take to arrive in full and be answered (at least 100ms); slower
    /// ones get 408.
    #[arg(
        long,
        env = "PPB_REQUEST_TIMEOUT",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub(crate) request_timeout: Span,

    /// Most client connections open at once. At the cap, connections idle (no request in flight)
    /// for a second or more are closed to make room; a new one that finds none within 1 s is closed.
    #[arg(long, env = "PPB_MAX_CONNECTIONS", default_value = "1024", value_name = "N")]
    pub(crate) max_connections: std::num::NonZeroUsize,

    /// Most connections open at once from one client IP. Over it, that client's connections idle
    /// for a second or more are closed to make room; a new one waits up to 1 s, then is closed.
    #[arg(
        long,
        env = "PPB_MAX_CONNECTIONS_PER_IP",
        default_value = "512",
        value_name = "N"
    )]
    pub(crate) max_connections_per_ip: std::num::NonZeroUsize,

    /// Close a connection that has had no request in flight for this long (a new connection
    /// gets at most 10 s, or --request-timeout if shorter, to start its first request).
    #[arg(
        long,
        env = "PPB_IDLE_TIMEOUT",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub(crate) idle_timeout: Span,

    /// Also serve `GET /metrics` alone, without a token, on this address (for a Prometheus
    /// scraper in the same pod or host); everything else there is 404.
    #[arg(long, env = "PPB_METRICS_LISTEN", value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub(crate) prefect: PrefectConnArgs,

    #[command(flatten)]
    pub(crate) egress: EgressArgs,

    /// How often to look for webhooks Prefect dropped (`off`: never).
    #[arg(
        long,
        env = "PPB_RECONCILE_INTERVAL",
        default_value = "60s",
        value_name = "DURATION|off"
    )]
    pub(crate) reconcile_interval: String,

    /// How far back the first look goes; at most 7d (Prefect OSS keeps events for 7 days).
    #[arg(
        long,
        env = "PPB_RECONCILE_LOOKBACK",
        default_value = "24h",
        value_name = "DURATION"
    )]
    pub(crate) reconcile_lookback: Span,

    /// How long what the bridge looked up in Prefect (which action a block posts to, flow,
    /// deployment, work pool and automation names) is reused before it is asked again.
    #[arg(
        long,
        env = "PPB_PREFECT_CACHE_TTL",
        default_value = "10m",
        value_name = "DURATION"
    )]
    pub(crate) prefect_cache_ttl: Span,

    /// Most lookups kept in that cache.
    #[arg(
        long,
        env = "PPB_PREFECT_CACHE_CAPACITY",
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub(crate) prefect_cache_capacity: u64,

    /// Longest a webhook waits while the bridge looks up names its payload lacks (a Prefect
    /// Cloud 1 body, a template of ids); past it the page goes out with what it had.
    #[arg(
        long,
        env = "PPB_PREFECT_LOOKUP_TIMEOUT",
        default_value = "1s",
        value_name = "DURATION"
    )]
    pub(crate) prefect_lookup_timeout: Span,

    /// Per client IP: most requests, as N/s or N/min; more get 429 with Retry-After. Off by
    /// default: Prefect never retries a webhook, so a refused alert would be lost.
    #[arg(long, env = "PPB_INGRESS_RATE", value_name = "RATE")]
    pub(crate) ingress_rate: Option<Rate>,
}

/// `translate` flags.
#[derive(Debug, Args)]
pub struct TranslateArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,

    /// The action to translate for, when several are given (default: the first).
    #[arg(long, value_name = "NAME")]
    pub(crate) for_action: Option<String>,

    /// The value of the X-PREFECT-EVENT-ID header, as Prefect 1 sends it.
    #[arg(long, value_name = "ID")]
    pub(crate) event_id: Option<String>,

    /// The payload file; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    pub(crate) input: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
