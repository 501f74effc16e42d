//! `prefect check`: reads Prefect's automations and Webhook blocks and
//! reports every automation that calls this bridge with a problem that
//! would lose or strand a page (docs/prefect.md §5, §7, §8):
//! - an empty payload template (Prefect then posts an empty body) or one
//!   that cannot render JSON;
//! - failures expected without their recovery (alerts never resolve);
//! - disabled;
//! - a block URL naming an action the bridge does not have;
//! - many call-webhook actions on one event (Prefect loses more of them
//!   the more run at once).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Client, Error, intake_action};

/// More call-webhook actions than this on one event is a problem.
const MANY_ON_ONE_EVENT: usize = 4;

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The automation's name.
    pub(crate) automation: String,
    /// Its id.
    pub(crate) id: String,
    /// A stable name for the kind of problem.
    pub(crate) kind: &'static str,
    /// What is wrong and what to do.
    pub(crate) detail: String,
}

/// What `prefect check` found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// No problems.
    pub(crate) ok: bool,
    /// Automations that call this bridge.
    pub(crate) automations_calling_the_bridge: usize,
    /// Everything found.
    pub(crate) problems: Vec<Problem>,
}

/// A call-webhook action of an automation that posts to this bridge.
struct Call {
    action: String,
    payload: String,
}

/// Whether a payload template renders a JSON body.
fn payload_problem(payload: &str) -> Option<String> {
    let p = payload.trim();
    if p.is_empty() {
        return Some(
            "the call-webhook payload is empty: Prefect posts an empty body, and the page says nothing \
             about what failed; use {{ event | tojson }}"
                .to_owned(),
        );
    }
    // `{{ … }}` alone is a Jinja expression, not a JSON object.
    let object = p.starts_with('{') && !p.starts_with("{{") && p.ends_with('}');
    let renders_json = p.contains("tojson") || object;
    (!renders_json).then(|| {
        "the call-webhook payload does not render JSON (e.g. {{ event }} is a Python repr); use {{ event | tojson }}"
            .to_owned()
    })
}

/// What a trigger expects but never the recovery of.
fn missing_recovery(expect: &[String]) -> Option<String> {
    let has = |name: &str| {
        expect
            .iter()
            .any(|e| e == name || e == "*" || e == "prefect.flow-run.*")
    };
    let failures = [
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.TimedOut",
    ];
    if failures.iter().any(|f| has(f)) && !has("prefect.flow-run.Completed") {
        return Some(
            "flow-run failures are expected without prefect.flow-run.Completed: alerts never resolve".into(),
        );
    }
    for (down, up) in [
        ("prefect.work-pool.not-ready", "prefect.work-pool.ready"),
        ("prefect.work-queue.not-ready", "prefect.work-queue.ready"),
        ("prefect.deployment.not-ready", "prefect.deployment.ready"),
    ] {
        if has(down) && !has(up) {
            return Some(format!("{down} is expected without {up}: alerts never resolve"));
        }
    }
    None
}

/// Checks every automation; `known` is the bridge's action names, when it
/// could be asked.
///
/// # Errors
/// When Prefect cannot be read.
pub(crate) async fn check(
    client: &Client,
    bridge: Option<&url::Url>,
    known: Option<&[String]>,
) -> Result<Report, Error> {
    let automations = client.automations().await?;
    let mut blocks: HashMap<String, Option<String>> = HashMap::new();
    let mut problems = Vec::new();
    let mut calling = 0;
    // Event name → call-webhook actions to the bridge that fire on it.
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for a in &automations {
        let (name, id) = (
            a["name"].as_str().unwrap_or_default().to_owned(),
            a["id"].as_str().unwrap_or_default().to_owned(),
        );
        let mut calls = Vec::new();
        for list in ["actions", "actions_on_trigger", "actions_on_resolve"] {
            for action in a[list].as_array().into_iter().flatten() {
                if action["type"] != "call-webhook" {
                    continue;
                }
                let Some(block) = action["block_document_id"].as_str() else {
                    continue;
                };
                if !blocks.contains_key(block) {
                    let url = client.webhook_url(block).await?;
                    blocks.insert(block.to_owned(), url);
                }
                let Some(target) = blocks[block].as_deref().and_then(|u| intake_action(u, bridge)) else {
                    continue;
                };
                calls.push(Call {
                    action: target,
                    payload: action["payload"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        if calls.is_empty() {
            continue;
        }
        calling += 1;
        let mut found = |kind: &'static str, detail: String| {
            problems.push(Problem {
                automation: name.clone(),
                id: id.clone(),
                kind,
                detail,
            });
        };
        if a["enabled"] == false {
            found(
                "disabled",
                "the automation is disabled: nothing it watches pages".into(),
            );
        }
        for call in &calls {
            if let Some(detail) = payload_problem(&call.payload) {
                found("payload", detail);
            }
            if let Some(known) = known
                && !known.contains(&call.action)
            {
                found(
                    "unknown_action",
                    format!(
                        "the Webhook block posts to action {:?}, which the bridge does not have (it has: {})",
                        call.action,
                        known.join(", ")
                    ),
                );
            }
        }
        let expect: Vec<String> = a["trigger"]["expect"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        if let Some(detail) = missing_recovery(&expect) {
            found("no_recovery", detail);
        }
        if a["enabled"] != false {
            for e in &expect {
                *per_event.entry(e.clone()).or_default() += calls.len();
            }
        }
    }
    for (event, n) in per_event {
        if n > MANY_ON_ONE_EVENT {
            problems.push(Problem {
                automation: "(several)".into(),
                id: String::new(),
                kind: "many_on_one_event",
                detail: format!(
                    "{n} call-webhook actions to the bridge fire on {event}: Prefect's shared HTTP transport loses \
                     more of them the more run at once; use one automation per alert class"
                ),
            });
        }
    }
    Ok(Report {
        ok: problems.is_empty(),
        automations_calling_the_bridge: calling,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_must_render_json() {
        assert!(payload_problem("").is_some());
        assert!(payload_problem("  ").is_some());
        assert!(payload_problem("{{ event }}").is_some());
        assert!(payload_problem("{{ event | tojson }}").is_none());
        assert!(payload_problem(r#"{"summary": "{{ flow_run.name }}"}"#).is_none());
    }

    #[test]
    fn failures_need_their_recovery() {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(missing_recovery(&s(&["prefect.flow-run.Failed"])).is_some());
        assert!(missing_recovery(&s(&["prefect.flow-run.Failed", "prefect.flow-run.Completed"])).is_none());
        assert!(missing_recovery(&s(&["prefect.work-pool.not-ready"])).is_some());
        assert!(missing_recovery(&s(&["prefect.work-pool.not-ready", "prefect.work-pool.ready"])).is_none());
        assert!(missing_recovery(&s(&["prefect.flow-run.*"])).is_none());
    }

    #[test]
    fn only_urls_of_this_bridge_name_an_action() {
        let bridge = url::Url::parse("http://bridge:8080").expect("url");
        assert_eq!(
            intake_action("http://bridge:8080/v1/prefect/oncall", Some(&bridge)).as_deref(),
            Some("oncall")
        );
        assert_eq!(
            intake_action("http://other:8080/v1/prefect/oncall", Some(&bridge)),
            None
        );
        assert_eq!(
            intake_action("http://other:8080/v1/prefect/oncall/", None).as_deref(),
            Some("oncall")
        );
        assert_eq!(intake_action("http://other:8080/hooks/x", None), None);
    }
}
