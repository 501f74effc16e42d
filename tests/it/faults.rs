//! A 202 means a page, under every fault: fault injection through the real
//! binary. Client resets around the spool commit, a request timeout shorter
//! than the commit, a full disk that is freed again, connection floods of
//! every kind, hostile `Retry-After` values, damaged spool files, duplicates
//! across a restart and during a failing commit, non-finite numbers, log
//! injection, and the outage and throttling mechanisms of delivery.

use std::collections::HashMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::support::bridge::{BIN, Bridge};
use crate::support::pagerduty::{Double, Reply};
use crate::support::wait;
use crate::support::{KEY_A, capture, client, client_builder, get_json, post, serve_oncall};

const WAIT: Duration = Duration::from_secs(30);

/// Delivery flags that keep tests quick: no per-key limit worth the name,
/// fast retries.
const FAST: [&str; 6] = [
    "--pagerduty-rate",
    "100000/s",
    "--retry-initial-interval",
    "100ms",
    "--retry-max-interval",
    "500ms",
];

/// A flow-run event of run `run` in a state, with its own event id `tag`.
fn run_event(run: usize, state_type: &str, state_name: &str, tag: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&capture("failed_event_tojson")).expect("json");
    let id = format!("00000000-0000-4000-8000-{run:012}");
    v["id"] = json!(format!("{tag}-{id}"));
    v["event"] = json!(format!("prefect.flow-run.{state_name}"));
    v["resource"]["prefect.resource.id"] = json!(format!("prefect.flow-run.{id}"));
    v["resource"]["prefect.state-type"] = json!(state_type);
    v["resource"]["prefect.state-name"] = json!(state_name);
    v["payload"]["validated_state"] = json!({"type": state_type, "name": state_name});
    v.to_string().into_bytes()
}

fn dedup_key(run: usize) -> String {
    format!("prefect/flow-run/00000000-0000-4000-8000-{run:012}")
}

/// A small pseudo-random number below `n`.
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) % n.max(1)
}

/// Sends a whole webhook request on a fresh connection, then resets it
/// (RST, no goodbye) `after` later, without reading the answer.
async fn post_and_reset(addr: SocketAddr, body: &[u8], after: Duration) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/prefect/oncall HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body).await.expect("body");
    wait::hold(after, "the client hangs up this long after sending").await;
    s.set_zero_linger().expect("linger");
    drop(s);
}

/// The `ready` gauge of `/metrics`.
async fn ready_gauge(b: &Bridge) -> Option<f64> {
    let text = crate::support::get_text(&format!("{}/metrics", b.url())).await;
    text.lines()
        .find_map(|l| l.strip_prefix("prefect_pagerduty_bridge_ready "))
        .and_then(|v| v.trim().parse().ok())
}

/// The spool figures.
async fn spool_stats(b: &Bridge) -> Value {
    get_json(&format!("{}/v1/spool", b.url())).await
}

/// Polls `check` until it holds; panics with `what` after `timeout`.
async fn eventually<F, Fut>(timeout: Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait::holds(timeout, what, check).await;
}

