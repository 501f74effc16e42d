//! How records are written down: a versioned envelope that names its own
//! fields and enum values, independent of the Rust names in this crate and
//! of the body a sink sends.
//!
//! Version 1 (written now), one JSON object per row:
//! - events and dead letters: `{"v":1, "id", "action", "routing_key",
//!   "dedup_key", "event_action": "trigger"|"acknowledge"|"resolve",
//!   "class": "failure"|"lateness"|"health"|"automation"|"notice"|
//!   "unrecognised"|null, "accepted_ms", "attempts",
//!   "next_attempt_ms", "last_status", "last_error", "dead_ms",
//!   "body_kind": "pagerduty.events.v2", "body": {…}}`. The spool reads only
//!   the named fields; `body` is the request a sink sends, kept as stored.
//! - open alerts: `{"v":1, "routing_key", "dedup_key", "class", "dead"}`.
//! - actions: `{"v":1, "name", "routing_key", "severity":
//!   "critical"|"error"|"warning"|"info"|null}`.
//!
//! Version 0 is what bridges before the envelope wrote: no `"v"`, the
//! PagerDuty request in `"event"` (routing key, action and dedup key read
//! from it). It is still read; anything else (another version, a missing
//! field, an unknown code) is an error, and the row goes to the quarantine.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{OpenRow, Record, StoredAction};
use crate::pagerduty::{EventAction, Severity};
use crate::translate::AlertClass;

/// The version written.
const VERSION: u32 = 1;

/// What a record's body is, and so which sink can send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// A PagerDuty Events API v2 event (`/v2/enqueue`).
    PagerDutyEventsV2,
}

/// A row that does not decode: why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Undecodable(String);

fn bad(what: impl std::fmt::Display) -> Undecodable {
    Undecodable(what.to_string())
}

// Each stored code is spelled out here, once, in both directions.

fn body_kind_code(k: BodyKind) -> &'static str {
    match k {
        BodyKind::PagerDutyEventsV2 => "pagerduty.events.v2",
    }
}

fn body_kind_from(code: &str) -> Result<BodyKind, Undecodable> {
    match code {
        "pagerduty.events.v2" => Ok(BodyKind::PagerDutyEventsV2),
        other => Err(bad(format_args!("unknown body_kind {other:?}"))),
    }
}

fn event_action_code(a: EventAction) -> &'static str {
    match a {
        EventAction::Trigger => "trigger",
        EventAction::Acknowledge => "acknowledge",
        EventAction::Resolve => "resolve",
    }
}

fn event_action_from(code: &str) -> Result<EventAction, Undecodable> {
    match code {
        "trigger" => Ok(EventAction::Trigger),
        "acknowledge" => Ok(EventAction::Acknowledge),
        "resolve" => Ok(EventAction::Resolve),
        other => Err(bad(format_args!("unknown event_action {other:?}"))),
    }
}

fn class_code(c: AlertClass) -> &'static str {
    match c {
        AlertClass::Failure => "failure",
        AlertClass::Lateness => "lateness",
        AlertClass::Health => "health",
        AlertClass::Automation => "automation",
        AlertClass::Notice => "notice",
        AlertClass::Unrecognised => "unrecognised",
    }
}

fn class_from(code: &str) -> Result<AlertClass, Undecodable> {
    match code {
        "failure" => Ok(AlertClass::Failure),
        "lateness" => Ok(AlertClass::Lateness),
        "health" => Ok(AlertClass::Health),
        "automation" => Ok(AlertClass::Automation),
        "notice" => Ok(AlertClass::Notice),
        "unrecognised" => Ok(AlertClass::Unrecognised),
        other => Err(bad(format_args!("unknown class {other:?}"))),
    }
}

fn severity_code(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

fn severity_from(code: &str) -> Result<Severity, Undecodable> {
    match code {
        "critical" => Ok(Severity::Critical),
        "error" => Ok(Severity::Error),
        "warning" => Ok(Severity::Warning),
        "info" => Ok(Severity::Info),
        other => Err(bad(format_args!("unknown severity {other:?}"))),
    }
}

fn check_version(v: Option<u32>) -> Result<(), Undecodable> {
    match v {
        None | Some(VERSION) => Ok(()),
        Some(other) => Err(bad(format_args!(
            "record version {other} is not one this bridge reads (it reads 0 and {VERSION}); \
             was the file written by a newer bridge?"
        ))),
    }
}

/// A record as written (borrowing, so encoding copies nothing twice).
#[derive(Serialize)]
struct RecordOut<'a> {
    v: u32,
    id: u64,
    action: &'a str,
    routing_key: &'a str,
    dedup_key: &'a str,
    event_action: &'static str,
    class: Option<&'static str>,
    accepted_ms: i64,
    attempts: u32,
    next_attempt_ms: i64,
    last_status: Option<u16>,
    last_error: Option<&'a str>,
    dead_ms: Option<i64>,
    body_kind: &'static str,
    body: &'a RawValue,
}

