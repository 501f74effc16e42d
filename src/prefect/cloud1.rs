//! Prefect Cloud 1 `WebhookAction` payloads: flow-run state changes, flow SLA
//! failures and agent SLA failures (docs/prefect.md §6).
//!
//! Recognised by their keys, not by `event_name`, whose exact strings were
//! never documented.

use serde_json::{Map, Value};

use super::{
    AgentSla, FlowSla, Kind, LinkKind, Notification, Ref, State, owned_text, push_url, set_resource,
    state_type_from_name, strings, text,
};

/// Reads a Prefect 1 payload; returns false when `obj` is not one.
pub(super) fn read(n: &mut Notification, obj: &Map<String, Value>) -> bool {
    let has = |k: &str| obj.contains_key(k);
    let flow_run = has("flow_run_id") && (has("state") || has("kind")) && !has("event");
    let agent = has("agent_config_id") && (has("unhealthy_agent_ids") || has("sla_min_healthy"));
    if !flow_run && !agent {
        return false;
    }
    n.event = text(obj.get("event_name")).map(str::to_owned);
    n.event_id = owned_text(obj.get("id"));
    n.occurred = owned_text(obj.get("timestamp"));
    n.tenant = text(obj.get("tenant_slug")).map(str::to_owned);
    n.message = text(obj.get("message")).map(str::to_owned);

    if agent {
        let config_id = owned_text(obj.get("agent_config_id")).unwrap_or_default();
        set_resource(n, Kind::AgentConfig, &config_id);
        n.agent_sla = Some(AgentSla {
            config_id,
            min_healthy: owned_text(obj.get("sla_min_healthy")),
            healthy: strings(obj.get("healthy_agent_ids")),
            unhealthy: strings(obj.get("unhealthy_agent_ids")),
        });
        return true;
    }

    let run_id = owned_text(obj.get("flow_run_id")).unwrap_or_default();
    set_resource(n, Kind::FlowRun, &run_id);
    Ref::fill(&mut n.flow_run, Some(&run_id), text(obj.get("flow_run_name")));
    Ref::fill(&mut n.flow, text(obj.get("flow_id")), text(obj.get("flow_name")));
    let name = text(obj.get("state")).map(str::to_owned);
    n.state = Some(State {
        kind: name.as_deref().map(|s| state_type_from_name(s).to_owned()),
        name,
        message: text(obj.get("state_message")).map(str::to_owned),
    });
    if let Some(kind) = text(obj.get("kind")) {
        n.flow_sla = Some(FlowSla {
            kind: kind.to_owned(),
            duration_seconds: owned_text(obj.get("duration_seconds")),
            config_id: owned_text(obj.get("flow_sla_config_id")),
        });
    }
    if let Some(url) = text(obj.get("flow_run_link")) {
        push_url(n, LinkKind::FlowRun, url, None);
    }
    if let Some(url) = text(obj.get("flow_link")) {
        push_url(n, LinkKind::Flow, url, None);
    }
    true
}
