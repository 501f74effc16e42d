//! `serve` and `translate` flags → the validated settings the bridge runs
//! on. Each rule is checked once, here or in [`super::values`]; an error
//! names the flag (and so its `PPB_*` twin) and what it accepts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::values::{ActionSpec, ApiTokenSpec, Rate, SecretSource, ValueError};
use super::{CommonArgs, Region, ServeArgs};
use crate::actions::{Action, Actions};
use crate::rotation::{ActionKeys, Rotating, Rotation};
use crate::server::auth::Tokens;
use crate::translate;

/// Largest `--max-body` accepted: a Prefect payload is a few KB, and one
/// request may hold this much memory.
const MAX_BODY_LIMIT: u64 = 64 * 1024 * 1024;

/// `--body-memory` when not given (or what one `--max-body` body costs in
/// hand, if more): four bodies of the default largest size at once, or
/// hundreds of real Prefect payloads.
const DEFAULT_BODY_MEMORY: u64 = 16 * 1024 * 1024;
/// Shortest `--request-timeout`: less cannot read a request over a real network.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
/// `--pagerduty-burst` when not given (or the rate's count if lower).
const DEFAULT_BURST: u32 = 10;
/// `--retry-max-interval` when not given (or the initial interval if longer).
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);

/// A setting that does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag's value does not hold.
    #[error("{flag}: {problem}")]
    Invalid {
        /// The flag (its `PPB_*` twin is listed in `--help`).
        flag: &'static str,
        /// What is wrong and what is accepted.
        problem: String,
    },
    /// Two actions with one name.
    #[error("--action {0:?} is given twice")]
    DuplicateAction(String),
    /// Open to the network without a webhook token.
    #[error(
        "refusing to listen on {0} without --webhook-token: anyone who can reach it could page your on-call; \
         set --webhook-token, listen on a loopback address, or pass --allow-unauthenticated"
    )]
    Unauthenticated(SocketAddr),
}

fn invalid(flag: &'static str, problem: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        flag,
        problem: problem.to_string(),
    }
}

/// Reads and checks every `--action`.
///
/// # Errors
/// The first action whose key cannot be read or is not an integration key,
/// or a name given twice.
pub(crate) fn actions(specs: &[String]) -> Result<Actions, ConfigError> {
    let mut list: Vec<Action> = Vec::new();
    // An empty item (a trailing comma in PPB_ACTIONS) names nothing.
    for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
        let action = spec
            .parse::<ActionSpec>()
            .and_then(|spec| spec.resolve())
            .map_err(|e: ValueError| invalid("--action", e))?;
        if list.iter().any(|a| a.name == action.name) {
            return Err(ConfigError::DuplicateAction(action.name));
        }
        list.push(action);
    }
    Actions::try_new(list).map_err(ConfigError::DuplicateAction)
}

/// The routing keys of `specs` (already read into `actions`) that come
/// from a file or variable, to be read again.
fn action_keys(specs: &[String], actions: &Actions, rotation: &Rotation) -> ActionKeys {
    let check: crate::rotation::Check = crate::pagerduty::check_routing_key;
    let keys = specs
        .iter()
        .filter_map(|s| s.parse::<ActionSpec>().ok())
        .filter(|spec| !matches!(spec.key, SecretSource::Value(_)))
        .filter_map(|spec| {
            let first = actions.get(&spec.name)?.routing_key.clone();
            Some((spec.name, rotation.secret(spec.key, first, Some(check))))
        })
        .collect();
    ActionKeys::new(keys)
}

/// Translation options from the shared flags.
///
/// # Errors
/// When `--prefect-ui-url` is not a plain http(s) URL.
pub(crate) fn translate_options(common: &CommonArgs) -> Result<translate::Options, ConfigError> {
    if let Some(u) = &common.prefect_ui_url {
        web_url("--prefect-ui-url", u)?;
    }
    Ok(translate::Options {
        source: common.source.clone(),
        ui_base: common.prefect_ui_url.clone(),
    })
}

/// A URL flag must be plain http(s), with a host and no credentials (the
/// one rule for URLs, [`crate::pagerduty::is_web_url`]).
fn web_url(flag: &'static str, url: &url::Url) -> Result<(), ConfigError> {
    if crate::pagerduty::is_web_url(url) {
        Ok(())
    } else {
        Err(invalid(
            flag,
            format!("{url}: only http and https URLs with a host and without credentials are supported"),
        ))
    }
}