/// A record as read: version 1, or version 0 (no `v`, the request in `event`).
#[derive(Deserialize)]
struct RecordIn {
    #[serde(default)]
    v: Option<u32>,
    id: u64,
    action: String,
    #[serde(default)]
    routing_key: Option<String>,
    #[serde(default)]
    dedup_key: Option<String>,
    #[serde(default)]
    event_action: Option<String>,
    #[serde(default)]
    class: Option<String>,
    accepted_ms: i64,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    next_attempt_ms: i64,
    #[serde(default)]
    last_status: Option<u16>,
    #[serde(default)]
    last_error: Option<String>,
    #[serde(default)]
    dead_ms: Option<i64>,
    #[serde(default)]
    body_kind: Option<String>,
    #[serde(default)]
    body: Option<Box<RawValue>>,
    /// Version 0: the PagerDuty request.
    #[serde(default)]
    event: Option<Box<RawValue>>,
}

/// What version 0 records carried only inside their PagerDuty request.
#[derive(Deserialize)]
struct V0Head {
    routing_key: String,
    event_action: String,
    #[serde(default)]
    dedup_key: Option<String>,
}

/// Encodes a record.
pub(crate) fn encode_record(r: &Record) -> Vec<u8> {
    let out = RecordOut {
        v: VERSION,
        id: r.id,
        action: &r.action,
        routing_key: &r.routing_key,
        dedup_key: &r.dedup_key,
        event_action: event_action_code(r.event_action),
        class: r.class.map(class_code),
        accepted_ms: r.accepted_ms,
        attempts: r.attempts,
        next_attempt_ms: r.next_attempt_ms,
        last_status: r.last_status,
        last_error: r.last_error.as_deref(),
        dead_ms: r.dead_ms,
        body_kind: body_kind_code(r.body_kind),
        body: &r.body,
    };
    // Plain data with string keys always encodes.
    serde_json::to_vec(&out).unwrap_or_default()
}

/// Decodes a record of either version.
///
/// # Errors
/// When the row is not a record this bridge can read.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<Record, Undecodable> {
    let r: RecordIn = serde_json::from_slice(bytes).map_err(bad)?;
    check_version(r.v)?;
    let class = r.class.as_deref().map(class_from).transpose()?;
    let (routing_key, dedup_key, event_action, body_kind, body) = match r.v {
        Some(_) => {
            let need = |f: Option<String>, name: &str| f.ok_or_else(|| bad(format_args!("no {name}")));
            (
                need(r.routing_key, "routing_key")?,
                need(r.dedup_key, "dedup_key")?,
                event_action_from(&need(r.event_action, "event_action")?)?,
                body_kind_from(&need(r.body_kind, "body_kind")?)?,
                r.body.ok_or_else(|| bad("no body"))?,
            )
        }
        None => {
            let event = r
                .event
                .ok_or_else(|| bad("no event (version 0) and no version"))?;
            let head: V0Head = serde_json::from_str(event.get()).map_err(bad)?;
            (
                head.routing_key,
                head.dedup_key
                    .ok_or_else(|| bad("the stored event has no dedup_key"))?,
                event_action_from(&head.event_action)?,
                BodyKind::PagerDutyEventsV2,
                event,
            )
        }
    };
    Ok(Record {
        id: r.id,
        action: r.action,
        routing_key,
        dedup_key,
        event_action,
        class,
        accepted_ms: r.accepted_ms,
        attempts: r.attempts,
        next_attempt_ms: r.next_attempt_ms,
        last_status: r.last_status,
        last_error: r.last_error,
        dead_ms: r.dead_ms,
        body_kind,
        body,
    })
}

#[derive(Serialize, Deserialize)]
struct OpenIo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    routing_key: String,
    dedup_key: String,
    class: String,
    #[serde(default)]
    dead: bool,
    /// Added within version 1: rows without it were written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    opened_ms: Option<i64>,
}

/// Encodes an open-alert row.
pub(crate) fn encode_open(o: &OpenRow) -> Vec<u8> {
    serde_json::to_vec(&OpenIo {
        v: Some(VERSION),
        routing_key: o.routing_key.clone(),
        dedup_key: o.dedup_key.clone(),
        class: class_code(o.class).to_owned(),
        dead: o.dead,
        opened_ms: o.opened_ms,
    })
    .unwrap_or_default()
}

/// Decodes an open-alert row of either version (they differ only in `v`).
///
/// # Errors
/// When the row is not one this bridge can read.
pub(crate) fn decode_open(bytes: &[u8]) -> Result<OpenRow, Undecodable> {
    let o: OpenIo = serde_json::from_slice(bytes).map_err(bad)?;
    check_version(o.v)?;
    Ok(OpenRow {
        routing_key: o.routing_key,
        dedup_key: o.dedup_key,
        class: class_from(&o.class)?,
        dead: o.dead,
        opened_ms: o.opened_ms,
    })
}

#[derive(Serialize, Deserialize)]
struct ActionIo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    name: String,
    routing_key: String,
    #[serde(default)]
    severity: Option<String>,
}

