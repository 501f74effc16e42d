//! The one setup for the bridge's own HTTP requests (to PagerDuty and to
//! Prefect's API): timeouts, a user agent, and no redirects, because where
//! the bridge sends events and credentials is configuration, never
//! something an answer picks.

use std::time::Duration;

/// How long to wait to connect, and for a whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building an HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// A client with the bridge's settings.
///
/// # Errors
/// When the TLS stack cannot be set up (no crypto provider installed).
pub(crate) fn client() -> Result<reqwest::Client, BuildError> {
    Ok(reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("prefect-pagerduty-bridge/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}
