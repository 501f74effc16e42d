//! PagerDuty Events API v2: the event model and every documented limit.
//!
//! The limits are not in PagerDuty's OpenAPI spec, only in its developer docs
//! (docs/pagerduty.md §1), and senders that skip them get
//! silent 400s (alertmanager#1700, grafana#18727). So [`Event::fit`] enforces
//! them before anything is queued: summary ≤ 1024 characters, dedup key ≤ 255,
//! body ≤ 512,000 bytes, links only http(s). Pure: the HTTP client that
//! sends these is a sink (`sink::pagerduty`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::secret::Secret;

/// PagerDuty's summary limit, counted in Unicode scalar values (alertmanager
/// counts runes too: byte truncation splits multibyte characters).
pub const MAX_SUMMARY_CHARS: usize = 1024;
/// PagerDuty's dedup key limit.
pub const MAX_DEDUP_KEY_CHARS: usize = 255;
/// PagerDuty's request size limit; 512 KB read as 512,000 bytes, as
/// Alertmanager and Grafana do.
pub const MAX_EVENT_BYTES: usize = 512_000;
/// Our own cap for `source`, `component`, `group` and `class`, which come from
/// user-named Prefect objects; PagerDuty documents none, and without one a
/// single huge name could push the event past the size limit.
pub const MAX_FIELD_CHARS: usize = 1024;
/// Our cap on link URLs; longer ones are dropped, not cut (a cut URL is wrong).
pub const MAX_LINK_CHARS: usize = 2048;
/// Our cap on the number of links on one event.
pub const MAX_LINKS: usize = 16;

/// PagerDuty alert severity; drives urgency on services set to
/// "dynamic notifications": critical and error page at high urgency,
/// warning and info at low (docs/pagerduty.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// High urgency.
    Critical,
    /// High urgency.
    Error,
    /// Low urgency.
    Warning,
    /// Low urgency.
    Info,
}

impl Severity {
    /// Every severity, most severe first.
    pub const ALL: [Severity; 4] = [Self::Critical, Self::Error, Self::Warning, Self::Info];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }

    /// Whether PagerDuty's default severity-based urgency pages at high urgency.
    pub fn is_high_urgency(self) -> bool {
        matches!(self, Self::Critical | Self::Error)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A severity name that is not one of PagerDuty's four.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown severity {0:?}: expected critical, error, warning or info")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // PagerDuty itself is case-sensitive; we accept any case on input and
        // always send lower case.
        match s.trim().to_ascii_lowercase().as_str() {
            "critical" => Ok(Self::Critical),
            "error" => Ok(Self::Error),
            "warning" => Ok(Self::Warning),
            "info" => Ok(Self::Info),
            _ => Err(UnknownSeverity(s.to_owned())),
        }
    }
}

/// `event_action` of an alert event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    /// Open or update an alert.
    Trigger,
    /// Acknowledge an open alert.
    Acknowledge,
    /// Resolve an open alert.
    Resolve,
}

impl EventAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
        }
    }
}

impl fmt::Display for EventAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link shown on the alert and incident. Top level of the event, not inside
/// `payload` (PagerDuty ignores them inside it, docs/pagerduty.md §1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// An `http` or `https` URL.
    pub href: String,
    /// What the link opens, e.g. "Flow run amber-otter".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// PD-CEF payload of a trigger event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// Alert title; 1..=1024 characters.
    pub summary: String,
    /// Where the problem is.
    pub source: String,
    /// Drives urgency.
    pub severity: Severity,
    /// RFC 3339; the Prefect event's `occurred`, since we may deliver late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// e.g. the flow or work pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// e.g. the deployment or work pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// e.g. the Prefect event name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Structured details; nested objects are fine for Event Orchestration rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_details: Option<Map<String, Value>>,
}

/// One Events API v2 alert event, as sent to `/v2/enqueue`.
///
/// `Serialize` writes the real routing key, because that is the wire format;
/// for logs use [`Event::to_redacted_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The integration key; formatting it shows only its last four characters.
    #[serde(serialize_with = "expose_secret", deserialize_with = "secret_from_str")]
    pub routing_key: Secret,
    /// trigger, acknowledge or resolve.
    pub event_action: EventAction,
    /// Stable key tying triggers to resolves; ≤ 255 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// Present on triggers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    /// Monitoring client name; trigger only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Monitoring client URL; trigger only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
    /// Links back to Prefect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
}

fn expose_secret<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

/// Reads a routing key into a [`Secret`].
pub(crate) fn secret_from_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

