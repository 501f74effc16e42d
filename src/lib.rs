//! prefect-pagerduty-bridge: receives Prefect automation webhooks and delivers
//! them to PagerDuty as Events API v2 triggers and resolves.
//!
//! # Layout
//! Data flows one way: intake → translate → spool → deliver.
//! - [`config`]: the command line and its validated values (every flag has a
//!   `PPB_*` environment twin); the only module that reads the environment (but for an `env:` secret).
//! - `server`: HTTP: accept loop and limits, the route table with who may
//!   call each route, the Prefect intake, the API; one place maps errors to HTTP.
//! - [`prefect`] (pure): reads every Prefect payload shape into a `Notification`.
//! - [`translate`] (pure): `Notification` + action → PagerDuty event.
//! - `alerts` (pure): the open-alert state machine.
//! - `spool`: the durable outbox: accept decisions on one writer thread,
//!   the in-memory index, offline tools; `store`: where it is kept (trait
//!   `Store`, redb, the versioned record envelope).
//! - `deliver`: the dispatcher, retry policy and pacing; `sink`: where events
//!   go (trait `Sink`; PagerDuty Events v2 over HTTP, and its dry run).
//! - [`pagerduty`] (pure): the Events v2 model and its limits.
//! - `prefect_api`: Prefect's REST API: `setup` and `check` (the `prefect`
//!   subcommand), `reconcile` (recovering the webhooks Prefect dropped) and
//!   `lookup` (names, cached); `outbound`: the one HTTP client setup;
//!   `metrics`: the Prometheus registry; `rotation`: routing keys and tokens
//!   read again from their files without a restart.
//!
//! The public API is what the binary, the tests and the benches use: the
//! command line and its runner, and the pure translation.

pub mod actions;
pub(crate) mod alerts;
pub(crate) mod app;
pub(crate) mod backoff;
pub mod cli;
pub mod config;
pub(crate) mod dedup;
pub(crate) mod deliver;
pub(crate) mod digest;
pub mod logging;
pub(crate) mod metrics;
pub(crate) mod outbound;
pub mod pagerduty;
pub mod prefect;
pub(crate) mod prefect_api;
pub(crate) mod rotation;
pub mod secret;
pub(crate) mod server;
pub(crate) mod shutdown;
pub(crate) mod sink;
pub(crate) mod spool;
pub(crate) mod store;
pub mod translate;
