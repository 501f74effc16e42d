//! Safe to expose: TLS, webhook tokens, API roles, secure defaults, bounded
//! requests. Each test fails if its protection is removed.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::bridge::{BIN, Bridge};
use crate::support::pagerduty::Double;
use crate::support::{KEY_A, KEY_B, capture, client, get_json, get_status, post, serve_oncall};

const WAIT: Duration = Duration::from_secs(15);

pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca_pem: String,
}

/// A CA and a leaf for localhost / 127.0.0.1 with a key of the given kind,
/// made at test time. RSA keys come from `openssl genrsa` (ring cannot make
/// them); rcgen signs with any of the three.
pub(crate) fn pki(kind: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = match kind {
        "ecdsa" => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ecdsa"),
        "ed25519" => KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519"),
        "rsa" => {
            let path = dir.path().join("rsa.pem");
            let ok = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&path)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "openssl genpkey failed (the RSA case needs the openssl command)"
            );
            KeyPair::from_pem(&std::fs::read_to_string(&path).expect("rsa pem")).expect("rsa key")
        }
        other => panic!("{other}"),
    };
    let leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).expect("leaf cert");
    std::fs::write(dir.path().join("cert.pem"), leaf.pem()).expect("write cert");
    std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).expect("write key");
    Pki {
        dir,
        ca_pem: ca_cert.pem(),
    }
}

#[tokio::test]
async fn tls_serves_http2_and_http1_to_clients_that_trust_the_ca() {
    for kind in ["ecdsa", "ed25519", "rsa"] {
        let certs = pki(kind);
        let double = Double::start().await;
        let cert = certs.dir.path().join("cert.pem");
        let key = certs.dir.path().join("key.pem");
        let b = Bridge::serve(&[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
            "--pagerduty-url",
            &double.url(),
            "--action",
            &format!("oncall={KEY_A}"),
        ]);
        let ca = reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).expect("ca");
        let trusting = crate::support::client_builder()
            .tls_certs_only([ca.clone()])
            .build()
            .expect("client");
        let url = format!("https://127.0.0.1:{}", b.addr.port());
        let res = trusting
            .get(format!("{url}/healthz"))
            .send()
            .await
            .expect("https request");
        assert_eq!(res.status().as_u16(), 200, "{kind}");
        assert_eq!(
            res.version(),
            reqwest::Version::HTTP_2,
            "{kind}: ALPN should pick h2"
        );
        let h1 = crate::support::client_builder()
            .tls_certs_only([ca])
            .http1_only()
            .build()
            .expect("client");
        let res = h1
            .post(format!("{url}/v1/prefect/oncall"))
            .body(capture("failed_event_tojson"))
            .send()
            .await
            .expect("https post");
        assert_eq!(res.status().as_u16(), 202, "{kind}");
        assert_eq!(res.version(), reqwest::Version::HTTP_11);
        double.wait_accepted(1, WAIT).await;
        // A client that does not trust this CA gets no answer.
        let other = pki("ecdsa");
        let stranger = crate::support::client_builder()
            .tls_certs_only([reqwest::Certificate::from_pem(other.ca_pem.as_bytes()).expect("ca")])
            .build()
            .expect("client");
        assert!(
            stranger.get(format!("{url}/healthz")).send().await.is_err(),
            "{kind}: untrusted CA accepted"
        );
        // And plain HTTP on the TLS port is not served.
        assert!(
            client()
                .get(format!("http://127.0.0.1:{}/healthz", b.addr.port()))
                .send()
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn webhook_tokens_are_required_rotatable_and_read_from_env_or_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "file-token-0123456789\n").expect("write");
    let double = Double::start().await;
    let b = Bridge::serve_with_env(
        &[
            "--pagerduty-url",
            &double.url(),
            "--action",
            &format!("oncall={KEY_A}"),
            "--webhook-token",
            "env:PPB_TEST_TOKEN",
            "--webhook-token",
            &format!("file:{}", token_file.display()),
        ],
        &[("PPB_TEST_TOKEN", "env-token-0123456789")],
    );
    let body = capture("failed_event_tojson");
    let send = |auth: Option<&str>| {
        let mut req = client().post(b.intake("oncall")).body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    for bad in [
        None,
        Some("Bearer wrong"),
        Some("Bearer env-token-012345678"),
        Some("Basic env-token-0123456789"),
    ] {
        let res = send(bad).await.expect("request");
        assert_eq!(res.status().as_u16(), 401, "{bad:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let v: Value = res.json().await.expect("json");
        assert_eq!(v["error"], "unauthorized");
    }
    assert!(double.received().is_empty(), "a refused webhook was delivered");
    assert_eq!(
        send(Some("Bearer env-token-0123456789"))
            .await
            .expect("request")
            .status()
            .as_u16(),
        202
    );
    let res = client()
        .post(b.intake("oncall"))
        .header("authorization", "Bearer file-token-0123456789")
        .body(capture("crashed_event_tojson"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 202);
    double.wait_accepted(2, WAIT).await;
    // Health stays open for probes.
    assert_eq!(get_status(&format!("{}/healthz", b.url())).await, 200);
}

#[tokio::test]
async fn the_bridge_refuses_to_listen_openly_without_a_token() {
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "0.0.0.0:0",
                "--action",
                &format!("a={KEY_A}"),
                "--spool",
            ])
            .arg(dir.path().join("s.redb"))
            .args(extra)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // It either exits (refusing) or says it is ready (serving).
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut text = String::new();
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
                let _ = tx.send((line.contains("ready"), text.clone()));
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut text = String::new();
        let exited = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break Some(status);
            }
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok((true, t)) => {
                    text = t;
                    break None;
                }
                Ok((false, t)) => text = t,
                Err(_) => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "neither exited nor ready: {text}"
            );
        };
        let _ = child.kill();
        let _ = child.wait();
        while let Ok((_, t)) = rx.recv_timeout(Duration::from_millis(200)) {
            text = t;
        }
        (exited, text)
    };
    let (exited, stderr) = run(&[]);
    assert_eq!(exited.and_then(|s| s.code()), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without --webhook-token"),
        "{stderr}"
    );
    let (exited, stderr) = run(&["--allow-unauthenticated"]);
    assert!(exited.is_none(), "--allow-unauthenticated must start: {stderr}");
    let (exited, stderr) = run(&["--webhook-token", "a-long-enough-token"]);
    assert!(exited.is_none(), "a webhook token must start: {stderr}");
}

