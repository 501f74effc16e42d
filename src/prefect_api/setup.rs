//! `prefect setup`: creates or updates, idempotently, what Prefect needs to
//! page through this bridge: per action, one Webhook block posting to
//! `<bridge>/v1/prefect/<action>` (with the webhook token as a Bearer
//! header) and three automations with the recommended payload
//! `{{ event | tojson }}`: flow-run failures with their recovery, late runs
//! with their start, and work pool / queue / deployment health. What it
//! manages carries its names (`prefect-pagerduty-bridge-<action>`,
//! `prefect-pagerduty-bridge/<action>: …`); `--remove` deletes exactly
//! those. Each automation's description holds a digest of what setup wants
//! it to be, so a second run changes nothing and says so.

use serde_json::{Value, json};

use super::{Client, Error};
use crate::secret::Secret;

/// The names setup manages start with this.
pub(crate) const PREFIX: &str = "prefect-pagerduty-bridge";
/// What every automation posts.
pub(crate) const PAYLOAD: &str = "{{ event | tojson }}";

/// What setup did to one thing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Step {
    /// created, updated, unchanged, removed (or "would …" in a dry run).
    pub(crate) did: String,
    /// block or automation.
    pub(crate) what: &'static str,
    /// Its name.
    pub(crate) name: String,
    /// In a dry run: the request that would be sent (secrets redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request: Option<String>,
}

/// A request as a dry run shows it: method, path under the API, body.
fn shown(method: &str, path: &str, body: &Value) -> Option<String> {
    Some(format!("{method} {path} {body}"))
}

/// The automations setup wants for one action: (name suffix, trigger).
fn automations(action: &str) -> Vec<(String, Value)> {
    let flow_runs = |expect: &[&str]| {
        json!({
            "type": "event",
            "posture": "Reactive",
            "expect": expect,
            "match": {"prefect.resource.id": "prefect.flow-run.*"},
            "for_each": ["prefect.resource.id"],
            "threshold": 1,
            "within": 0,
        })
    };
    vec![
        (
            format!("{PREFIX}/{action}: flow run failures"),
            flow_runs(&[
                "prefect.flow-run.Failed",
                "prefect.flow-run.Crashed",
                "prefect.flow-run.TimedOut",
                "prefect.flow-run.Completed",
            ]),
        ),
        (
            format!("{PREFIX}/{action}: late flow runs"),
            flow_runs(&["prefect.flow-run.Late", "prefect.flow-run.Running"]),
        ),
        (
            format!("{PREFIX}/{action}: work pool, queue and deployment health"),
            json!({
                "type": "event",
                "posture": "Reactive",
                "expect": [
                    "prefect.work-pool.not-ready", "prefect.work-pool.ready",
                    "prefect.work-queue.not-ready", "prefect.work-queue.ready",
                    "prefect.deployment.not-ready", "prefect.deployment.ready",
                ],
                "match": {"prefect.resource.id": ["prefect.work-pool.*", "prefect.work-queue.*", "prefect.deployment.*"]},
                "for_each": ["prefect.resource.id"],
                "threshold": 1,
                "within": 0,
            }),
        ),
    ]
}

/// The block's name for `action`.
pub(crate) fn block_name(action: &str) -> String {
    format!("{PREFIX}-{action}")
}

/// What setup is asked to do.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// Where Prefect reaches the bridge.
    pub(crate) bridge: &'a url::Url,
    /// The actions to wire.
    pub(crate) actions: &'a [String],
    /// Sent as `Authorization: Bearer …` when given.
    pub(crate) webhook_token: Option<&'a Secret>,
    /// Only say what would change.
    pub(crate) dry_run: bool,
}

fn did(dry_run: bool, what: &str) -> String {
    if dry_run {
        format!("would be {what}")
    } else {
        what.to_owned()
    }
}

