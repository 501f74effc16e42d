//! Turns a [`Notification`] into the PagerDuty event for one action: whether
//! it triggers or resolves, its severity, dedup key, summary, links and
//! details. Pure: no I/O, no clock, no state (whether a resolve is worth
//! sending depends on open incidents, which the caller tracks).
//!
//! Severity table (`auto`), by state *type* first, then name:
//!
//! | Prefect                                             | severity | urgency |
//! |-----------------------------------------------------|----------|---------|
//! | flow/task run CRASHED                               | critical | high    |
//! | flow/task run FAILED (incl. TimedOut)               | error    | high    |
//! | work pool / queue / deployment not-ready            | error    | high    |
//! | Prefect 1 agent SLA failure; automation fired alone | error    | high    |
//! | unrecognised payload (fail open)                    | error    | high    |
//! | Late, not started (SCHEDULED/PENDING), SLA failures | warning  | low     |
//! | worker stopped; unknown run state                   | warning  | low     |
//! | CANCELLED, CANCELLING, PAUSED; other events         | info     | low     |
//! | work pool not-ready when it was just created        | info     | low     |
//!
//! Recovery: COMPLETED (and Prefect 1 Success) resolves any alert of the run;
//! RUNNING resolves only a lateness alert; `ready` resolves not-ready;
//! `worker.started` resolves `worker.stopped`.

use serde_json::{Map, Value, json};

use crate::actions::Action;
use crate::pagerduty::{self, Event, EventAction, Link, Payload, Severity};
use crate::prefect::{Envelope, Format, Kind, LinkKind, Notification, Ref};

/// What a trigger is about; decides what may resolve it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertClass {
    /// A run failed or crashed.
    Failure,
    /// A run is late, has not started, or missed an SLA.
    Lateness,
    /// A pool, queue, deployment, worker or agent is unhealthy.
    Health,
    /// An automation fired with no object named.
    Automation,
    /// Informational: cancelled, paused, other events.
    Notice,
    /// The payload was not recognised.
    Unrecognised,
}

/// Which open alerts a resolve may close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResolveScope {
    /// Any open alert with the dedup key.
    Any,
    /// Only a lateness alert (a run that started is no longer late, but a
    /// failure of it is not fixed by starting again).
    LatenessOnly,
}

impl ResolveScope {
    /// Whether an open alert of `class` is closed by this resolve.
    pub fn closes(self, class: AlertClass) -> bool {
        match self {
            Self::Any => true,
            Self::LatenessOnly => class == AlertClass::Lateness,
        }
    }
}

/// Trigger, or resolve and what it may close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Open or update an alert of this class.
    Trigger(AlertClass),
    /// Close an open alert, if one within scope is open.
    Resolve(ResolveScope),
    /// Acknowledge an open alert (a template asked for it).
    Acknowledge,
}

/// Translation settings that do not vary per action.
#[derive(Debug, Clone)]
pub struct Options {
    /// `payload.source`.
    pub source: String,
    /// Prefect UI base for links, e.g. `http://127.0.0.1:4200` or
    /// `https://app.prefect.cloud/account/A/workspace/W`.
    pub ui_base: Option<url::Url>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            source: "prefect".to_owned(),
            ui_base: None,
        }
    }
}

/// The event to send and what it means.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The PagerDuty event, within every limit.
    pub event: Event,
    /// Trigger or resolve.
    pub disposition: Disposition,
    /// The dedup key (also on the event).
    pub dedup_key: String,
}

