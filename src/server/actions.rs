//! `/v1/actions`: list, create, delete and test named actions, as in the
//! original Prefect Cloud PagerDuty integration. Actions created here are
//! stored in the spool file and come back on restart; those given with
//! `--action` are fixed and cannot be deleted here.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::State;
use super::response::{self, Body};
use crate::actions::{self, Action};
use crate::pagerduty::{Event, EventAction, Payload, Severity};
use crate::secret::Secret;
use crate::spool::store::StoredAction;
use crate::spool::{Accepted, now_ms};
use crate::translate::{AlertClass, Disposition, Translation};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAction {
    name: String,
    routing_key: String,
    #[serde(default)]
    severity: Option<String>,
}

/// Routes `/v1/actions` and `/v1/actions/{name}[/test]`.
pub async fn handle(state: &State, rest: Option<&str>, method: &Method, body: Bytes) -> Response<Body> {
    match (rest, method) {
        (None, &Method::GET | &Method::HEAD) => list(state),
        (None, &Method::POST) => create(state, &body).await,
        (None, _) => response::method_not_allowed("GET, HEAD, POST"),
        (Some(r), m) => match r.strip_suffix("/test") {
            Some(name) if m == Method::POST => test(state, name).await,
            Some(_) => response::method_not_allowed("POST"),
            None if m == Method::DELETE => delete(state, r).await,
            None => response::method_not_allowed("DELETE"),
        },
    }
}

fn list(state: &State) -> Response<Body> {
    let actions = state.actions();
    let list: Vec<_> = actions
        .iter()
        .map(|a| {
            let mut v = json!(a.summary());
            v["origin"] = json!(if state.fixed_actions.contains(&a.name) {
                "command-line"
            } else {
                "api"
            });
            v
        })
        .collect();
    response::json(StatusCode::OK, &json!({"actions": list}))
}

async fn create(state: &State, body: &[u8]) -> Response<Body> {
    let new: NewAction = match serde_json::from_slice(body) {
        Ok(n) => n,
        Err(e) => {
            return response::error(
                StatusCode::BAD_REQUEST,
                "invalid_action",
                format!("expected {{\"name\", \"routing_key\", \"severity\"?}}: {e}"),
            );
        }
    };
    if let Err(e) = actions::check_name(&new.name) {
        return response::error(StatusCode::BAD_REQUEST, "invalid_action_name", e.to_string());
    }
    let key = new.routing_key.trim();
    if let Err(why) = crate::pagerduty::check_routing_key(key) {
        return response::error(
            StatusCode::BAD_REQUEST,
            "invalid_routing_key",
            format!("routing_key must be a PagerDuty integration key: {why}"),
        );
    }
    let severity = match new.severity.as_deref().map(str::trim) {
        None | Some("auto") | Some("") => None,
        Some(s) => match s.parse::<Severity>() {
            Ok(sev) => Some(sev),
            Err(e) => {
                return response::error(
                    StatusCode::BAD_REQUEST,
                    "invalid_severity",
                    format!("{e} or auto"),
                );
            }
        },
    };
    let action = Action {
        name: new.name.clone(),
        routing_key: Secret::new(key),
        severity,
    };
    if state.actions().get(&action.name).is_some() {
        return response::error(
            StatusCode::CONFLICT,
            "action_exists",
            format!("an action named {:?} exists", new.name),
        );
    }
    let stored = StoredAction {
        name: action.name.clone(),
        routing_key: key.to_owned(),
        severity,
    };
    if let Err(e) = state.spool.save_action(&action.name, Some(stored)).await {
        tracing::error!(error = %e, "storing an action failed");
        return response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "spool_unavailable",
            "the action could not be stored",
        );
    }
    let summary = action.summary();
    if !state.actions_mut().insert(action) {
        return response::error(
            StatusCode::CONFLICT,
            "action_exists",
            format!("an action named {:?} exists", new.name),
        );
    }
    tracing::info!(action = %summary.name, routing_key = %summary.routing_key, severity = %summary.severity, "action created");
    response::json(StatusCode::CREATED, &json!(summary))
}

async fn delete(state: &State, name: &str) -> Response<Body> {
    if state.fixed_actions.contains(name) {
        return response::error(
            StatusCode::CONFLICT,
            "action_fixed",
            format!("{name:?} is configured with --action; remove it there and restart"),
        );
    }
    if state.actions().get(name).is_none() {
        return response::error(
            StatusCode::NOT_FOUND,
            "unknown_action",
            format!("no action named {name:?}"),
        );
    }
    if let Err(e) = state.spool.save_action(name, None).await {
        tracing::error!(error = %e, "deleting an action failed");
        return response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "spool_unavailable",
            "the action could not be deleted",
        );
    }
    state.actions_mut().remove(name);
    tracing::info!(action = name, "action deleted");
    response::json(StatusCode::OK, &json!({"status": "deleted", "name": name}))
}

/// Sends a test alert through the action: its routing key, its severity
/// (`info` when the action derives severity, so a test does not page at
/// high urgency unless the action always does).
async fn test(state: &State, name: &str) -> Response<Body> {
    let Some(action) = state.actions().get(name).cloned() else {
        return response::error(
            StatusCode::NOT_FOUND,
            "unknown_action",
            format!("no action named {name:?}"),
        );
    };
    let dedup_key = format!("prefect/test/{name}/{}", now_ms());
    let mut details = serde_json::Map::new();
    details.insert("action".into(), json!(name));
    details.insert("test".into(), json!(true));
    let mut event = Event {
        routing_key: action.routing_key.clone(),
        event_action: EventAction::Trigger,
        dedup_key: Some(dedup_key.clone()),
        payload: Some(Payload {
            summary: format!(
                "Test alert from prefect-pagerduty-bridge: action {name} reaches this PagerDuty service"
            ),
            source: state.options.source.clone(),
            severity: action.severity.unwrap_or(Severity::Info),
            timestamp: Some(jiff::Timestamp::now().to_string()),
            component: Some("prefect-pagerduty-bridge".into()),
            group: None,
            class: Some("bridge.test".into()),
            custom_details: Some(details),
        }),
        client: Some("Prefect".into()),
        client_url: state
            .options
            .ui_base
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned()),
        links: Vec::new(),
    };
    event.fit();
    let t = Translation {
        event,
        disposition: Disposition::Trigger(AlertClass::Notice),
        dedup_key: dedup_key.clone(),
    };
    match state.spool.accept(name, &t, None).await {
        Ok(Accepted::Queued { id }) => response::json(
            StatusCode::ACCEPTED,
            &json!({"status": "accepted", "event_action": "trigger", "dedup_key": dedup_key, "spool_id": id}),
        ),
        Ok(_) | Err(_) => response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "spool_unavailable",
            "the test alert could not be queued",
        ),
    }
}
