//! Prefect 3/2 events (`{{ event | tojson }}`, `event.model_dump_json()`),
//! automation envelopes, and the API objects a wrapper template adds.
//!
//! Event schema: docs/prefect.md §2; envelopes and API objects §7.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{
    Envelope, Kind, LinkKind, Notification, Ref, State, owned_text, push_url, set_resource,
    split_resource_id, strings, text,
};

/// How many related resources are read; the rest are ignored.
pub(super) const MAX_RELATED: usize = 200;

/// A resource's labels as the reader sees them: trimmed text, or nothing
/// for a missing, empty, `None` or non-text value. A parsed object has
/// them; so do the related resources [`super::sparse`] reads.
pub(super) trait Labels {
    /// A text label.
    fn text(&self, key: &str) -> Option<Cow<'_, str>>;
}

impl Labels for Map<String, Value> {
    fn text(&self, key: &str) -> Option<Cow<'_, str>> {
        text(self.get(key)).map(Cow::Borrowed)
    }
}

/// Whether `obj` is a Prefect event: a string `event` and a `resource` object.
pub(super) fn is_event(obj: &Map<String, Value>) -> bool {
    obj.get("event").is_some_and(Value::is_string) && obj.get("resource").is_some_and(Value::is_object)
}

/// Reads an event into `n`; `depth` guards envelope-in-envelope recursion.
pub(super) fn read(n: &mut Notification, ev: &Map<String, Value>, depth: u8) {
    let name = text(ev.get("event")).map(str::to_owned);
    let resource = ev.get("resource").and_then(Value::as_object);
    let resource_id = resource.and_then(|r| text(r.get("prefect.resource.id")));

    let is_envelope = name
        .as_deref()
        .is_some_and(|e| e == "prefect.automation.triggered" || e == "prefect.automation.resolved");
    if is_envelope && depth == 0 {
        read_envelope(n, ev, name.as_deref().unwrap_or_default(), resource);
        return;
    }

    n.event = name;
    n.event_id = owned_text(ev.get("id"));
    n.occurred = owned_text(ev.get("occurred"));
    n.has_follows = ev.contains_key("follows");
    n.follows = owned_text(ev.get("follows"));

    if let Some(resource) = resource {
        n.labels = resource.clone();
        read_resource(n, resource, true);
        read_run_state(n, resource);
    }
    if let Some(related) = ev.get("related").and_then(Value::as_array) {
        for r in related.iter().filter_map(Value::as_object).take(MAX_RELATED) {
            read_resource(n, r, false);
        }
    }
    // The validated state's message is the same as the label, but some
    // events carry only one of the two.
    if let Some(vs) = ev
        .get("payload")
        .and_then(|p| p.get("validated_state"))
        .and_then(Value::as_object)
    {
        let state = n.state.get_or_insert_with(State::default);
        if state.kind.is_none() {
            state.kind = text(vs.get("type")).map(str::to_ascii_uppercase);
        }
        if state.name.is_none() {
            state.name = text(vs.get("name")).map(str::to_owned);
        }
        if state.message.is_none() {
            state.message = text(vs.get("message")).map(str::to_owned);
        }
    }
    if let Some(id) = resource_id
        && n.resource.is_none()
        && let Some((kind, rest)) = split_resource_id(id)
    {
        set_resource(n, kind, rest);
    }
}

