use super::*;
use proptest::prelude::*;

fn capture(name: &str) -> Vec<Vec<u8>> {
    let path = format!(
        "{}/fixtures/prefect/captures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    v.as_array()
        .expect("requests")
        .iter()
        .map(|r| r["body"].as_str().expect("body").as_bytes().to_vec())
        .collect()
}

fn first(name: &str) -> Notification {
    parse(&capture(name)[0], None)
}

fn cloud1(name: &str) -> Notification {
    let path = format!(
        "{}/fixtures/prefect/cloud1/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    parse(
        v["body"].to_string().as_bytes(),
        v["headers"]["X-PREFECT-EVENT-ID"].as_str(),
    )
}

#[test]
fn every_capture_parses_and_only_the_hopeless_ones_are_unrecognised() {
    let dir = format!("{}/fixtures/prefect/captures", env!("CARGO_MANIFEST_DIR"));
    let mut unrecognised = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if name.ends_with(".expected.json") {
            continue;
        }
        for body in capture(name.trim_end_matches(".json")) {
            if !parse(&body, None).is_recognised() {
                unrecognised.push(name.clone());
            }
        }
    }
    unrecognised.sort();
    unrecognised.dedup();
    // Empty default bodies, and the Python repr of API objects (no event in it).
    assert_eq!(
        unrecognised,
        [
            "completed_default.json",
            "crashed_default.json",
            "failed_default.json",
            "failed_objects_str.json"
        ]
    );
}

#[test]
fn a_prefect_event_gives_its_run_state_and_related_objects() {
    let n = first("failed_event_tojson");
    assert_eq!(n.format, Format::Event);
    assert_eq!(n.event.as_deref(), Some("prefect.flow-run.Failed"));
    assert_eq!(
        n.event_id.as_deref(),
        Some("01a2214c-827e-7f4d-8af1-2c04918bd893")
    );
    assert_eq!(
        n.resource,
        Some(Resource {
            kind: Kind::FlowRun,
            id: "39eed61c-5f3c-4e8c-8dbe-05b23d4c268e".into()
        })
    );
    let state = n.state.as_ref().expect("state");
    assert_eq!(state.kind.as_deref(), Some("FAILED"));
    assert_eq!(state.name.as_deref(), Some("Failed"));
    assert!(
        state
            .message
            .as_deref()
            .is_some_and(|m| m.contains("boom from lab"))
    );
    assert_eq!(
        n.flow.as_ref().and_then(|f| f.name.as_deref()),
        Some("lab-fail-flow")
    );
    assert_eq!(
        n.deployment.as_ref().and_then(|f| f.name.as_deref()),
        Some("lab-fail")
    );
    assert_eq!(
        n.work_pool.as_ref().and_then(|f| f.name.as_deref()),
        Some("lab-pool")
    );
    assert_eq!(n.work_pool_type.as_deref(), Some("process"));
    assert_eq!(
        n.work_queue.as_ref().and_then(|f| f.name.as_deref()),
        Some("default")
    );
    assert_eq!(n.tags, ["lab", "lab-run", "pagerduty"]);
    assert_eq!(n.run_count.as_deref(), Some("1"));
}

#[test]
fn model_dump_json_and_the_python_repr_read_like_tojson() {
    let reference = first("failed_event_tojson");
    for other in [first("failed_event_model_dump_json"), first("failed_event_str")] {
        assert_eq!(other.resource, reference.resource);
        assert_eq!(other.state, reference.state);
        assert_eq!(other.flow, reference.flow);
        assert_eq!(other.deployment, reference.deployment);
        assert_eq!(other.event_id, reference.event_id);
        assert_eq!(other.tags.len(), 3);
    }
    assert_eq!(first("failed_event_str").format, Format::PythonRepr);
    assert_eq!(
        first("failed_event_str").occurred.as_deref(),
        Some("2026-11-28T08:36:31.998336Z")
    );
}

#[test]
fn an_automation_envelope_is_read_through_to_its_triggering_event() {
    let n = first("proactive_on_trigger");
    assert_eq!(n.format, Format::AutomationEnvelope);
    assert_eq!(n.envelope, Some(Envelope::Triggered));
    assert_eq!(n.posture.as_deref(), Some("Proactive"));
    assert_eq!(
        n.automation.as_ref().and_then(|a| a.name.as_deref()),
        Some("lab proactive not running in 30s")
    );
    assert_eq!(n.resource.as_ref().map(|r| r.kind.clone()), Some(Kind::FlowRun));
    assert_eq!(n.event.as_deref(), Some("prefect.flow-run.Scheduled"));
    assert_eq!(
        n.envelope_event_id.as_deref(),
        Some("01a2214d-46d7-756f-a489-0f12069acbf7")
    );
    assert_eq!(
        n.labels["prefect.resource.id"],
        "prefect.flow-run.7510093c-29d0-41a0-8fb4-c7a2b1a714d8"
    );
}

