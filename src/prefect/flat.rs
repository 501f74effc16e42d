//! Templates users write by hand: flat fields (`event_name`, `resource_id`,
//! `flow_run_tags`, …) and bodies shaped like a PagerDuty event (the
//! template in `captures/pagerduty_template.json`).
//!
//! Both are read generously: whatever fields are there add to the alert.

use serde_json::{Map, Value};

use super::event::{self, link_kind};
use super::{
    Kind, Notification, Ref, State, owned_text, push_url, set_resource, split_resource_id, strings, text,
};
use crate::pagerduty::{EventAction, Severity};

/// A body shaped like a PagerDuty event; returns whether it was one.
pub(super) fn read_pagerduty_shaped(n: &mut Notification, obj: &Map<String, Value>) -> bool {
    let payload = obj.get("payload").and_then(Value::as_object);
    let shaped = payload.is_some_and(|p| p.contains_key("summary"))
        || (obj.contains_key("event_action")
            && (obj.contains_key("routing_key") || obj.contains_key("dedup_key")));
    if !shaped {
        return false;
    }
    n.overrides.event_action = match text(obj.get("event_action"))
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("trigger") => Some(EventAction::Trigger),
        Some("resolve") => Some(EventAction::Resolve),
        Some("acknowledge") => Some(EventAction::Acknowledge),
        _ => None,
    };
    if let Some(key) = text(obj.get("dedup_key")) {
        n.overrides.dedup_key = Some(key.to_owned());
        if let Some((kind, id)) = split_resource_id(key) {
            set_resource(n, kind, id);
        }
    }
    if let Some(p) = payload {
        n.overrides.summary = text(p.get("summary")).map(str::to_owned);
        read_severity(n, p.get("severity"));
        n.overrides.source = text(p.get("source")).map(str::to_owned);
        n.overrides.component = text(p.get("component")).map(str::to_owned);
        n.overrides.group = text(p.get("group")).map(str::to_owned);
        n.overrides.class = text(p.get("class")).map(str::to_owned);
        if let Some(class) = n.overrides.class.as_deref().filter(|c| c.starts_with("prefect."))
            && n.event.is_none()
        {
            n.event = Some(class.to_owned());
        }
        if n.occurred.is_none() {
            n.occurred = owned_text(p.get("timestamp"));
        }
        if let Some(details) = p.get("custom_details").and_then(Value::as_object) {
            n.overrides.details = Some(details.clone());
            read_aliases(n, details);
        }
    }
    if let Some(links) = obj.get("links").and_then(Value::as_array) {
        for link in links.iter().filter_map(Value::as_object).take(50) {
            if let Some(href) = text(link.get("href")) {
                let label = text(link.get("text")).map(str::to_owned);
                let kind = link_kind(label.as_deref().unwrap_or_default());
                push_url(n, kind, href, label);
            }
        }
    }
    true
}

fn read_severity(n: &mut Notification, value: Option<&Value>) {
    if let Some(s) = text(value) {
        match s.parse::<Severity>() {
            Ok(sev) => n.overrides.severity = Some(sev),
            Err(_) => n.overrides.invalid_severity = Some(s.to_owned()),
        }
    }
}

/// Flat fields; returns whether any was found.
pub(super) fn read(n: &mut Notification, obj: &Map<String, Value>) -> bool {
    let mut found = false;
    // A flat template that copied `resource` and `related` is an event in all
    // but name (captures/failed_misc.json).
    if obj.get("resource").is_some_and(Value::is_object) && n.resource.is_none() {
        let mut synthetic = Map::new();
        for (to, from) in [
            ("event", "event_name"),
            ("id", "event_id"),
            ("occurred", "occurred"),
            ("resource", "resource"),
            ("related", "related"),
            ("payload", "payload"),
        ] {
            if let Some(v) = obj.get(from) {
                synthetic.insert(to.to_owned(), v.clone());
            }
        }
        if !synthetic.contains_key("event") {
            synthetic.insert("event".to_owned(), Value::from(""));
        }
        event::read(n, &synthetic, 1);
        if n.event.as_deref() == Some("") {
            n.event = None;
        }
        found = true;
    }
    found |= read_aliases(n, obj);
    if let Some(key) = text(obj.get("dedup_key")) {
        n.overrides.dedup_key.get_or_insert_with(|| key.to_owned());
        found = true;
    }
    if obj.contains_key("severity") && n.overrides.severity.is_none() {
        read_severity(n, obj.get("severity"));
        found = true;
    }
    if let Some(summary) = text(obj.get("summary")) {
        n.overrides.summary.get_or_insert_with(|| summary.to_owned());
        found = true;
    }
    found
}

