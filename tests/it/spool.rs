//! Nothing accepted is ever lost: the durable spool through the real binary.
//! Crash safety under `kill -9`, 429 pauses, the per-key rate window, dead
//! letters over HTTP and the CLI, ordering and coalescing, duplicates,
//! graceful shutdown, and one bridge per spool file.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::bridge::{BIN, Bridge};
use crate::support::pagerduty::{Double, Reply};
use crate::support::{KEY_A, capture, client, get_json, post, serve_oncall, wait, with_state};

const WAIT: Duration = Duration::from_secs(30);

/// The failed-run capture, as run number `i`: its own flow run and event id.
fn failed_run(i: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&capture("failed_event_tojson")).expect("json");
    let run = format!("00000000-0000-4000-8000-{i:012}");
    v["id"] = json!(format!("10000000-0000-4000-8000-{i:012}"));
    v["resource"]["prefect.resource.id"] = json!(format!("prefect.flow-run.{run}"));
    v["resource"]["prefect.resource.name"] = json!(format!("run-{i}"));
    v.to_string().into_bytes()
}

fn serve(double: &Double, spool: &Path, extra: &[&str]) -> Bridge {
    let mut args = vec!["--spool", spool.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    serve_oncall(double, &args)
}

/// Polls the dead-letter list until it holds `n` entries.
async fn dead_letters(b: &Bridge, n: usize) -> Value {
    wait::until(WAIT, &format!("{n} dead letter(s)"), || async {
        let v = get_json(&format!("{}/v1/dead-letters", b.url())).await;
        v["dead_letters"]
            .as_array()
            .is_some_and(|a| a.len() == n)
            .then_some(v)
    })
    .await
}

const FAST: [&str; 6] = [
    "--pagerduty-rate",
    "100000/s",
    "--retry-initial-interval",
    "50ms",
    "--retry-max-interval",
    "500ms",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_nothing_that_was_acknowledged() {
    const N: usize = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool.redb");
    let double = Double::start().await;
    double.set_reply(Reply::Status(500));
    let mut bridge = serve(&double, &spool, &FAST);
    let url = bridge.intake("oncall");

    let http = client();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (http, url, sem) = (http.clone(), url.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let ok = match http.post(&url).body(failed_run(i)).send().await {
                Ok(r) => r.status().is_success(),
                Err(_) => false,
            };
            (i, ok)
        });
    }
    // Kill the bridge mid-burst, with requests in flight.
    let mut acknowledged = HashSet::new();
    let mut answered = 0;
    while let Some(res) = tasks.join_next().await {
        let (i, ok) = res.expect("task");
        answered += 1;
        if ok {
            acknowledged.insert(format!("prefect/flow-run/00000000-0000-4000-8000-{i:012}"));
        }
        if answered == N / 2 {
            bridge.kill();
        }
    }
    assert!(
        acknowledged.len() >= N / 2 - 64,
        "too few acknowledged before the kill: {}",
        acknowledged.len()
    );
    assert!(acknowledged.len() < N, "the kill came too late to test anything");

    double.set_reply(Reply::Accept);
    let _restarted = serve(&double, &spool, &FAST);
    let seen = double
        .wait_until(Duration::from_secs(60), "every acknowledged event", |r| {
            let delivered: HashSet<&str> = r
                .iter()
                .filter(|r| r.status == 202)
                .map(|r| r.dedup_key())
                .collect();
            acknowledged.iter().all(|k| delivered.contains(k.as_str()))
        })
        .await;
    let delivered: HashSet<String> = seen
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.dedup_key().to_owned())
        .collect();
    let sent: HashSet<String> = (0..N)
        .map(|i| format!("prefect/flow-run/00000000-0000-4000-8000-{i:012}"))
        .collect();
    assert!(delivered.is_subset(&sent), "delivered something never sent");
    assert!(seen.iter().all(|r| r.errors.is_empty()));
    // Requests cut by the kill may or may not have been committed; every one
    // that was answered 2xx was.
    eprintln!(
        "kill -9: {} of {N} acknowledged before the kill, {} distinct delivered after restart",
        acknowledged.len(),
        delivered.len()
    );
    assert!(delivered.len() >= acknowledged.len());
    assert!(
        delivered.len() <= acknowledged.len() + 64,
        "only requests in flight at the kill may add to it"
    );
}