#[test]
fn an_envelope_without_a_triggering_event_uses_its_labels() {
    let body = serde_json::json!({
        "event": "prefect.automation.triggered", "id": "e1", "occurred": "2026-11-28T08:37:22Z",
        "resource": {"prefect.resource.id": "prefect.automation.a1", "prefect.resource.name": "quiet pool"},
        "payload": {"triggering_labels": {"prefect.resource.id": "prefect.work-pool.p1"}},
        "related": []
    });
    let n = parse(body.to_string().as_bytes(), None);
    assert_eq!(
        n.resource,
        Some(Resource {
            kind: Kind::WorkPool,
            id: "p1".into()
        })
    );
    assert_eq!(n.automation.as_ref().and_then(|a| a.id.as_deref()), Some("a1"));
}

#[test]
fn wrappers_notifications_and_flat_templates() {
    let n = first("work_pool_not_ready");
    assert_eq!(n.format, Format::Wrapper);
    assert_eq!(n.resource.as_ref().map(|r| r.kind.clone()), Some(Kind::WorkPool));
    assert!(
        n.urls
            .iter()
            .any(|(k, u, _)| *k == LinkKind::WorkPool && u.ends_with("/work-pool/lab-pool"))
    );
    assert!(n.work_pool_created.is_some());

    let n = first("notify_event_json_200");
    assert_eq!(n.format, Format::Notification);
    assert_eq!(
        n.subject.as_deref(),
        Some("prefect.flow-run.Failed predictable-bee")
    );
    assert_eq!(n.state.as_ref().and_then(|s| s.kind.as_deref()), Some("FAILED"));

    let n = first("failed_misc");
    assert_eq!(n.format, Format::Flat);
    assert_eq!(
        n.parameters,
        Some(serde_json::json!({"reason": "misc template run"}))
    );
    assert_eq!(
        n.deployment.as_ref().and_then(|d| d.name.as_deref()),
        Some("lab-fail")
    );

    let n = first("failed_firing");
    assert_eq!(n.state.as_ref().and_then(|s| s.kind.as_deref()), Some("FAILED"));

    let n = first("failed_ui_urls");
    assert_eq!(
        n.flow_run.as_ref().and_then(|r| r.id.as_deref()),
        Some("39eed61c-5f3c-4e8c-8dbe-05b23d4c268e")
    );
    assert_eq!(
        n.work_pool.as_ref().and_then(|r| r.name.as_deref()),
        Some("lab-pool")
    );

    let n = first("pagerduty_template");
    assert_eq!(n.format, Format::PagerDutyShaped);
    assert_eq!(n.overrides.severity, Some(Severity::Error));
    assert_eq!(
        n.overrides.dedup_key.as_deref(),
        Some("prefect.flow-run.39eed61c-5f3c-4e8c-8dbe-05b23d4c268e")
    );
    assert!(
        n.urls.iter().all(|(_, u, _)| u != "None"),
        "the template's `None` link is dropped"
    );
}

#[test]
fn prefect_1_payloads_are_recognised_by_their_keys() {
    let n = cloud1("flow_run_state_failed");
    assert_eq!(n.format, Format::Cloud1);
    assert_eq!(n.state.as_ref().and_then(|s| s.kind.as_deref()), Some("FAILED"));
    assert_eq!(
        n.event_id.as_deref(),
        Some("e1a2b3c4-0001-4000-8000-000000000001")
    );
    assert_eq!(
        cloud1("flow_run_state_success").state.and_then(|s| s.kind),
        Some("COMPLETED".into())
    );
    let sla = cloud1("flow_sla_scheduled_not_started").flow_sla.expect("sla");
    assert_eq!(sla.kind, "SCHEDULED_NOT_STARTED");
    assert_eq!(sla.duration_seconds.as_deref(), Some("900"));
    let agents = cloud1("agent_sla_failure").agent_sla.expect("agent sla");
    assert_eq!(agents.unhealthy.len(), 2);
    assert_eq!(agents.min_healthy.as_deref(), Some("1"));

    // The event id may come only from the header Prefect 1 sends by default.
    let body = br#"{"flow_run_id":"r1","state":"Failed","flow_name":"f","flow_run_name":"n"}"#;
    assert_eq!(parse(body, Some("hdr-id")).event_id.as_deref(), Some("hdr-id"));
    // `event_name` is not needed to recognise one.
    assert_eq!(parse(body, None).format, Format::Cloud1);
}

