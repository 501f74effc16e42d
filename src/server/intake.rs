//! `POST /v1/prefect/{action}`: read the body → parse → translate → drop
//! duplicates → commit to the spool (fsync'd) → answer. Answers before
//! delivery, well inside Prefect's 5 s timeout (docs/prefect.md §5).
//!
//! Every answer names the `payload_format` it recognised. Prefect keeps the
//! start of each answer in its `action.executed` event, which is how
//! reconciliation finds the webhooks that arrived with an empty or
//! unreadable body and pages their triggering events properly.

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

use super::State;
use super::error::ApiError;
use super::response::{self, Body};
use crate::metrics::Outcome;
use crate::prefect;
use crate::spool::Accepted;
use crate::translate;

/// Handles one webhook for the action called `name`, and counts what
/// became of it (for a configured action: an unknown name is only a
/// rejection, so labels stay bounded by the configured actions).
pub(super) async fn handle<B>(state: &State, name: &str, req: Request<B>) -> Result<Response<Body>, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let action = state.action(name);
    let Some(action) = action.as_ref() else {
        return Err(state.unknown_action(name));
    };
    let result = take(state, action, req).await;
    let outcome = match &result {
        Ok((outcome, _)) => *outcome,
        Err(_) => Outcome::Rejected,
    };
    state.metrics.webhook(&action.name, outcome);
    result.map(|(_, res)| res)
}

async fn take<B>(
    state: &State,
    action: &crate::actions::Action,
    req: Request<B>,
) -> Result<(Outcome, Response<Body>), ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let event_id_header = req
        .headers()
        .get("x-prefect-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body as u64) {
        return Err(ApiError::PayloadTooLarge {
            limit: state.max_body,
        });
    }
    // Its size is reserved before a byte of it is read (see `budget`).
    let want = declared.map_or(state.max_body, |n| n as usize);
    let read = tokio::time::timeout(state.request_timeout, async {
        let reserved = state
            .body_budget
            .reserve(want, || state.metrics.body_waited())
            .await;
        (
            reserved,
            Limited::new(req.into_body(), state.max_body).collect().await,
        )
    });
    let (mut reserved, collected) = read.await.map_err(|_| state.timed_out())?;
    let body = match collected {
        Ok(collected) => {
            let body = collected.to_bytes();
            reserved.shrink_to(body.len());
            body
        }
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge {
                limit: state.max_body,
            });
        }
        Err(e) => {
            return Err(ApiError::BadRequest {
                code: "body_read_failed",
                detail: format!("could not read the body: {e}"),
            });
        }
    };

    let mut notification = prefect::parse(&body, event_id_header.as_deref());
    if let Some(lookups) = &state.lookups {
        lookups.enrich(&mut notification).await;
    }
    // Idempotency on the Prefect event id (an envelope's own id first: two
    // automations firing on one event are two notifications).
    let event_id = notification
        .envelope_event_id
        .clone()
        .or_else(|| notification.event_id.clone());
    let format = notification.format;
    let prefect_event = notification.event.clone();
    let t = translate::translate(notification, action, &state.options);
    // What is kept from here on is the PagerDuty event, itself bounded.
    drop(body);
    drop(reserved);
    let event_action = t.event.event_action;
    let severity = t.event.payload.as_ref().map(|p| p.severity);
    let accepted = state.spool.accept(&action.name, &t, event_id.as_deref()).await;
    let spool_id = match accepted {
        Ok(Accepted::Queued { id }) => id,
        Ok(Accepted::Ignored { reason }) => {
            tracing::info!(action = %action.name, dedup_key = %t.dedup_key, reason,
                prefect_event = prefect_event.as_deref().unwrap_or_default(), "nothing to send");
            return Ok((
                Outcome::Ignored,
                response::json(
                    StatusCode::OK,
                    &json!({"status": "ignored", "reason": reason, "event_action": event_action, "dedup_key": t.dedup_key,
                            "payload_format": format.as_str()}),
                ),
            ));
        }
        Ok(Accepted::Superseded) => {
            return Ok((
                Outcome::Superseded,
                response::json(
                    StatusCode::ACCEPTED,
                    &json!({"status": "superseded", "event_action": event_action, "dedup_key": t.dedup_key,
                            "payload_format": format.as_str(),
                            "detail": "the trigger it resolves was still queued; neither is sent"}),
                ),
            ));
        }
        Ok(Accepted::Duplicate) => {
            tracing::info!(action = %action.name,
                prefect_event_id = %crate::logging::escape(event_id.as_deref().unwrap_or_default()),
                "duplicate delivery; nothing sent");
            return Ok((
                Outcome::Duplicate,
                response::json(
                    StatusCode::OK,
                    &json!({"status": "duplicate", "prefect_event_id": event_id, "dedup_key": t.dedup_key,
                            "payload_format": format.as_str(),
                            "event_action": event_action}),
                ),
            ));
        }
        Err(e) => {
            tracing::error!(action = %action.name, error = %e, "the spool did not take the event; refusing the webhook");
            return Err(e.into());
        }
    };
    // One info line per event is written when it is delivered; acceptance
    // is debug, so the hot path does not pay for two log writes.
    tracing::debug!(
        action = %action.name,
        dedup_key = %t.dedup_key,
        event_action = %event_action,
        severity = severity.map(|s| s.as_str()),
        spool_id,
        payload_format = format.as_str(),
        prefect_event = prefect_event.as_deref().unwrap_or_default(),
        prefect_event_id = event_id.as_deref().unwrap_or_default(),
        "accepted"
    );
    let payload = t.event.payload.as_ref();
    let answer = AcceptedBody {
        status: "accepted",
        action: &action.name,
        event_action,
        dedup_key: &t.dedup_key,
        payload_format: format.as_str(),
        spool_id,
        severity: payload.map(|p| p.severity),
        summary: payload.map(|p| p.summary.as_str()),
    };
    Ok((Outcome::Accepted, response::json(StatusCode::ACCEPTED, &answer)))
}

/// The `202` body of an accepted webhook.
#[derive(serde::Serialize)]
struct AcceptedBody<'a> {
    status: &'static str,
    action: &'a str,
    event_action: crate::pagerduty::EventAction,
    dedup_key: &'a str,
    payload_format: &'static str,
    spool_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<crate::pagerduty::Severity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<&'a str>,
}