#[tokio::test]
async fn a_429_pauses_the_routing_key_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let double = Double::start().await;
    double.script([Reply::RateLimit(None), Reply::RateLimit(Some(3))]);
    let pause = Duration::from_secs(1);
    let _b = serve(
        &double,
        &dir.path().join("s.redb"),
        &[
            "--rate-limit-pause",
            "1s",
            "--pagerduty-rate",
            "1000/s",
            "--max-in-flight",
            "1",
        ],
    );
    for i in 0..4 {
        let (status, _) = post(&_b.intake("oncall"), failed_run(i)).await;
        assert_eq!(status, 202);
    }
    let got = double
        .wait_until(WAIT, "all four accepted", |r| {
            r.iter().filter(|r| r.status == 202).count() >= 4
        })
        .await;
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..2], [429, 429], "{statuses:?}");
    // After a 429 without Retry-After: at least the configured pause.
    let gap1 = got[1].at.duration_since(got[0].at);
    assert!(
        gap1 + Duration::from_millis(50) >= pause,
        "resent after {gap1:?}, before the {pause:?} pause"
    );
    // After `Retry-After: 3`, which is longer than the pause: at least 3 s.
    let gap2 = got[2].at.duration_since(got[1].at);
    assert!(
        gap2 + Duration::from_millis(50) >= Duration::from_secs(3),
        "resent after {gap2:?}"
    );
    let delivered: HashSet<&str> = got
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.dedup_key())
        .collect();
    assert_eq!(delivered.len(), 4, "every event delivered once the pause is over");
}

#[tokio::test]
async fn no_window_holds_more_than_the_rate_for_one_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let double = Double::start().await;
    let (rate, window) = (5usize, Duration::from_secs(2));
    let b = serve(
        &double,
        &dir.path().join("s.redb"),
        &["--pagerduty-rate", "5/2s", "--pagerduty-burst", "3"],
    );
    const N: usize = 14;
    for i in 0..N {
        assert_eq!(post(&b.intake("oncall"), failed_run(i)).await.0, 202);
    }
    let got = double.wait_accepted(N, WAIT).await;
    let times: Vec<_> = got.iter().map(|r| r.at).collect();
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .filter(|t| t.duration_since(*start) < window)
            .count();
        assert!(
            in_window <= rate,
            "{in_window} events within {window:?} of event {i}; the limit is {rate}"
        );
    }
    let span = times[N - 1].duration_since(times[0]);
    assert!(
        span >= Duration::from_secs(4),
        "{N} events in {span:?}: the limiter did not pace them"
    );
}

