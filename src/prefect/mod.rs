//! Every Prefect payload real users send, read into one [`Notification`].
//!
//! Prefect gives no schema for webhook bodies: each automation renders its own
//! template (docs/prefect.md §1, §7). So [`parse`] never fails. It
//! recognises the shapes seen from real servers (an event, an automation
//! envelope, a wrapper with API objects, a send-notification body, a Prefect
//! Cloud 1 WebhookAction, a PagerDuty-shaped template, flat templates, even a
//! Python repr) and keeps what it could not read for the fail-open page.
//! Pure: no I/O, no clock.

mod cloud1;
mod event;
mod flat;
mod lenient;
mod repr;
mod sparse;

use serde_json::{Map, Value};

use crate::pagerduty::{EventAction, Severity};

/// How far `parse` follows payloads nested as strings (send-notification
/// bodies holding event JSON); deeper nesting is treated as text.
const MAX_NESTING: u8 = 2;
/// How much of an unrecognised body is kept for the alert's details.
const EXCERPT_CHARS: usize = 2000;

/// Which wire format a payload was recognised as; recorded in the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A Prefect 3/2 event (`{{ event | tojson }}`).
    Event,
    /// A `prefect.automation.triggered` / `resolved` event.
    AutomationEnvelope,
    /// An object holding `event` plus context objects or UI URLs.
    Wrapper,
    /// A `send-notification` custom-webhook body (`subject` / `body`).
    Notification,
    /// A Prefect Cloud 1 `WebhookAction` payload.
    Cloud1,
    /// A template shaped like a PagerDuty event.
    PagerDutyShaped,
    /// A template of flat fields (`event_name`, `resource_id`, `flow_run_tags` …).
    Flat,
    /// The Python repr of an event (`{{ event }}` without `tojson`).
    PythonRepr,
    /// Nothing recognisable.
    #[default]
    Unrecognised,
}

impl Format {
    /// Name used in `custom_details.payload_format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Event => "prefect-event",
            Self::AutomationEnvelope => "prefect-automation-envelope",
            Self::Wrapper => "prefect-event-wrapper",
            Self::Notification => "prefect-send-notification",
            Self::Cloud1 => "prefect-cloud1-webhook",
            Self::PagerDutyShaped => "pagerduty-shaped-template",
            Self::Flat => "flat-template",
            Self::PythonRepr => "python-repr",
            Self::Unrecognised => "unrecognised",
        }
    }
}

/// Kind of Prefect object, from resource ids such as `prefect.flow-run.<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `prefect.flow-run.<uuid>`
    FlowRun,
    /// `prefect.task-run.<uuid>`
    TaskRun,
    /// `prefect.flow.<uuid>`
    Flow,
    /// `prefect.deployment.<uuid>`
    Deployment,
    /// `prefect.work-pool.<uuid>`
    WorkPool,
    /// `prefect.work-queue.<uuid>`
    WorkQueue,
    /// `prefect.worker.<type>.<name>`
    Worker,
    /// `prefect.automation.<uuid>`
    Automation,
    /// A Prefect 1 agent config (agent SLA failures).
    AgentConfig,
    /// Anything else, by its kind segment (`block-document`, `tag`, …).
    Other(String),
}

impl Kind {
    /// The kind segment of a resource id, e.g. `flow-run`.
    pub fn segment(&self) -> &str {
        match self {
            Self::FlowRun => "flow-run",
            Self::TaskRun => "task-run",
            Self::Flow => "flow",
            Self::Deployment => "deployment",
            Self::WorkPool => "work-pool",
            Self::WorkQueue => "work-queue",
            Self::Worker => "worker",
            Self::Automation => "automation",
            Self::AgentConfig => "agent-config",
            Self::Other(s) => s,
        }
    }