// === impl Event ===

impl Event {
    /// A resolve for `dedup_key`; PagerDuty needs nothing else for it.
    pub fn resolve(routing_key: Secret, dedup_key: String) -> Self {
        Self {
            routing_key,
            event_action: EventAction::Resolve,
            dedup_key: Some(dedup_key),
            payload: None,
            client: None,
            client_url: None,
            links: Vec::new(),
        }
    }

    /// Brings the event within every documented limit; see the module docs.
    ///
    /// Idempotent. Over-size events lose their largest `custom_details` values
    /// first, and the keys cut are listed in `custom_details._truncated`.
    pub fn fit(&mut self) {
        if let Some(key) = self.dedup_key.take() {
            self.dedup_key = Some(fit_dedup_key(&key));
        }
        if let Some(payload) = self.payload.as_mut() {
            payload.summary = fit_summary(&payload.summary);
            payload.source = fit_field(&payload.source).unwrap_or_else(|| "prefect".to_owned());
            for field in [&mut payload.component, &mut payload.group, &mut payload.class] {
                *field = field.as_deref().and_then(fit_field);
            }
        }
        self.client = self.client.as_deref().and_then(fit_field);
        self.client_url = self.client_url.take().filter(|u| is_safe_url(u));
        let mut seen = Vec::new();
        self.links.retain(|link| {
            let keep = is_safe_url(&link.href) && !seen.contains(&link.href);
            if keep {
                seen.push(link.href.clone());
            }
            keep
        });
        self.links.truncate(MAX_LINKS);
        for link in &mut self.links {
            link.text = link.text.as_deref().and_then(fit_field);
        }
        self.fit_size();
    }