/// Creates or updates everything for `plan`.
///
/// # Errors
/// When Prefect cannot be read or refuses a change.
pub(crate) async fn setup(client: &Client, plan: &Plan<'_>) -> Result<Vec<Step>, Error> {
    let mut steps = Vec::new();
    let existing = client.automations().await?;
    for action in plan.actions {
        let url = format!(
            "{}/v1/prefect/{action}",
            plan.bridge.as_str().trim_end_matches('/')
        );
        let headers = match plan.webhook_token {
            Some(t) => json!({"Authorization": format!("Bearer {}", t.expose())}),
            None => json!({}),
        };
        let data = json!({"method": "POST", "url": url, "headers": headers});
        let shown_data = match plan.webhook_token {
            Some(t) => {
                json!({"method": "POST", "url": url, "headers": {"Authorization": format!("Bearer {}", t.redacted())}})
            }
            None => data.clone(),
        };
        let name = block_name(action);
        let block_id = match client.block_document("webhook", &name).await? {
            Some(doc)
                if doc["data"]["url"] == data["url"]
                    && doc["data"]["method"] == data["method"]
                    && doc["data"]["headers"] == data["headers"] =>
            {
                steps.push(Step {
                    did: "unchanged".into(),
                    what: "block",
                    name: name.clone(),
                    request: None,
                });
                doc["id"].as_str().unwrap_or_default().to_owned()
            }
            Some(doc) => {
                let id = doc["id"].as_str().unwrap_or_default().to_owned();
                if !plan.dry_run {
                    client.update_block_document(&id, &data).await?;
                }
                steps.push(Step {
                    did: did(plan.dry_run, "updated"),
                    what: "block",
                    name: name.clone(),
                    request: plan
                        .dry_run
                        .then(|| {
                            shown(
                                "PATCH",
                                &format!("block_documents/{id}"),
                                &json!({"data": shown_data, "merge_existing_data": false}),
                            )
                        })
                        .flatten(),
                });
                id
            }
            None if plan.dry_run => {
                steps.push(Step {
                    did: did(true, "created"),
                    what: "block",
                    name: name.clone(),
                    request: shown(
                        "POST",
                        "block_documents/",
                        &json!({"name": name, "data": shown_data}),
                    ),
                });
                "(new block)".to_owned()
            }
            None => {
                let id = client.create_block_document("webhook", &name, &data).await?;
                steps.push(Step {
                    did: "created".into(),
                    what: "block",
                    name: name.clone(),
                    request: None,
                });
                id
            }
        };
        for (auto_name, trigger) in automations(action) {
            let actions =
                json!([{"type": "call-webhook", "block_document_id": block_id, "payload": PAYLOAD}]);
            // The digest covers what setup decides, not Prefect's defaults.
            let spec = json!({"trigger": trigger, "url": url, "payload": PAYLOAD, "block": name});
            let digest = crate::digest::sha256_hex(spec.to_string().as_bytes());
            let description = format!(
                "Managed by prefect-pagerduty-bridge setup (spec {})",
                &digest[..16]
            );
            let body = json!({
                "name": auto_name,
                "description": description,
                "enabled": true,
                "trigger": trigger,
                "actions": actions,
            });
            let found = existing.iter().find(|a| a["name"] == auto_name.as_str());
            match found {
                Some(a) if a["description"] == description.as_str() && a["enabled"] == true => {
                    steps.push(Step {
                        did: "unchanged".into(),
                        what: "automation",
                        name: auto_name,
                        request: None,
                    });
                }
                Some(a) => {
                    if !plan.dry_run {
                        client
                            .update_automation(a["id"].as_str().unwrap_or_default(), &body)
                            .await?;
                    }
                    steps.push(Step {
                        did: did(plan.dry_run, "updated"),
                        what: "automation",
                        name: auto_name,
                        request: plan
                            .dry_run
                            .then(|| {
                                shown(
                                    "PUT",
                                    &format!("automations/{}", a["id"].as_str().unwrap_or_default()),
                                    &body,
                                )
                            })
                            .flatten(),
                    });
                }
                None => {
                    if !plan.dry_run {
                        client.create_automation(&body).await?;
                    }
                    steps.push(Step {
                        did: did(plan.dry_run, "created"),
                        what: "automation",
                        name: auto_name,
                        request: plan
                            .dry_run
                            .then(|| shown("POST", "automations/", &body))
                            .flatten(),
                    });
                }
            }
        }
    }
    Ok(steps)
}

/// Deletes what setup made for `actions`, and nothing else.
///
/// # Errors
/// When Prefect cannot be read or refuses a deletion.
pub(crate) async fn remove(client: &Client, actions: &[String], dry_run: bool) -> Result<Vec<Step>, Error> {
    let mut steps = Vec::new();
    let existing = client.automations().await?;
    for action in actions {
        let names: Vec<String> = automations(action).into_iter().map(|(n, _)| n).collect();
        for a in existing
            .iter()
            .filter(|a| a["name"].as_str().is_some_and(|n| names.iter().any(|m| m == n)))
        {
            if !dry_run {
                client
                    .delete(&format!("automations/{}", a["id"].as_str().unwrap_or_default()))
                    .await?;
            }
            steps.push(Step {
                did: did(dry_run, "removed"),
                what: "automation",
                name: a["name"].as_str().unwrap_or_default().to_owned(),
                request: dry_run
                    .then(|| format!("DELETE automations/{}", a["id"].as_str().unwrap_or_default())),
            });
        }
        let name = block_name(action);
        if let Some(doc) = client.block_document("webhook", &name).await? {
            if !dry_run {
                client
                    .delete(&format!(
                        "block_documents/{}",
                        doc["id"].as_str().unwrap_or_default()
                    ))
                    .await?;
            }
            steps.push(Step {
                did: did(dry_run, "removed"),
                what: "block",
                name,
                request: dry_run.then(|| {
                    format!(
                        "DELETE block_documents/{}",
                        doc["id"].as_str().unwrap_or_default()
                    )
                }),
            });
        }
    }
    Ok(steps)
}