fn non_zero(flag: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(invalid(flag, "must be longer than zero"))
    } else {
        Ok(d)
    }
}

/// Validated `serve` settings.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    /// Listen address.
    pub(crate) listen: SocketAddr,
    /// Actions by name.
    pub(crate) actions: Actions,
    /// Translation options.
    pub(crate) translate: translate::Options,
    /// Events API base.
    pub(crate) pagerduty_url: url::Url,
    /// Log instead of sending.
    pub(crate) dry_run: bool,
    /// Body limit, bytes.
    pub(crate) max_body: usize,
    /// Budget for all bodies in hand at once, bytes.
    pub(crate) body_memory: usize,
    /// Spool file.
    pub(crate) spool: PathBuf,
    /// Most undelivered events held.
    pub(crate) queue_capacity: usize,
    /// Delivery settings.
    pub(crate) delivery: crate::deliver::Settings,
    /// Idempotency window.
    pub(crate) dedup_ttl: Duration,
    /// Idempotency claims remembered.
    pub(crate) dedup_capacity: u64,
    /// Tokens.
    pub(crate) tokens: Tokens,
    /// The `--action` routing keys that are read again from their files.
    pub(crate) action_keys: crate::rotation::ActionKeys,
    /// PEM certificate chain and key, for HTTPS.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
    /// Whole-request time limit.
    pub(crate) request_timeout: Duration,
    /// Connection cap.
    pub(crate) max_connections: usize,
    /// Connection cap per client IP.
    pub(crate) max_connections_per_ip: usize,
    /// Idle connection deadline.
    pub(crate) idle_timeout: Duration,
    /// Per-IP request rate.
    pub(crate) ingress_rate: Option<(u32, Duration)>,
    /// Where `/metrics` is also served alone.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Prefect's API, when `--prefect-api-url` is given.
    pub(crate) prefect: Option<PrefectApi>,
    /// How requests leave.
    pub(crate) egress: crate::outbound::Egress,
    /// How long an alert stays open after its last trigger.
    pub(crate) open_alert_ttl: Duration,
    /// Reconciliation with Prefect, when its API is given and it is not off.
    pub(crate) reconcile: Option<crate::prefect_api::reconcile::Settings>,
}

/// Where Prefect's API is and how its answers are cached.
#[derive(Debug, Clone)]
pub(crate) struct PrefectApi {
    /// Prefect's API.
    pub(crate) api_url: url::Url,
    /// Its credentials.
    pub(crate) auth: Option<crate::prefect_api::Auth>,
    /// The address Prefect reaches the bridge at, when given.
    pub(crate) bridge_url: Option<url::Url>,
    /// The lookup cache.
    pub(crate) cache: crate::prefect_api::lookup::CacheSettings,
    /// Longest a webhook waits for a lookup.
    pub(crate) lookup_timeout: Duration,
}

/// Prefect OSS keeps events this long: looking further back finds nothing.
const MAX_LOOKBACK: Duration = Duration::from_secs(7 * 24 * 3600);

fn prefect_api(args: &ServeArgs) -> Result<Option<PrefectApi>, ConfigError> {
    let ttl = non_zero("--prefect-cache-ttl", args.prefect_cache_ttl.0)?;
    if args.prefect_cache_capacity == 0 {
        return Err(invalid("--prefect-cache-capacity", "must be at least 1"));
    }
    let lookup_timeout = non_zero("--prefect-lookup-timeout", args.prefect_lookup_timeout.0)?;
    let Some(((api_url, auth), bridge_url)) = prefect_client(&args.prefect)? else {
        return Ok(None);
    };
    Ok(Some(PrefectApi {
        api_url,
        auth,
        bridge_url,
        cache: crate::prefect_api::lookup::CacheSettings {
            ttl,
            capacity: args.prefect_cache_capacity,
        },
        lookup_timeout,
    }))
}

fn reconcile(
    args: &ServeArgs,
    api: Option<&PrefectApi>,
) -> Result<Option<crate::prefect_api::reconcile::Settings>, ConfigError> {
    let interval = match args.reconcile_interval.trim() {
        "off" => None,
        v => Some(non_zero(
            "--reconcile-interval",
            v.parse::<super::values::Span>()
                .map_err(|e| invalid("--reconcile-interval", format!("{e}, or off")))?
                .0,
        )?),
    };
    if api.is_none() {
        return Ok(None);
    }
    let lookback = non_zero("--reconcile-lookback", args.reconcile_lookback.0)?;
    if lookback > MAX_LOOKBACK {
        return Err(invalid(
            "--reconcile-lookback",
            "at most 7d: Prefect keeps events for 7 days",
        ));
    }
    Ok(interval.map(|interval| crate::prefect_api::reconcile::Settings { interval, lookback }))
}