    /// The encoded size, counted without building the encoding.
    fn wire_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        match serde_json::to_writer(&mut count, self) {
            Ok(()) => count.0,
            Err(_) => usize::MAX,
        }
    }

    /// An upper bound on the encoded size, from string lengths alone.
    ///
    /// JSON writes a string in at most six bytes per byte of it (`\u00XX`
    /// for a control character) plus its quotes; a number in at most 24
    /// characters; and each field's name and separators in at most
    /// `FIELD` bytes. Adding lengths is far cheaper than encoding, and an
    /// event it cannot clear is then counted exactly.
    fn wire_bound(&self) -> usize {
        const FIELD: usize = 32;
        fn text(s: &str) -> usize {
            6 * s.len() + 2
        }
        fn opt(s: &Option<String>) -> usize {
            FIELD + s.as_deref().map_or(0, text)
        }
        fn value(v: &Value) -> usize {
            match v {
                Value::Null | Value::Bool(_) => 5,
                Value::Number(_) => FIELD,
                Value::String(s) => text(s),
                Value::Array(a) => 2 + a.iter().map(|v| value(v) + 1).sum::<usize>(),
                Value::Object(m) => 2 + m.iter().map(|(k, v)| text(k) + 2 + value(v)).sum::<usize>(),
            }
        }
        let mut n = 2 + FIELD + text(self.routing_key.expose()) + 2 * FIELD;
        n += opt(&self.dedup_key) + opt(&self.client) + opt(&self.client_url) + FIELD;
        n += self
            .links
            .iter()
            .map(|l| 2 * FIELD + text(&l.href) + opt(&l.text))
            .sum::<usize>();
        if let Some(p) = &self.payload {
            n += 2 * FIELD + text(&p.summary) + FIELD + text(&p.source) + 2 * FIELD;
            n += opt(&p.timestamp) + opt(&p.component) + opt(&p.group) + opt(&p.class) + FIELD;
            if let Some(details) = &p.custom_details {
                n += details.iter().map(|(k, v)| text(k) + 2 + value(v)).sum::<usize>() + 2;
            }
        }
        n
    }

    fn fit_size(&mut self) {
        // Nearly every event is a few KB: the bound clears it without the
        // encoding pass the exact count costs (as much as the encoding
        // that is stored and sent).
        if self.wire_bound() <= MAX_EVENT_BYTES {
            return;
        }
        let mut size = self.wire_len();
        let mut cut: Vec<String> = Vec::new();
        // Each round shrinks the largest detail; a bounded number of rounds
        // keeps a pathological input (all escapes) from looping for long.
        for _ in 0..64 {
            if size <= MAX_EVENT_BYTES {
                return;
            }
            let Some(details) = self.payload.as_mut().and_then(|p| p.custom_details.as_mut()) else {
                break;
            };
            let Some((key, value_len)) = details
                .iter()
                .filter(|(k, _)| k.as_str() != "_truncated")
                .map(|(k, v)| (k.clone(), serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0)))
                .max_by_key(|(_, len)| *len)
            else {
                break;
            };
            let excess = size - MAX_EVENT_BYTES;
            let replacement = match details.get(&key) {
                Some(Value::String(s)) if s.len() > excess + 256 => {
                    let mut end = s.len() - excess - 256;
                    while !s.is_char_boundary(end) {
                        end -= 1;
                    }
                    Value::String(format!("{}…", &s[..end]))
                }
                _ => Value::String(format!(
                    "[removed: {value_len} bytes; the event exceeded PagerDuty's {MAX_EVENT_BYTES}-byte limit]"
                )),
            };
            details.insert(key.clone(), replacement);
            if !cut.contains(&key) {
                cut.push(key);
            }
            details.insert("_truncated".to_owned(), Value::from(cut.clone()));
            size = self.wire_len();
        }
        if size > MAX_EVENT_BYTES
            && let Some(payload) = self.payload.as_mut()
        {
            let mut only = Map::new();
            only.insert("_truncated".to_owned(), Value::from("all custom_details"));
            payload.custom_details = Some(only);
        }
    }

    /// The event as JSON with the routing key redacted, for logs and dry runs.
    pub fn to_redacted_json(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(obj) = value.as_object_mut() {
            obj.insert("routing_key".to_owned(), Value::from(self.routing_key.redacted()));
        }
        value
    }

    /// Checks this event against the documented limits and the spec's enums
    /// and required fields; returns every problem found.
    ///
    /// # Errors
    /// A list of human-readable violations.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.routing_key.expose().is_empty() {
            problems.push("routing_key is empty".to_owned());
        }
        match &self.dedup_key {
            Some(k) if k.chars().count() > MAX_DEDUP_KEY_CHARS => {
                problems.push(format!("dedup_key is over {MAX_DEDUP_KEY_CHARS} characters"))
            }
            Some(k) if k.is_empty() => problems.push("dedup_key is empty".to_owned()),
            None if self.event_action != EventAction::Trigger => {
                problems.push("dedup_key is required for acknowledge and resolve".to_owned())
            }
            _ => {}
        }
        match (&self.payload, self.event_action) {
            (None, EventAction::Trigger) => problems.push("payload is required for trigger".to_owned()),
            (Some(p), _) => {
                let n = p.summary.chars().count();
                if n == 0 || n > MAX_SUMMARY_CHARS {
                    problems.push(format!(
                        "payload.summary has {n} characters (1..={MAX_SUMMARY_CHARS})"
                    ));
                }
                if p.source.is_empty() {
                    problems.push("payload.source is empty".to_owned());
                }
                if let Some(ts) = &p.timestamp
                    && ts.parse::<jiff::Timestamp>().is_err()
                {
                    problems.push(format!("payload.timestamp {ts:?} is not RFC 3339"));
                }
            }
            _ => {}
        }
        for link in &self.links {
            if !is_safe_url(&link.href) {
                problems.push(format!("link {:?} is not a plain http(s) URL", link.href));
            }
        }
        let size = self.wire_len();
        if size > MAX_EVENT_BYTES {
            problems.push(format!("event is {size} bytes (max {MAX_EVENT_BYTES})"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Cuts a summary to 1024 characters, ending in `…` when cut; never empty.
pub fn fit_summary(summary: &str) -> String {
    let one_line: String = summary
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one_line = one_line.trim();
    if one_line.is_empty() {
        return "Prefect alert (no summary)".to_owned();
    }
    truncate_chars(one_line, MAX_SUMMARY_CHARS)
}

/// Cuts `s` to at most `max` characters, the last being `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn fit_field(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| truncate_chars(value, MAX_FIELD_CHARS))
}

/// Keeps a dedup key that fits; replaces a longer one with its SHA-256 digest
/// (hex), as Alertmanager does, so it stays stable across events.
pub fn fit_dedup_key(key: &str) -> String {
    // Control characters (a CR or ESC in a flow-run id) never reach
    // PagerDuty, nor a log: each is written as its percent-encoded bytes.
    let key = if key.chars().any(char::is_control) {
        let mut clean = String::with_capacity(key.len() + 8);
        for c in key.chars() {
            if c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    clean.push_str(&format!("%{b:02X}"));
                }
            } else {
                clean.push(c);
            }
        }
        std::borrow::Cow::Owned(clean)
    } else {
        std::borrow::Cow::Borrowed(key)
    };
    if !key.is_empty() && key.chars().count() <= MAX_DEDUP_KEY_CHARS {
        return key.into_owned();
    }
    format!("sha256/{}", crate::digest::sha256_hex(key.as_bytes()))
}

