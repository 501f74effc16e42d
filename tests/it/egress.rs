//! Egress as real clusters have it: every call to PagerDuty goes through
//! `HTTPS_PROXY` (a CONNECT proxy that wants credentials and intercepts TLS
//! with its own CA), `--ca-file` or `SSL_CERT_FILE` makes that CA trusted,
//! `NO_PROXY` sends a host around the proxy, and the proxy's password never
//! shows in a log line.

use std::time::Duration;

use crate::support::bridge::Bridge;
use crate::support::pagerduty::Double;
use crate::support::proxy::Proxy;
use crate::support::{KEY_A, fixtures};

const CREDENTIALS: &str = "egress-user:pr0xy-pa55-S3CRET";

fn failed() -> Vec<u8> {
    std::fs::read(fixtures().join("examples/flow-run-failed.json")).expect("fixture")
}

fn no_password_in(bridge: &Bridge) {
    for line in bridge.logs() {
        assert!(
            !line.contains("pr0xy-pa55"),
            "the proxy password was logged: {line}"
        );
    }
}

/// The default PagerDuty address, reached through an intercepting proxy
/// whose CA is given with `--ca-file`; without it the handshake fails, the
/// event stays queued, and a restart with the CA delivers it.
#[tokio::test]
async fn pagerduty_is_reached_through_an_intercepting_proxy_with_its_ca() {
    let double = Double::start().await;
    let proxy = Proxy::start(double.addr(), CREDENTIALS).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).expect("ca");
    let spool = dir.path().join("spool.redb");
    let action = format!("oncall={KEY_A}");
    let proxy_url = proxy.url(CREDENTIALS);
    let env = [("HTTPS_PROXY", proxy_url.as_str()), ("NO_PROXY", "")];
    let args = [
        "--action",
        action.as_str(),
        "--spool",
        spool.to_str().expect("utf-8"),
        "--retry-initial-interval",
        "200ms",
    ];

    // Without the proxy's CA: the handshake fails; the event waits.
    let mut bridge = Bridge::serve_with_env(&args, &env);
    let (status, answer) = crate::support::post(&bridge.intake("oncall"), failed()).await;
    assert_eq!(status, 202, "{answer}");
    crate::support::wait::holds(Duration::from_secs(15), "a refused handshake", || async {
        proxy.failed_handshakes() >= 1
    })
    .await;
    assert!(double.received().is_empty(), "delivered without trusting the CA");
    let stats = crate::support::get_json(&format!("{}/v1/spool", bridge.url())).await;
    assert_eq!(stats["queued"], 1, "{stats}");
    assert_eq!(bridge.terminate().code(), Some(0));
    no_password_in(&bridge);

    // With it: delivered, through the proxy, to PagerDuty's own address.
    let ca_arg = ca.to_str().expect("utf-8");
    let mut with_ca = args.to_vec();
    with_ca.extend(["--ca-file", ca_arg]);
    let bridge = Bridge::serve_with_env(&with_ca, &env);
    let got = double
        .wait_until(Duration::from_secs(15), "the event through the proxy", |r| {
            !r.is_empty()
        })
        .await;
    assert!(got[0].errors.is_empty(), "{:?}", got[0].errors);
    assert_eq!(got[0].body["routing_key"], KEY_A);
    assert!(
        proxy.tunnels().iter().all(|t| t == "events.pagerduty.com:443"),
        "{:?}",
        proxy.tunnels()
    );
    crate::support::wait::drained(&bridge, Duration::from_secs(15)).await;
    no_password_in(&bridge);
}

/// `SSL_CERT_FILE` works as `--ca-file` does; wrong proxy credentials are
/// refused (407) and retried without the password reaching the logs.
#[tokio::test]
async fn ssl_cert_file_is_honoured_and_a_refused_proxy_login_leaks_nothing() {
    let double = Double::start().await;
    let proxy = Proxy::start(double.addr(), CREDENTIALS).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("proxy-ca.pem");
    std::fs::write(&ca, &proxy.ca_pem).expect("ca");
    let action = format!("oncall={KEY_A}");
    let wrong = proxy.url("egress-user:pr0xy-pa55-WRONG");
    let bridge = Bridge::serve_with_env(
        &["--action", &action, "--retry-initial-interval", "200ms"],
        &[
            ("HTTPS_PROXY", wrong.as_str()),
            ("NO_PROXY", ""),
            ("SSL_CERT_FILE", ca.to_str().expect("utf-8")),
        ],
    );
    let (status, answer) = crate::support::post(&bridge.intake("oncall"), failed()).await;
    assert_eq!(status, 202, "{answer}");
    crate::support::wait::holds(Duration::from_secs(15), "two refused logins", || async {
        proxy.refused() >= 2
    })
    .await;
    assert!(double.received().is_empty());
    no_password_in(&bridge);

    let right = proxy.url(CREDENTIALS);
    let bridge = Bridge::serve_with_env(
        &["--action", &action],
        &[
            ("HTTPS_PROXY", right.as_str()),
            ("NO_PROXY", ""),
            ("SSL_CERT_FILE", ca.to_str().expect("utf-8")),
        ],
    );
    let (status, answer) = crate::support::post(&bridge.intake("oncall"), failed()).await;
    assert_eq!(status, 202, "{answer}");
    double
        .wait_until(
            Duration::from_secs(15),
            "the event, trusted by SSL_CERT_FILE",
            |r| !r.is_empty(),
        )
        .await;
    no_password_in(&bridge);
}

/// A host in `NO_PROXY` is reached directly: the proxy sees nothing.
#[tokio::test]
async fn no_proxy_hosts_go_around_the_proxy() {
    let double = Double::start().await;
    let proxy = Proxy::start(double.addr(), CREDENTIALS).await;
    let action = format!("oncall={KEY_A}");
    let proxy_url = proxy.url(CREDENTIALS);
    let pd_url = double.url();
    let bridge = Bridge::serve_with_env(
        &["--action", &action, "--pagerduty-url", &pd_url],
        &[
            ("HTTP_PROXY", proxy_url.as_str()),
            ("HTTPS_PROXY", proxy_url.as_str()),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
    );
    let (status, answer) = crate::support::post(&bridge.intake("oncall"), failed()).await;
    assert_eq!(status, 202, "{answer}");
    double
        .wait_until(Duration::from_secs(15), "the event, sent directly", |r| {
            !r.is_empty()
        })
        .await;
    assert_eq!(
        (proxy.tunnels().len(), proxy.plain(), proxy.refused()),
        (0, 0, 0),
        "the proxy was used for a NO_PROXY host"
    );
}
