//! prefect-pagerduty-bridge: receives Prefect automation webhooks and delivers
//! them to PagerDuty as Events API v2 triggers and resolves.
//!
//! # Layout
//! Data flows one way: intake → translate → spool → dispatch.
//! - [`config`]: command line (every flag has a `PPB_*` environment twin).
//! - [`server`]: HTTP: the Prefect intake, health, actions.
//! - [`prefect`]: reads every Prefect payload shape into a `Notification`.
//! - [`translate`]: `Notification` + action → PagerDuty event. Pure.
//! - [`pagerduty`]: the Events v2 model, its limits, and the HTTP client.
//! - [`spool`]: the durable outbox (redb): open alerts, ordering and
//!   coalescing rules, dead letters; `spool::dispatch` sends to PagerDuty with
//!   rate limits and retries.
//! - [`dedup`]: idempotency on Prefect event ids.
//! - [`app`]: wires it together; [`shutdown`]: signals.

pub mod actions;
pub mod app;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod logging;
pub mod pagerduty;
pub mod prefect;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod spool;
pub mod translate;