#[tokio::test]
async fn a_400_becomes_a_dead_letter_that_can_be_retried_and_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("s.redb");
    let double = Double::start().await;
    double.script([
        Reply::Reject(vec!["Routing key is disabled".into()]),
        Reply::Reject(vec!["Routing key is disabled".into()]),
    ]);
    let mut b = serve(&double, &spool, &[]);
    post(&b.intake("oncall"), failed_run(1)).await;
    post(&b.intake("oncall"), failed_run(2)).await;
    double
        .wait_until(WAIT, "two rejections", |r| {
            r.iter().filter(|r| r.status == 400).count() >= 2
        })
        .await;

    let http = client();
    let list = dead_letters(&b, 2).await;
    let first = &list["dead_letters"][0];
    assert_eq!(first["action"], "oncall");
    assert_eq!(
        first["dedup_key"],
        "prefect/flow-run/00000000-0000-4000-8000-000000000001"
    );
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["last_status"], 400);
    assert!(
        first["error"]
            .as_str()
            .expect("error")
            .contains("Routing key is disabled")
    );
    assert_eq!(first["routing_key"], format!("…{}", &KEY_A[28..]));
    assert!(
        !list.to_string().contains(KEY_A),
        "full routing key in the dead-letter list"
    );

    // Retry over HTTP: the double now accepts.
    let id = first["id"].as_u64().expect("id");
    let r = http
        .post(format!("{}/v1/dead-letters/{id}/retry", b.url()))
        .send()
        .await
        .expect("retry");
    assert_eq!(r.status().as_u16(), 202);
    let delivered = double.wait_accepted(1, WAIT).await;
    assert_eq!(
        delivered[0].dedup_key(),
        "prefect/flow-run/00000000-0000-4000-8000-000000000001"
    );
    let r = http
        .post(format!("{}/v1/dead-letters/{id}/retry", b.url()))
        .send()
        .await
        .expect("retry");
    assert_eq!(r.status().as_u16(), 404, "retried once");
    let r = http
        .delete(format!("{}/v1/dead-letters/999999", b.url()))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 404);

    // Offline, from the CLI, once the bridge has stopped.
    assert!(b.terminate().success());
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["spool", "--spool"])
            .arg(&spool)
            .args(args)
            .output()
            .expect("spool cli");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.success(),
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
            out,
        )
    };
    let (ok, listed, _) = cli(&["dead-letters"]);
    assert!(ok);
    let remaining = listed["dead_letters"].as_array().expect("list");
    assert_eq!(remaining.len(), 1);
    assert!(!listed.to_string().contains(KEY_A));
    let (ok, stats, _) = cli(&["stats"]);
    assert!(ok);
    assert_eq!(stats["dead_letters"], 1);
    assert_eq!(stats["delivered"], 1);
    assert_eq!(stats["dead_lettered"], 2);
    let dead_id = remaining[0]["id"].as_u64().expect("id");
    let (ok, retried, _) = cli(&["retry", &dead_id.to_string()]);
    assert!(ok, "{retried}");
    let (ok, stats, _) = cli(&["stats"]);
    assert!(ok);
    assert_eq!(
        (stats["dead_letters"].as_u64(), stats["queued"].as_u64()),
        (Some(0), Some(1))
    );
    let (ok, _, out) = cli(&["retry", "424242"]);
    assert!(!ok && String::from_utf8_lossy(&out.stderr).contains("no dead letter 424242"));
    // The retried event goes out when the bridge starts again.
    let _b = serve(&double, &spool, &[]);
    let delivered = double.wait_accepted(2, WAIT).await;
    assert_eq!(
        delivered[1].dedup_key(),
        "prefect/flow-run/00000000-0000-4000-8000-000000000002"
    );
}

#[tokio::test]
async fn purge_from_the_cli_and_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("s.redb");
    let double = Double::start().await;
    double.set_reply(Reply::Reject(vec!["nope".into()]));
    let mut b = serve(&double, &spool, &[]);
    for i in 0..3 {
        post(&b.intake("oncall"), failed_run(i)).await;
    }
    double
        .wait_until(WAIT, "three rejections", |r| r.len() >= 3)
        .await;
    let http = client();
    let list = dead_letters(&b, 3).await;
    let id = list["dead_letters"][0]["id"].as_u64().expect("id");
    let r = http
        .delete(format!("{}/v1/dead-letters/{id}", b.url()))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    assert!(b.terminate().success());
    let out = Command::new(BIN)
        .args(["spool", "--spool"])
        .arg(&spool)
        .arg("purge")
        .output()
        .expect("purge");
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["count"], 2);
}