#[test]
fn hostile_bodies_are_unrecognised_not_fatal() {
    let deep = "[".repeat(100_000);
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        b"   \n\t".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        deep.into_bytes(),
        b"null".to_vec(),
        b"123e999999".to_vec(),
        b"{\"event\": 5, \"resource\": []}".to_vec(),
        b"\"\\\"nested\\\"\"".to_vec(),
        b"occurred=DateTime(2026, 1 event='x' resource=Resource(root={'a': ".to_vec(),
    ];
    for body in cases {
        let n = parse(&body, None);
        assert!(!n.is_recognised(), "{:?}", String::from_utf8_lossy(&body));
        assert!(n.unrecognised.is_some());
        assert!(
            n.excerpt
                .as_ref()
                .is_none_or(|e| e.chars().count() <= EXCERPT_CHARS)
        );
    }
}

#[test]
fn a_json_string_holding_an_event_is_read() {
    let inner = String::from_utf8(capture("failed_event_tojson").remove(0)).expect("utf-8");
    let wrapped = serde_json::to_vec(&Value::String(inner)).expect("json");
    assert_eq!(
        parse(&wrapped, None).state.and_then(|s| s.kind),
        Some("FAILED".into())
    );
}

#[test]
fn state_names_map_to_types() {
    for (name, kind) in [
        ("Failed", "FAILED"),
        ("TimedOut", "FAILED"),
        ("Crashed", "CRASHED"),
        ("Late", "SCHEDULED"),
        ("AwaitingRetry", "SCHEDULED"),
        ("Completed", "COMPLETED"),
        ("Success", "COMPLETED"),
        ("Running", "RUNNING"),
        ("Cancelled", "CANCELLED"),
        ("Paused", "PAUSED"),
        ("Pending", "PENDING"),
        ("MyCustomName", "UNKNOWN"),
    ] {
        assert_eq!(state_type_from_name(name), kind, "{name}");
    }
}

#[test]
fn resource_ids_split_into_kind_and_id() {
    assert_eq!(
        split_resource_id("prefect.flow-run.abc"),
        Some((Kind::FlowRun, "abc"))
    );
    assert_eq!(
        split_resource_id("prefect.worker.process.lab-worker"),
        Some((Kind::Worker, "process.lab-worker"))
    );
    assert_eq!(
        split_resource_id("prefect.tag.lab"),
        Some((Kind::Other("tag".into()), "lab"))
    );
    assert_eq!(split_resource_id("prefect.flow-run."), None);
    assert_eq!(split_resource_id("other.flow-run.x"), None);
}

thread_local! {
    /// Set to read bodies through the JSON tree only, as before the sparse
    /// reader: what the two must agree on.
    pub(super) static TREE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn through_tree(body: &[u8]) -> Notification {
    TREE_ONLY.with(|t| t.set(true));
    let n = parse(body, None);
    TREE_ONLY.with(|t| t.set(false));
    n
}

/// Every body under `fixtures/` (captures, Prefect 1, examples).
fn every_fixture_body() -> Vec<Vec<u8>> {
    let root = format!("{}/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut bodies = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&std::fs::read_to_string(&path).unwrap_or_default())
            else {
                continue;
            };
            let mut found = |b: &Value| match b {
                Value::String(s) => bodies.push(s.as_bytes().to_vec()),
                Value::Object(_) => bodies.push(b.to_string().into_bytes()),
                _ => {}
            };
            match &v {
                Value::Array(requests) => requests.iter().filter_map(|r| r.get("body")).for_each(&mut found),
                Value::Object(o) if o.contains_key("body") => found(&v["body"]),
                Value::Object(o) if o.contains_key("event") => found(&v),
                _ => {}
            }
        }
    }
    bodies
}

