//! One integration-test binary (one link step on a 2-core machine).

mod support;

mod egress;
mod faults;
mod golden;
mod healthcheck;
mod hostile;
mod intake;
mod metrics;
mod prefect_e2e;
mod props;
mod secrets;
mod security;
mod spool;
