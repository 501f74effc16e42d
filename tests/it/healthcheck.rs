//! `prefect-pagerduty-bridge healthcheck`: the health check for images with
//! no shell or curl. Exit 0 when the bridge answers `/healthz` with 200, 1
//! for anything else, with TLS on as well as off.

use std::process::Command;

use crate::support::bridge::{BIN, Bridge};

fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("healthcheck")
        .args(args)
        .env_remove("PPB_LISTEN")
        .env_remove("PPB_TLS_CERT")
        .envs(env.iter().copied())
        .output()
        .expect("run healthcheck");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

#[test]
fn healthy_is_0_and_anything_else_is_1() {
    let bridge = Bridge::serve(&["--dry-run"]);
    let port = bridge.addr.port().to_string();
    let url = format!("{}/healthz", bridge.url());
    assert_eq!(healthcheck(&["--url", &url], &[]).0, Some(0));
    // As an image runs it: the address from serve's own environment,
    // an unspecified address meaning loopback.
    let listen = format!("0.0.0.0:{port}");
    let (code, said) = healthcheck(&[], &[("PPB_LISTEN", &listen)]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("200"), "{said}");

    let missing = format!("{}/no-such-page", bridge.url());
    let (code, said) = healthcheck(&["--url", &missing], &[]);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("404"), "{said}");
    drop(bridge);
    let (code, said) = healthcheck(&[], &[("PPB_LISTEN", &listen)]);
    assert_eq!(code, Some(1), "nothing listens: {said}");
}

#[test]
fn it_works_with_tls_on() {
    let pki = crate::security::pki("ecdsa");
    let (cert, key) = (pki.dir.path().join("cert.pem"), pki.dir.path().join("key.pem"));
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let bridge = Bridge::serve(&["--dry-run", "--tls-cert", cert, "--tls-key", key]);
    let listen = format!("0.0.0.0:{}", bridge.addr.port());
    let (code, said) = healthcheck(&[], &[("PPB_LISTEN", &listen), ("PPB_TLS_CERT", cert)]);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.starts_with("https://"), "{said}");
    // Plain HTTP to a TLS port is not health.
    let (code, said) = healthcheck(&[], &[("PPB_LISTEN", &listen)]);
    assert_eq!(code, Some(1), "{said}");
    // An explicit https URL, by name, with --ca-file.
    let ca = pki.dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).expect("ca");
    let by_name = format!("https://localhost:{}/healthz", bridge.addr.port());
    let (code, said) = healthcheck(
        &["--url", &by_name, "--ca-file", ca.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(code, Some(0), "{said}");
}