#[test]
fn the_sparse_reader_agrees_with_the_tree_on_every_fixture() {
    let bodies = every_fixture_body();
    assert!(bodies.len() > 40, "only {} fixture bodies found", bodies.len());
    let mut sparse_read = 0;
    for body in &bodies {
        let fast = parse(body, None);
        assert_eq!(fast, through_tree(body), "{}", String::from_utf8_lossy(body));
        let text = String::from_utf8_lossy(body);
        if text.trim_start().starts_with('{') {
            let mut n = Notification::default();
            sparse_read += usize::from(sparse::read(&mut n, text.trim(), 0));
        }
    }
    // The plain events among them did go the sparse way.
    assert!(sparse_read >= 10, "only {sparse_read} bodies were read sparsely");
}

#[test]
fn the_sparse_reader_passes_on_what_it_is_not_sure_of() {
    for body in [
        r#"{"event": "prefect.automation.triggered", "resource": {"prefect.resource.id": "prefect.automation.a"}}"#,
        r#"{"event": "prefect.flow-run.Failed", "resource": "prefect.flow-run.x"}"#,
        r#"{"event": 7, "resource": {}}"#,
        r#"{"event": "x", "resource": {}, "agent_config_id": "a", "sla_min_healthy": 1}"#,
        r#"{"event": "prefect.flow-run.Failed", "resource": {}, "payload": {"x": NaN}}"#,
        r#"["event", {"prefect.resource.id": "prefect.flow-run.x"}]"#,
    ] {
        let mut n = Notification::default();
        assert!(!sparse::read(&mut n, body, 0), "{body}");
        assert_eq!(n, Notification::default());
        assert_eq!(
            parse(body.as_bytes(), None),
            through_tree(body.as_bytes()),
            "{body}"
        );
    }
}

