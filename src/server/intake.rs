//! `POST /v1/prefect/{action}`: read the body → parse → translate → check
//! open incidents → queue → answer. Answers before delivery, well inside
//! Prefect's 5 s timeout (FACTS §9).

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::json;

use super::State;
use super::response::{self, Body};
use crate::deliver::Job;
use crate::prefect;
use crate::translate::{self, Disposition};

/// Handles one webhook for the action called `name`.
pub async fn handle<B>(state: &State, name: &str, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(action) = state.actions.get(name) else {
        let names = state.actions.names();
        let detail = if names.is_empty() {
            format!(
                "no action named {name:?}: none is configured; start the bridge with --action NAME=ROUTING_KEY"
            )
        } else {
            format!(
                "no action named {name:?}; configured actions: {}",
                names.join(", ")
            )
        };
        let mut body = json!({"error": "unknown_action", "detail": detail, "actions": names});
        body["action"] = json!(name);
        return response::json(StatusCode::NOT_FOUND, &body);
    };
    let event_id_header = req
        .headers()
        .get("x-prefect-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), state.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over the {}-byte limit (--max-body)", state.max_body),
            );
        }
        Err(e) => {
            return response::error(
                StatusCode::BAD_REQUEST,
                "body_read_failed",
                format!("could not read the body: {e}"),
            );
        }
    };

    let notification = prefect::parse(&body, event_id_header.as_deref());
    let t = translate::translate(&notification, action, &state.options);
    let key = &action.routing_key;
    let event_action = t.event.event_action;
    let severity = t.event.payload.as_ref().map(|p| p.severity);

    let queued = match t.disposition {
        Disposition::Trigger(class) => {
            // Record before queueing, under the same decision, so a resolve
            // arriving right after this trigger finds it open.
            state.incidents.open(key, &t.dedup_key, class);
            state.queue.enqueue(Job {
                action: action.name.clone(),
                event: t.event.clone(),
            })
        }
        Disposition::Resolve(scope) => {
            if !state.incidents.close(key, &t.dedup_key, scope) {
                tracing::info!(
                    action = %action.name, dedup_key = %t.dedup_key,
                    prefect_event = notification.event.as_deref().unwrap_or_default(),
                    "recovery with no open alert for this routing key; nothing to resolve"
                );
                return response::json(
                    StatusCode::OK,
                    &json!({
                        "status": "ignored",
                        "reason": "no open alert for this dedup key through this action's routing key",
                        "event_action": "resolve",
                        "dedup_key": t.dedup_key,
                    }),
                );
            }
            state.queue.enqueue(Job {
                action: action.name.clone(),
                event: t.event.clone(),
            })
        }
        Disposition::Acknowledge => {
            if !state.incidents.is_open(key, &t.dedup_key) {
                return response::json(
                    StatusCode::OK,
                    &json!({"status": "ignored", "reason": "no open alert to acknowledge",
                            "event_action": "acknowledge", "dedup_key": t.dedup_key}),
                );
            }
            state.queue.enqueue(Job {
                action: action.name.clone(),
                event: t.event.clone(),
            })
        }
    };
    if queued.is_err() {
        tracing::error!(action = %action.name, dedup_key = %t.dedup_key, "delivery queue full; refusing the webhook");
        return response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            "the bridge has too many undelivered events; retry later",
        );
    }
    tracing::info!(
        action = %action.name,
        dedup_key = %t.dedup_key,
        event_action = %event_action,
        severity = severity.map(|s| s.as_str()),
        payload_format = notification.format.as_str(),
        prefect_event = notification.event.as_deref().unwrap_or_default(),
        prefect_event_id = notification.event_id.as_deref().unwrap_or_default(),
        "accepted"
    );
    let mut answer = json!({
        "status": "accepted",
        "action": action.name,
        "event_action": event_action,
        "dedup_key": t.dedup_key,
        "payload_format": notification.format.as_str(),
    });
    if let Some(p) = &t.event.payload {
        answer["severity"] = json!(p.severity);
        answer["summary"] = json!(p.summary);
    }
    response::json(StatusCode::ACCEPTED, &answer)
}