#[tokio::test]
async fn every_api_endpoint_checks_the_role() {
    let double = Double::start().await;
    let b = serve_oncall(
        &double,
        &[
            "--api-token",
            "viewer:viewer-token-123",
            "--api-token",
            "user:user-token-1234567",
            "--api-token",
            "admin:admin-token-12345",
        ],
    );
    // (method, path, body, least role)
    let endpoints: Vec<(&str, String, Option<Value>, &str)> = vec![
        ("GET", "/v1/actions".into(), None, "viewer"),
        ("GET", "/v1/spool".into(), None, "viewer"),
        ("GET", "/v1/dead-letters".into(), None, "viewer"),
        ("POST", "/v1/dead-letters/999/retry".into(), None, "user"),
        ("DELETE", "/v1/dead-letters/999".into(), None, "admin"),
        (
            "POST",
            "/v1/actions".into(),
            Some(json!({"name": "x", "routing_key": KEY_B})),
            "user",
        ),
        ("POST", "/v1/actions/oncall/test".into(), None, "user"),
        ("DELETE", "/v1/actions/nosuch".into(), None, "user"),
    ];
    let roles = [
        ("none", None),
        ("viewer", Some("viewer-token-123")),
        ("user", Some("user-token-1234567")),
        ("admin", Some("admin-token-12345")),
    ];
    let rank = |r: &str| {
        ["none", "viewer", "user", "admin"]
            .iter()
            .position(|x| *x == r)
            .expect("role")
    };
    let http = client();
    let mut checked = 0;
    for (method, path, body, needs) in &endpoints {
        for (role, token) in roles {
            // Create the action once per role under test, deleting it after.
            let mut req = http.request(method.parse().expect("method"), format!("{}{path}", b.url()));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(body) = body {
                let mut body = body.clone();
                body["name"] = json!(format!("x-{role}"));
                req = req.json(&body);
            }
            let status = req.send().await.expect("request").status().as_u16();
            let expected_denial = match (role, rank(role) < rank(needs)) {
                ("none", _) => Some(401),
                (_, true) => Some(403),
                _ => None,
            };
            match expected_denial {
                Some(code) => assert_eq!(status, code, "{method} {path} as {role}"),
                None => assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role}: {status}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, endpoints.len() * roles.len());
    // A wrong token is as good as none.
    let res = http
        .get(format!("{}/v1/spool", b.url()))
        .bearer_auth("viewer-token-12")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status().as_u16(), 401);
    // Health needs no token.
    assert_eq!(get_status(&format!("{}/healthz", b.url())).await, 200);
}