/// Translates one notification for one action. Takes it by value: its
/// strings and labels move into the event's details instead of being
/// copied (allocation was a fifth of the webhook handler's time).
pub fn translate(n: Notification, action: &Action, options: &Options) -> Translation {
    let (disposition, auto_severity) = decide(&n);
    let dedup_key = pagerduty::fit_dedup_key(&dedup_key(&n, &action.name));
    let event = match disposition {
        Disposition::Resolve(_) => Event::resolve(action.routing_key.clone(), dedup_key.clone()),
        Disposition::Acknowledge => {
            let mut e = Event::resolve(action.routing_key.clone(), dedup_key.clone());
            e.event_action = EventAction::Acknowledge;
            e
        }
        Disposition::Trigger(class) => {
            let mut severity = action.severity.or(n.overrides.severity).unwrap_or(auto_severity);
            // docs/prefect.md §3: a new work pool reports not-ready at once, before any
            // worker could exist; that alone must never page at high urgency.
            if is_new_pool_not_ready(&n) {
                severity = Severity::Info;
            }
            let ui_base = ui_base(&n, options);
            // Everything read from the notification first: `details` then
            // takes what is left.
            let summary = match n.overrides.summary.clone() {
                Some(s) => s,
                None => summary(&n, class, &action.name),
            };
            let source = n
                .overrides
                .source
                .clone()
                .unwrap_or_else(|| options.source.clone());
            let timestamp = n.occurred.as_deref().and_then(rfc3339);
            let component = n.overrides.component.clone().or_else(|| component(&n));
            let group = n.overrides.group.clone().or_else(|| group(&n));
            let event_class = n.overrides.class.clone().or_else(|| event_class(&n));
            let links = links(&n, ui_base.as_ref());
            Event {
                routing_key: action.routing_key.clone(),
                event_action: EventAction::Trigger,
                dedup_key: Some(dedup_key.clone()),
                payload: Some(Payload {
                    summary,
                    source,
                    severity,
                    timestamp,
                    component,
                    group,
                    class: event_class,
                    custom_details: Some(details(n, action, class)),
                }),
                client: Some("Prefect".to_owned()),
                client_url: ui_base
                    .as_ref()
                    .map(|u| u.as_str().trim_end_matches('/').to_owned()),
                links,
            }
        }
    };
    let mut event = event;
    event.fit();
    Translation {
        event,
        disposition,
        dedup_key,
    }
}

/// The disposition and the automatic severity for a trigger.
fn decide(n: &Notification) -> (Disposition, Severity) {
    use Disposition::{Resolve, Trigger};
    match n.overrides.event_action {
        Some(EventAction::Resolve) => return (Resolve(ResolveScope::Any), Severity::Info),
        Some(EventAction::Acknowledge) => return (Disposition::Acknowledge, Severity::Info),
        _ => {}
    }
    if n.envelope == Some(Envelope::Resolved) {
        return (Resolve(ResolveScope::Any), Severity::Info);
    }
    if !n.is_recognised() {
        return (Trigger(AlertClass::Unrecognised), Severity::Error);
    }
    if n.agent_sla.is_some() {
        return (Trigger(AlertClass::Health), Severity::Error);
    }
    if n.flow_sla.is_some() {
        return (Trigger(AlertClass::Lateness), Severity::Warning);
    }
    let event = n.event.as_deref().unwrap_or_default();
    let suffix = event.rsplit('.').next().unwrap_or_default();
    let decided = match n.resource.as_ref().map(|r| &r.kind) {
        _ if event.starts_with("prefect.sla.") => (Trigger(AlertClass::Lateness), Severity::Warning),
        Some(Kind::FlowRun | Kind::TaskRun) | None if n.state.is_some() => run_state(n),
        // An automation fired about this run, but the payload says nothing
        // of its state: page, since someone chose to be told.
        Some(Kind::FlowRun | Kind::TaskRun) => (Trigger(AlertClass::Automation), Severity::Error),
        Some(Kind::WorkPool | Kind::WorkQueue | Kind::Deployment) => match suffix {
            "not-ready" => (Trigger(AlertClass::Health), Severity::Error),
            "ready" => (Resolve(ResolveScope::Any), Severity::Info),
            _ => (Trigger(AlertClass::Notice), Severity::Info),
        },
        Some(Kind::Worker) => match suffix {
            "stopped" => (Trigger(AlertClass::Health), Severity::Warning),
            "started" => (Resolve(ResolveScope::Any), Severity::Info),
            _ => (Trigger(AlertClass::Notice), Severity::Info),
        },
        Some(Kind::Automation) => (Trigger(AlertClass::Automation), Severity::Error),
        None if n.envelope.is_some() || n.automation.is_some() || n.format == Format::Notification => {
            (Trigger(AlertClass::Automation), Severity::Error)
        }
        _ => (Trigger(AlertClass::Notice), Severity::Info),
    };
    // A proactive automation fires because an expected event did NOT come;
    // the event it carries (often `Scheduled` or `Running`) is the last one
    // seen, so it must not read as a recovery (docs/prefect.md §7).
    if n.posture.as_deref() == Some("Proactive") && matches!(decided.0, Resolve(_)) {
        return (Trigger(AlertClass::Lateness), Severity::Warning);
    }
    decided
}