/// Encodes an API-created action.
pub(crate) fn encode_action(a: &StoredAction) -> Vec<u8> {
    serde_json::to_vec(&ActionIo {
        v: Some(VERSION),
        name: a.name.clone(),
        routing_key: a.routing_key.clone(),
        severity: a.severity.map(|s| severity_code(s).to_owned()),
    })
    .unwrap_or_default()
}

/// Decodes an action of either version.
///
/// # Errors
/// When the row is not one this bridge can read.
pub(crate) fn decode_action(bytes: &[u8]) -> Result<StoredAction, Undecodable> {
    let a: ActionIo = serde_json::from_slice(bytes).map_err(bad)?;
    check_version(a.v)?;
    Ok(StoredAction {
        name: a.name,
        routing_key: a.routing_key,
        severity: a.severity.as_deref().map(severity_from).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            id: 7,
            action: "oncall".into(),
            routing_key: "R0UTINGKEYAAAAAAAAAAAAAAAAAAAAAA".into(),
            dedup_key: "prefect/flow-run/r1".into(),
            event_action: EventAction::Trigger,
            class: Some(AlertClass::Lateness),
            accepted_ms: 1,
            attempts: 2,
            next_attempt_ms: 3,
            last_status: Some(500),
            last_error: Some("boom".into()),
            dead_ms: None,
            body_kind: BodyKind::PagerDutyEventsV2,
            body: RawValue::from_string(r#"{"event_action":"trigger"}"#.into()).expect("raw"),
        }
    }

    #[test]
    fn version_1_round_trips_with_its_codes_spelled_out() {
        let bytes = encode_record(&record());
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        for field in [
            r#""v":1"#,
            r#""event_action":"trigger""#,
            r#""class":"lateness""#,
            r#""body_kind":"pagerduty.events.v2""#,
            r#""body":{"event_action":"trigger"}"#,
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
        let back = decode_record(&bytes).expect("decodes");
        assert_eq!(encode_record(&back), bytes);
    }

    #[test]
    fn every_code_reads_back_as_what_wrote_it() {
        for c in [
            AlertClass::Failure,
            AlertClass::Lateness,
            AlertClass::Health,
            AlertClass::Automation,
            AlertClass::Notice,
            AlertClass::Unrecognised,
        ] {
            assert_eq!(class_from(class_code(c)), Ok(c));
        }
        for a in [
            EventAction::Trigger,
            EventAction::Acknowledge,
            EventAction::Resolve,
        ] {
            assert_eq!(event_action_from(event_action_code(a)), Ok(a));
        }
        for s in [
            Severity::Critical,
            Severity::Error,
            Severity::Warning,
            Severity::Info,
        ] {
            assert_eq!(severity_from(severity_code(s)), Ok(s));
        }
    }

    #[test]
    fn version_0_records_are_read_from_their_request() {
        let v0 = br#"{"id":4,"action":"c","event":{"routing_key":"R0UTINGKEYCCCCCCCCCCCCCCCCCCCCCC","event_action":"trigger","dedup_key":"prefect/flow-run/x","payload":{"summary":"s","source":"prefect","severity":"error"}},"class":"failure","accepted_ms":5,"attempts":1,"next_attempt_ms":5,"last_status":400,"last_error":"no","dead_ms":6}"#;
        let r = decode_record(v0).expect("decodes");
        assert_eq!(r.routing_key, "R0UTINGKEYCCCCCCCCCCCCCCCCCCCCCC");
        assert_eq!(r.dedup_key, "prefect/flow-run/x");
        assert_eq!(r.event_action, EventAction::Trigger);
        assert_eq!(r.class, Some(AlertClass::Failure));
        assert_eq!(r.dead_ms, Some(6));
        assert!(r.body.get().starts_with(r#"{"routing_key""#));
    }

    #[test]
    fn what_is_not_a_known_record_is_an_error_not_a_guess() {
        let mut newer = String::from_utf8(encode_record(&record())).expect("utf-8");
        newer = newer.replace(r#""v":1"#, r#""v":2"#);
        assert!(decode_record(newer.as_bytes()).is_err());
        let renamed = String::from_utf8(encode_record(&record()))
            .expect("utf-8")
            .replace("lateness", "Lateness");
        assert!(decode_record(renamed.as_bytes()).is_err());
        assert!(decode_record(br#"{"id":1,"action":"a","accepted_ms":1}"#).is_err());
        assert!(decode_record(b"\xff").is_err());
        assert!(decode_open(br#"{"routing_key":"k","dedup_key":"d","class":"wat"}"#).is_err());
    }

    #[test]
    fn open_rows_and_actions_read_both_versions() {
        let v0 = br#"{"routing_key":"k","dedup_key":"d","class":"failure","dead":true}"#;
        let o = decode_open(v0).expect("v0");
        assert!(o.dead && o.class == AlertClass::Failure);
        assert_eq!(decode_open(&encode_open(&o)).expect("v1").dedup_key, "d");
        let a = decode_action(br#"{"name":"n","routing_key":"k","severity":"warning"}"#).expect("v0");
        assert_eq!(a.severity, Some(Severity::Warning));
        assert_eq!(decode_action(&encode_action(&a)).expect("v1").name, "n");
    }
}