#[tokio::test]
async fn actions_can_be_created_tested_listed_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("s.redb");
    let double = Double::start().await;
    let url = double.url();
    let fixed = format!("oncall={KEY_A}");
    let args = [
        "--pagerduty-url",
        &url,
        "--action",
        &fixed,
        "--spool",
        spool.to_str().expect("utf-8"),
    ];
    let mut b = Bridge::serve(&args);
    let http = client();
    let create = |body: Value| http.post(format!("{}/v1/actions", b.url())).json(&body).send();
    let res = create(json!({"name": "data-team", "routing_key": KEY_B, "severity": "warning"}))
        .await
        .expect("post");
    assert_eq!(res.status().as_u16(), 201);
    let v: Value = res.json().await.expect("json");
    assert_eq!(v["routing_key"], format!("…{}", &KEY_B[28..]));
    for (bad, code) in [
        (json!({"name": "data-team", "routing_key": KEY_B}), 409),
        (json!({"name": "bad name", "routing_key": KEY_B}), 400),
        (json!({"name": "ok", "routing_key": "has space"}), 400),
        (
            json!({"name": "ok", "routing_key": KEY_B, "severity": "high"}),
            400,
        ),
        (json!({"name": "ok"}), 400),
    ] {
        let res = create(bad.clone()).await.expect("post");
        assert_eq!(res.status().as_u16(), code, "{bad}");
        let v: Value = res.json().await.expect("json");
        assert!(v["detail"].is_string());
    }
    // The new action takes Prefect webhooks at once, with its severity.
    let (status, answer) = post(&b.intake("data-team"), capture("failed_event_tojson")).await;
    assert_eq!((status, answer["severity"].as_str()), (202, Some("warning")));
    // Test it: a trigger through its key.
    let res = http
        .post(format!("{}/v1/actions/data-team/test", b.url()))
        .send()
        .await
        .expect("test");
    assert_eq!(res.status().as_u16(), 202);
    let got = double.wait_accepted(2, WAIT).await;
    let test = got
        .iter()
        .find(|r| r.body["payload"]["class"] == "bridge.test")
        .expect("test alert");
    assert_eq!(test.body["routing_key"], KEY_B);
    assert!(
        test.body["payload"]["summary"]
            .as_str()
            .expect("summary")
            .contains("Test alert")
    );
    // It survives a restart.
    assert!(b.terminate().success());
    b = Bridge::serve(&args);
    let list: Value = get_json(&format!("{}/v1/actions", b.url())).await;
    let names: Vec<&str> = list["actions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["data-team", "oncall"]);
    // --action ones cannot be deleted here; API ones can.
    let res = http
        .delete(format!("{}/v1/actions/oncall", b.url()))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status().as_u16(), 409);
    let res = http
        .delete(format!("{}/v1/actions/data-team", b.url()))
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status().as_u16(), 200);
    let (status, _) = post(&b.intake("data-team"), capture("failed_event_tojson")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn slow_requests_time_out_and_slow_headers_are_cut() {
    let double = Double::start().await;
    let b = serve_oncall(&double, &["--request-timeout", "1s"]);
    // A body that never finishes: 408.
    let text = crate::support::raw_exchange(
        b.addr,
        b"POST /v1/prefect/oncall HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"event\":",
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    // Headers that never finish: the connection is closed.
    let started = std::time::Instant::now();
    let text = crate::support::raw_exchange(b.addr, b"POST /v1/prefect/oncall HTTP/1.1\r\nHost: x\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "slow headers held the connection"
    );
    assert!(text.is_empty() || text.contains("408"), "{text}");
    assert!(double.received().is_empty());
}

#[tokio::test]
async fn connections_are_capped() {
    use std::io::Write as _;
    let double = Double::start().await;
    let b = serve_oncall(&double, &["--max-connections", "2"]);
    // Two connections each with a request in flight (a body still arriving).
    let busy = || {
        let mut s = TcpStream::connect(b.addr).expect("connect");
        s.write_all(b"POST /v1/prefect/oncall HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            .expect("write");
        s
    };
    let (busy1, busy2) = (busy(), busy());
    let quick = crate::support::client_builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .expect("client");
    let url = format!("{}/healthz", b.url());
    // Once the bridge holds both, a third connection is not served; a cap
    // that does not hold never gets here.
    crate::support::wait::holds(
        Duration::from_secs(10),
        "a third connection is not served",
        || async { quick.get(&url).send().await.is_err() },
    )
    .await;
    drop(busy1);
    drop(busy2);
    let res = crate::support::client()
        .get(&url)
        .send()
        .await
        .expect("served once a slot frees");
    assert_eq!(res.status().as_u16(), 200);
    // Idle connections (no request in flight) do not hold the cap: they are
    // closed to make room for a new one.
    let _idle1 = TcpStream::connect(b.addr).expect("connect");
    let _idle2 = TcpStream::connect(b.addr).expect("connect");
    // Closed to make room once idle for a second.
    crate::support::wait::hold(Duration::from_millis(1100), "the connections sit idle").await;
    let res = quick.get(&url).send().await.expect("idle connections make room");
    assert_eq!(res.status().as_u16(), 200);
}

#[tokio::test]
async fn the_ingress_rate_limit_answers_429_with_retry_after() {
    let double = Double::start().await;
    let b = serve_oncall(&double, &["--ingress-rate", "5/10s"]);
    let mut codes = Vec::new();
    for i in 0..8 {
        let res = client()
            .get(format!("{}/healthz", b.url()))
            .send()
            .await
            .expect("get");
        codes.push(res.status().as_u16());
        if res.status().as_u16() == 429 {
            let after: u64 = res.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=10).contains(&after), "request {i}: Retry-After {after}");
            let v: Value = res.json().await.expect("json");
            assert_eq!(v["error"], "rate_limited");
        }
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 4, "{codes:?}");
    assert!(codes[4..].iter().all(|c| *c == 429), "{codes:?}");
}