fn run_state(n: &Notification) -> (Disposition, Severity) {
    use Disposition::{Resolve, Trigger};
    let kind = n
        .state
        .as_ref()
        .and_then(|s| s.kind.as_deref())
        .unwrap_or("UNKNOWN");
    match kind {
        "CRASHED" => (Trigger(AlertClass::Failure), Severity::Critical),
        "FAILED" => (Trigger(AlertClass::Failure), Severity::Error),
        "COMPLETED" => (Resolve(ResolveScope::Any), Severity::Info),
        "RUNNING" => (Resolve(ResolveScope::LatenessOnly), Severity::Info),
        "SCHEDULED" | "PENDING" => (Trigger(AlertClass::Lateness), Severity::Warning),
        "CANCELLED" | "CANCELLING" | "PAUSED" => (Trigger(AlertClass::Notice), Severity::Info),
        _ => (Trigger(AlertClass::Notice), Severity::Warning),
    }
}

/// A work pool's `not-ready` that follows no earlier status event: the one
/// Prefect emits when the pool is created (docs/prefect.md §3).
fn is_new_pool_not_ready(n: &Notification) -> bool {
    let is_pool_not_ready = n.resource.as_ref().is_some_and(|r| r.kind == Kind::WorkPool)
        && n.event.as_deref().is_some_and(|e| e.ends_with(".not-ready"));
    if !is_pool_not_ready {
        return false;
    }
    let first_status = n.has_follows && n.follows.is_none();
    let just_created = match (n.work_pool_created.as_deref(), n.occurred.as_deref()) {
        (Some(created), Some(occurred)) => match (parse_time(created), parse_time(occurred)) {
            (Some(c), Some(o)) => (o.as_second() - c.as_second()).abs() <= 120,
            _ => false,
        },
        _ => false,
    };
    first_status || just_created
}

/// The stable dedup key of the object the notification is about.
fn dedup_key(n: &Notification, action: &str) -> String {
    if let Some(key) = &n.overrides.dedup_key {
        return key.clone();
    }
    if let Some(r) = &n.resource
        && r.kind != Kind::Automation
    {
        return format!("prefect/{}/{}", r.kind.segment(), r.id);
    }
    let known = [
        ("flow-run", &n.flow_run),
        ("deployment", &n.deployment),
        ("work-queue", &n.work_queue),
        ("work-pool", &n.work_pool),
    ];
    for (kind, slot) in known {
        if let Some(id) = slot.as_ref().and_then(|r| r.id.as_deref()) {
            return format!("prefect/{kind}/{id}");
        }
    }
    if let Some(id) = n.automation.as_ref().and_then(|a| a.id.as_deref()) {
        let labels = Value::Object(n.labels.clone()).to_string();
        let digest = crate::digest::sha256_hex(labels.as_bytes());
        return format!("prefect/automation/{id}/{}", &digest[..16]);
    }
    if let Some(id) = &n.event_id {
        return format!("prefect/event/{id}");
    }
    let digest = n.body_digest.as_deref().unwrap_or("none");
    let what = if n.is_recognised() {
        "payload"
    } else {
        "unrecognised"
    };
    format!("prefect/{what}/{action}/{digest}")
}

fn ref_label(r: &Option<Ref>) -> Option<&str> {
    r.as_ref().and_then(Ref::label)
}