    fn from_segment(s: &str) -> Self {
        match s {
            "flow-run" => Self::FlowRun,
            "task-run" => Self::TaskRun,
            "flow" => Self::Flow,
            "deployment" => Self::Deployment,
            "work-pool" => Self::WorkPool,
            "work-queue" => Self::WorkQueue,
            "worker" => Self::Worker,
            "automation" => Self::Automation,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// Splits `prefect.<kind>.<id>` into its kind and id.
pub fn split_resource_id(resource_id: &str) -> Option<(Kind, &str)> {
    let rest = resource_id.strip_prefix("prefect.")?;
    let (kind, id) = rest.split_once('.')?;
    (!kind.is_empty() && !id.is_empty()).then(|| (Kind::from_segment(kind), id))
}

/// A Prefect object named by id and/or name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ref {
    /// Its id (a uuid, or `<type>.<name>` for workers).
    pub id: Option<String>,
    /// Its display name.
    pub name: Option<String>,
}

impl Ref {
    /// Fills what `slot` lacks of `id` and `name`; an empty slot stays `None`.
    pub fn fill(slot: &mut Option<Ref>, id: Option<&str>, name: Option<&str>) {
        let r = slot.get_or_insert_with(Ref::default);
        if r.id.is_none() {
            r.id = id.filter(|s| !s.is_empty()).map(str::to_owned);
        }
        if r.name.is_none() {
            r.name = name.filter(|s| !s.is_empty()).map(str::to_owned);
        }
        if r.id.is_none() && r.name.is_none() {
            *slot = None;
        }
    }

    /// The name, else the id.
    pub fn label(&self) -> Option<&str> {
        self.name.as_deref().or(self.id.as_deref())
    }
}

/// The object the notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// What kind of object.
    pub kind: Kind,
    /// Its id within the kind.
    pub id: String,
}

/// A run state, by Prefect type (`FAILED`) and name (`TimedOut`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Upper-case state type, when known.
    pub kind: Option<String>,
    /// State name, when known.
    pub name: Option<String>,
    /// State message; may be long.
    pub message: Option<String>,
}

/// What kind of page a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkKind {
    /// A flow run.
    FlowRun,
    /// A flow.
    Flow,
    /// A deployment.
    Deployment,
    /// A work pool.
    WorkPool,
    /// A work queue.
    WorkQueue,
    /// A worker.
    Worker,
    /// An automation.
    Automation,
    /// An event.
    Event,
    /// Anything else the payload carried.
    Other,
}

/// A Prefect 1 flow SLA failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSla {
    /// `SCHEDULED_NOT_STARTED` or `STARTED_NOT_FINISHED`.
    pub kind: String,
    /// Seconds the SLA allowed.
    pub duration_seconds: Option<String>,
    /// The SLA config.
    pub config_id: Option<String>,
}

/// A Prefect 1 agent SLA failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSla {
    /// The agent config whose agents are unhealthy.
    pub config_id: String,
    /// Minimum healthy agents the SLA asks for.
    pub min_healthy: Option<String>,
    /// Healthy agent ids.
    pub healthy: Vec<String>,
    /// Unhealthy agent ids.
    pub unhealthy: Vec<String>,
}

/// Whether the automation that sent this fired or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `prefect.automation.triggered`.
    Triggered,
    /// `prefect.automation.resolved`.
    Resolved,
}

/// Fields a template chose explicitly (a PagerDuty-shaped body, or top-level
/// `dedup_key` / `severity` / `summary`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Explicit dedup key.
    pub dedup_key: Option<String>,
    /// Explicit, valid severity.
    pub severity: Option<Severity>,
    /// A severity value that is not one of PagerDuty's four, kept to report it.
    pub invalid_severity: Option<String>,
    /// Explicit summary.
    pub summary: Option<String>,
    /// Explicit `event_action`.
    pub event_action: Option<EventAction>,
    /// Explicit `source`, `component`, `group`, `class`.
    pub source: Option<String>,
    /// See `source`.
    pub component: Option<String>,
    /// See `source`.
    pub group: Option<String>,
    /// See `source`.
    pub class: Option<String>,
    /// Explicit custom details, merged over ours.
    pub details: Option<Map<String, Value>>,
}

