use serde_json::json;

use super::*;
use crate::prefect;
use crate::secret::Secret;

const KEY: &str = "R0UTINGKEY0000000000000000000000";

fn action(severity: Option<Severity>) -> Action {
    Action {
        name: "oncall".into(),
        routing_key: Secret::new(KEY),
        severity,
    }
}

fn options() -> Options {
    Options {
        source: "prefect".into(),
        ui_base: url::Url::parse("http://127.0.0.1:4200").ok(),
    }
}

fn failed_event() -> Value {
    let path = format!(
        "{}/fixtures/prefect/captures/failed_event_tojson.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    serde_json::from_str(v[0]["body"].as_str().expect("body")).expect("event")
}

fn with_state(kind: &str, name: &str) -> Value {
    let mut e = failed_event();
    e["event"] = json!(format!("prefect.flow-run.{name}"));
    e["resource"]["prefect.state-type"] = json!(kind);
    e["resource"]["prefect.state-name"] = json!(name);
    e["payload"]["validated_state"] = json!({"type": kind, "name": name});
    e
}

fn run(v: &Value, severity: Option<Severity>) -> Translation {
    let n = prefect::parse(v.to_string().as_bytes(), None);
    let t = translate(n, &action(severity), &options());
    assert!(t.event.check().is_ok(), "{:?}", t.event.check());
    t
}

fn details(t: &Translation) -> &Map<String, Value> {
    t.event
        .payload
        .as_ref()
        .and_then(|p| p.custom_details.as_ref())
        .expect("details")
}

fn severity(t: &Translation) -> Option<Severity> {
    t.event.payload.as_ref().map(|p| p.severity)
}

#[test]
fn severity_follows_the_state_type_first_then_the_name() {
    use Severity::*;
    let cases = [
        ("CRASHED", "Crashed", Critical),
        ("CRASHED", "Exploded", Critical),
        ("FAILED", "Failed", Error),
        ("FAILED", "TimedOut", Error),
        ("SCHEDULED", "Late", Warning),
        ("PENDING", "Pending", Warning),
        ("CANCELLED", "Cancelled", Info),
        ("CANCELLING", "Cancelling", Info),
        ("PAUSED", "Suspended", Info),
        ("WEIRD", "Custom", Warning),
    ];
    for (kind, name, want) in cases {
        let t = run(&with_state(kind, name), None);
        assert!(matches!(t.disposition, Disposition::Trigger(_)), "{kind}/{name}");
        assert_eq!(severity(&t), Some(want), "{kind}/{name}");
    }
}

#[test]
fn recovery_states_resolve_with_the_right_scope() {
    let t = run(&with_state("COMPLETED", "Completed"), None);
    assert_eq!(t.disposition, Disposition::Resolve(ResolveScope::Any));
    assert_eq!(t.event.event_action, EventAction::Resolve);
    assert!(t.event.payload.is_none());
    let t = run(&with_state("RUNNING", "Running"), None);
    assert_eq!(t.disposition, Disposition::Resolve(ResolveScope::LatenessOnly));
    assert!(ResolveScope::LatenessOnly.closes(AlertClass::Lateness));
    assert!(!ResolveScope::LatenessOnly.closes(AlertClass::Failure));
}

#[test]
fn a_fixed_action_severity_overrides_auto_and_templates() {
    let t = run(&with_state("SCHEDULED", "Late"), Some(Severity::Critical));
    assert_eq!(severity(&t), Some(Severity::Critical));
    let mut pd_shaped = json!({"payload": {"summary": "s", "severity": "info"}, "dedup_key": "k"});
    assert_eq!(severity(&run(&pd_shaped, None)), Some(Severity::Info));
    assert_eq!(
        severity(&run(&pd_shaped, Some(Severity::Error))),
        Some(Severity::Error)
    );
    pd_shaped["payload"]["severity"] = json!("high");
    let t = run(&pd_shaped, None);
    let details = details(&t);
    assert!(
        details["invalid_severity"]
            .as_str()
            .is_some_and(|s| s.contains("high"))
    );
}

#[test]
fn a_proactive_automation_never_reads_as_a_recovery() {
    let mut envelope = json!({
        "event": "prefect.automation.triggered", "id": "e1", "occurred": "2026-11-28T08:37:22Z",
        "resource": {"prefect.resource.id": "prefect.automation.a1", "prefect.resource.name": "must finish",
                     "prefect.posture": "Proactive"},
        "payload": {"triggering_event": with_state("RUNNING", "Running")},
        "related": []
    });
    let t = run(&envelope, None);
    assert_eq!(t.disposition, Disposition::Trigger(AlertClass::Lateness));
    envelope["event"] = json!("prefect.automation.resolved");
    assert_eq!(
        run(&envelope, None).disposition,
        Disposition::Resolve(ResolveScope::Any)
    );
}

#[test]
fn dedup_keys_name_the_object_and_stay_within_255() {
    assert_eq!(
        run(&failed_event(), None).dedup_key,
        "prefect/flow-run/39eed61c-5f3c-4e8c-8dbe-05b23d4c268e"
    );
    let mut long = failed_event();
    long["resource"]["prefect.resource.id"] = json!(format!("prefect.flow-run.{}", "x".repeat(300)));
    let key = run(&long, None).dedup_key;
    assert!(key.starts_with("sha256/") && key.len() <= 255, "{key}");
    assert_eq!(key, run(&long, None).dedup_key, "stable");

    let labels = |id: &str| {
        json!({"event": "prefect.automation.triggered", "id": "e", "occurred": "2026-11-28T08:37:22Z",
               "resource": {"prefect.resource.id": "prefect.automation.a1"},
               "payload": {"triggering_labels": {"custom": id}}, "related": []})
    };
    let (a, b) = (
        run(&labels("1"), None).dedup_key,
        run(&labels("2"), None).dedup_key,
    );
    assert!(a.starts_with("prefect/automation/a1/"), "{a}");
    assert_ne!(a, b);
    assert_eq!(a, run(&labels("1"), None).dedup_key);
}

#[test]
fn summaries_are_one_line_within_1024_and_never_empty() {
    let mut e = failed_event();
    e["resource"]["prefect.state-message"] = json!(format!("line one\nline two {}", "é".repeat(5000)));
    let t = run(&e, None);
    let summary = &t.event.payload.as_ref().expect("payload").summary;
    assert_eq!(summary.chars().count(), 1024);
    assert!(summary.ends_with('…') && !summary.contains('\n'));
    assert!(
        summary.starts_with("Flow run lab-fail-flow/hysterical-harrier entered Failed: line one line two")
    );

    let t = run(
        &json!({"payload": {"summary": "   ", "severity": "info"}, "dedup_key": "k"}),
        None,
    );
    assert!(
        !t.event
            .payload
            .as_ref()
            .expect("payload")
            .summary
            .trim()
            .is_empty()
    );
}

#[test]
fn huge_details_are_trimmed_under_512_kb_and_say_so() {
    let mut e = failed_event();
    e["resource"]["prefect.state-message"] = json!("m".repeat(400_000));
    e["payload"]["validated_state"]["message"] = json!("m".repeat(400_000));
    let t = run(&e, None);
    let bytes = serde_json::to_vec(&t.event).expect("json").len();
    assert!(bytes <= pagerduty::MAX_EVENT_BYTES, "{bytes}");
    let details = details(&t);
    assert!(
        details["_truncated"].as_array().is_some_and(|a| !a.is_empty()),
        "{:?}",
        details.get("_truncated")
    );
    assert_eq!(details["flow"]["name"], "lab-fail-flow", "small details survive");
}

#[test]
fn links_use_the_ui_base_and_only_safe_payload_urls() {
    let n = prefect::parse(failed_event().to_string().as_bytes(), None);
    let cloud = Options {
        source: "prefect".into(),
        ui_base: url::Url::parse("https://app.prefect.cloud/account/A/workspace/W").ok(),
    };
    let t = translate(n, &action(None), &cloud);
    let hrefs: Vec<&str> = t.event.links.iter().map(|l| l.href.as_str()).collect();
    assert_eq!(
        hrefs[0],
        "https://app.prefect.cloud/account/A/workspace/W/runs/flow-run/39eed61c-5f3c-4e8c-8dbe-05b23d4c268e"
    );
    assert!(hrefs.contains(&"https://app.prefect.cloud/account/A/workspace/W/work-pools/work-pool/lab-pool"));
    assert_eq!(
        t.event.client_url.as_deref(),
        Some("https://app.prefect.cloud/account/A/workspace/W")
    );

    let wrapper = json!({
        "event": failed_event(),
        "flow_run_ui": "javascript:alert(1)",
        "deployment_ui": "https://user:secret@prefect.example.com/deployments/deployment/x",
        "work_pool_ui": "http://prefect.example.com/work-pools/work-pool/my%20pool",
    });
    let n = prefect::parse(wrapper.to_string().as_bytes(), None);
    let t = translate(n, &action(None), &Options::default());
    let hrefs: Vec<&str> = t.event.links.iter().map(|l| l.href.as_str()).collect();
    assert!(
        !hrefs
            .iter()
            .any(|h| h.contains("javascript") || h.contains("secret")),
        "{hrefs:?}"
    );
    assert!(hrefs.contains(&"http://prefect.example.com/work-pools/work-pool/my%20pool"));
    assert_eq!(
        t.event.client_url.as_deref(),
        Some("http://prefect.example.com"),
        "base from the payload's URL"
    );
}

#[test]
fn links_from_odd_ids_stay_on_the_ui_host_and_within_the_length_limit() {
    let mut e = failed_event();
    // An id from a payload is anything a template rendered.
    e["resource"]["prefect.resource.id"] =
        json!("prefect.flow-run.x@evil.example.com/../..//evil.example.com");
    let hrefs: Vec<String> = run(&e, None).event.links.into_iter().map(|l| l.href).collect();
    assert!(!hrefs.is_empty());
    for href in &hrefs {
        let host = url::Url::parse(href)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        assert_eq!(host.as_deref(), Some("127.0.0.1"), "{href}");
    }
    // A link past 2,048 characters is left out; the others stay.
    e["resource"]["prefect.resource.id"] = json!(format!("prefect.flow-run.{}", "r".repeat(2100)));
    let links = run(&e, None).event.links;
    assert!(
        links
            .iter()
            .all(|l| l.href.len() <= 2048 && !l.href.contains("rrrr"))
    );
    assert!(links.iter().any(|l| l.href.contains("/flows/flow/")));
}

#[test]
fn pool_names_are_url_encoded_in_links() {
    let mut e = json!({"event": "prefect.work-pool.not-ready", "id": "e", "follows": "f",
        "occurred": "2026-11-28T08:41:58Z", "payload": {}, "related": [],
        "resource": {"prefect.resource.id": "prefect.work-pool.p1", "prefect.resource.name": "gpu pool/a"}});
    let t = run(&e, None);
    assert_eq!(
        t.event.links[0].href,
        "http://127.0.0.1:4200/work-pools/work-pool/gpu%20pool%2Fa"
    );
    assert_eq!(severity(&t), Some(Severity::Error));
    // The first status event of a pool (follows: null) is its creation.
    e["follows"] = Value::Null;
    assert_eq!(severity(&run(&e, Some(Severity::Critical))), Some(Severity::Info));
}

#[test]
fn timestamps_accept_the_space_form_prefect_templates_render() {
    let t = run(
        &json!({"payload": {"summary": "s", "timestamp": "2026-11-28 08:36:31.998336+00:00"}, "dedup_key": "k"}),
        None,
    );
    assert_eq!(
        t.event.payload.as_ref().and_then(|p| p.timestamp.as_deref()),
        Some("2026-11-28T08:36:31.998336Z")
    );
}