fn run_label(n: &Notification) -> String {
    let is_task = n.resource.as_ref().is_some_and(|r| r.kind == Kind::TaskRun);
    let (noun, run) = if is_task {
        ("Task run", &n.task_run)
    } else {
        ("Flow run", &n.flow_run)
    };
    match (ref_label(&n.flow), ref_label(run)) {
        (Some(flow), Some(run)) if !is_task => format!("{noun} {flow}/{run}"),
        (_, Some(run)) => format!("{noun} {run}"),
        (Some(flow), None) => format!("A run of flow {flow}"),
        (None, None) => noun.to_owned(),
    }
}

fn summary(n: &Notification, class: AlertClass, action: &str) -> String {
    if class == AlertClass::Unrecognised {
        let reason = n.unrecognised.as_deref().unwrap_or("unknown shape");
        return format!(
            "Prefect alert on action {action}: payload not recognised ({reason}). \
             Set the automation's webhook payload to {{{{ event | tojson }}}} (see the bridge README)"
        );
    }
    if let Some(a) = &n.agent_sla {
        return format!(
            "Prefect agents of config {} are unhealthy: {} unhealthy, minimum healthy is {}",
            a.config_id,
            a.unhealthy.len(),
            a.min_healthy.as_deref().unwrap_or("?")
        );
    }
    let run = run_label(n);
    if let Some(sla) = &n.flow_sla {
        let what = match sla.kind.as_str() {
            "SCHEDULED_NOT_STARTED" => "did not start",
            "STARTED_NOT_FINISHED" => "did not finish",
            other => other,
        };
        let after = sla
            .duration_seconds
            .as_deref()
            .map(|s| format!(" within {s} s"))
            .unwrap_or_default();
        return format!("{run} {what}{after} (SLA {})", sla.kind);
    }
    if n.format == Format::Notification
        && n.state.is_none()
        && let Some(text) = n.subject.as_deref().or(n.message.as_deref())
    {
        return text.to_owned();
    }
    let state = n.state.as_ref();
    let state_name = state
        .and_then(|s| s.name.as_deref().or(s.kind.as_deref()))
        .unwrap_or("an unknown state");
    let message = state
        .and_then(|s| s.message.as_deref())
        .filter(|m| !m.trim().is_empty());
    let with_message = |s: String| match message {
        Some(m) => format!("{s}: {m}"),
        None => s,
    };
    let event = n.event.as_deref().unwrap_or("an event");
    let suffix = event.rsplit('.').next().unwrap_or(event);
    let automation = ref_label(&n.automation);
    match n.resource.as_ref().map(|r| &r.kind) {
        _ if event.starts_with("prefect.sla.") => format!("{run} violated an SLA"),
        Some(Kind::FlowRun | Kind::TaskRun) if n.state.is_none() => {
            let auto = automation.map(|a| format!(" {a}")).unwrap_or_default();
            format!("Prefect automation{auto} fired: {run} (the payload names no state)")
        }
        Some(Kind::FlowRun | Kind::TaskRun) | None if n.state.is_some() => {
            if n.posture.as_deref() == Some("Proactive") {
                let auto = automation
                    .map(|a| format!(" (automation {a})"))
                    .unwrap_or_default();
                return format!("{run} did not reach the expected state in time: still {state_name}{auto}");
            }
            match class {
                AlertClass::Lateness if state_name == "Late" => with_message(format!("{run} is Late")),
                AlertClass::Lateness => format!("{run} has not started: still {state_name}"),
                _ => with_message(format!("{run} entered {state_name}")),
            }
        }
        Some(Kind::WorkPool) => {
            let pool = ref_label(&n.work_pool).unwrap_or("(unnamed)");
            match suffix {
                "not-ready" if is_new_pool_not_ready(n) => format!(
                    "Work pool {pool} is not ready: no worker has polled it yet (Prefect reports this when a pool is created)"
                ),
                "not-ready" => format!("Work pool {pool} is not ready: no worker has polled it recently"),
                _ => format!("Work pool {pool}: {event}"),
            }
        }
        Some(Kind::WorkQueue) => {
            let queue = ref_label(&n.work_queue).unwrap_or("(unnamed)");
            let pool = ref_label(&n.work_pool)
                .map(|p| format!(" of work pool {p}"))
                .unwrap_or_default();
            match suffix {
                "not-ready" => {
                    format!("Work queue {queue}{pool} is not ready: it has not been polled recently")
                }
                _ => format!("Work queue {queue}{pool}: {event}"),
            }
        }
        Some(Kind::Deployment) => {
            let name = match (ref_label(&n.flow), ref_label(&n.deployment)) {
                (Some(f), Some(d)) => format!("{f}/{d}"),
                (_, Some(d)) => d.to_owned(),
                _ => "(unnamed)".to_owned(),
            };
            match suffix {
                "not-ready" => format!("Deployment {name} is not ready: no worker has polled it recently"),
                _ => format!("Deployment {name}: {event}"),
            }
        }
        Some(Kind::Worker) => {
            let worker = ref_label(&n.worker).unwrap_or("(unnamed)");
            let pool = ref_label(&n.work_pool)
                .map(|p| format!(" of work pool {p}"))
                .unwrap_or_default();
            match suffix {
                "stopped" => format!("Worker {worker}{pool} stopped"),
                _ => format!("Worker {worker}{pool}: {event}"),
            }
        }
        _ if n.envelope.is_some() || class == AlertClass::Automation => {
            format!("Prefect automation {} fired", automation.unwrap_or("(unnamed)"))
        }
        Some(kind) => {
            let id = n.resource.as_ref().map(|r| r.id.as_str()).unwrap_or_default();
            format!("Prefect {event} on {} {id}", kind.segment())
        }
        None => n
            .subject
            .clone()
            .or_else(|| n.message.clone())
            .unwrap_or_else(|| format!("Prefect {event}")),
    }
}