/// A bridge whose double answers 503, with failed run `i` accepted and its
/// first attempt failed: the trigger now waits in the spool for a retry.
async fn trigger_waiting_for_a_retry(i: usize) -> (tempfile::TempDir, Double, Bridge, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let double = Double::start().await;
    double.set_reply(Reply::Status(503));
    let b = serve(
        &double,
        &dir.path().join("s.redb"),
        &["--retry-initial-interval", "1s"],
    );
    let failed = failed_run(i);
    assert_eq!(post(&b.intake("oncall"), failed.clone()).await.0, 202);
    double
        .wait_until(WAIT, "the first attempt", |r| !r.is_empty())
        .await;
    (dir, double, b, failed)
}

#[tokio::test]
async fn a_queued_trigger_and_its_resolve_are_both_superseded() {
    let (_dir, double, b, failed) = trigger_waiting_for_a_retry(7).await;
    let (status, answer) = post(&b.intake("oncall"), with_state(&failed, "COMPLETED", "Completed")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "superseded");
    double.set_reply(Reply::Accept);
    // Nothing queued or in flight: nothing can be sent any more.
    let stats = wait::drained(&b, WAIT).await;
    assert!(double.accepted().is_empty(), "{:#?}", double.accepted());
    assert_eq!(stats["superseded"], 2);
    assert_eq!(stats["queued"], 0);
    assert_eq!(stats["open_alerts"], 0);
}

#[tokio::test]
async fn queued_triggers_collapse_into_the_newest() {
    let (_dir, double, b, failed) = trigger_waiting_for_a_retry(8).await;
    post(&b.intake("oncall"), with_state(&failed, "CRASHED", "Crashed")).await;
    post(&b.intake("oncall"), with_state(&failed, "FAILED", "TimedOut")).await;
    double.set_reply(Reply::Accept);
    let got = double.wait_accepted(1, WAIT).await;
    wait::drained(&b, WAIT).await;
    assert_eq!(
        double.accepted().len(),
        1,
        "three triggers of one run collapse into one"
    );
    assert!(
        got[0].body["payload"]["summary"]
            .as_str()
            .expect("summary")
            .contains("TimedOut")
    );
}

#[tokio::test]
async fn a_resolve_never_overtakes_its_trigger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let double = Double::start().await;
    double.set_delay(Duration::from_millis(800));
    let b = serve(&double, &dir.path().join("s.redb"), &[]);
    let failed = failed_run(9);
    post(&b.intake("oncall"), failed.clone()).await;
    // The trigger is now in flight (the double is slow); the resolve must wait for it.
    wait::holds(WAIT, "the trigger is in flight", || async {
        wait::spool_stats(&b).await["in_flight"] == 1
    })
    .await;
    let (status, answer) = post(&b.intake("oncall"), with_state(&failed, "COMPLETED", "Completed")).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("accepted")),
        "{answer}"
    );
    let got = double.wait_accepted(2, WAIT).await;
    assert_eq!((got[0].action(), got[1].action()), ("trigger", "resolve"));
    assert!(
        got[1].at >= got[0].at + Duration::from_millis(700),
        "the resolve was sent while the trigger was in flight"
    );
}

#[tokio::test]
async fn repeats_of_one_prefect_event_are_sent_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let double = Double::start().await;
    let b = serve(&double, &dir.path().join("s.redb"), &[]);
    // send-notification resends the same body four times in 0.3 s.
    let body = capture("notify_event_json_200");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, answer) = post(&b.intake("oncall"), body.clone()).await;
        statuses.push((status, answer["status"].as_str().unwrap_or_default().to_owned()));
    }
    assert_eq!(statuses[0], (202, "accepted".to_owned()));
    assert!(
        statuses[1..].iter().all(|s| *s == (200, "duplicate".to_owned())),
        "{statuses:?}"
    );
    // Prefect 1 sends its id in X-PREFECT-EVENT-ID.
    let p1 = br#"{"flow_run_id":"r-1","flow_run_name":"n","flow_name":"f","state":"Failed"}"#.to_vec();
    for expect in [202, 200] {
        let r = client()
            .post(b.intake("oncall"))
            .header("X-PREFECT-EVENT-ID", "p1-event-1")
            .body(p1.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), expect);
    }
    double.wait_accepted(2, WAIT).await;
    wait::drained(&b, WAIT).await;
    assert_eq!(double.accepted().len(), 2);
}