/// One webhook request, read as far as it could be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notification {
    /// The shape recognised.
    pub format: Format,
    /// Prefect event name, e.g. `prefect.flow-run.Failed`.
    pub event: Option<String>,
    /// Prefect event id (or Prefect 1 event id / `X-PREFECT-EVENT-ID`).
    pub event_id: Option<String>,
    /// When it happened, as the payload wrote it.
    pub occurred: Option<String>,
    /// The id of the event this one follows; `None` when there is none.
    pub follows: Option<String>,
    /// Whether the event carried a `follows` field at all (to tell `null`
    /// from a template that never rendered it).
    pub has_follows: bool,
    /// The object the event is about.
    pub resource: Option<Resource>,
    /// Run state, for flow and task runs.
    pub state: Option<State>,
    /// `prefect.run-count`.
    pub run_count: Option<String>,
    /// Related objects.
    pub flow: Option<Ref>,
    /// See `flow`.
    pub flow_run: Option<Ref>,
    /// See `flow`.
    pub task_run: Option<Ref>,
    /// See `flow`.
    pub deployment: Option<Ref>,
    /// See `flow`.
    pub work_pool: Option<Ref>,
    /// `prefect.work-pool.type`.
    pub work_pool_type: Option<String>,
    /// When the work pool was created, from a wrapper's `work_pool` object.
    pub work_pool_created: Option<String>,
    /// See `flow`.
    pub work_queue: Option<Ref>,
    /// See `flow`.
    pub worker: Option<Ref>,
    /// The automation that sent this.
    pub automation: Option<Ref>,
    /// `prefect.posture` of the automation (Reactive / Proactive).
    pub posture: Option<String>,
    /// Set when the payload is an automation envelope.
    pub envelope: Option<Envelope>,
    /// The envelope's own event id, beside the triggering event's.
    pub envelope_event_id: Option<String>,
    /// Tags of the run.
    pub tags: Vec<String>,
    /// The resource labels, or an envelope's triggering labels.
    pub labels: Map<String, Value>,
    /// Flow run parameters, when a template included them.
    pub parameters: Option<Value>,
    /// URLs the payload carried, by what they open.
    pub urls: Vec<(LinkKind, String, Option<String>)>,
    /// Prefect 1 flow SLA failure.
    pub flow_sla: Option<FlowSla>,
    /// Prefect 1 agent SLA failure.
    pub agent_sla: Option<AgentSla>,
    /// Prefect 1 tenant (workspace) slug.
    pub tenant: Option<String>,
    /// Prefect's own message text (Prefect 1 `message`, notification body).
    pub message: Option<String>,
    /// A send-notification subject.
    pub subject: Option<String>,
    /// Explicit choices of the template.
    pub overrides: Overrides,
    /// Why the payload was not recognised, when it was not.
    pub unrecognised: Option<String>,
    /// The start of an unrecognised body, for the alert.
    pub excerpt: Option<String>,
    /// Top-level keys of an unrecognised JSON object.
    pub keys: Vec<String>,
    /// Size of the request body.
    pub body_bytes: usize,
    /// Short SHA-256 of the body, the dedup key of last resort: repeats of
    /// one body share an alert. Only computed when there is no event id.
    pub body_digest: Option<String>,
}

impl Notification {
    /// Whether anything was recognised.
    pub fn is_recognised(&self) -> bool {
        self.format != Format::Unrecognised
    }
}

/// Reads one webhook body. `event_id_header` is `X-PREFECT-EVENT-ID`, which
/// Prefect 1 sends by default.
pub fn parse(body: &[u8], event_id_header: Option<&str>) -> Notification {
    let mut n = Notification {
        body_bytes: body.len(),
        ..Notification::default()
    };
    read_body(&mut n, body, 0);
    finish(&mut n);
    if n.event_id.is_none() {
        n.event_id = event_id_header
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
    }
    if n.event_id.is_none() {
        n.body_digest = Some(crate::digest::sha256_hex(body)[..16].to_owned());
    }
    n
}

/// Fills what one field implies about another, whatever the format.
fn finish(n: &mut Notification) {
    if n.state.is_none() {
        let run_event = n.event.as_deref().and_then(|e| {
            e.strip_prefix("prefect.flow-run.")
                .or_else(|| e.strip_prefix("prefect.task-run."))
        });
        // State names are capitalised (`Failed`); `heartbeat` and
        // `pull-step.executed` are not states.
        if let Some(name) =
            run_event.filter(|s| s.starts_with(|c: char| c.is_ascii_uppercase()) && !s.contains('.'))
        {
            n.state = Some(State {
                name: Some(name.to_owned()),
                ..State::default()
            });
        }
    }
    if let Some(state) = n.state.as_mut()
        && state.kind.is_none()
        && let Some(name) = state.name.as_deref()
    {
        state.kind = Some(state_type_from_name(name).to_owned());
    }
    // Prefect UI URLs name their object (docs/prefect.md §4); so do the URLs that
    // `{{ flow_run | ui_url }}` puts into notification text.
    let urls: Vec<String> = n.urls.iter().map(|(_, u, _)| u.clone()).collect();
    for url in &urls {
        ids_from_url(n, url);
    }
    if n.resource.is_none() && n.flow_run.is_none() {
        let texts = [n.subject.clone(), n.message.clone()];
        for text in texts.iter().flatten() {
            let words =
                text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | ')' | '<' | '>'));
            for word in words {
                if word.starts_with("http://") || word.starts_with("https://") {
                    let word = word.trim_end_matches(['.', ',', ';']);
                    ids_from_url(n, word);
                    push_url(n, LinkKind::Other, word, Some("Prefect".to_owned()));
                } else if let Some((Kind::FlowRun, id)) = split_resource_id(word) {
                    Ref::fill(&mut n.flow_run, Some(id), None);
                }
            }
        }
    }
    if n.resource.is_none()
        && let Some(id) = n.flow_run.as_ref().and_then(|r| r.id.clone())
    {
        set_resource(n, Kind::FlowRun, &id);
    }
}