/// Whether `key` can be an Events API v2 integration (routing) key:
/// PagerDuty issues them as 32 letters and digits.
///
/// # Errors
/// What is wrong with it, for an error message (never the key itself).
pub fn check_routing_key(key: &str) -> Result<(), &'static str> {
    if key.len() == 32 && key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err("a PagerDuty integration key is 32 letters and digits")
    }
}

/// Whether `href` is safe to put on an alert: an absolute `http`/`https` URL
/// with a host, no user name or password, and at most 2048 characters.
pub fn is_safe_url(href: &str) -> bool {
    if href.len() > MAX_LINK_CHARS {
        return false;
    }
    url::Url::parse(href).is_ok_and(|u| is_web_url(&u))
}

/// The `payload.summary` of an encoded event, if it has one.
pub(crate) fn summary_of(event: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Head {
        payload: Option<HeadPayload>,
    }
    #[derive(Deserialize)]
    struct HeadPayload {
        summary: String,
    }
    serde_json::from_str::<Head>(event)
        .ok()
        .and_then(|h| h.payload)
        .map(|p| p.summary)
}

/// The one rule for a URL the bridge links to or sends to: `http` or
/// `https`, with a host, without a user name or password.
pub fn is_web_url(u: &url::Url) -> bool {
    matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.username().is_empty()
        && u.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keys_carry_no_control_characters() {
        assert_eq!(
            fit_dedup_key("prefect/flow-run/a\r\nb\x1b[2J"),
            "prefect/flow-run/a%0D%0Ab%1B[2J"
        );
        assert_eq!(fit_dedup_key("prefect/flow-run/ok"), "prefect/flow-run/ok");
        let long = format!("{}\n", "k".repeat(300));
        assert!(fit_dedup_key(&long).starts_with("sha256/"));
    }

    #[test]
    fn routing_keys_are_32_letters_and_digits() {
        assert!(check_routing_key("R0UTINGKEY0000000000000000000000").is_ok());
        assert!(check_routing_key("short").is_err());
        assert!(check_routing_key(&"k".repeat(255)).is_err());
        assert!(check_routing_key("R0UTINGKEY00000000000000000000 0").is_err());
    }

    fn trigger(details: Map<String, Value>) -> Event {
        Event {
            routing_key: Secret::new("R0UTINGKEY0000000000000000000000"),
            event_action: EventAction::Trigger,
            dedup_key: Some("prefect/flow-run/x".to_owned()),
            payload: Some(Payload {
                summary: "s".to_owned(),
                source: "prefect".to_owned(),
                severity: Severity::Error,
                timestamp: None,
                component: None,
                group: None,
                class: None,
                custom_details: Some(details),
            }),
            client: None,
            client_url: None,
            links: vec![],
        }
    }

    #[test]
    fn summary_is_cut_at_1024_scalar_values_without_splitting_a_char() {
        let long = "é".repeat(2000);
        let cut = fit_summary(&long);
        assert_eq!(cut.chars().count(), 1024);
        assert!(cut.ends_with('…'));
        assert_eq!(fit_summary(&"x".repeat(1024)), "x".repeat(1024));
        assert_eq!(fit_summary("  \n "), "Prefect alert (no summary)");
        assert_eq!(fit_summary("a\r\nb"), "a  b");
    }

    #[test]
    fn long_dedup_keys_become_a_stable_digest() {
        let long = "k".repeat(256);
        let a = fit_dedup_key(&long);
        assert_eq!(a, fit_dedup_key(&long));
        assert!(a.len() <= MAX_DEDUP_KEY_CHARS);
        assert!(a.starts_with("sha256/"));
        assert_eq!(fit_dedup_key(&"k".repeat(255)), "k".repeat(255));
    }

    #[test]
    fn oversize_events_lose_their_largest_details_first() {
        let mut details = Map::new();
        details.insert("small".into(), Value::from("keep me"));
        details.insert("big".into(), Value::from("x".repeat(900_000)));
        details.insert("medium".into(), Value::from("y".repeat(1000)));
        let mut event = trigger(details);
        event.fit();
        assert!(event.check().is_ok(), "{:?}", event.check());
        let d = event
            .payload
            .as_ref()
            .and_then(|p| p.custom_details.as_ref())
            .expect("details");
        assert_eq!(d["small"], "keep me");
        assert_eq!(d["medium"].as_str().map(str::len), Some(1000));
        assert_eq!(d["_truncated"], serde_json::json!(["big"]));
        assert!(d["big"].as_str().is_some_and(|s| s.ends_with('…')));
    }

    #[test]
    fn many_escaped_values_still_fit() {
        let mut details = Map::new();
        for i in 0..40 {
            details.insert(format!("k{i}"), Value::from("\u{1}".repeat(20_000)));
        }
        let mut event = trigger(details);
        event.fit();
        assert!(event.check().is_ok(), "{:?}", event.check());
    }

    fn any_text() -> impl proptest::strategy::Strategy<Value = String> {
        // Control characters and quotes are what JSON escapes longest.
        proptest::string::string_regex("(?s).{0,40}|[\\x00-\\x1f\"\\\\]{0,40}").expect("regex")
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any_text().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                proptest::collection::btree_map(any_text(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// `fit` skips the exact count when the bound clears the limit, so
        /// the bound must never be below the real encoding.
        #[test]
        fn the_size_bound_is_never_below_the_encoding(
            details in proptest::collection::btree_map(any_text(), any_value(), 0..12),
            texts in proptest::collection::vec(any_text(), 8),
            links in proptest::collection::vec((any_text(), proptest::option::of(any_text())), 0..4),
        ) {
            let mut event = trigger(details.into_iter().collect());
            event.dedup_key = Some(texts[0].clone());
            event.client = Some(texts[1].clone());
            event.client_url = Some(texts[2].clone());
            event.links = links.into_iter().map(|(href, text)| Link { href, text }).collect();
            if let Some(p) = event.payload.as_mut() {
                p.summary = texts[3].clone();
                p.source = texts[4].clone();
                p.timestamp = Some(texts[5].clone());
                p.component = Some(texts[6].clone());
                p.class = Some(texts[7].clone());
            }
            proptest::prop_assert!(event.wire_bound() >= event.wire_len(),
                "bound {} < encoded {}", event.wire_bound(), event.wire_len());
        }
    }

    #[test]
    fn an_event_the_bound_cannot_clear_is_still_counted_and_cut() {
        // 100,000 control characters: over the limit by the bound (six
        // bytes each) and by the encoding (`\u0001` is six bytes too).
        let mut details = Map::new();
        details.insert("escaped".into(), Value::from("\u{1}".repeat(100_000)));
        let mut event = trigger(details);
        assert!(event.wire_bound() > MAX_EVENT_BYTES && event.wire_len() > MAX_EVENT_BYTES);
        event.fit();
        assert!(event.wire_len() <= MAX_EVENT_BYTES);
        // Plain text that encodes below the limit but whose bound is above
        // it: counted exactly, and left whole.
        let mut details = Map::new();
        details.insert("plain".into(), Value::from("x".repeat(100_000)));
        let mut event = trigger(details);
        assert!(event.wire_bound() > MAX_EVENT_BYTES);
        event.fit();
        let kept = event
            .payload
            .as_ref()
            .and_then(|p| p.custom_details.as_ref())
            .expect("details");
        assert_eq!(kept["plain"].as_str().map(str::len), Some(100_000));
    }

    #[test]
    fn only_plain_http_links_survive() {
        assert!(is_safe_url("https://app.prefect.cloud/account/a/workspace/w"));
        assert!(is_safe_url("http://127.0.0.1:4200/runs/flow-run/1"));
        assert!(!is_safe_url("None"));
        assert!(!is_safe_url("javascript:alert(1)"));
        assert!(!is_safe_url("https://user:pw@example.com/"));
        assert!(!is_safe_url("file:///etc/passwd"));
        assert!(!is_safe_url(&format!("https://e.com/{}", "a".repeat(2100))));
    }

    #[test]
    fn severity_parses_any_case_and_serialises_lower_case() {
        assert_eq!("CRITICAL".parse::<Severity>().ok(), Some(Severity::Critical));
        assert!("high".parse::<Severity>().is_err());
        assert_eq!(
            serde_json::to_string(&Severity::Warning).ok().as_deref(),
            Some("\"warning\"")
        );
    }

    #[test]
    fn redacted_json_hides_the_routing_key() {
        let event = trigger(Map::new());
        let text = event.to_redacted_json().to_string();
        assert!(!text.contains("R0UTINGKEY"));
        assert!(serde_json::to_string(&event).is_ok_and(|s| s.contains("R0UTINGKEY")));
    }
}