fn component(n: &Notification) -> Option<String> {
    let r = match n.resource.as_ref().map(|r| &r.kind) {
        Some(Kind::WorkPool) => &n.work_pool,
        Some(Kind::WorkQueue) => &n.work_queue,
        Some(Kind::Worker) => &n.worker,
        Some(Kind::Deployment) => &n.deployment,
        _ if n.flow.is_some() => &n.flow,
        _ => &n.automation,
    };
    ref_label(r).map(str::to_owned)
}

fn group(n: &Notification) -> Option<String> {
    match n.resource.as_ref().map(|r| &r.kind) {
        Some(Kind::WorkPool) => None,
        _ => ref_label(&n.deployment)
            .or(ref_label(&n.work_pool))
            .map(str::to_owned),
    }
    .or_else(|| n.tenant.clone())
}

fn event_class(n: &Notification) -> Option<String> {
    if n.format == Format::Cloud1 {
        return Some(match (&n.agent_sla, &n.flow_sla) {
            (Some(_), _) => "prefect1.agent-sla-failure".to_owned(),
            (_, Some(_)) => "prefect1.flow-sla-failure".to_owned(),
            _ => "prefect1.flow-run-state-change".to_owned(),
        });
    }
    n.event.clone()
}

/// Prefect writes `occurred` as RFC 3339, or with a space for the `T` when a
/// template renders `{{ event.occurred }}` (docs/prefect.md §7).
fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    let s = s.trim();
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t);
    }
    if s.len() > 10 && s.as_bytes()[10] == b' ' {
        let fixed = format!("{}T{}", &s[..10], &s[11..]);
        return fixed.parse().ok();
    }
    None
}

fn rfc3339(s: &str) -> Option<String> {
    parse_time(s).map(|t| t.to_string())
}

