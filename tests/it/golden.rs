//! Golden tests: every captured Prefect request in `fixtures/prefect/` is run
//! through the real binary's `translate`, and the PagerDuty events it prints
//! must equal the `<name>.expected.json` checked in beside the capture and
//! pass the spec and limit check. `UPDATE_GOLDEN=1 cargo test golden`
//! rewrites the expected files (review the diff before committing).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::bridge::BIN;
use crate::support::spec::Spec;
use crate::support::{KEY_A, captures, fixtures};

fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".json") && !name.ends_with(".expected.json")
        })
        .collect();
    files.sort();
    files
}

fn translate_with_binary(body: &[u8], event_id: Option<&str>) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("payload");
    std::fs::write(&input, body).expect("write payload");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "translate",
        "--action",
        &format!("oncall={KEY_A}"),
        "--prefect-ui-url",
        "http://127.0.0.1:4200",
    ]);
    if let Some(id) = event_id {
        cmd.args(["--event-id", id]);
    }
    let out = cmd.arg(&input).output().expect("run translate");
    assert!(
        out.status.success(),
        "translate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("translate prints JSON")
}

#[test]
fn every_capture_translates_to_its_golden_events() {
    let spec = Spec::load();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    for dir in ["prefect/captures", "prefect/cloud1"] {
        for file in fixture_files(&fixtures().join(dir)) {
            let mut got = Vec::new();
            for cap in captures(&file) {
                let events = translate_with_binary(&cap.body, cap.event_id.as_deref());
                for event in events.as_array().expect("an array") {
                    let errors = spec.check_enqueue(event.to_string().as_bytes());
                    assert!(
                        errors.is_empty(),
                        "{}: event fails the spec check: {errors:?}\n{event:#}",
                        file.display()
                    );
                }
                got.push(events);
            }
            let got = Value::Array(got);
            let expected_path = file.with_extension("expected.json");
            if update {
                let text = serde_json::to_string_pretty(&got).expect("json") + "\n";
                std::fs::write(&expected_path, text).expect("write golden");
            }
            let expected: Value =
                serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
                    panic!("missing {}; run with UPDATE_GOLDEN=1", expected_path.display())
                }))
                .expect("golden is JSON");
            assert!(
                got == expected,
                "{} differs from {}\n--- expected\n{expected:#}\n--- got\n{got:#}",
                file.display(),
                expected_path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 39, "only {checked} fixture files were checked");
}

/// Every event name a real Prefect 3.9 server emitted (events_catalog.json)
/// translates to a spec-valid event through the library.
#[test]
fn every_cataloged_event_translates_to_a_valid_event() {
    use prefect_pagerduty_bridge::actions::Action;
    use prefect_pagerduty_bridge::secret::Secret;
    use prefect_pagerduty_bridge::{prefect, translate};

    let spec = Spec::load();
    let catalog: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("prefect/events_catalog.json")).expect("catalog"),
    )
    .expect("json");
    let action = Action {
        name: "oncall".into(),
        routing_key: Secret::new(KEY_A),
        severity: None,
    };
    let options = translate::Options {
        source: "prefect".into(),
        ui_base: url::Url::parse("http://127.0.0.1:4200").ok(),
    };
    let catalog = catalog.as_object().expect("object");
    assert!(catalog.len() >= 40);
    for (name, entry) in catalog {
        let body = entry["example"].to_string();
        let n = prefect::parse(body.as_bytes(), None);
        assert!(n.is_recognised(), "{name} not recognised");
        if name.starts_with("prefect.automation.triggered") || name.starts_with("prefect.automation.resolved")
        {
            assert!(n.envelope.is_some(), "{name} is an automation envelope");
        } else {
            assert_eq!(n.event.as_deref(), Some(name.as_str()));
        }
        let t = translate::translate(n, &action, &options);
        let errors = spec.check_enqueue(&serde_json::to_vec(&t.event).expect("json"));
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}
