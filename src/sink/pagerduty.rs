//! The one place that talks HTTP to PagerDuty: the Events API v2 [`Sink`],
//! and its dry run.
//!
//! Every answer becomes a sink-neutral [`Delivery`], per PagerDuty's retry
//! table (docs/pagerduty.md §2): 2xx is delivered, 429 throttled, other 4xx
//! rejected (sending again is futile), 5xx and network errors failed (send
//! again). What to do about it is [`crate::deliver`]'s call.

use std::time::Duration;

use serde::Deserialize;

use super::{Delivery, Outbound, Sink};
use crate::store::BodyKind;

/// Sends events to one Events API v2 endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    enqueue_url: url::Url,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<String>,
}

// === impl Client ===

impl Client {
    /// A client for `base` (e.g. `https://events.pagerduty.com`), posting to
    /// `base` + `/v2/enqueue`.
    ///
    /// # Errors
    /// When the TLS stack cannot be set up (no crypto provider installed).
    pub(crate) fn try_new(
        base: &url::Url,
        egress: &crate::outbound::Egress,
    ) -> Result<Self, crate::outbound::BuildError> {
        let http = crate::outbound::client(egress)?;
        Ok(Self {
            http,
            enqueue_url: enqueue_url(base),
        })
    }

    /// Posts one event, already encoded as JSON, and classifies the answer.
    ///
    /// # Cancel safety
    /// Cancelling drops the request; PagerDuty may or may not have taken it,
    /// which is safe because events carry dedup keys.
    pub(crate) async fn send_json(&self, body: bytes::Bytes) -> Delivery {
        let request = self
            .http
            .post(self.enqueue_url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return unreachable(&e),
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return unreachable(&e),
        };
        match status {
            200..=299 => Delivery::Delivered { status },
            429 => Delivery::Throttled { status, retry_after },
            400..=499 => {
                let mut errors = Vec::new();
                if let Ok(a) = serde_json::from_slice::<Answer>(&body) {
                    errors.extend(a.message);
                    errors.extend(a.errors);
                }
                if errors.is_empty() {
                    errors.push(excerpt(&body));
                }
                Delivery::Rejected { status, errors }
            }
            _ => Delivery::Failed {
                status,
                detail: format!("{status}: {}", excerpt(&body)),
            },
        }
    }
}

impl Sink for Client {
    fn name(&self) -> &'static str {
        "PagerDuty"
    }

    async fn send(&self, out: Outbound<'_>) -> Delivery {
        match out.kind {
            BodyKind::PagerDutyEventsV2 => self.send_json(out.body).await,
        }
    }
}

/// `--dry-run`: logs each event (routing key redacted) instead of sending it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DryRun;

impl Sink for DryRun {
    fn name(&self) -> &'static str {
        "the dry-run log"
    }

    async fn send(&self, out: Outbound<'_>) -> Delivery {
        let event = match out.kind {
            BodyKind::PagerDutyEventsV2 => serde_json::from_slice::<crate::pagerduty::Event>(&out.body)
                .map(|e| e.to_redacted_json())
                .unwrap_or_default(),
        };
        tracing::info!(action = %out.action, dedup_key = %out.dedup_key, event_action = %out.event_action,
            event = %event, "dry run: would send to PagerDuty");
        Delivery::Delivered { status: 0 }
    }
}

fn unreachable(e: &reqwest::Error) -> Delivery {
    Delivery::Failed {
        status: 0,
        detail: describe(e),
    }
}

/// `base` with `/v2/enqueue` appended to its path.
pub fn enqueue_url(base: &url::Url) -> url::Url {
    let mut url = base.clone();
    let path = format!("{}/v2/enqueue", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // reqwest's Display includes the URL, which holds no secret; the source
    // chain says why (refused, reset, TLS).
    let mut reason = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    reason
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    crate::pagerduty::truncate_chars(text.trim(), 500)
}

/// Reads `Retry-After` (seconds or an HTTP date) or `ratelimit-reset`
/// (seconds). PagerDuty documents neither for the Events API, but honours
/// them if it ever sends them (docs/pagerduty.md §2).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = value("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(when) = jiff::fmt::rfc2822::parse(v) {
            let now = jiff::Timestamp::now();
            let delta = when.timestamp().as_second() - now.as_second();
            return Some(Duration::from_secs(delta.max(0).unsigned_abs()));
        }
    }
    value("ratelimit-reset")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_path_is_appended_once() {
        let u = |s: &str| url::Url::parse(s).expect("valid url");
        assert_eq!(
            enqueue_url(&u("https://events.pagerduty.com")).as_str(),
            "https://events.pagerduty.com/v2/enqueue"
        );
        assert_eq!(
            enqueue_url(&u("http://127.0.0.1:9/pd/")).as_str(),
            "http://127.0.0.1:9/pd/v2/enqueue"
        );
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_ratelimit_reset() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("ratelimit-reset", http::HeaderValue::from_static("42"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(42)));
        h.insert("retry-after", http::HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