fn ui_base(n: &Notification, options: &Options) -> Option<url::Url> {
    if n.format != Format::Cloud1
        && let Some(base) = &options.ui_base
    {
        return Some(base.clone());
    }
    // Without a configured base, take it from a URL the payload carries.
    const MARKERS: [&str; 9] = [
        "/runs/flow-run/",
        "/flows/flow/",
        "/deployments/deployment/",
        "/work-pools/work-pool/",
        "/work-queues/work-queue/",
        "/automations/automation/",
        "/events/event/",
        "/flow-run/",
        "/flow/",
    ];
    n.urls.iter().find_map(|(_, u, _)| {
        MARKERS
            .iter()
            .find_map(|m| u.find(m).and_then(|i| url::Url::parse(&u[..i]).ok()))
    })
}

/// A link under the Prefect UI base. The base is a web URL (checked at
/// start-up, or cut from a payload URL that passed the same check), and a
/// path after it cannot change its scheme, host or user, so only the length
/// is left to check: parsing every link here and again in `Event::fit`
/// (which checks each one in full) was a fifth of a linked trigger's cost.
fn join(base: &url::Url, path: &str) -> Option<String> {
    let href = format!("{}/{path}", base.as_str().trim_end_matches('/'));
    (pagerduty::is_web_url(base) && href.len() <= pagerduty::MAX_LINK_CHARS).then_some(href)
}