/// Waits until nothing is queued or in flight.
async fn drained(b: &Bridge) {
    wait::drained(b, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_resets_around_the_commit_strand_nothing() {
    const RUNS: usize = 150;
    let double = Double::start().await;
    let b = serve_oncall(&double, &FAST);
    for run in 0..RUNS {
        let (status, body) = post(&b.intake("oncall"), run_event(run, "FAILED", "Failed", "a")).await;
        assert_eq!(status, 202, "{body}");
        // The recovery's sender hangs up 0-2 ms after sending: before,
        // during or after the commit.
        let completed = run_event(run, "COMPLETED", "Completed", "b");
        post_and_reset(b.addr, &completed, Duration::from_micros(random_below(2000))).await;
        let (status, body) = post(&b.intake("oncall"), run_event(run, "FAILED", "Failed", "c")).await;
        assert_eq!(status, 202, "run {run}: {body}");
        assert_eq!(body["event_action"], "trigger");
    }
    // Everything answered 202 goes out while the bridge runs: nothing is
    // stranded behind an event whose request was dropped.
    drained(&b).await;
    let mut last: HashMap<String, String> = HashMap::new();
    for r in double.accepted() {
        last.insert(r.dedup_key().to_owned(), r.action().to_owned());
    }
    for run in 0..RUNS {
        assert_eq!(
            last.get(&dedup_key(run)).map(String::as_str),
            Some("trigger"),
            "run {run}: its second failure must be the last word at PagerDuty"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_shorter_than_the_commit_does_not_refuse_a_stored_event() {
    if !is_root() {
        eprintln!("skipped: freezing a filesystem needs root (CI runs as root)");
        return;
    }
    let disk = LoopDisk::mount();
    let spool = disk.path().join("spool.redb");
    let double = Double::start().await;
    let b = serve_oncall(
        &double,
        &[
            &FAST[..],
            &[
                "--request-timeout",
                "1s",
                "--spool",
                spool.to_str().expect("utf-8"),
            ],
        ]
        .concat(),
    );
    // Writes to the spool's filesystem block while it is frozen: every
    // commit takes longer than the request timeout.
    let frozen = disk.freeze();
    let mut tasks = Vec::new();
    for run in 0..16 {
        let url = b.intake("oncall");
        tasks.push(tokio::spawn(async move {
            post(&url, run_event(run, "FAILED", "Failed", "a")).await
        }));
    }
    wait::hold(
        Duration::from_millis(2500),
        "the disk stays frozen past the request timeout",
    )
    .await;
    drop(frozen);
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, 202, "{body}");
    }
    double.wait_accepted(16, WAIT).await;
}

/// An ext4 filesystem in a file, loop-mounted; unmounted when dropped.
struct LoopDisk {
    dir: tempfile::TempDir,
    _image: tempfile::TempDir,
}

/// A frozen filesystem, thawed when dropped.
struct Frozen(PathBuf);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.0).status();
    }
}

impl LoopDisk {
    fn mount() -> Self {
        let image = tempfile::tempdir().expect("tempdir");
        let file = image.path().join("fs.img");
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(64 << 20))
            .expect("image");
        let ok = Command::new("mkfs.ext4")
            .arg("-q")
            .arg(&file)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mkfs.ext4 failed (e2fsprogs)");
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a loop device failed");
        Self { dir, _image: image }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn freeze(&self) -> Frozen {
        let ok = Command::new("fsfreeze")
            .arg("-f")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "fsfreeze failed");
        Frozen(self.path().to_owned())
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(self.dir.path()).status();
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Whether this process runs as root (mounting a small filesystem needs it).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs of `size` mounted at a fresh directory; unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs failed");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a file of zeros; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&chunk[..512]);
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_with_503_and_recovers_when_freed() {
    if !is_root() {
        eprintln!("skipped: mounting a small filesystem needs root (CI runs as root)");
        return;
    }
    let disk = SmallDisk::mount("16m");
    let spool = disk.path().join("spool.redb");
    let double = Double::start().await;
    let b = serve_oncall(
        &double,
        &[&FAST[..], &["--spool", spool.to_str().expect("utf-8")]].concat(),
    );
    let readyz = format!("{}/readyz", b.url());
    assert_eq!(crate::support::get_status(&readyz).await, 200);
    let mut accepted = Vec::new();
    for run in 0..5 {
        assert_eq!(
            post(&b.intake("oncall"), run_event(run, "FAILED", "Failed", "a"))
                .await
                .0,
            202
        );
        accepted.push(run);
    }
    let filler = disk.fill();
    let _ = filler;
    // Keep sending until the spool can no longer commit.
    let mut refused = None;
    for run in 5..3000 {
        let (status, body) = post(&b.intake("oncall"), run_event(run, "FAILED", "Failed", "a")).await;
        match status {
            202 => accepted.push(run),
            503 => {
                assert_eq!(body["error"], "spool_unavailable", "{body}");
                refused = Some(run);
                break;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refused = refused.expect("the full disk never refused an event");
    // Whatever room the failed write left is taken too.
    let topped_up = disk.fill();
    // Not ready, with the reason, while it cannot commit (it keeps trying);
    // still alive.
    let res = client().get(&readyz).send().await.expect("readyz");
    assert_eq!(res.status().as_u16(), 503);
    let why: Value = res.json().await.expect("json");
    assert_eq!(why["error"], "not_ready", "{why}");
    // The readiness gauge says the same.
    assert_eq!(ready_gauge(&b).await, Some(0.0));
    assert_eq!(
        crate::support::get_status(&format!("{}/healthz", b.url())).await,
        200
    );
    // A repeat of the refused event is never a "duplicate": the original
    // was not stored. Either it is refused again, or it is stored now.
    let (status, body) = post(&b.intake("oncall"), run_event(refused, "FAILED", "Failed", "a")).await;
    assert_ne!(body["status"], "duplicate", "{body}");
    let retried = match status {
        503 => false,
        202 => true,
        other => panic!("unexpected {other}: {body}"),
    };
    // Free the space: the bridge recovers by itself.
    for f in std::fs::read_dir(disk.path()).expect("ls").flatten() {
        if f.file_name() != "spool.redb" {
            std::fs::remove_file(f.path()).expect("free the disk");
        }
    }
    let _ = topped_up;
    eventually(Duration::from_secs(10), "/readyz answers 200 again", || async {
        crate::support::get_status(&readyz).await == 200
    })
    .await;
    assert_eq!(ready_gauge(&b).await, Some(1.0));
    let (status, body) = post(&b.intake("oncall"), run_event(refused, "FAILED", "Failed", "a")).await;
    if retried {
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("duplicate")),
            "{body}"
        );
    } else {
        assert_eq!(
            status, 202,
            "the refused event, sent again once there is room: {body}"
        );
    }
    accepted.push(refused);
    drained(&b).await;
    // Every event answered 202 reached PagerDuty exactly once. The refused
    // one may have gone out while the commit that then failed ran, once per
    // post of it (PagerDuty dedups the repeats by their dedup key).
    let mut sent: HashMap<String, usize> = HashMap::new();
    for r in double.accepted() {
        *sent.entry(r.dedup_key().to_owned()).or_default() += 1;
    }
    for run in &accepted {
        let n = sent.get(&dedup_key(*run)).copied().unwrap_or(0);
        if *run == refused {
            assert!((1..=3).contains(&n), "run {run} sent {n} times");
        } else {
            assert_eq!(n, 1, "run {run}");
        }
    }
    assert_eq!(sent.len(), accepted.len(), "only accepted events were sent");
}

/// Opens `n` connections to `to` from the loopback address `from`, each
/// sending `first` (maybe nothing) and then nothing more.
async fn flood(from: &str, to: SocketAddr, n: usize, first: &'static [u8]) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{from}:0").parse().expect("addr"))
            .expect("bind");
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), socket.connect(to)).await else {
            continue;
        };
        if !first.is_empty() {
            let _ = s.write_all(first).await;
        }
        held.push(s);
    }
    held
}

