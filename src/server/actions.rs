//! `/v1/actions`: list, create, delete and test named actions, as in the
//! original Prefect Cloud PagerDuty integration. Actions created here are
//! stored in the spool file and come back on restart; those given with
//! `--action` are fixed and cannot be deleted here.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::State;
use super::error::ApiError;
use super::response::{self, Body};
use crate::actions::{self, Action};
use crate::pagerduty::{Event, EventAction, Payload, Severity};
use crate::secret::Secret;
use crate::spool::{AcceptError, Accepted, now_ms};
use crate::store::StoredAction;
use crate::translate::{AlertClass, Disposition, Translation};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAction {
    name: String,
    routing_key: String,
    #[serde(default)]
    severity: Option<String>,
}

/// `GET /v1/actions`.
pub(super) fn list(state: &State) -> Response<Body> {
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

/// `POST /v1/actions`.
pub(super) async fn create(state: &State, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let bad = |code, detail| ApiError::BadRequest { code, detail };
    let new: NewAction = serde_json::from_slice(body).map_err(|e| {
        bad(
            "invalid_action",
            format!("expected {{\"name\", \"routing_key\", \"severity\"?}}: {e}"),
        )
    })?;
    actions::check_name(&new.name).map_err(|e| bad("invalid_action_name", e.to_string()))?;
    let key = new.routing_key.trim();
    crate::pagerduty::check_routing_key(key).map_err(|why| {
        bad(
            "invalid_routing_key",
            format!("routing_key must be a PagerDuty integration key: {why}"),
        )
    })?;
    let severity = match new.severity.as_deref().map(str::trim) {
        None | Some("auto") | Some("") => None,
        Some(s) => Some(
            s.parse::<Severity>()
                .map_err(|e| bad("invalid_severity", format!("{e} or auto")))?,
        ),
    };
    let action = Action {
        name: new.name.clone(),
        routing_key: Secret::new(key),
        severity,
    };
    let exists = || ApiError::Conflict {
        code: "action_exists",
        detail: format!("an action named {:?} exists", new.name),
    };
    if state.actions().get(&action.name).is_some() {
        return Err(exists());
    }
    let stored = StoredAction {
        name: action.name.clone(),
        routing_key: key.to_owned(),
        severity,
    };
    if let Err(e) = state.spool.save_action(&action.name, Some(stored)).await {
        tracing::error!(error = %e, "storing an action failed");
        return Err(ApiError::SpoolUnavailable {
            detail: "the action could not be stored".to_owned(),
        });
    }
    let summary = action.summary();
    if !state.actions_mut().insert(action) {
        return Err(exists());
    }
    tracing::info!(action = %summary.name, routing_key = %summary.routing_key, severity = %summary.severity, "action created");
    Ok(response::json(StatusCode::CREATED, &json!(summary)))
}

/// `DELETE /v1/actions/{name}`.
pub(super) async fn delete(state: &State, name: &str) -> Result<Response<Body>, ApiError> {
    if state.fixed_actions.contains(name) {
        return Err(ApiError::Conflict {
            code: "action_fixed",
            detail: format!("{name:?} is configured with --action; remove it there and restart"),
        });
    }
    if state.actions().get(name).is_none() {
        return Err(state.unknown_action(name));
    }
    if let Err(e) = state.spool.save_action(name, None).await {
        tracing::error!(error = %e, "deleting an action failed");
        return Err(ApiError::SpoolUnavailable {
            detail: "the action could not be deleted".to_owned(),
        });
    }
    state.actions_mut().remove(name);
    tracing::info!(action = name, "action deleted");
    Ok(response::json(
        StatusCode::OK,
        &json!({"status": "deleted", "name": name}),
    ))
}

/// `POST /v1/actions/{name}/test`: sends a test alert through the action:
/// its routing key, its severity (`info` when the action derives severity,
/// so a test does not page at high urgency unless the action always does).
pub(super) async fn test(state: &State, name: &str) -> Result<Response<Body>, ApiError> {
    let Some(action) = state.action(name) else {
        return Err(state.unknown_action(name));
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
        Ok(Accepted::Queued { id }) => Ok(response::json(
            StatusCode::ACCEPTED,
            &json!({"status": "accepted", "event_action": "trigger", "dedup_key": dedup_key, "spool_id": id}),
        )),
        Err(AcceptError::Full) => Err(ApiError::SpoolFull),
        Ok(_) | Err(_) => Err(ApiError::SpoolUnavailable {
            detail: "the test alert could not be queued".to_owned(),
        }),
    }
}