/// Pieces of event bodies, including the awkward ones: repeated members,
/// escaped names, values of the wrong type, `None`, blanks, odd shapes.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""prefect.flow-run.6a1d4f0e-0000-4000-8000-000000000001""#.to_owned()),
        Just(r#""prefect.flow.c1""#.to_owned()),
        Just(r#""prefect.deployment.d1""#.to_owned()),
        Just(r#""prefect.work-pool.p1""#.to_owned()),
        Just(r#""prefect.work-queue.q1""#.to_owned()),
        Just(r#""prefect.worker.process.w1""#.to_owned()),
        Just(r#""prefect.tag.lab""#.to_owned()),
        Just(r#""prefect.automation.a1""#.to_owned()),
        Just(r#""prefect.task-run.t1""#.to_owned()),
        Just(r#""Failed""#.to_owned()),
        Just(r#""FAILED""#.to_owned()),
        Just(r#""crashed""#.to_owned()),
        Just(r#""creator""#.to_owned()),
        Just(r#""  padded name  ""#.to_owned()),
        Just(r#""None""#.to_owned()),
        Just(r#""""#.to_owned()),
        Just(r#""esc\u0061ped \"quoted\" \n line""#.to_owned()),
        Just(r#""prefect.flow-run.\u0036a1d""#.to_owned()),
        Just("3".to_owned()),
        Just("2.50".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just(r#"{"a": [1, {"b": "c"}]}"#.to_owned()),
    ]
}

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("prefect.resource.id"),
        Just("prefect.resource.name"),
        Just("prefect.resource.role"),
        Just("prefect.state-type"),
        Just("prefect.state-name"),
        Just("prefect.state-message"),
        Just("prefect.run-count"),
        Just("prefect.work-pool.type"),
        Just("prefect.resource\\u002eid"),
        Just("other"),
    ]
    .prop_map(str::to_owned)
}

fn object(members: Vec<(String, String)>) -> String {
    let inner: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn labels() -> impl Strategy<Value = String> {
    let any = proptest::collection::vec((label_key(), value_text()), 0..7);
    // A well-formed resource (an id of a known kind, a name, a role), with
    // odd members after it that may repeat and so replace its labels.
    let resource_id = value_text().prop_filter("a resource id", |v| v.contains("prefect."));
    let extra = proptest::collection::vec((label_key(), value_text()), 0..3);
    let formed = (resource_id, value_text(), value_text(), extra).prop_map(|(id, name, role, rest)| {
        let mut m = vec![
            ("prefect.resource.id".to_owned(), id),
            ("prefect.resource.name".to_owned(), name),
            ("prefect.resource.role".to_owned(), role),
        ];
        m.extend(rest);
        m
    });
    prop_oneof![1 => any, 2 => formed].prop_map(object)
}

fn member() -> impl Strategy<Value = (String, String)> {
    let event_name = prop_oneof![
        Just(r#""prefect.flow-run.Failed""#),
        Just(r#""prefect.flow-run.Completed""#),
        Just(r#""prefect.flow-run.Running""#),
        Just(r#""prefect.work-pool.not-ready""#),
        Just(r#""prefect.worker.stopped""#),
        Just(r#""prefect.automation.triggered""#),
        Just(r#"" prefect.flow-run.Crashed ""#),
        Just(r#""prefect.flow-run.\u0046ailed""#),
        Just("12"),
    ]
    .prop_map(str::to_owned);
    let related_item = prop_oneof![
        4 => labels(),
        1 => value_text(),
    ];
    let related = proptest::collection::vec(related_item, 0..6).prop_map(|r| format!("[{}]", r.join(", ")));
    let state = prop_oneof![
        3 => proptest::collection::vec(
            (prop_oneof![Just("type"), Just("name"), Just("message"), Just("timestamp")].prop_map(str::to_owned), value_text()),
            0..5,
        )
        .prop_map(object),
        1 => value_text(),
    ];
    let payload = prop_oneof![
        3 => (state, value_text()).prop_map(|(s, other)| format!(r#"{{"intended": {other}, "validated_state": {s}}}"#)),
        1 => value_text(),
    ];
    prop_oneof![
        3 => event_name.prop_map(|v| ("event".to_owned(), v)),
        3 => labels().prop_map(|v| ("resource".to_owned(), v)),
        1 => value_text().prop_map(|v| ("resource".to_owned(), v)),
        2 => related.prop_map(|v| ("related".to_owned(), v)),
        1 => value_text().prop_map(|v| ("related".to_owned(), v)),
        2 => payload.prop_map(|v| ("payload".to_owned(), v)),
        1 => value_text().prop_map(|v| ("id".to_owned(), v)),
        1 => value_text().prop_map(|v| ("occurred".to_owned(), v)),
        1 => value_text().prop_map(|v| ("follows".to_owned(), v)),
        1 => value_text().prop_map(|v| ("received".to_owned(), v)),
        1 => value_text().prop_map(|v| ("agent_config_id".to_owned(), v)),
        1 => value_text().prop_map(|v| ("ev\\u0065nt".to_owned(), v)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_sparse_reader_agrees_with_the_tree_on_any_event(
        members in proptest::collection::vec(member(), 0..12),
        base in proptest::bool::ANY,
    ) {
        // Most bodies start as an event, so the sparse reader is tried.
        let mut all = Vec::new();
        if base {
            all.push(("event".to_owned(), r#""prefect.flow-run.Failed""#.to_owned()));
            all.push(("resource".to_owned(), r#"{"prefect.resource.id": "prefect.flow-run.r1"}"#.to_owned()));
        }
        all.extend(members);
        let body = object(all);
        prop_assert_eq!(parse(body.as_bytes(), None), through_tree(body.as_bytes()), "{}", body);
    }
}

/// The one place the readers differ, on purpose: the tree gives up on
/// nesting past serde_json's limit of 128 anywhere in the body, while the
/// sparse reader skips members it does not read without a depth limit (and
/// without recursion: a body of a million brackets is just bytes to it).
#[test]
fn deep_nesting_in_a_member_never_read_no_longer_hides_the_event() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let body = format!(
        r#"{{"event": "prefect.flow-run.Failed", "resource": {{"prefect.resource.id": "prefect.flow-run.r1"}}, "payload": {{"intended": {deep}}}}}"#
    );
    let n = parse(body.as_bytes(), None);
    assert_eq!(n.format, Format::Event);
    assert_eq!(n.flow_run.and_then(|r| r.id).as_deref(), Some("r1"));
    assert!(!through_tree(body.as_bytes()).is_recognised());

    let huge = format!(
        r#"{{"event": "prefect.flow-run.Failed", "resource": {{"prefect.resource.id": "prefect.flow-run.r1"}}, "payload": {}1{}}}"#,
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    assert_eq!(parse(huge.as_bytes(), None).format, Format::Event);
    // Deep nesting in a member that is read sends the body to the tree.
    let in_resource = format!(
        r#"{{"event": "prefect.flow-run.Failed", "resource": {{"prefect.resource.id": "prefect.flow-run.r1", "x": {deep}}}}}"#
    );
    assert_eq!(
        parse(in_resource.as_bytes(), None),
        through_tree(in_resource.as_bytes())
    );
}