/// The HTTP/2 client preface, and nothing after it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A real webhook must be answered 202 within a second.
async fn webhook_within_a_second(url: &str, client: &reqwest::Client, run: usize) {
    let started = Instant::now();
    let res = client
        .post(url)
        .timeout(Duration::from_secs(1))
        .body(run_event(run, "FAILED", "Failed", "w"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the webhook was not answered within a second: {e}"));
    assert_eq!(res.status().as_u16(), 202);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_floods_do_not_lock_out_the_intake() {
    let double = Double::start().await;
    let b = serve_oncall(
        &double,
        &["--max-connections", "128", "--max-connections-per-ip", "32"],
    );
    let fresh = || {
        client_builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client")
    };
    // One peer with idle TCP connections: its cap, not everyone's.
    let idle = flood("127.0.0.2", b.addr, 200, b"").await;
    webhook_within_a_second(&b.intake("oncall"), &fresh(), 1).await;
    // h2c prefaces from several peers, more than every slot: idle ones make room.
    let mut prefaces = Vec::new();
    for ip in 3..9 {
        prefaces.extend(flood(&format!("127.0.0.{ip}"), b.addr, 32, H2_PREFACE).await);
    }
    // Connections become candidates for closing once idle for a second.
    wait::hold(Duration::from_millis(1100), "the flood's connections sit idle").await;
    webhook_within_a_second(&b.intake("oncall"), &fresh(), 2).await;
    drop((idle, prefaces));
    double.wait_accepted(2, WAIT).await;
}

/// A bridge serving HTTPS with a certificate from a CA made here, plus `extra` flags.
async fn tls_bridge(extra: &[&str]) -> (crate::security::Pki, Double, Bridge) {
    let certs = crate::security::pki("ecdsa");
    let double = Double::start().await;
    let cert = certs.dir.path().join("cert.pem");
    let key = certs.dir.path().join("key.pem");
    let tls = [
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ];
    let b = serve_oncall(&double, &[&tls[..], extra].concat());
    (certs, double, b)
}

/// Reads until the bridge closes the connection; returns how long that took
/// (panics after 10 s).
async fn closed_after(mut stream: impl tokio::io::AsyncRead + Unpin) -> Duration {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {} // SETTINGS, GOAWAY
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("an idle connection was held for 10 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_do_not_lock_out_the_intake() {
    let (certs, _double, b) =
        tls_bridge(&["--max-connections", "64", "--max-connections-per-ip", "16"]).await;
    let mut stalled = Vec::new();
    for ip in 2..8 {
        stalled.extend(flood(&format!("127.0.0.{ip}"), b.addr, 16, b"").await);
    }
    wait::hold(Duration::from_millis(1100), "the handshakes stay stalled").await;
    let ca = reqwest::Certificate::from_pem(certs.ca_pem.as_bytes()).expect("ca");
    let trusting = client_builder().tls_certs_only([ca]).build().expect("client");
    let url = format!("https://127.0.0.1:{}/v1/prefect/oncall", b.addr.port());
    webhook_within_a_second(&url, &trusting, 1).await;
    drop(stalled);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_its_first_byte_deadline() {
    let double = Double::start().await;
    let b = serve_oncall(&double, &["--request-timeout", "1s", "--idle-timeout", "2s"]);
    let addr = b.addr;
    let elapsed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let started = Instant::now();
        let n = s.read(&mut [0u8; 64]).unwrap_or(0);
        (n, started.elapsed())
    })
    .await
    .expect("reader");
    assert_eq!(elapsed.0, 0, "closed without an answer");
    assert!(elapsed.1 < Duration::from_secs(3), "held for {:?}", elapsed.1);
    // An h2c connection that sent its preface and nothing else, likewise.
    let mut h2 = flood("127.0.0.1", addr, 1, H2_PREFACE).await;
    let took = closed_after(h2.pop().expect("connected")).await;
    assert!(took < Duration::from_secs(3), "held for {took:?}");
}

#[tokio::test]
async fn an_idle_tls_connection_is_closed_at_its_first_request_deadline() {
    let (certs, _double, b) = tls_bridge(&["--request-timeout", "1s"]).await;
    // A client that completes the handshake (offering h2) and then says nothing.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(certs.ca_pem.as_bytes()).expect("ca pem");
    roots.add(ca).expect("ca");
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(b.addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let took = closed_after(tls).await;
    assert!(took < Duration::from_secs(3), "held for {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_retry_after_values_are_clamped() {
    let double = Double::start().await;
    let b = serve_oncall(
        &double,
        &[
            "--pagerduty-rate",
            "100000/s",
            "--retry-max-interval",
            "1s",
            "--max-in-flight",
            "1",
        ],
    );
    let hints = [
        "0",
        "86400",
        "18446744073709551615",
        "Fri, 31 Dec 9999 23:59:59 GMT",
    ];
    for (run, hint) in hints.iter().enumerate() {
        double.script([Reply::RateLimitHeader((*hint).to_owned())]);
        let started = Instant::now();
        assert_eq!(
            post(&b.intake("oncall"), run_event(run, "FAILED", "Failed", "a"))
                .await
                .0,
            202
        );
        double
            .wait_until(
                Duration::from_secs(10),
                &format!("delivery after Retry-After: {hint}"),
                |r| {
                    r.iter()
                        .any(|r| r.status == 202 && r.dedup_key() == dedup_key(run))
                },
            )
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "Retry-After {hint}: paused {:?}, past the 1 s clamp",
            started.elapsed()
        );
    }
    assert_eq!(
        crate::support::get_status(&format!("{}/healthz", b.url())).await,
        200
    );
    assert!(!b.logs().iter().any(|l| l.contains("panicked")));
}

#[tokio::test]
async fn rate_limited_events_still_age_into_dead_letters() {
    let double = Double::start().await;
    double.set_reply(Reply::RateLimit(None));
    let b = serve_oncall(
        &double,
        &[
            "--max-event-age",
            "1s",
            "--rate-limit-pause",
            "200ms",
            "--pagerduty-rate",
            "1000/s",
        ],
    );
    assert_eq!(
        post(&b.intake("oncall"), run_event(1, "FAILED", "Failed", "a"))
            .await
            .0,
        202
    );
    eventually(Duration::from_secs(10), "the event is a dead letter", || async {
        let v = get_json(&format!("{}/v1/dead-letters", b.url())).await;
        v["dead_letters"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    let v = get_json(&format!("{}/v1/dead-letters", b.url())).await;
    assert!(
        v["dead_letters"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("rate-limited")),
        "{v}"
    );
}

/// Writes a spool file as a running bridge would, with rows that do not
/// decode beside one valid queued event.
fn damaged_spool(path: &Path) {
    use redb::{Database, TableDefinition};
    let events: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
    let open: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("open_alerts");
    let actions: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("actions");
    let db = Database::create(path).expect("create");
    let txn = db.begin_write().expect("txn");
    {
        let valid = json!({
            "id": 7, "action": "oncall", "accepted_ms": 1_764_000_000_000_i64,
            "next_attempt_ms": 0, "attempts": 0, "class": "failure",
            "event": {"routing_key": KEY_A, "event_action": "trigger", "dedup_key": "prefect/flow-run/valid",
                      "payload": {"summary": "a queued failure", "source": "prefect", "severity": "error"}}
        });
        let mut t = txn.open_table(events).expect("events");
        t.insert(7, valid.to_string().as_bytes()).expect("insert");
        t.insert(8, b"\xff\xfe not a record".as_slice()).expect("insert");
        let mut t = txn.open_table(open).expect("open");
        t.insert(9, b"{\"routing_key\": 42}".as_slice()).expect("insert");
        let mut t = txn.open_table(actions).expect("actions");
        t.insert("broken", b"[]".as_slice()).expect("insert");
    }
    txn.commit().expect("commit");
}

fn spool_cli(spool: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(BIN)
        .args(["spool", "--spool"])
        .arg(spool)
        .args(args)
        .output()
        .expect("run spool");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_records_are_quarantined_counted_and_droppable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool.redb");
    damaged_spool(&spool);
    // Offline, before any bridge touched it: check reports the damage.
    let (code, report, _) = spool_cli(&spool, &["check"]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["undecodable"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    let double = Double::start().await;
    let spool_arg = spool.to_str().expect("utf-8");
    let mut b = serve_oncall(&double, &[&FAST[..], &["--spool", spool_arg]].concat());
    // The valid event still goes out; the damaged rows are kept aside.
    double
        .wait_until(WAIT, "the valid queued event", |r| {
            r.iter()
                .any(|r| r.status == 202 && r.dedup_key() == "prefect/flow-run/valid")
        })
        .await;
    assert_eq!(spool_stats(&b).await["quarantined"], 3);
    let logged = |b: &Bridge| b.logs().iter().filter(|l| l.contains("does not decode")).count();
    assert_eq!(logged(&b), 3, "each damaged row is logged once");
    assert_eq!(b.terminate().code(), Some(0));
    // A second start logs no row again, and still counts them.
    let mut b = serve_oncall(&double, &[&FAST[..], &["--spool", spool_arg]].concat());
    assert_eq!(logged(&b), 0);
    assert_eq!(spool_stats(&b).await["quarantined"], 3);
    b.terminate();
    let (code, report, _) = spool_cli(&spool, &["check"]);
    assert_eq!(code, 1);
    let quarantined = report["quarantined"].as_array().cloned().unwrap_or_default();
    assert_eq!(quarantined.len(), 3, "{report}");
    let id = quarantined[0]["id"].as_u64().expect("id");
    let (code, dropped, stderr) = spool_cli(&spool, &["drop", &format!("quarantine:{id}")]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(dropped["table"], "quarantine");
    let (_, report, _) = spool_cli(&spool, &["check"]);
    assert_eq!(report["quarantined"].as_array().map(Vec::len), Some(2));
    let (_, stats, _) = spool_cli(&spool, &["stats"]);
    assert_eq!(stats["quarantined"], 2, "{stats}");
}

#[tokio::test]
async fn a_spool_file_damaged_beyond_reading_is_refused_with_a_remedy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool.redb");
    damaged_spool(&spool);
    // Overwrite everything after the first page with noise.
    let mut bytes = std::fs::read(&spool).expect("read");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i.wrapping_mul(2_654_435_761) >> 7) as u8;
    }
    std::fs::write(&spool, &bytes).expect("write");
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--dry-run",
            "--action",
            &format!("oncall={KEY_A}"),
        ])
        .arg("--spool")
        .arg(&spool)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(spool.to_str().expect("utf-8")),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("move the file aside"),
        "says what to do: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_is_a_duplicate_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool.redb");
    let spool_arg = spool.to_str().expect("utf-8");
    let double = Double::start().await;
    let event = run_event(1, "FAILED", "Failed", "a");
    let mut b = serve_oncall(&double, &[&FAST[..], &["--spool", spool_arg]].concat());
    assert_eq!(post(&b.intake("oncall"), event.clone()).await.0, 202);
    double.wait_accepted(1, WAIT).await;
    assert_eq!(b.terminate().code(), Some(0));
    let b = serve_oncall(&double, &[&FAST[..], &["--spool", spool_arg]].concat());
    let (status, body) = post(&b.intake("oncall"), event).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    wait::drained(&b, WAIT).await;
    assert_eq!(double.received().len(), 1, "sent once");
}

#[tokio::test]
async fn non_finite_numbers_do_not_turn_a_recovery_into_a_page() {
    let double = Double::start().await;
    let b = serve_oncall(&double, &FAST);
    assert_eq!(
        post(&b.intake("oncall"), run_event(1, "FAILED", "Failed", "a"))
            .await
            .0,
        202
    );
    double.wait_accepted(1, WAIT).await;
    let completed = String::from_utf8(run_event(1, "COMPLETED", "Completed", "b")).expect("utf-8");
    // As Python's json.dumps writes them, deep in the payload.
    let completed = completed.replacen(
        "\"payload\":{",
        "\"payload\":{\"nan\":NaN,\"inf\":[Infinity,-Infinity],\"huge\":1e999,",
        1,
    );
    assert!(completed.contains("NaN"), "the payload was rewritten");
    let (status, body) = post(&b.intake("oncall"), completed).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["event_action"], "resolve", "{body}");
    let got = double.wait_accepted(2, WAIT).await;
    assert_eq!(got[1].action(), "resolve");
}

#[tokio::test]
async fn control_characters_never_reach_a_log_line_or_a_dedup_key() {
    let double = Double::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--pagerduty-url",
        ])
        .arg(double.url())
        .args(["--action", &format!("oncall={KEY_A}"), "--spool"])
        .arg(dir.path().join("s.redb"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut r = std::io::BufReader::new(stderr);
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let text = rx
            .recv_timeout(left)
            .expect("the bridge logs where it listens within 20 s");
        if let Some(at) = text.find("listen=") {
            let rest = &text[at + 7..];
            break rest[..rest.find(' ').unwrap_or(rest.len())].to_owned();
        }
    };
    let mut v: Value = serde_json::from_slice(&run_event(1, "FAILED", "Failed", "a")).expect("json");
    let evil = "prefect.flow-run.r1\r\n2026-01-01T00:00:00Z  INFO FORGED line\u{1b}[31m";
    v["resource"]["prefect.resource.id"] = json!(evil);
    v["event"] = json!("prefect.flow-run.Failed\r\nFORGED event");
    let (status, body) = post(&format!("http://{addr}/v1/prefect/oncall"), v.to_string()).await;
    assert_eq!(status, 202, "{body}");
    let key = body["dedup_key"].as_str().expect("dedup key");
    assert!(!key.chars().any(char::is_control), "{key:?}");
    double.wait_accepted(1, WAIT).await;
    assert!(!double.accepted()[0].dedup_key().chars().any(char::is_control));
    // A resolve with nothing open is logged with the event's name.
    let mut r = v.clone();
    r["id"] = json!("other");
    r["resource"]["prefect.resource.id"] = json!("prefect.flow-run.none\r\nFORGED resolve");
    r["resource"]["prefect.state-type"] = json!("COMPLETED");
    r["event"] = json!("prefect.flow-run.Completed\nFORGED ignored");
    assert_eq!(
        post(&format!("http://{addr}/v1/prefect/oncall"), r.to_string())
            .await
            .0,
        200
    );
    // Both outcomes are in the log before it is read whole.
    let deadline = Instant::now() + WAIT;
    let mut text = String::new();
    while !(text.contains("delivered to PagerDuty") && text.contains("nothing to send")) {
        assert!(Instant::now() < deadline, "outcomes not logged: {text}");
        if let Ok(t) = rx.recv_timeout(Duration::from_millis(100)) {
            text = t;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    while let Ok(t) = rx.recv_timeout(Duration::from_millis(200)) {
        text = t;
    }
    assert!(text.contains("delivered to PagerDuty"), "{text}");
    assert!(!text.contains('\u{1b}'), "an escape sequence reached the log");
    assert!(!text.contains('\r'), "a carriage return reached the log");
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with("2026-01-01") && !line.starts_with("FORGED"),
            "forged line: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_is_probed_and_its_backlog_goes_out_on_recovery() {
    const N: usize = 40;
    let double = Double::start().await;
    double.set_reply(Reply::Status(500));
    let b = serve_oncall(
        &double,
        &[
            "--pagerduty-rate",
            "100000/s",
            "--retry-initial-interval",
            "500ms",
            "--retry-max-interval",
            "30s",
        ],
    );
    for run in 0..N {
        assert_eq!(
            post(&b.intake("oncall"), run_event(run, "FAILED", "Failed", "a"))
                .await
                .0,
            202
        );
    }
    let outage = Duration::from_secs(3);
    wait::hold(outage, "PagerDuty stays down").await;
    let failed = double.received().len();
    // The sends in flight when it began (at most --max-in-flight 8), then
    // one probe every 500 ms.
    assert!(failed <= 8 + 7, "{failed} failed attempts in a 3 s outage");
    assert!(failed >= 3, "the key was probed ({failed} attempts)");
    double.set_reply(Reply::Accept);
    let recovered = Instant::now();
    let got = double.wait_accepted(N, WAIT).await;
    let last = got.iter().map(|r| r.at).max().expect("some");
    assert!(
        last.duration_since(recovered) < Duration::from_millis(1500),
        "the backlog took {:?} after recovery",
        last.duration_since(recovered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_key_adapts_its_pace_instead_of_stalling() {
    const N: usize = 80;
    let double = Double::start().await;
    double.throttle(10.0, 10.0);
    let b = serve_oncall(&double, &["--pagerduty-rate", "100000/min"]);
    let started = Instant::now();
    for run in 0..N {
        assert_eq!(
            post(&b.intake("oncall"), run_event(run, "FAILED", "Failed", "a"))
                .await
                .0,
            202
        );
    }
    double.wait_accepted(N, WAIT).await;
    let took = started.elapsed();
    let all = double.received();
    let limited = all.iter().filter(|r| r.status == 429).count();
    assert!(
        limited * 10 <= all.len(),
        "{limited} of {} attempts answered 429",
        all.len()
    );
    // At 10 events/s with a burst of 10, 80 events take at least 7 s; the
    // bridge must not take much more than that.
    assert!(took < Duration::from_secs(16), "80 events took {took:?}");
}

/// PagerDuty's documented limit is a count over a window looking back from
/// now; a flood to one key must stay inside it however the sends are timed,
/// so the double refuses every call past 30 in any second (refused calls
/// count too, as they would at PagerDuty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_to_one_key_never_meets_the_window_limit() {
    const N: usize = 150;
    let double = Double::start().await;
    double.throttle_window(30, Duration::from_secs(1));
    // PagerDuty is down while the flood arrives, so that it is all queued
    // when PagerDuty is back, however slowly the posts went.
    double.set_reply(Reply::Status(500));
    let b = serve_oncall(
        &double,
        &[
            "--pagerduty-rate",
            "30/1s",
            "--pagerduty-burst",
            "30",
            "--retry-initial-interval",
            "300ms",
        ],
    );
    for run in 0..N {
        assert_eq!(
            post(&b.intake("oncall"), run_event(run, "FAILED", "Failed", "a"))
                .await
                .0,
            202
        );
    }
    assert_eq!(spool_stats(&b).await["queued"], N);
    double.set_reply(Reply::Accept);
    let got = double.wait_accepted(N, WAIT).await;
    let all = double.received();
    assert_eq!(all.iter().filter(|r| r.status == 429).count(), 0, "answered 429");
    let keys: std::collections::HashSet<&str> = got.iter().map(|r| r.dedup_key()).collect();
    assert_eq!(keys.len(), N, "each run paged once");
    // The pace is the configured one, not a cautious fraction of it: at 30
    // a second, some second of the drain holds all 30.
    let at: Vec<Instant> = all.iter().map(|r| r.at).collect();
    let busiest = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| t.duration_since(at[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(busiest, 30, "the busiest second held {busiest}");
}