#[tokio::test]
async fn sigterm_keeps_undelivered_events_for_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("s.redb");
    let double = Double::start().await;
    double.set_reply(Reply::Status(500));
    let mut b = serve(&double, &spool, &FAST);
    for i in 0..20 {
        assert_eq!(post(&b.intake("oncall"), failed_run(i)).await.0, 202);
    }
    let status = b.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    assert!(
        b.logs().iter().any(|l| l.contains("\"stopped\"")),
        "{:#?}",
        b.logs()
    );
    // Closed cleanly: redb recorded its free pages, so the next start does
    // not rebuild them from every page of the file (a read-only open
    // refuses a file that needs that).
    if let Err(e) = redb::ReadOnlyDatabase::open(&spool) {
        panic!("the spool file was not closed cleanly: {e}");
    }
    double.set_reply(Reply::Accept);
    let _b = serve(&double, &spool, &FAST);
    let got = double.wait_accepted(20, WAIT).await;
    let keys: HashSet<&str> = got.iter().map(|r| r.dedup_key()).collect();
    assert_eq!(keys.len(), 20);
}

#[tokio::test]
async fn a_second_bridge_on_the_same_spool_fails_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("s.redb");
    let double = Double::start().await;
    let _first = serve(&double, &spool, &[]);
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--spool"])
        .arg(&spool)
        .args(["--action", &format!("x={KEY_A}")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another running bridge"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

// Regression: that PagerDuty holds an alert must survive a crash, or the
// resolve after a restart would be dropped as moot and strand the incident.
#[tokio::test]
async fn a_resolve_after_kill_9_still_closes_a_delivered_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("s.redb");
    let double = Double::start().await;
    let mut b = serve(&double, &spool, &[]);
    let failed = failed_run(42);
    assert_eq!(post(&b.intake("oncall"), failed.clone()).await.0, 202);
    double.wait_accepted(1, WAIT).await;
    // The delivery is recorded before the crash.
    wait::holds(WAIT, "the delivery is recorded", || async {
        wait::spool_stats(&b).await["delivered"] == 1
    })
    .await;
    b.kill();
    let b = serve(&double, &spool, &[]);
    let (status, answer) = post(&b.intake("oncall"), with_state(&failed, "COMPLETED", "Completed")).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (202, Some("accepted")),
        "{answer}"
    );
    let got = double
        .wait_until(WAIT, "the resolve", |r| {
            r.iter().any(|r| r.status == 202 && r.action() == "resolve")
        })
        .await;
    // The trigger may be sent again (its ack was not fsync'd before the
    // kill; PagerDuty dedups it), but the resolve comes after every trigger.
    let actions: Vec<&str> = got
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.action())
        .collect();
    assert_eq!(actions.last(), Some(&"resolve"), "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "resolve").count(), 1);
}

