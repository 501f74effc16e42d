//! prefect-pagerduty-bridge: receives Prefect automation webhooks and delivers
//! them to PagerDuty as Events API v2 triggers and resolves.
//!
//! # Layout
//! Data flows one way: intake → translate → queue → deliver.
//! - [`config`]: command line (every flag has a `PPB_*` environment twin).
//! - [`server`]: HTTP: the Prefect intake, health, actions.
//! - [`prefect`]: reads every Prefect payload shape into a `Notification`.
//! - [`translate`]: `Notification` + action → PagerDuty event. Pure.
//! - [`pagerduty`]: the Events v2 model, its limits, and the HTTP client.
//! - [`incidents`]: which alerts are open, so resolves go out only for them.
//! - [`deliver`]: the queue and the workers that send to PagerDuty.
//! - [`app`]: wires it together; [`shutdown`]: signals.

pub mod actions;
pub mod app;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod incidents;
pub mod pagerduty;
pub mod prefect;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod translate;