/// How requests leave: `--ca-file` read and checked.
///
/// # Errors
/// A CA file that cannot be read or holds no certificate.
pub(crate) fn egress(args: &super::EgressArgs) -> Result<crate::outbound::Egress, ConfigError> {
    match &args.ca_file {
        Some(path) => crate::outbound::Egress::with_ca_file(path).map_err(|e| invalid("--ca-file", e)),
        None => Ok(crate::outbound::Egress::default()),
    }
}

/// Reads a secret flag (`env:`/`file:` forms).
///
/// # Errors
/// A value of neither form, or one that cannot be read.
pub(crate) fn secret(flag: &'static str, v: &str) -> Result<crate::secret::Secret, ConfigError> {
    let source: SecretSource = v.parse().map_err(|e| invalid(flag, e))?;
    source.read().map_err(|e| invalid(flag, e))
}

/// Prefect's API URL and credentials, and the bridge's own URL: what
/// `serve` and `prefect check` connect with. `None` without a URL.
type PrefectConnection = ((url::Url, Option<crate::prefect_api::Auth>), Option<url::Url>);

/// Reads `--prefect-api-url` and its credentials.
///
/// # Errors
/// A URL that is not plain http(s), credentials without a URL, or a secret
/// that cannot be read.
pub(crate) fn prefect_client(
    args: &super::PrefectConnArgs,
) -> Result<Option<PrefectConnection>, ConfigError> {
    let Some(api_url) = args.prefect_api_url.clone() else {
        if args.prefect_api_key.is_some() || args.prefect_auth_string.is_some() {
            return Err(invalid(
                "--prefect-api-key/--prefect-auth-string",
                "given without --prefect-api-url",
            ));
        }
        return Ok(None);
    };
    web_url("--prefect-api-url", &api_url)?;
    if let Some(b) = &args.bridge_url {
        web_url("--bridge-url", b)?;
    }
    let auth = match (&args.prefect_api_key, &args.prefect_auth_string) {
        (Some(k), _) => Some(crate::prefect_api::Auth::ApiKey(secret("--prefect-api-key", k)?)),
        (None, Some(a)) => Some(crate::prefect_api::Auth::AuthString(secret(
            "--prefect-auth-string",
            a,
        )?)),
        (None, None) => None,
    };
    Ok(Some(((api_url, auth), args.bridge_url.clone())))
}

impl ServeConfig {
    /// Validates `serve` flags.
    ///
    /// # Errors
    /// See [`ConfigError`].
    pub(crate) fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let prefect = prefect_api(args)?;
        let pagerduty_url = match (&args.pagerduty_url, args.region) {
            (Some(u), _) => u.clone(),
            (None, region) => {
                let base = region.unwrap_or(Region::Us).base_url();
                url::Url::parse(base).map_err(|e| invalid("--region", e))?
            }
        };
        web_url("--pagerduty-url", &pagerduty_url)?;

