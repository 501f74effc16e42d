//! What the bridge looks up in Prefect's API, cached (moka) with a TTL and a
//! capacity you set: which action a Webhook block posts to, automation
//! names, and the flow run, flow, deployment, work pool and work queue names
//! a payload left out (a Prefect Cloud 1 body, a flat template of ids).
//!
//! Lookups coalesce: many webhooks about one flow run ask Prefect once. An
//! object Prefect does not have is remembered as absent for the TTL too; a
//! failed call is not remembered, so the next webhook asks again.
//! Enrichment never fails a webhook: past its time budget, or when Prefect
//! cannot be read, the page goes out with what the payload carried.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use serde_json::Value;

use super::{Client, Error};
use crate::prefect::{Notification, Ref};

/// How lookups are cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheSettings {
    /// How long an answer (or an absence) is reused.
    pub(crate) ttl: Duration,
    /// Most answers kept.
    pub(crate) capacity: u64,
}

/// A Prefect object, by kind and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Block(String),
    Automation(String),
    FlowRun(String),
    Flow(String),
    Deployment(String),
    WorkPool(String),
    WorkQueue(String),
}

/// The little the bridge keeps of an object.
#[derive(Debug, Default, PartialEq, Eq)]
struct Facts {
    name: Option<String>,
    /// A Webhook block's URL.
    url: Option<String>,
    /// A flow run's flow, deployment, work pool and work queue.
    flow_id: Option<String>,
    deployment_id: Option<String>,
    work_pool_name: Option<String>,
    work_queue_name: Option<String>,
}

impl Facts {
    fn of(v: &Value) -> Self {
        let text = |k: &str| v[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        Self {
            name: text("name"),
            url: v["data"]["url"].as_str().map(str::to_owned),
            flow_id: text("flow_id"),
            deployment_id: text("deployment_id"),
            work_pool_name: text("work_pool_name"),
            work_queue_name: text("work_queue_name"),
        }
    }
}

type Found = Option<Arc<Facts>>;
/// Makes the key of one kind of object from its id.
type KeyOf = fn(String) -> Key;

/// The cached lookups.
#[derive(Debug, Clone)]
pub(crate) struct Lookups {
    client: Client,
    cache: Cache<Key, Found>,
    bridge_url: Option<url::Url>,
    budget: Duration,
}

impl Lookups {
    /// Lookups through `client`; `bridge_url` narrows which blocks are this
    /// bridge's; `budget` bounds how long enrichment may hold a webhook.
    pub(crate) fn new(
        client: Client,
        cache: CacheSettings,
        bridge_url: Option<url::Url>,
        budget: Duration,
    ) -> Self {
        Self {
            client,
            cache: Cache::builder()
                .max_capacity(cache.capacity)
                .time_to_live(cache.ttl)
                .build(),
            bridge_url,
            budget,
        }
    }

    /// The API client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    async fn facts(&self, key: Key) -> Result<Found, Error> {
        let client = &self.client;
        self.cache
            .try_get_with(key.clone(), async move { fetch(client, &key).await })
            .await
            .map_err(|e| Error::clone(&e))
    }

    /// The action a Webhook block posts to, when it posts to this bridge.
    ///
    /// # Errors
    /// When Prefect cannot be read.
    pub(crate) async fn action_of_block(&self, block: &str) -> Result<Option<String>, Error> {
        let facts = self.facts(Key::Block(block.to_owned())).await?;
        Ok(facts
            .and_then(|f| f.url.clone())
            .and_then(|u| super::intake_action(&u, self.bridge_url.as_ref())))
    }

    /// An automation's name.
    ///
    /// # Errors
    /// When Prefect cannot be read.
    pub(crate) async fn automation_name(&self, id: &str) -> Result<Option<String>, Error> {
        Ok(self
            .facts(Key::Automation(id.to_owned()))
            .await?
            .and_then(|f| f.name.clone()))
    }

    /// Fills in the names `n` lacks, from Prefect, within the time budget.
    /// Returns how many it filled; a failure only leaves `n` as it was.
    pub(crate) async fn enrich(&self, n: &mut Notification) -> usize {
        if !lacks_names(n) {
            return 0;
        }
        let mut filled = 0;
        match tokio::time::timeout(self.budget, self.fill(n, &mut filled)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not look up names in Prefect; sending what the payload had")
            }
            Err(_) => tracing::debug!(
                budget_ms = self.budget.as_millis(),
                "looking up names in Prefect took too long; sending what the payload had"
            ),
        }
        filled
    }

    async fn fill(&self, n: &mut Notification, filled: &mut usize) -> Result<(), Error> {
        if let Some(run) = n.flow_run.as_ref().and_then(|r| r.id.clone())
            && run_lacks(n)
            && let Some(f) = self.facts(Key::FlowRun(run)).await?
        {
            *filled += complete(&mut n.flow_run, None, f.name.as_deref());
            // Ids only where there was nothing: an id already there says
            // what the alert is about, and the dedup key may rest on it.
            *filled += complete(&mut n.flow, f.flow_id.as_deref(), None);
            *filled += complete(&mut n.deployment, f.deployment_id.as_deref(), None);
            *filled += complete(&mut n.work_pool, None, f.work_pool_name.as_deref());
            *filled += complete(&mut n.work_queue, None, f.work_queue_name.as_deref());
        }
        let slots: [(KeyOf, &mut Option<Ref>); 5] = [
            (Key::Flow, &mut n.flow),
            (Key::Deployment, &mut n.deployment),
            (Key::WorkPool, &mut n.work_pool),
            (Key::WorkQueue, &mut n.work_queue),
            (Key::Automation, &mut n.automation),
        ];
        for (key, slot) in slots {
            let Some(id) = nameless_id(slot) else { continue };
            if let Some(name) = self.facts(key(id)).await?.and_then(|f| f.name.clone()) {
                *filled += complete(slot, None, Some(&name));
            }
        }
        Ok(())
    }
}