/// Fills object ids from a Prefect UI URL such as `…/runs/flow-run/<id>`.
fn ids_from_url(n: &mut Notification, url: &str) {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let segments: Vec<&str> = path.split('/').collect();
    for w in segments.windows(3) {
        let id = Some(w[2]).filter(|s| !s.is_empty());
        match (w[0], w[1]) {
            ("runs", "flow-run") => Ref::fill(&mut n.flow_run, id, None),
            ("runs", "task-run") => Ref::fill(&mut n.task_run, id, None),
            ("flows", "flow") => Ref::fill(&mut n.flow, id, None),
            ("deployments", "deployment") => Ref::fill(&mut n.deployment, id, None),
            ("work-queues", "work-queue") => Ref::fill(&mut n.work_queue, id, None),
            ("automations", "automation") => Ref::fill(&mut n.automation, id, None),
            ("work-pools", "work-pool") => {
                // Pool pages are addressed by URL-quoted name.
                let name = id.map(|s| {
                    url::form_urlencoded::parse(format!("n={s}").as_bytes())
                        .map(|(_, v)| v.into_owned())
                        .next()
                        .unwrap_or_default()
                });
                Ref::fill(&mut n.work_pool, None, name.as_deref());
            }
            _ => {}
        }
    }
}

fn read_body(n: &mut Notification, body: &[u8], depth: u8) {
    let Ok(text) = std::str::from_utf8(body) else {
        n.unrecognised = Some("the body is not valid UTF-8".to_owned());
        n.excerpt = Some(excerpt(&String::from_utf8_lossy(body)));
        return;
    };
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if trimmed.is_empty() {
        n.unrecognised = Some(
            "the body is empty: Prefect's call-webhook action sends an empty body unless the \
             automation sets a payload template"
                .to_owned(),
        );
        return;
    }
    if trimmed.starts_with('{') && !tree_only() && sparse::read(n, trimmed, depth) {
        return;
    }
    read_tree(n, trimmed, depth);
}

/// Whether to read every body through the tree: the tests compare both.
#[cfg(not(test))]
fn tree_only() -> bool {
    false
}

#[cfg(test)]
fn tree_only() -> bool {
    tests::TREE_ONLY.with(std::cell::Cell::get)
}

/// Reads a body through a JSON tree of all of it: every shape, and any
/// event [`sparse::read`] passed on.
fn read_tree(n: &mut Notification, trimmed: &str, depth: u8) {
    let parsed = serde_json::from_str::<Value>(trimmed).or_else(|e| {
        lenient::rewrite_non_finite(trimmed)
            .and_then(|fixed| serde_json::from_str::<Value>(&fixed).ok())
            .ok_or(e)
    });
    match parsed {
        Ok(Value::Object(obj)) => read_object(n, &obj, depth),
        Ok(Value::String(inner)) if depth < MAX_NESTING => read_body(n, inner.as_bytes(), depth + 1),
        Ok(other) => {
            n.unrecognised = Some(format!(
                "the body is JSON but not an object (a {})",
                json_type(&other)
            ));
            n.excerpt = Some(excerpt(trimmed));
        }
        Err(e) => {
            if repr::read(n, trimmed) {
                return;
            }
            n.unrecognised = Some(format!("the body is not JSON ({e})"));
            n.excerpt = Some(excerpt(trimmed));
        }
    }
}

fn read_object(n: &mut Notification, obj: &Map<String, Value>, depth: u8) {
    let before = n.format;
    if cloud1::read(n, obj) {
        n.format = Format::Cloud1;
    } else if event::is_event(obj) {
        event::read(n, obj, 0);
        n.format = if n.envelope.is_some() {
            Format::AutomationEnvelope
        } else {
            Format::Event
        };
    } else {
        read_composite(n, obj, depth);
    }
    if n.format == before && n.format == Format::Unrecognised {
        n.unrecognised = Some("the JSON object has none of the fields of a known Prefect payload".to_owned());
        n.keys = obj.keys().take(50).cloned().collect();
        n.excerpt = Some(excerpt(&Value::Object(obj.clone()).to_string()));
    }
}