fn links(n: &Notification, ui_base: Option<&url::Url>) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    fn add(out: &mut Vec<Link>, href: Option<String>, text: String) {
        if let Some(href) = href
            && !out.iter().any(|l| l.href == href)
        {
            out.push(Link {
                href,
                text: Some(text),
            });
        }
    }
    let mut push = |href: Option<String>, text: String| add(&mut out, href, text);
    let id = |r: &Option<Ref>| r.as_ref().and_then(|r| r.id.clone());
    let name_or = |r: &Option<Ref>, noun: &str| {
        format!("{noun} {}", ref_label(r).unwrap_or_default())
            .trim()
            .to_owned()
    };
    if let (Some(base), true) = (ui_base, n.format != Format::Cloud1) {
        let enc = |s: &str| {
            url::form_urlencoded::byte_serialize(s.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        push(
            id(&n.flow_run).and_then(|i| join(base, &format!("runs/flow-run/{i}"))),
            name_or(&n.flow_run, "Flow run"),
        );
        push(
            id(&n.task_run).and_then(|i| join(base, &format!("runs/task-run/{i}"))),
            name_or(&n.task_run, "Task run"),
        );
        push(
            id(&n.flow).and_then(|i| join(base, &format!("flows/flow/{i}"))),
            name_or(&n.flow, "Flow"),
        );
        push(
            id(&n.deployment).and_then(|i| join(base, &format!("deployments/deployment/{i}"))),
            name_or(&n.deployment, "Deployment"),
        );
        // Work pool pages are addressed by name, not id (docs/prefect.md §4).
        push(
            n.work_pool
                .as_ref()
                .and_then(|p| p.name.as_deref())
                .and_then(|p| join(base, &format!("work-pools/work-pool/{}", enc(p)))),
            name_or(&n.work_pool, "Work pool"),
        );
        push(
            id(&n.work_queue).and_then(|i| join(base, &format!("work-queues/work-queue/{i}"))),
            name_or(&n.work_queue, "Work queue"),
        );
        push(
            id(&n.automation).and_then(|i| join(base, &format!("automations/automation/{i}"))),
            name_or(&n.automation, "Automation"),
        );
        if let (Some(event_id), Some(day)) = (&n.event_id, n.occurred.as_deref().and_then(rfc3339)) {
            let text = format!("Prefect event {}", n.event.as_deref().unwrap_or_default())
                .trim()
                .to_owned();
            push(
                join(base, &format!("events/event/{}/{event_id}", &day[..10])),
                text,
            );
        }
    }
    for (kind, href, hint) in &n.urls {
        let text = match kind {
            LinkKind::FlowRun => name_or(&n.flow_run, "Flow run"),
            LinkKind::Flow => name_or(&n.flow, "Flow"),
            LinkKind::Deployment => name_or(&n.deployment, "Deployment"),
            LinkKind::WorkPool => name_or(&n.work_pool, "Work pool"),
            LinkKind::WorkQueue => name_or(&n.work_queue, "Work queue"),
            LinkKind::Worker => name_or(&n.worker, "Worker"),
            LinkKind::Automation => name_or(&n.automation, "Automation"),
            LinkKind::Event => "Prefect event".to_owned(),
            LinkKind::Other => hint.clone().unwrap_or_else(|| "Prefect".to_owned()),
        };
        let text = match (out.iter().any(|l| l.text.as_deref() == Some(&text)), hint) {
            (true, Some(h)) => h.clone(),
            _ => text,
        };
        add(&mut out, Some(href.clone()), text);
    }
    out
}

fn details(n: Notification, action: &Action, class: AlertClass) -> Map<String, Value> {
    let mut d = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            d.insert(k.to_owned(), v);
        }
    };
    let obj = |r: Option<Ref>| match r {
        Some(r) => {
            let mut m = Map::new();
            if let Some(id) = r.id {
                m.insert("id".into(), id.into());
            }
            if let Some(name) = r.name {
                m.insert("name".into(), name.into());
            }
            Value::Object(m)
        }
        None => Value::Null,
    };
    put("action", action.name.clone().into());
    put("alert_class", serde_json::to_value(class).unwrap_or(Value::Null));
    put("payload_format", n.format.as_str().into());
    put("prefect_event", n.event.into());
    put("prefect_event_id", n.event_id.into());
    put("occurred", n.occurred.into());
    if let Some(s) = n.state {
        put(
            "state",
            json!({"type": s.kind, "name": s.name, "message": s.message}),
        );
    }
    put("flow", obj(n.flow));
    put("flow_run", obj(n.flow_run));
    put("task_run", obj(n.task_run));
    put("deployment", obj(n.deployment));
    let mut pool = obj(n.work_pool);
    if let (Some(m), Some(t)) = (pool.as_object_mut(), n.work_pool_type) {
        m.insert("type".into(), t.into());
    }
    put("work_pool", pool);
    put("work_queue", obj(n.work_queue));
    put("worker", obj(n.worker));
    if !n.tags.is_empty() {
        put("tags", n.tags.into());
    }
    put("run_count", n.run_count.into());
    if n.automation.is_some() || n.envelope.is_some() {
        let mut a = obj(n.automation);
        if let Some(m) = a.as_object_mut() {
            if let Some(p) = n.posture {
                m.insert("posture".into(), p.into());
            }
            if let Some(e) = n.envelope_event_id {
                m.insert("triggered_event_id".into(), e.into());
            }
        }
        put("automation", a);
    }
    if !n.labels.is_empty() {
        put("labels", Value::Object(n.labels));
    }
    put("parameters", n.parameters.unwrap_or(Value::Null));
    if let Some(s) = n.flow_sla {
        put(
            "flow_sla",
            json!({"kind": s.kind, "duration_seconds": s.duration_seconds, "config_id": s.config_id}),
        );
    }
    if let Some(a) = n.agent_sla {
        put(
            "agent_sla",
            json!({"agent_config_id": a.config_id, "min_healthy": a.min_healthy,
                   "healthy_agent_ids": a.healthy, "unhealthy_agent_ids": a.unhealthy}),
        );
    }
    put("tenant", n.tenant.into());
    put("subject", n.subject.into());
    put("message", n.message.into());
    if let Some(bad) = &n.overrides.invalid_severity {
        put(
            "invalid_severity",
            format!("{bad:?} is not a PagerDuty severity; used the action's or Prefect's").into(),
        );
    }
    if let Some(reason) = n.unrecognised {
        put(
            "unrecognised",
            json!({
                "reason": reason,
                "body_bytes": n.body_bytes,
                "excerpt": n.excerpt,
                "keys": n.keys,
                "help": "Set the automation's call-webhook payload to {{ event | tojson }} \
                         (or the wrapper template in the README) so the bridge can name the \
                         flow run, state and links."
            }),
        );
    }
    if let Some(extra) = n.overrides.details {
        d.extend(extra);
    }
    d
}

#[cfg(test)]
mod tests;
