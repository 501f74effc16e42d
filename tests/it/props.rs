//! Property tests: for any input, parse + translate never panics, and the
//! event it produces passes PagerDuty's spec and documented limits.

use proptest::prelude::*;
use serde_json::{Map, Value};

use prefect_pagerduty_bridge::actions::Action;
use prefect_pagerduty_bridge::pagerduty::Severity;
use prefect_pagerduty_bridge::secret::Secret;
use prefect_pagerduty_bridge::{prefect, translate};

use crate::support::KEY_A;
use crate::support::spec::Spec;

const KEYS: &[&str] = &[
    "event",
    "resource",
    "related",
    "payload",
    "id",
    "occurred",
    "follows",
    "prefect.resource.id",
    "prefect.resource.name",
    "prefect.resource.role",
    "prefect.state-type",
    "prefect.state-name",
    "prefect.state-message",
    "prefect.posture",
    "validated_state",
    "triggering_event",
    "triggering_labels",
    "flow_run",
    "flow",
    "deployment",
    "work_pool",
    "work_queue",
    "automation",
    "name",
    "state_type",
    "tags",
    "subject",
    "body",
    "firing",
    "events",
    "dedup_key",
    "severity",
    "summary",
    "event_action",
    "links",
    "href",
    "text",
    "flow_run_id",
    "flow_run_name",
    "flow_name",
    "state",
    "kind",
    "agent_config_id",
    "unhealthy_agent_ids",
    "flow_run_ui",
    "work_pool_ui",
    "custom_details",
    "timestamp",
];
const STRINGS: &[&str] = &[
    "prefect.flow-run.Failed",
    "prefect.flow-run.Completed",
    "prefect.work-pool.not-ready",
    "prefect.automation.triggered",
    "prefect.flow-run.11111111-2222-4333-8444-555555555555",
    "prefect.work-pool.p1",
    "prefect.worker.process.w",
    "prefect.tag.x",
    "FAILED",
    "CRASHED",
    "COMPLETED",
    "RUNNING",
    "SCHEDULED",
    "Late",
    "Failed",
    "Proactive",
    "critical",
    "HIGH",
    "resolve",
    "trigger",
    "http://127.0.0.1:4200/runs/flow-run/abc",
    "javascript:alert(1)",
    "https://u:p@x.io/",
    "None",
    "",
    "2026-11-28T08:36:31.998336Z",
    "2026-11-28 08:36:31+00:00",
    "not a date",
    "é\u{0}\u{1b}[0m",
];

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        proptest::sample::select(STRINGS).prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        (1usize..3000).prop_map(|n| Value::from("x".repeat(n))),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn check(body: &[u8], severity: Option<Severity>, spec: &Spec) -> Result<(), TestCaseError> {
    let action = Action {
        name: "prop".into(),
        routing_key: Secret::new(KEY_A),
        severity,
    };
    let options = translate::Options {
        source: "prefect".into(),
        ui_base: url::Url::parse("http://127.0.0.1:4200").ok(),
    };
    let n = prefect::parse(body, None);
    let t = translate::translate(n, &action, &options);
    prop_assert!(t.event.check().is_ok(), "{:?}", t.event.check());
    let wire = serde_json::to_vec(&t.event).expect("encodes");
    let errors = spec.check_enqueue(&wire);
    prop_assert!(errors.is_empty(), "{errors:?}");
    prop_assert!(!t.dedup_key.is_empty() && t.dedup_key.chars().count() <= 255);
    Ok(())
}

fn severities() -> impl Strategy<Value = Option<Severity>> {
    proptest::option::of(proptest::sample::select(Severity::ALL.to_vec()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_give_a_valid_event(body in proptest::collection::vec(any::<u8>(), 0..2048), sev in severities()) {
        check(&body, sev, &Spec::load())?;
    }

    #[test]
    fn any_prefect_shaped_json_gives_a_valid_event(v in value(), sev in severities()) {
        check(v.to_string().as_bytes(), sev, &Spec::load())?;
    }

    #[test]
    fn any_event_wrapped_as_notification_or_envelope_gives_a_valid_event(v in value(), sev in severities()) {
        let as_notification = serde_json::json!({"subject": "s", "body": v.to_string()});
        check(as_notification.to_string().as_bytes(), sev, &Spec::load())?;
        let as_envelope = serde_json::json!({"event": "prefect.automation.triggered", "resource": {"prefect.resource.id": "prefect.automation.a"}, "payload": {"triggering_event": v}});
        check(as_envelope.to_string().as_bytes(), sev, &Spec::load())?;
    }
}
