//! Wires the bridge together: builds the shared state once, starts the
//! delivery workers and the server, and shuts both down in order (stop
//! accepting, finish requests in flight, drain the queue).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::deliver;
use crate::metrics::Metrics;
use crate::prefect_api::lookup::Lookups;
use crate::prefect_api::reconcile::{Reconciler, SharedStatus};
use crate::server::{self, State};
use crate::sink::pagerduty::{Client, DryRun};
use crate::spool::Spool;

/// A running bridge.
#[derive(Debug)]
pub struct App {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl App {
    /// Binds the listener and starts serving.
    ///
    /// # Errors
    /// When the address cannot be bound or the HTTP client cannot be built.
    pub async fn start(config: ServeConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let metrics_listener = match config.metrics_listen {
            Some(at) => Some(
                TcpListener::bind(at)
                    .await
                    .with_context(|| format!("listening for metrics on {at}"))?,
            ),
            None => None,
        };
        let metrics = Metrics::shared();
        // Built before anything is opened: a client that cannot be built
        // fails the start.
        let client = if config.dry_run {
            None
        } else {
            Some(Client::try_new(&config.pagerduty_url, &config.egress)?)
        };
        let retention = crate::spool::Retention {
            seen: crate::dedup::Limits {
                ttl: config.dedup_ttl,
                capacity: config.dedup_capacity,
            },
            open_alert_ttl: config.open_alert_ttl,
        };
        let spool = Spool::open_file(&config.spool, config.queue_capacity, retention, metrics.clone())
            .with_context(|| format!("opening the spool {}", config.spool.display()))?;
        let mut actions = config.actions.clone();
        let fixed_actions = actions.names().into_iter().map(str::to_owned).collect();
        for stored in spool.stored_actions().context("reading stored actions")? {
            let action = crate::actions::Action {
                name: stored.name.clone(),
                routing_key: crate::secret::Secret::new(stored.routing_key),
                severity: stored.severity,
            };
            if !actions.insert(action) {
                tracing::warn!(action = %stored.name, "a stored action has the name of an --action; the flag wins");
            }
        }
        let keys = deliver::Keys::default();
        let actions = Arc::new(std::sync::RwLock::new(actions));
        let lookups = match &config.prefect {
            Some(p) => {
                let client =
                    crate::prefect_api::Client::try_new(p.api_url.clone(), p.auth.clone(), &config.egress)?;
                Some(Lookups::new(
                    client,
                    p.cache,
                    p.bridge_url.clone(),
                    p.lookup_timeout,
                ))
            }
            None => None,
        };
        let reconciler = match (&config.reconcile, &lookups) {
            (Some(settings), Some(lookups)) => {
                metrics.reconcile_enabled();
                Some(Reconciler::new(
                    lookups.clone(),
                    config.action_keys.clone(),
                    settings.clone(),
                    spool.clone(),
                    actions.clone(),
                    config.translate.clone(),
                    SharedStatus::default(),
                    metrics.clone(),
                ))
            }
            _ => None,
        };
        let state = Arc::new(State {
            reconcile: reconciler.as_ref().map(|r| r.status.clone()),
            lookups,
            keys: keys.clone(),
            metrics: metrics.clone(),
            actions,
            action_keys: config.action_keys.clone(),
            fixed_actions,
            options: config.translate.clone(),
            spool: spool.clone(),
            max_body: config.max_body,
            body_budget: server::budget::BodyBudget::new(config.body_memory),
            tokens: config.tokens.clone(),
            request_timeout: config.request_timeout,
            ingress: config
                .ingress_rate
                .map(|(n, per)| governor::RateLimiter::keyed(deliver::window_quota(n, per, n))),
        });
        let tls = match &config.tls {
            Some((cert, key)) => Some(server::tls::acceptor(cert, key).context("setting up TLS")?),
            None => None,
        };
        if config.actions.is_empty() {
            tracing::warn!("no --action configured: every webhook will get 404 until one is");
        }
        tracing::info!(
            listen = %addr,
            actions = %config.actions.names().join(","),
            pagerduty = if config.dry_run { "dry-run".to_owned() } else { deliver_url(&config) },
            spool = %config.spool.display(),
            "prefect-pagerduty-bridge ready"
        );
        let (max_connections, max_connections_per_ip, idle_timeout) = (
            config.max_connections,
            config.max_connections_per_ip,
            config.idle_timeout,
        );
        let shutdown = CancellationToken::new();
        let stop_dispatch = CancellationToken::new();
        let (settings, stop) = (config.delivery.clone(), stop_dispatch.clone());
        let dispatcher = match client {
            Some(client) => tokio::spawn(deliver::run(spool, client, settings, keys, metrics, stop)),
            None => tokio::spawn(deliver::run(spool, DryRun, settings, keys, metrics, stop)),
        };
        let reconciling = reconciler.map(|r| {
            tracing::info!(prefect_api = %r.lookups.client().base(), interval_secs = r.settings.interval.as_secs(),
                "recovering webhooks Prefect drops");
            tokio::spawn(r.run(shutdown.clone()))
        });
        // Metrics alone, for a scraper beside the bridge: few connections.
        let metrics_server = metrics_listener.map(|listener| {
            let listen = server::Listen {
                listener,
                tls: None,
                max_connections: 16,
                max_connections_per_ip: 16,
                idle_timeout,
                metrics_only: true,
            };
            tokio::spawn(server::run(listen, state.clone(), shutdown.clone()))
        });
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            // Stop accepting and finish requests in flight first, so that
            // everything answered 202 is in the spool; then stop sending
            // between sends. What is undelivered goes out on the next start.
            server::run(
                server::Listen {
                    listener,
                    tls,
                    max_connections,
                    max_connections_per_ip,
                    idle_timeout,
                    metrics_only: false,
                },
                state,
                token,
            )
            .await;
            if let Some(task) = metrics_server {
                let _ = task.await;
            }
            if let Some(task) = reconciling {
                let _ = task.await;
            }
            stop_dispatch.cancel();
            let _ = dispatcher.await;
            tracing::info!("stopped");
        });
        Ok(Self { shutdown, task })
    }

    /// Stops accepting, finishes requests in flight and drains the queue.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

fn deliver_url(config: &ServeConfig) -> String {
    crate::sink::pagerduty::enqueue_url(&config.pagerduty_url).to_string()
}