/// `prefect.automation.triggered` / `resolved`: the automation is the
/// resource; the object at issue is in `payload.triggering_event`, or only in
/// `payload.triggering_labels` when the bucket held no event.
fn read_envelope(
    n: &mut Notification,
    ev: &Map<String, Value>,
    name: &str,
    resource: Option<&Map<String, Value>>,
) {
    let automation_id = resource
        .and_then(|r| text(r.get("prefect.resource.id")))
        .and_then(split_resource_id)
        .map(|(_, id)| id.to_owned());
    let automation_name = resource.and_then(|r| text(r.get("prefect.resource.name")));
    let posture = resource
        .and_then(|r| text(r.get("prefect.posture")))
        .map(str::to_owned);
    let envelope_id = owned_text(ev.get("id"));
    let occurred = owned_text(ev.get("occurred"));
    let payload = ev.get("payload").and_then(Value::as_object);
    let labels = payload
        .and_then(|p| p.get("triggering_labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();

    if let Some(te) = payload
        .and_then(|p| p.get("triggering_event"))
        .and_then(Value::as_object)
        && is_event(te)
    {
        read(n, te, 1);
    }
    if n.resource.is_none()
        && let Some((kind, id)) = labels
            .get("prefect.resource.id")
            .and_then(Value::as_str)
            .and_then(split_resource_id)
    {
        set_resource(n, kind, id);
    }
    n.envelope = Some(if name.ends_with("resolved") {
        Envelope::Resolved
    } else {
        Envelope::Triggered
    });
    n.envelope_event_id = envelope_id;
    if n.occurred.is_none() {
        n.occurred = occurred;
    }
    if n.event.is_none() {
        n.event = Some(name.to_owned());
    }
    Ref::fill(&mut n.automation, automation_id.as_deref(), automation_name);
    n.posture = posture;
    if !labels.is_empty() {
        n.labels = labels;
    }
}

/// The state a run's own resource carries in its labels.
fn read_run_state(n: &mut Notification, r: &Map<String, Value>) {
    let Some((kind @ (Kind::FlowRun | Kind::TaskRun), _)) =
        text(r.get("prefect.resource.id")).and_then(split_resource_id)
    else {
        return;
    };
    let state = State {
        kind: text(r.get("prefect.state-type")).map(str::to_ascii_uppercase),
        name: text(r.get("prefect.state-name")).map(str::to_owned),
        message: text(r.get("prefect.state-message")).map(str::to_owned),
    };
    if state != State::default() {
        n.state = Some(state);
    }
    if kind == Kind::FlowRun {
        n.run_count = owned_text(r.get("prefect.run-count"));
    }
}

/// Reads one resource or related resource into the matching slot.
pub(super) fn read_resource(n: &mut Notification, r: &impl Labels, primary: bool) {
    let resource_id = r.text("prefect.resource.id");
    let Some((kind, id)) = resource_id.as_deref().and_then(split_resource_id) else {
        return;
    };
    let name = r.text("prefect.resource.name");
    let name = name.as_deref();
    let role = r.text("prefect.resource.role");
    let role = role.as_deref();
    match kind {
        Kind::FlowRun | Kind::TaskRun => {
            let slot = if kind == Kind::FlowRun {
                &mut n.flow_run
            } else {
                &mut n.task_run
            };
            Ref::fill(slot, Some(id), name);
        }
        Kind::Flow => Ref::fill(&mut n.flow, Some(id), name),
        Kind::Deployment if role != Some("creator") || primary => {
            Ref::fill(&mut n.deployment, Some(id), name)
        }
        Kind::WorkPool => {
            Ref::fill(&mut n.work_pool, Some(id), name);
            if n.work_pool_type.is_none() {
                n.work_pool_type = r.text("prefect.work-pool.type").map(Cow::into_owned);
            }
        }
        Kind::WorkQueue => Ref::fill(&mut n.work_queue, Some(id), name),
        Kind::Worker => Ref::fill(&mut n.worker, Some(id), name),
        Kind::Automation if primary || role != Some("creator") => {
            Ref::fill(&mut n.automation, Some(id), name)
        }
        Kind::Other(ref seg) if seg == "tag" && n.tags.len() < 100 && !n.tags.iter().any(|t| t == id) => {
            n.tags.push(id.to_owned());
        }
        _ => {}
    }
}

/// API objects and UI URLs a wrapper template adds (`flow_run`, `flow`,
/// `deployment`, `work_pool`, `work_queue`, `automation`, `*_ui`).
/// Returns whether anything was found.
pub(super) fn read_context(n: &mut Notification, obj: &Map<String, Value>) -> bool {
    let mut found = false;
    if let Some(fr) = obj.get("flow_run").and_then(Value::as_object) {
        found = true;
        Ref::fill(&mut n.flow_run, text(fr.get("id")), text(fr.get("name")));
        let state = n.state.get_or_insert_with(State::default);
        let st = fr.get("state").and_then(Value::as_object);
        if state.kind.is_none() {
            state.kind = text(fr.get("state_type"))
                .or_else(|| st.and_then(|s| text(s.get("type"))))
                .map(|s| s.trim_start_matches("StateType.").to_ascii_uppercase());
        }
        if state.name.is_none() {
            state.name = text(fr.get("state_name"))
                .or_else(|| st.and_then(|s| text(s.get("name"))))
                .map(str::to_owned);
        }
        if state.message.is_none() {
            state.message = st.and_then(|s| text(s.get("message"))).map(str::to_owned);
        }
        if *state == State::default() {
            n.state = None;
        }
        if n.run_count.is_none() {
            n.run_count = owned_text(fr.get("run_count"));
        }
        if n.tags.is_empty() {
            n.tags = strings(fr.get("tags"));
        }
        if n.parameters.is_none() {
            n.parameters = fr
                .get("parameters")
                .filter(|p| p.as_object().is_some_and(|o| !o.is_empty()))
                .cloned();
        }
        Ref::fill(&mut n.flow, text(fr.get("flow_id")), None);
        Ref::fill(&mut n.deployment, text(fr.get("deployment_id")), None);
        Ref::fill(
            &mut n.work_pool,
            text(fr.get("work_pool_id")),
            text(fr.get("work_pool_name")),
        );
        Ref::fill(
            &mut n.work_queue,
            text(fr.get("work_queue_id")),
            text(fr.get("work_queue_name")),
        );
        if let Some(id) = text(fr.get("id")) {
            set_resource(n, Kind::FlowRun, id);
        }
    }
    for (key, slot_kind) in [
        ("flow", Kind::Flow),
        ("deployment", Kind::Deployment),
        ("work_pool", Kind::WorkPool),
        ("work_queue", Kind::WorkQueue),
        ("automation", Kind::Automation),
    ] {
        let Some(o) = obj.get(key).and_then(Value::as_object) else {
            continue;
        };
        found = true;
        let (id, name) = (text(o.get("id")), text(o.get("name")));
        let slot = match slot_kind {
            Kind::Flow => &mut n.flow,
            Kind::Deployment => &mut n.deployment,
            Kind::WorkPool => &mut n.work_pool,
            Kind::WorkQueue => &mut n.work_queue,
            _ => &mut n.automation,
        };
        Ref::fill(slot, id, name);
        if slot_kind == Kind::WorkPool {
            if n.work_pool_type.is_none() {
                n.work_pool_type = text(o.get("type")).map(str::to_owned);
            }
            n.work_pool_created = text(o.get("created")).map(str::to_owned);
        }
        if slot_kind == Kind::Deployment {
            Ref::fill(&mut n.work_pool, None, text(o.get("work_pool_name")));
            Ref::fill(
                &mut n.work_queue,
                text(o.get("work_queue_id")),
                text(o.get("work_queue_name")),
            );
        }
    }
    for (key, value) in obj {
        let Some(url) = value.as_str().map(str::trim) else {
            continue;
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            continue;
        }
        found = true;
        push_url(n, link_kind(key), url, Some(key.to_owned()));
    }
    found
}

/// What a payload key like `flow_run_ui` or `work_pool_url` links to.
pub(super) fn link_kind(key: &str) -> LinkKind {
    let k = key.to_ascii_lowercase().replace('-', "_");
    let starts = |p: &str| k.starts_with(p);
    if starts("flow_run") {
        LinkKind::FlowRun
    } else if starts("flow") {
        LinkKind::Flow
    } else if starts("deployment") {
        LinkKind::Deployment
    } else if starts("work_pool") {
        LinkKind::WorkPool
    } else if starts("work_queue") {
        LinkKind::WorkQueue
    } else if starts("worker") {
        LinkKind::Worker
    } else if starts("automation") {
        LinkKind::Automation
    } else if starts("event") {
        LinkKind::Event
    } else {
        LinkKind::Other
    }
}