/// Asks Prefect for one object. Ids go into paths, so anything but a
/// UUID's characters is not looked up at all.
async fn fetch(client: &Client, key: &Key) -> Result<Found, Error> {
    let (Key::Block(id)
    | Key::Automation(id)
    | Key::FlowRun(id)
    | Key::Flow(id)
    | Key::Deployment(id)
    | Key::WorkPool(id)
    | Key::WorkQueue(id)) = key;
    if !is_uuid_like(id) {
        return Ok(None);
    }
    let found = match key {
        Key::Block(id) => {
            client
                .object(&format!("block_documents/{id}?include_secrets=true"))
                .await?
        }
        Key::Automation(id) => client.object(&format!("automations/{id}")).await?,
        Key::FlowRun(id) => client.object(&format!("flow_runs/{id}")).await?,
        Key::Flow(id) => client.object(&format!("flows/{id}")).await?,
        Key::Deployment(id) => client.object(&format!("deployments/{id}")).await?,
        Key::WorkQueue(id) => client.object(&format!("work_queues/{id}")).await?,
        Key::WorkPool(id) => client.work_pool(id).await?,
    };
    Ok(found.map(|v| Arc::new(Facts::of(&v))))
}

fn is_uuid_like(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Whether any object the notification names by id lacks its name (or a
/// flow run lacks the objects it ran under).
fn lacks_names(n: &Notification) -> bool {
    run_lacks(n)
        || [&n.flow, &n.deployment, &n.work_pool, &n.work_queue, &n.automation]
            .into_iter()
            .any(|r| nameless_id(r).is_some())
}

/// A flow run named by id whose run or flow name is missing. A payload
/// that names both is an event as Prefect renders it, whose related objects
/// are all there: a run without a deployment or work pool has none.
fn run_lacks(n: &Notification) -> bool {
    let named = |r: &Option<Ref>| r.as_ref().is_some_and(|r| r.name.is_some());
    n.flow_run.as_ref().is_some_and(|r| r.id.is_some()) && !(named(&n.flow_run) && named(&n.flow))
}

fn nameless_id(r: &Option<Ref>) -> Option<String> {
    r.as_ref().filter(|r| r.name.is_none()).and_then(|r| r.id.clone())
}

/// Fills what `slot` lacks; 1 when it gained something.
fn complete(slot: &mut Option<Ref>, id: Option<&str>, name: Option<&str>) -> usize {
    let before = slot.clone();
    Ref::fill(slot, id, name);
    usize::from(*slot != before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: Option<&str>, name: Option<&str>) -> Option<Ref> {
        Some(Ref {
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
        })
    }

    #[test]
    fn a_complete_event_needs_no_lookup() {
        let n = Notification {
            flow_run: named(Some("r1"), Some("brave-fox")),
            flow: named(Some("f1"), Some("etl")),
            deployment: named(Some("d1"), Some("nightly")),
            work_pool: named(None, Some("k8s")),
            work_queue: named(None, Some("default")),
            ..Notification::default()
        };
        assert!(!lacks_names(&n));
    }

    #[test]
    fn an_id_without_a_name_needs_one() {
        let n = Notification {
            flow: named(Some("f1"), None),
            ..Notification::default()
        };
        assert!(lacks_names(&n));
        let run = Notification {
            flow_run: named(Some("r1"), Some("brave-fox")),
            ..Notification::default()
        };
        assert!(lacks_names(&run), "a run without its flow asks for it");
        let ad_hoc = Notification {
            flow_run: named(Some("r1"), Some("brave-fox")),
            flow: named(Some("f1"), Some("etl")),
            ..Notification::default()
        };
        assert!(
            !lacks_names(&ad_hoc),
            "a named run of a named flow without a deployment asks nothing"
        );
    }

    #[test]
    fn filling_keeps_what_was_there() {
        let mut slot = named(Some("f1"), None);
        assert_eq!(complete(&mut slot, Some("other"), Some("etl")), 1);
        assert_eq!(slot, named(Some("f1"), Some("etl")));
        assert_eq!(complete(&mut slot, None, Some("again")), 0);
        let mut empty = None;
        assert_eq!(complete(&mut empty, None, None), 0);
        assert_eq!(empty, None);
    }

    #[test]
    fn only_uuid_characters_go_into_a_path() {
        assert!(is_uuid_like("0b6a64b4-5d5c-4d5e-9b5e-7d3e1c2f0a11"));
        assert!(!is_uuid_like("../admin"));
        assert!(!is_uuid_like("a?b"));
        assert!(!is_uuid_like(""));
    }

    #[test]
    fn facts_keep_names_and_a_block_url() {
        let f = Facts::of(&serde_json::json!({
            "name": "brave-fox", "flow_id": "f1", "deployment_id": null,
            "work_pool_name": "k8s", "work_queue_name": "",
            "data": {"url": "http://bridge/v1/prefect/oncall"}
        }));
        assert_eq!(f.name.as_deref(), Some("brave-fox"));
        assert_eq!(f.flow_id.as_deref(), Some("f1"));
        assert_eq!(f.deployment_id, None);
        assert_eq!(f.work_pool_name.as_deref(), Some("k8s"));
        assert_eq!(f.work_queue_name, None);
        assert_eq!(f.url.as_deref(), Some("http://bridge/v1/prefect/oncall"));
    }
}