        let max_body = args.max_body.0;
        if max_body == 0 || max_body > MAX_BODY_LIMIT {
            return Err(invalid("--max-body", "must be from 1 byte to 64MiB"));
        }
        let body_memory = match args.body_memory {
            Some(b) if b.0 < max_body => {
                return Err(invalid("--body-memory", "must be at least --max-body"));
            }
            Some(b) => b.0,
            None => {
                DEFAULT_BODY_MEMORY.max(max_body.saturating_mul(crate::server::budget::COST_PER_BYTE as u64))
            }
        };
        let request_timeout = args.request_timeout.0;
        if request_timeout < MIN_REQUEST_TIMEOUT {
            return Err(invalid("--request-timeout", "must be at least 100ms"));
        }
        let rate: Rate = args.pagerduty_rate;
        let burst = match args.pagerduty_burst {
            None => DEFAULT_BURST.min(rate.n),
            Some(b) if b > rate.n => {
                return Err(invalid(
                    "--pagerduty-burst",
                    format!(
                        "{b} is more than the {} events --pagerduty-rate allows per window",
                        rate.n
                    ),
                ));
            }
            Some(b) => b,
        };
        let retry_initial = non_zero("--retry-initial-interval", args.retry_initial_interval.0)?;
        let retry_max = match args.retry_max_interval {
            None => DEFAULT_RETRY_MAX.max(retry_initial),
            Some(m) if m.0 < retry_initial => {
                return Err(invalid(
                    "--retry-max-interval",
                    format!(
                        "{:?} is shorter than --retry-initial-interval ({retry_initial:?})",
                        m.0
                    ),
                ));
            }
            Some(m) => m.0,
        };
        let given = |list: &[String]| -> Vec<String> {
            list.iter().filter(|t| !t.trim().is_empty()).cloned().collect()
        };
        let rotation = Rotation::new(non_zero("--secret-refresh", args.secret_refresh.0)?);
        let rotating = |flag: &'static str, source: SecretSource| -> Result<Rotating, ConfigError> {
            let first = source.read().map_err(|e| invalid(flag, e))?;
            Ok(rotation.secret(source, first, None))
        };
        let tokens = Tokens {
            webhook: given(&args.webhook_tokens)
                .iter()
                .map(|t| {
                    let source: SecretSource = t.parse().map_err(|e| invalid("--webhook-token", e))?;
                    rotating("--webhook-token", source)
                })
                .collect::<Result<_, _>>()?,
            api: given(&args.api_tokens)
                .iter()
                .map(|t| {
                    let spec: ApiTokenSpec = t.parse().map_err(|e| invalid("--api-token", e))?;
                    Ok((spec.role, rotating("--api-token", spec.token)?))
                })
                .collect::<Result<_, ConfigError>>()?,
        };
        let actions = actions(&args.common.actions)?;
        let action_keys = action_keys(&args.common.actions, &actions, &rotation);
        let listen = args.listen;
        if tokens.webhook.is_empty() && !listen.ip().is_loopback() && !args.allow_unauthenticated {
            return Err(ConfigError::Unauthenticated(listen));
        }
        Ok(Self {
            listen,
            actions,
            action_keys,
            translate: translate_options(&args.common)?,
            pagerduty_url,
            dry_run: args.dry_run,
            max_body: usize::try_from(max_body).map_err(|e| invalid("--max-body", e))?,
            body_memory: usize::try_from(body_memory).map_err(|e| invalid("--body-memory", e))?,
            spool: args.spool.clone(),
            queue_capacity: args.queue_capacity.get(),
            delivery: crate::deliver::Settings {
                max_in_flight: usize::from(args.max_in_flight),
                rate: rate.pair(),
                burst,
                global_rate: args.pagerduty_global_rate.map(Rate::pair),
                rate_limit_pause: non_zero("--rate-limit-pause", args.rate_limit_pause.0)?,
                retry_initial,
                retry_max,
                max_event_age: non_zero("--max-event-age", args.max_event_age.0)?,
            },
            dedup_ttl: args.dedup_ttl.0,
            dedup_capacity: args.dedup_capacity.get(),
            open_alert_ttl: non_zero("--open-alert-ttl", args.open_alert_ttl.0)?,
            tokens,
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                // clap's `requires` makes these go together.
                _ => None,
            },
            request_timeout,
            max_connections: args.max_connections.get(),
            max_connections_per_ip: args.max_connections_per_ip.get(),
            idle_timeout: non_zero("--idle-timeout", args.idle_timeout.0)?,
            ingress_rate: args.ingress_rate.map(Rate::pair),
            metrics_listen: args.metrics_listen,
            reconcile: reconcile(args, prefect.as_ref())?,
            prefect,
            egress: egress(&args.egress)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::{Cli, Command};

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn serve(extra: &[&str]) -> Result<ServeConfig, String> {
        let action = format!("a={KEY}");
        let mut argv = vec!["ppb", "serve", "--action", &action];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.command {
            Command::Serve(args) => ServeConfig::from_args(&args).map_err(|e| e.to_string()),
            _ => Err("not serve".into()),
        }
    }

    #[test]
    fn defaults_hold() {
        let c = serve(&[]).expect("defaults");
        assert_eq!(c.max_body, 1 << 20);
        assert_eq!(c.body_memory, 16 << 20);
        assert_eq!(c.delivery.burst, 10);
        assert_eq!(c.delivery.retry_max, Duration::from_secs(300));
        assert_eq!(c.queue_capacity, 1_000_000);
    }

    #[test]
    fn derived_defaults_follow_what_was_given() {
        let c = serve(&["--pagerduty-rate", "4/min"]).expect("low rate");
        assert_eq!(c.delivery.burst, 4);
        let c = serve(&["--retry-initial-interval", "10m"]).expect("long retry");
        assert_eq!(c.delivery.retry_max, Duration::from_secs(600));
        let c = serve(&["--max-body", "500KB"]).expect("KB");
        assert_eq!(c.max_body, 500_000);
        let c = serve(&["--max-body", "32MiB"]).expect("large bodies");
        assert_eq!(c.body_memory, 128 << 20);
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        for (args, flag) in [
            (&["--max-body", "0"][..], "--max-body"),
            (&["--max-body", "65MiB"], "--max-body"),
            (&["--max-body", "64k"], "--max-body"),
            (&["--max-body", "2MiB", "--body-memory", "1MiB"], "--body-memory"),
            (&["--request-timeout", "50ms"], "--request-timeout"),
            (&["--pagerduty-burst", "200"], "--pagerduty-burst"),
            (&["--pagerduty-burst", "0"], "--pagerduty-burst"),
            (&["--retry-initial-interval", "0s"], "--retry-initial-interval"),
            (
                &["--retry-initial-interval", "1m", "--retry-max-interval", "1s"],
                "--retry-max-interval",
            ),
            (&["--queue-capacity", "0"], "--queue-capacity"),
            (&["--dedup-capacity", "0"], "--dedup-capacity"),
            (&["--max-connections", "0"], "--max-connections"),
            (&["--idle-timeout", "0s"], "--idle-timeout"),
            (&["--rate-limit-pause", "0s"], "--rate-limit-pause"),
            (&["--max-event-age", "0s"], "--max-event-age"),
            (&["--pagerduty-rate", "0/min"], "--pagerduty-rate"),
            (&["--max-in-flight", "0"], "--max-in-flight"),
            (&["--pagerduty-url", "ftp://example.com"], "--pagerduty-url"),
            (
                &["--pagerduty-url", "https://user:pw@example.com"],
                "--pagerduty-url",
            ),
            (&["--prefect-ui-url", "file:///etc/passwd"], "--prefect-ui-url"),
            (&["--api-token", "root:abc"], "--api-token"),
            (&["--action", "b=short"], "--action"),
            (
                &[
                    "--prefect-api-url",
                    "http://p:4200/api",
                    "--reconcile-lookback",
                    "8d",
                ],
                "--reconcile-lookback",
            ),
            (
                &[
                    "--prefect-api-url",
                    "http://p:4200/api",
                    "--reconcile-interval",
                    "soon",
                ],
                "--reconcile-interval",
            ),
            (
                &[
                    "--prefect-api-url",
                    "http://p:4200/api",
                    "--reconcile-interval",
                    "0s",
                ],
                "--reconcile-interval",
            ),
            (&["--prefect-api-key", "k"], "--prefect-api-key"),
            (&["--prefect-api-url", "ftp://p/api"], "--prefect-api-url"),
            (&["--prefect-cache-ttl", "0s"], "--prefect-cache-ttl"),
            (&["--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
            (&["--ca-file", "Cargo.toml"], "--ca-file"),
            (&["--secret-refresh", "0s"], "--secret-refresh"),
            (&["--open-alert-ttl", "0s"], "--open-alert-ttl"),
            (&["--prefect-cache-capacity", "0"], "--prefect-cache-capacity"),
            (&["--prefect-lookup-timeout", "0s"], "--prefect-lookup-timeout"),
        ] {
            let err = serve(args).expect_err(&format!("{args:?} must be refused"));
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn reconciliation_is_on_with_an_api_url_unless_turned_off() {
        assert!(serve(&[]).expect("default").reconcile.is_none());
        let on = serve(&["--prefect-api-url", "http://p:4200/api"]).expect("on");
        let r = on.reconcile.expect("reconciles");
        assert_eq!(r.interval, Duration::from_secs(60));
        assert_eq!(r.lookback, Duration::from_secs(86_400));
        let api = on.prefect.expect("an API");
        assert_eq!(api.cache.ttl, Duration::from_secs(600));
        assert_eq!(api.cache.capacity, 10_000);
        assert_eq!(api.lookup_timeout, Duration::from_secs(1));
        let off = serve(&[
            "--prefect-api-url",
            "http://p:4200/api",
            "--reconcile-interval",
            "off",
        ])
        .expect("off");
        assert!(off.reconcile.is_none());
        assert!(off.prefect.is_some(), "lookups need no reconciliation");
    }

    #[test]
    fn the_same_action_name_twice_is_refused() {
        let err = serve(&["--action", &format!("a={KEY}")]).expect_err("twice");
        assert!(err.contains("twice"), "{err}");
    }
}
