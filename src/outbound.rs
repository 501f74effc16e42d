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

/// How requests leave: the system's CA store (or `SSL_CERT_FILE`) plus
/// any CA given with `--ca-file` (a TLS-intercepting egress proxy's).
/// Proxies come from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
/// `NO_PROXY`, which reqwest reads itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct Egress {
    extra_roots: Vec<reqwest::Certificate>,
}

/// A CA file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It holds no PEM certificate.
    #[error("{0} holds no PEM certificate")]
    Empty(String),
    /// Its PEM does not parse.
    #[error("{path} is not a PEM certificate bundle: {source}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        source: reqwest::Error,
    },
}

impl Egress {
    /// Trusts the CAs in the PEM bundle at `path` besides the system's.
    ///
    /// # Errors
    /// See [`CaError`].
    pub(crate) fn with_ca_file(path: &std::path::Path) -> Result<Self, CaError> {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| CaError::Read {
            path: shown.clone(),
            source,
        })?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| CaError::Pem {
            path: shown.clone(),
            source,
        })?;
        if roots.is_empty() {
            return Err(CaError::Empty(shown));
        }
        Ok(Self { extra_roots: roots })
    }
}

/// A client with the bridge's settings.
///
/// # Errors
/// When the TLS stack cannot be set up (no crypto provider installed, or
/// no CA certificates at all).
pub(crate) fn client(egress: &Egress) -> Result<reqwest::Client, BuildError> {
    Ok(reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("prefect-pagerduty-bridge/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_merge(egress.extra_roots.iter().cloned())
        .build()?)
}

/// A client for the bridge's own health endpoint. On loopback the
/// certificate is not verified: it names the service, not 127.0.0.1, and
/// whoever can answer on the host's loopback is already inside.
///
/// # Errors
/// As [`client`].
pub(crate) fn health_client(egress: &Egress, loopback: bool) -> Result<reqwest::Client, BuildError> {
    Ok(reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!(
            "prefect-pagerduty-bridge/",
            env!("CARGO_PKG_VERSION"),
            " healthcheck"
        ))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_certs_merge(egress.extra_roots.iter().cloned())
        .tls_danger_accept_invalid_certs(loopback)
        .build()?)
}