/// Objects that are not a bare event: wrappers, firings, notifications,
/// PagerDuty-shaped and flat templates. Several can apply to one body.
fn read_composite(n: &mut Notification, obj: &Map<String, Value>, depth: u8) {
    let mut format = None;
    if let Some(ev) = obj
        .get("event")
        .and_then(Value::as_object)
        .filter(|e| event::is_event(e))
    {
        event::read(n, ev, 0);
        format = Some(Format::Wrapper);
    } else if let Some(ev) = obj
        .get("firing")
        .and_then(|f| f.get("triggering_event"))
        .and_then(Value::as_object)
        .or_else(|| first_event(obj.get("events")))
    {
        event::read(n, ev, 0);
        if let Some(labels) = obj
            .get("firing")
            .and_then(|f| f.get("triggering_labels"))
            .and_then(Value::as_object)
            .filter(|l| !l.is_empty())
        {
            n.labels = labels.clone();
        }
        format = Some(Format::Wrapper);
    }
    if event::read_context(n, obj) && format.is_none() {
        format = Some(Format::Wrapper);
    }
    if flat::read_pagerduty_shaped(n, obj) {
        format = Some(Format::PagerDutyShaped);
    }
    if flat::read(n, obj) && format.is_none() {
        format = Some(Format::Flat);
    }
    if read_notification(n, obj, depth) {
        format = Some(Format::Notification);
    }
    if let Some(f) = format {
        n.format = f;
    }
}

fn first_event(events: Option<&Value>) -> Option<&Map<String, Value>> {
    events?
        .as_array()?
        .iter()
        .rev()
        .find_map(|e| e.as_object().filter(|e| event::is_event(e)))
}

/// A send-notification body: `subject` and `body` strings, where `body` may
/// hold event JSON rendered by `{{ event | tojson }}` (docs/prefect.md §5).
fn read_notification(n: &mut Notification, obj: &Map<String, Value>, depth: u8) -> bool {
    let subject = obj.get("subject").and_then(Value::as_str);
    let body = obj.get("body").and_then(Value::as_str);
    if subject.is_none() && body.is_none() {
        return false;
    }
    if let Some(body) = body {
        let inner = body.trim();
        if depth < MAX_NESTING && inner.starts_with('{') {
            let mut nested = Notification::default();
            read_body(&mut nested, inner.as_bytes(), depth + 1);
            if nested.is_recognised() {
                let subject = subject.map(str::to_owned);
                let size = n.body_bytes;
                *n = nested;
                n.body_bytes = size;
                n.subject = subject.or(n.subject.take());
                return true;
            }
        }
        n.message = Some(body.to_owned());
    }
    n.subject = subject.map(str::to_owned).filter(|s| !s.trim().is_empty());
    true
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn excerpt(text: &str) -> String {
    crate::pagerduty::truncate_chars(text, EXCERPT_CHARS)
}

/// A string field, or a number/bool rendered as text (templates render both).
fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "None")
}

fn owned_text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Number(x)) => Some(x.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        other => text(other).map(str::to_owned),
    }
}

/// Strings of a JSON array (tags, agent ids).
fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| text(Some(x)).map(str::to_owned))
                .take(100)
                .collect()
        })
        .unwrap_or_default()
}

fn push_url(n: &mut Notification, kind: LinkKind, url: &str, text: Option<String>) {
    if crate::pagerduty::is_safe_url(url) && !n.urls.iter().any(|(_, u, _)| u == url) {
        n.urls.push((kind, url.to_owned(), text));
    }
}

/// Sets the resource when none is known yet.
fn set_resource(n: &mut Notification, kind: Kind, id: &str) {
    if n.resource.is_none() && !id.is_empty() {
        n.resource = Some(Resource {
            kind,
            id: id.to_owned(),
        });
    }
}

/// The state type for a state name, for payloads that carry only the name
/// (Prefect 1 payloads, flat templates, `prefect.flow-run.<Name>` event
/// names). Covers Prefect 3's built-in names (docs/prefect.md §3) and Prefect 1's
/// state classes (cloud1/README.md); custom names give `UNKNOWN`.
pub fn state_type_from_name(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "failed" | "timedout" | "triggerfailed" => "FAILED",
        "crashed" => "CRASHED",
        "completed" | "success" | "cached" | "mapped" | "skipped" | "finished" => "COMPLETED",
        "cancelled" => "CANCELLED",
        "cancelling" => "CANCELLING",
        "running" | "retrying" | "looped" => "RUNNING",
        "paused" | "suspended" => "PAUSED",
        "scheduled" | "late" | "awaitingretry" | "awaitingconcurrencyslot" | "queued" | "resume" => {
            "SCHEDULED"
        }
        "pending" | "submitting" | "submitted" | "infrastructurepending" | "notready" => "PENDING",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests;