/// A backlog larger than a start reads (60 events of 200 KB while
/// PagerDuty is unreachable, 4 MB read at start), a `kill -9`, then the
/// recovery of a run whose trigger the start left on disk: the trigger is
/// found and cancelled, so PagerDuty gets the resolve and never the stale
/// trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_after_kill_9_cancels_a_trigger_the_start_left_on_disk() {
    const RUNS: usize = 60;
    const LATE: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("s.redb");
    let action = format!("oncall={KEY_A}");
    // The default retries while PagerDuty is unreachable: each event stores
    // its back-off (up to 5 minutes), which the last bridge, started once
    // PagerDuty is back, must not wait out.
    let unreachable = [
        "--spool",
        spool.to_str().expect("utf-8 path"),
        "--action",
        &action,
        "--pagerduty-url",
        "http://127.0.0.1:9",
    ];
    let big = |i: usize| {
        let mut v: Value = serde_json::from_slice(&failed_run(i)).expect("json");
        v["resource"]["prefect.state-message"] = json!("x".repeat(200_000));
        v.to_string().into_bytes()
    };
    let mut b = Bridge::serve(&unreachable);
    for i in 0..RUNS {
        assert_eq!(post(&b.intake("oncall"), big(i)).await.0, 202, "run {i}");
    }
    b.kill();
    let mut b = Bridge::serve(&unreachable);
    assert_eq!(wait::spool_stats(&b).await["queued"], RUNS);
    let (status, answer) = post(
        &b.intake("oncall"),
        with_state(&failed_run(LATE), "COMPLETED", "Completed"),
    )
    .await;
    assert_eq!(
        (status, answer["event_action"].as_str()),
        (202, Some("resolve")),
        "{answer}"
    );
    let stats = wait::spool_stats(&b).await;
    assert_eq!(
        (stats["superseded"].as_u64(), stats["queued"].as_u64()),
        (Some(1), Some(RUNS as u64)),
        "{stats}"
    );
    assert_eq!(b.terminate().code(), Some(0));
    // PagerDuty is back: everything else goes out, and run 50 only resolves.
    let double = Double::start().await;
    let _b = serve(&double, &spool, &FAST);
    let got = double.wait_accepted(RUNS, WAIT).await;
    let late = format!("prefect/flow-run/00000000-0000-4000-8000-{LATE:012}");
    let of_late: Vec<&str> = got
        .iter()
        .filter(|r| r.dedup_key() == late)
        .map(|r| r.action())
        .collect();
    assert_eq!(of_late, vec!["resolve"]);
    let triggers = got.iter().filter(|r| r.action() == "trigger").count();
    assert_eq!(triggers, RUNS - 1);
}