/// Commonly used flat field names; returns whether any was found.
fn read_aliases(n: &mut Notification, obj: &Map<String, Value>) -> bool {
    let get = |keys: &[&str]| keys.iter().find_map(|k| text(obj.get(*k)));
    let mut found = false;
    if let Some(e) = get(&["event_name"]).or_else(|| get(&["event"]).filter(|e| e.starts_with("prefect."))) {
        n.event.get_or_insert_with(|| e.to_owned());
        found = true;
    }
    if let Some(id) = get(&["event_id"]) {
        n.event_id.get_or_insert_with(|| id.to_owned());
        found = true;
    }
    if let Some(t) = get(&["occurred"]) {
        n.occurred.get_or_insert_with(|| t.to_owned());
    }
    if let Some((kind, id)) = get(&["resource_id"]).and_then(split_resource_id) {
        set_resource(n, kind, id);
        found = true;
    }
    let resource_is_run = n.resource.as_ref().is_none_or(|r| r.kind == Kind::FlowRun);
    let run_name = get(&["flow_run_name"]).or_else(|| get(&["resource_name"]).filter(|_| resource_is_run));
    let pairs: [(&mut Option<Ref>, &[&str], Option<&str>); 5] = [
        (&mut n.flow_run, &["flow_run_id"], run_name),
        (&mut n.flow, &["flow_id"], get(&["flow_name"])),
        (&mut n.deployment, &["deployment_id"], get(&["deployment_name"])),
        (&mut n.work_pool, &["work_pool_id"], get(&["work_pool_name"])),
        (&mut n.work_queue, &["work_queue_id"], get(&["work_queue_name"])),
    ];
    for (slot, id_keys, name) in pairs {
        let id = id_keys.iter().find_map(|k| text(obj.get(*k)));
        if id.is_some() || name.is_some() {
            Ref::fill(slot, id, name);
            found = true;
        }
    }
    if let Some(id) = n.flow_run.as_ref().and_then(|r| r.id.clone()) {
        set_resource(n, Kind::FlowRun, &id);
    }
    let st = obj.get("flow_run_state").and_then(Value::as_object);
    let name = get(&[
        "state_name",
        "resource_state_name",
        "flow_run_state_name",
        "state",
    ])
    .or_else(|| st.and_then(|s| text(s.get("name"))));
    let kind = get(&["state_type", "resource_state_type"]).or_else(|| st.and_then(|s| text(s.get("type"))));
    let message =
        get(&["state_message", "resource_state_message"]).or_else(|| st.and_then(|s| text(s.get("message"))));
    if name.is_some() || kind.is_some() || message.is_some() {
        let state = n.state.get_or_insert_with(State::default);
        state.name = state.name.take().or_else(|| name.map(str::to_owned));
        state.kind = state
            .kind
            .take()
            .or_else(|| kind.map(|k| k.trim_start_matches("StateType.").to_ascii_uppercase()));
        state.message = state.message.take().or_else(|| message.map(str::to_owned));
        found = true;
    }
    if n.tags.is_empty() {
        n.tags = strings(obj.get("tags").or_else(|| obj.get("flow_run_tags")));
    }
    if n.parameters.is_none() {
        n.parameters = obj
            .get("flow_run_parameters")
            .or_else(|| obj.get("parameters"))
            .filter(|p| p.as_object().is_some_and(|o| !o.is_empty()))
            .cloned();
    }
    if n.run_count.is_none() {
        n.run_count = owned_text(obj.get("run_count"));
    }
    found
}