/// A spool file the bridge wrote before its records had a versioned
/// envelope (`fixtures/spool/make-v0.py` made it with that build): this
/// bridge carries on from it. Open alerts still resolve, the queued event
/// still goes out, the dead letter is still listed and can be retried, the
/// action made over the API is still there, and a repeat of an event it
/// took is still a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_written_before_the_record_envelope_carries_on() {
    const KEY_C: &str = "R0UTINGKEYCCCCCCCCCCCCCCCCCCCCCC";
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("v0.redb");
    std::fs::copy(crate::support::fixtures().join("spool/v0.redb"), &spool).expect("copy the fixture");
    let double = Double::start().await;
    let url = double.url();
    let (a, b, c) = (
        format!("a={KEY_A}"),
        format!("b={}", crate::support::KEY_B),
        format!("c={KEY_C}"),
    );
    let bridge = Bridge::serve(&[
        "--pagerduty-url",
        &url,
        "--spool",
        spool.to_str().expect("utf-8 path"),
        "--action",
        &a,
        "--action",
        &b,
        "--action",
        &c,
        // The fixture's idempotency claims are from the day it was made.
        "--dedup-ttl",
        "87600h",
    ]);
    let failed_run = "prefect/flow-run/39eed61c-5f3c-4e8c-8dbe-05b23d4c268e";

    // The trigger still queued for key B goes out.
    let got = double
        .wait_until(WAIT, "the queued trigger of key B", |r| {
            r.iter()
                .any(|r| r.status == 202 && r.body["routing_key"] == crate::support::KEY_B)
        })
        .await;
    let b_sent: Vec<_> = got
        .iter()
        .filter(|r| r.body["routing_key"] == crate::support::KEY_B)
        .collect();
    assert_eq!(b_sent[0].action(), "trigger");
    assert_eq!(b_sent[0].dedup_key(), failed_run);
    assert!(b_sent[0].errors.is_empty(), "{:?}", b_sent[0].errors);

    let stats = get_json(&format!("{}/v1/spool", bridge.url())).await;
    assert_eq!(stats["quarantined"], 0, "{stats}");
    assert_eq!(stats["dead_letters"], 1, "{stats}");

    // The dead letter of key C is listed as it was.
    let dead = dead_letters(&bridge, 1).await;
    let letter = &dead["dead_letters"][0];
    assert_eq!(letter["action"], "c");
    assert_eq!(letter["event_action"], "trigger");
    assert_eq!(letter["dedup_key"], failed_run);
    assert_eq!(letter["last_status"], 400);
    assert!(
        letter["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused on purpose")),
        "{letter}"
    );

    // The action created over the API came back.
    let actions = get_json(&format!("{}/v1/actions", bridge.url())).await;
    assert!(
        actions["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["name"] == "api-made" && a["origin"] == "api")),
        "{actions}"
    );

    // The event it took is still a duplicate.
    let failed =
        std::fs::read(crate::support::fixtures().join("examples/flow-run-failed.json")).expect("fixture");
    let (status, answer) = post(&bridge.intake("a"), failed).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );

    // The failure alert opened by the old bridge on key A resolves.
    let completed =
        std::fs::read(crate::support::fixtures().join("examples/flow-run-completed.json")).expect("fixture");
    let (status, answer) = post(&bridge.intake("a"), completed).await;
    assert_eq!(
        (status, answer["event_action"].as_str()),
        (202, Some("resolve")),
        "{answer}"
    );
    double
        .wait_until(WAIT, "the resolve of key A", |r| {
            r.iter()
                .any(|r| r.status == 202 && r.body["routing_key"] == KEY_A && r.action() == "resolve")
        })
        .await;

    // The dead letter can be retried and goes out.
    let id = letter["id"].as_u64().expect("id");
    let res = client()
        .post(format!("{}/v1/dead-letters/{id}/retry", bridge.url()))
        .send()
        .await
        .expect("retry");
    assert_eq!(res.status().as_u16(), 202);
    double
        .wait_until(WAIT, "the retried trigger of key C", |r| {
            r.iter()
                .any(|r| r.status == 202 && r.body["routing_key"] == KEY_C)
        })
        .await;
}

/// `--open-alert-ttl`: an alert whose run never recovers is forgotten once
/// its time is up (the count drops, the row is pruned), a late recovery is
/// then ignored (200, nothing sent), and the next start has nothing open.
#[tokio::test]
async fn an_alert_past_open_alert_ttl_is_forgotten_and_a_late_resolve_ignored() {
    let double = Double::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("s.redb");
    let mut bridge = serve(&double, &spool, &["--open-alert-ttl", "2s"]);
    let (status, answer) = post(&bridge.intake("oncall"), failed_run(1)).await;
    assert_eq!(status, 202, "{answer}");
    double
        .wait_until(Duration::from_secs(10), "the trigger", |r| r.len() == 1)
        .await;
    let spool_url = format!("{}/v1/spool", bridge.url());
    assert_eq!(get_json(&spool_url).await["open_alerts"], 1);
    wait::holds(Duration::from_secs(10), "the alert is forgotten", || async {
        get_json(&spool_url).await["open_alerts"] == 0
    })
    .await;
    let recovered = with_state(&failed_run(1), "COMPLETED", "Completed");
    let (status, answer) = post(&bridge.intake("oncall"), recovered).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("ignored")),
        "{answer}"
    );
    assert_eq!(bridge.terminate().code(), Some(0));

    // The row is gone from the file: a start with the default TTL finds
    // nothing open.
    let bridge = serve(&double, &spool, &[]);
    assert_eq!(
        get_json(&format!("{}/v1/spool", bridge.url())).await["open_alerts"],
        0
    );
    assert_eq!(double.received().len(), 1, "nothing but the trigger was sent");
}
