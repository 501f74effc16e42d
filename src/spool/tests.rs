use super::*;
use crate::actions::Action;
use crate::secret::Secret;
use crate::store::OpenRow;
use crate::translate::AlertClass;
use crate::translate::{Options, translate};

fn translated(state_type: &str, state_name: &str) -> Translation {
    event_of("r1", &format!("e-{state_name}"), state_type, state_name)
}

/// A flow-run state event of run `run` with Prefect event id `id`, translated.
fn event_of(run: &str, id: &str, state_type: &str, state_name: &str) -> Translation {
    event_to(
        "R0UTINGKEY0000000000000000000000",
        run,
        id,
        state_type,
        state_name,
    )
}

/// As [`event_of`], through an action with routing key `key`.
fn event_to(key: &str, run: &str, id: &str, state_type: &str, state_name: &str) -> Translation {
    let body = serde_json::json!({
        "event": format!("prefect.flow-run.{state_name}"), "id": id,
        "occurred": "2026-11-28T08:36:31Z", "related": [], "payload": {},
        "resource": {"prefect.resource.id": format!("prefect.flow-run.{run}"), "prefect.resource.name": "r",
                     "prefect.state-type": state_type, "prefect.state-name": state_name}
    });
    let n = crate::prefect::parse(body.to_string().as_bytes(), None);
    let action = Action {
        name: "a".into(),
        routing_key: Secret::new(key),
        severity: None,
    };
    translate(n, &action, &Options::default())
}

fn reopen(path: &Path) -> Spool {
    when_unlocked(|| Spool::open(path, CAPACITY))
}

const CAPACITY: usize = 1_000_000;

fn reopen_store(path: &Path) -> RedbStore {
    when_unlocked(|| RedbStore::open(path))
}

/// Opens once the previous writer thread has let go of the file lock (it
/// releases it as it exits).
fn when_unlocked<T>(open: impl Fn() -> Result<T, Error>) -> T {
    for _ in 0..100 {
        match open() {
            Ok(s) => return s,
            Err(Error::InUse(_)) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("spool stayed locked");
}

#[tokio::test]
async fn a_resolve_of_a_queued_trigger_supersedes_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(&dir.path().join("s.redb"), CAPACITY).expect("open");
    assert!(matches!(
        spool.accept("a", &translated("FAILED", "Failed"), None).await,
        Ok(Accepted::Queued { .. })
    ));
    assert_eq!(
        spool
            .accept("a", &translated("COMPLETED", "Completed"), None)
            .await
            .ok(),
        Some(Accepted::Superseded)
    );
    let stats = spool.stats();
    assert_eq!(
        (stats.queued, stats.open_alerts, stats.counters.superseded),
        (0, 0, 2)
    );
    // Nothing open now: a second recovery is ignored.
    assert!(matches!(
        spool
            .accept("a", &translated("COMPLETED", "Completed"), None)
            .await,
        Ok(Accepted::Ignored { .. })
    ));
}

#[tokio::test]
async fn triggers_collapse_and_everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let spool = Spool::open(&path, CAPACITY).expect("open");
        spool
            .accept("a", &translated("SCHEDULED", "Late"), None)
            .await
            .expect("late");
        spool
            .accept("a", &translated("FAILED", "Failed"), None)
            .await
            .expect("failed");
        let stats = spool.stats();
        assert_eq!(
            (stats.queued, stats.counters.superseded, stats.open_alerts),
            (1, 1, 1)
        );
        // The in-memory copy of the superseded trigger was let go.
        let idx = spool.lock();
        let held: usize = idx
            .queued
            .values()
            .filter_map(|e| e.wire.as_ref())
            .map(bytes::Bytes::len)
            .sum();
        assert!(held > 0);
        assert_eq!(idx.wire_bytes, held);
    }
    let spool = reopen(&path);
    let stats = spool.stats();
    assert_eq!(
        (stats.queued, stats.counters.superseded, stats.open_alerts),
        (1, 1, 1)
    );
    // The open alert is a failure now, so RUNNING does not close it.
    assert!(matches!(
        spool.accept("a", &translated("RUNNING", "Running"), None).await,
        Ok(Accepted::Ignored { .. })
    ));
}

#[tokio::test]
async fn an_alert_keeps_one_open_row_however_often_it_triggers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let spool = Spool::open(&path, CAPACITY).expect("open");
        for state in [
            ("SCHEDULED", "Late"),
            ("FAILED", "Failed"),
            ("FAILED", "Crashed"),
            ("SCHEDULED", "Late"),
        ] {
            spool
                .accept("a", &translated(state.0, state.1), None)
                .await
                .expect("trigger");
        }
    }
    let store = reopen_store(&path);
    let snap = store.snapshot().expect("snapshot");
    assert_eq!(snap.open.len(), 1, "{:?}", snap.open);
    // Lateness after a failure does not downgrade the alert.
    assert_eq!(snap.open[0].1.class, AlertClass::Failure);
}

#[tokio::test]
async fn open_alerts_of_the_digest_keyed_table_are_carried_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        // The open table as earlier versions wrote it.
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let def: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("open");
            let mut old = txn.open_table(def).expect("table");
            let row = serde_json::json!({"routing_key": "R0UTINGKEY0000000000000000000000",
                "dedup_key": "prefect/flow-run/r1", "class": "failure", "delivered": true, "dead": false});
            old.insert("0f3c", row.to_string().as_bytes()).expect("insert");
        }
        txn.commit().expect("commit");
    }
    let spool = reopen(&path);
    assert_eq!(spool.stats().open_alerts, 1);
    // The carried-over alert counts as delivered, so its recovery is sent.
    assert!(matches!(
        spool
            .accept("a", &translated("COMPLETED", "Completed"), None)
            .await,
        Ok(Accepted::Queued { .. })
    ));
    assert_eq!(spool.stats().open_alerts, 0);
}

#[tokio::test]
async fn a_stale_second_row_of_an_alert_is_dropped_at_start() {
    // Inside a runtime, as the bridge opens its spool.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    let row = |class| OpenRow {
        routing_key: "R0UTINGKEY0000000000000000000000".to_owned(),
        dedup_key: "prefect/flow-run/r1".to_owned(),
        class,
        dead: false,
        opened_ms: None,
    };
    {
        let store = RedbStore::open(&path).expect("open");
        store
            .commit_one(Change {
                open_put: vec![(3, row(AlertClass::Lateness)), (7, row(AlertClass::Failure))],
                durable: true,
                ..Change::default()
            })
            .expect("commit");
    }
    {
        let spool = reopen(&path);
        assert_eq!(spool.stats().open_alerts, 1);
    }
    let snap = reopen_store(&path).snapshot().expect("snapshot");
    let ids: Vec<u64> = snap.open.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![7], "the newer row stays, the older is gone");
}

fn with_ttl(path: &Path, ttl: Duration) -> Spool {
    let retention = Retention {
        open_alert_ttl: ttl,
        ..Retention::default()
    };
    when_unlocked(|| Spool::open_file(path, CAPACITY, retention, Metrics::shared()))
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn an_alert_past_its_ttl_is_forgotten_and_its_row_pruned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let spool = with_ttl(&path, Duration::from_secs(1));
        let trigger = spool.accept("a", &translated("FAILED", "Failed"), None).await;
        let Ok(Accepted::Queued { id }) = trigger else {
            panic!("{trigger:?}");
        };
        // Sent: the alert stays open with nothing queued.
        let due = spool.take_due(10, |_| Admit::Go).0;
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
        spool.delivered(&due[0]);
        assert_eq!(spool.stats().open_alerts, 1);
        // Pruned once its second is up.
        eventually("the open alert is pruned", || spool.stats().open_alerts == 0).await;
        let resolve = spool
            .accept("a", &translated("COMPLETED", "Completed"), None)
            .await;
        assert!(matches!(resolve, Ok(Accepted::Ignored { .. })), "{resolve:?}");
        spool.flush().await.expect("flush");
    }
    let snap = reopen_store(&path).snapshot().expect("snapshot");
    assert!(snap.open.is_empty(), "the row is gone from the file");
}

#[tokio::test]
async fn rows_without_an_open_time_count_from_the_start_and_old_ones_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    let row = |run: &str, opened_ms| OpenRow {
        routing_key: "R0UTINGKEY0000000000000000000000".to_owned(),
        dedup_key: format!("prefect/flow-run/{run}"),
        class: AlertClass::Failure,
        dead: false,
        opened_ms,
    };
    let year_2020 = 1_577_836_800_000;
    {
        let store = RedbStore::open(&path).expect("open");
        store
            .commit_one(Change {
                open_put: vec![(3, row("legacy", None)), (4, row("old", Some(year_2020)))],
                durable: true,
                ..Change::default()
            })
            .expect("commit");
    }
    {
        let spool = reopen(&path);
        eventually("the 2020 alert is pruned", || spool.stats().open_alerts == 1).await;
        spool.flush().await.expect("flush");
    }
    let snap = reopen_store(&path).snapshot().expect("snapshot");
    let kept: Vec<&str> = snap.open.iter().map(|(_, o)| o.dedup_key.as_str()).collect();
    assert_eq!(kept, vec!["prefect/flow-run/legacy"]);
    let legacy = &snap.open[0].1;
    assert!(
        legacy.opened_ms.is_none(),
        "rows are not rewritten just for their time"
    );
}

fn big_record(id: u64, kb: usize) -> Record {
    let body = serde_json::json!({"event_action": "trigger", "pad": "x".repeat(kb * 1000)});
    Record {
        id,
        action: "a".into(),
        routing_key: "R0UTINGKEY0000000000000000000000".into(),
        dedup_key: format!("d{id}"),
        event_action: EventAction::Trigger,
        class: Some(AlertClass::Failure),
        accepted_ms: 1,
        attempts: 0,
        next_attempt_ms: 1,
        last_status: None,
        last_error: None,
        dead_ms: None,
        body_kind: crate::store::BodyKind::PagerDutyEventsV2,
        body: serde_json::value::RawValue::from_string(body.to_string()).expect("raw"),
    }
}

#[test]
fn a_file_grown_for_a_backlog_is_given_back_once_it_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = reopen_store(&dir.path().join("s.redb"));
    // Small files are left alone.
    assert_eq!(store.compact().expect("compact"), None);
    let mut fill = Change::durable();
    fill.put = (1..=120).map(|id| big_record(id, 400)).collect();
    store.commit_one(fill).expect("fill");
    let full = store.size_bytes();
    assert!(full > 40_000_000, "the backlog took {full} bytes");
    // Still mostly in use: nothing to gain.
    assert_eq!(store.compact().expect("compact"), None);
    let mut drain = Change::durable();
    drain.delete = (1..=118)
        .map(|id| crate::store::Unqueue {
            id,
            alert: crate::store::alert_digest("R0UTINGKEY0000000000000000000000", &format!("d{id}")),
            routing_key: Arc::from("R0UTINGKEY0000000000000000000000"),
        })
        .collect();
    store.commit_one(drain).expect("drain");
    assert_eq!(store.size_bytes(), full, "redb keeps the space for reuse");
    let (before, after) = store.compact().expect("compact").expect("compacted");
    assert_eq!(before, full);
    assert!(after * 4 < before, "{before} → {after}");
    assert_eq!(store.size_bytes(), after);
    // What was left is intact, and the file takes writes again.
    assert_eq!(
        store.event(119).expect("read").map(|r| r.dedup_key),
        Some("d119".to_owned())
    );
    assert!(store.event(1).expect("read").is_none());
    let mut more = Change::durable();
    more.put = vec![big_record(121, 1)];
    store.commit_one(more).expect("write after compaction");
    assert_eq!(store.snapshot().expect("snapshot").events.len(), 3);
}

fn run_event(run: u64, state_type: &str, state_name: &str) -> Translation {
    event_of(
        &format!("run-{run}"),
        &format!("e-{run}-{state_name}"),
        state_type,
        state_name,
    )
}

#[tokio::test]
async fn open_alerts_beyond_memory_are_found_in_the_store_also_after_a_restart() {
    const RUNS: u64 = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let spool = Spool::open(&path, CAPACITY).expect("open");
        for run in 0..RUNS {
            let r = spool.accept("a", &run_event(run, "FAILED", "Failed"), None).await;
            assert!(matches!(r, Ok(Accepted::Queued { .. })), "{r:?}");
            let due = spool.take_due(10, |_| Admit::Go).0;
            for d in &due {
                spool.delivered(d);
            }
        }
        spool.flush().await.expect("flush");
        assert_eq!(spool.stats().open_alerts, RUNS as usize);
        let in_memory = spool.lock().open.len();
        assert!(in_memory <= 64, "{in_memory} open alerts held in memory");
        // The first run's alert left memory long ago: its recovery is sent.
        let r = spool
            .accept("a", &run_event(0, "COMPLETED", "Completed"), None)
            .await;
        assert!(matches!(r, Ok(Accepted::Queued { .. })), "{r:?}");
        // A repeat of a failure still open opens nothing new.
        let r = spool.accept("a", &run_event(1, "FAILED", "Crashed"), None).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(spool.stats().open_alerts, RUNS as usize - 1);
        spool.flush().await.expect("flush");
    }
    let spool = reopen(&path);
    assert_eq!(spool.stats().open_alerts, RUNS as usize - 1);
    assert_eq!(spool.lock().open.len(), 0, "nothing read at start");
    for run in [1, RUNS / 2, RUNS - 1] {
        let r = spool
            .accept("a", &run_event(run, "COMPLETED", "Completed"), None)
            .await;
        assert!(matches!(r, Ok(Accepted::Queued { .. })), "run {run}: {r:?}");
    }
    // Closed, so a second recovery finds nothing.
    let r = spool
        .accept("a", &run_event(RUNS - 1, "COMPLETED", "Completed"), None)
        .await;
    assert!(matches!(r, Ok(Accepted::Ignored { .. })), "{r:?}");
    assert_eq!(spool.stats().open_alerts, RUNS as usize - 4);
}

/// Sends everything due to a sink that takes it all, until nothing is
/// queued; returns the ids in the order they went.
async fn drain(spool: &Spool) -> Vec<u64> {
    let mut sent = Vec::new();
    for _ in 0..10_000 {
        let due = spool.take_due(8, |_| Admit::Go).0;
        if due.is_empty() {
            if spool.stats().queued == 0 {
                return sent;
            }
            // The writer reads more of the queue in after a round.
            spool.flush().await.expect("flush");
            continue;
        }
        for d in &due {
            sent.push(d.id);
            spool.delivered(d);
        }
    }
    panic!("the queue did not drain: {} left", spool.stats().queued);
}

/// A recovery of `run` while its trigger is queued: the trigger is
/// cancelled, and the recovery is either cancelled too (PagerDuty never saw
/// the alert) or queued, when the alert's state was read back from the
/// store, where it counts as seen (an extra resolve is harmless, a missing
/// one is not). Returns the recovery's id when queued.
async fn recover_queued(spool: &Spool, run: u64) -> Option<u64> {
    match spool
        .accept("a", &run_event(run, "COMPLETED", "Completed"), None)
        .await
    {
        Ok(Accepted::Superseded) => None,
        Ok(Accepted::Queued { id }) => Some(id),
        other => panic!("run {run}: {other:?}"),
    }
}

#[tokio::test]
async fn a_queue_longer_than_memory_stays_in_the_store_and_drains_in_order() {
    const RUNS: u64 = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    let mut triggers = Vec::new();
    let mut recoveries = Vec::new();
    {
        let spool = Spool::open(&path, CAPACITY).expect("open");
        for run in 0..RUNS {
            match spool.accept("a", &run_event(run, "FAILED", "Failed"), None).await {
                Ok(Accepted::Queued { id }) => triggers.push(id),
                other => panic!("run {run}: {other:?}"),
            }
        }
        let held = spool.lock().queued.len();
        assert!(held <= index::WINDOW, "{held} queued events in memory");
        assert_eq!(spool.stats().queued, RUNS as usize);
        // Run 90's trigger is in the store only: its recovery still finds
        // it queued.
        recoveries.extend(recover_queued(&spool, 90).await);
        assert_eq!(spool.stats().queued, RUNS as usize - 1 + recoveries.len());
        spool.flush().await.expect("flush");
    }
    let spool = reopen(&path);
    assert_eq!(spool.stats().queued, RUNS as usize - 1 + recoveries.len());
    let held = spool.lock().queued.len();
    assert!(held <= index::WINDOW, "{held} queued events read at start");
    // After a restart too, and for a trigger in memory.
    recoveries.extend(recover_queued(&spool, 80).await);
    recoveries.extend(recover_queued(&spool, 0).await);
    let sent = drain(&spool).await;
    assert_eq!(sent.len(), RUNS as usize - 3 + recoveries.len());
    assert!(
        sent.windows(2).all(|w| w[0] < w[1]),
        "not in accept order: {sent:?}"
    );
    for (run, id) in [(0, triggers[0]), (80, triggers[80]), (90, triggers[90])] {
        assert!(!sent.contains(&id), "run {run}'s cancelled trigger was sent");
    }
    assert!(recoveries.iter().all(|id| sent.contains(id)));
    let stats = spool.stats();
    assert_eq!((stats.queued, stats.counters.delivered), (0, sent.len() as u64));
    // A trigger behind a drained queue goes to memory again.
    let r = spool.accept("a", &run_event(500, "FAILED", "Failed"), None).await;
    assert!(matches!(r, Ok(Accepted::Queued { .. })), "{r:?}");
    assert_eq!(spool.lock().queued.len(), 1);
}

#[tokio::test]
async fn the_capacity_counts_events_in_the_store_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let capacity = index::WINDOW + 8;
    let spool = Spool::open_file(
        &dir.path().join("s.redb"),
        capacity,
        Retention::default(),
        Metrics::shared(),
    )
    .expect("open");
    for run in 0..capacity as u64 {
        let r = spool.accept("a", &run_event(run, "FAILED", "Failed"), None).await;
        assert!(matches!(r, Ok(Accepted::Queued { .. })), "run {run}: {r:?}");
    }
    let r = spool
        .accept("a", &run_event(9_999, "FAILED", "Failed"), None)
        .await;
    assert!(matches!(r, Err(AcceptError::Full)), "{r:?}");
    assert!(spool.unready().is_some());
}

#[test]
fn a_spool_from_before_the_alert_table_of_queued_events_gets_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let store = reopen_store(&path);
        let mut fill = Change::durable();
        fill.put = (1..=3).map(|id| big_record(id, 0)).collect();
        store.commit_one(fill).expect("fill");
    }
    {
        // As an earlier version left it: no tables of queued events but
        // the events' own.
        let db = redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("txn");
        let by_alert: redb::TableDefinition<'_, (u128, u64), bool> =
            redb::TableDefinition::new("queued_keys");
        let by_key: redb::TableDefinition<'_, (&str, u64), Option<(u128, bool)>> =
            redb::TableDefinition::new("queued_by_routing_key");
        assert!(txn.delete_table(by_alert).expect("delete"));
        assert!(txn.delete_table(by_key).expect("delete"));
        txn.commit().expect("commit");
    }
    let store = reopen_store(&path);
    let digest = crate::store::alert_digest("R0UTINGKEY0000000000000000000000", "d2");
    assert_eq!(store.queued_of(digest, 0).expect("read"), vec![(2, true)]);
    assert_eq!(store.queued_of(digest, 3).expect("read"), vec![]);
    let page = store
        .queued_from("R0UTINGKEY0000000000000000000000", 0, 10, 1 << 20)
        .expect("read");
    let ids: Vec<u64> = page.events.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
}

#[test]
fn a_spool_from_before_the_alert_in_the_routing_key_table_is_carried_over() {
    const KEY: &str = "R0UTINGKEY0000000000000000000000";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let store = reopen_store(&path);
        let mut fill = Change::durable();
        fill.put = (1..=4).map(|id| big_record(id, 1)).collect();
        fill.by_alert = (1..=4).collect();
        store.commit_one(fill).expect("fill");
    }
    {
        // As the version before left it: every event filed by alert, and
        // the routing key table without the alert, under its old name.
        let db = redb::Database::open(&path).expect("raw open");
        let txn = db.begin_write().expect("txn");
        let new: redb::TableDefinition<'_, (&str, u64), Option<(u128, bool)>> =
            redb::TableDefinition::new("queued_by_routing_key");
        let old: redb::TableDefinition<'_, (&str, u64), ()> = redb::TableDefinition::new("queued_by_key");
        assert!(txn.delete_table(new).expect("delete"));
        {
            let mut t = txn.open_table(old).expect("old table");
            for id in 1..=4 {
                t.insert((KEY, id), ()).expect("row");
            }
        }
        txn.commit().expect("commit");
    }
    let store = reopen_store(&path);
    let page = store.queued_from(KEY, 2, 10, 1 << 20).expect("read");
    assert_eq!(
        page.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    let snap = store.resume(2, 1).expect("resume");
    assert_eq!(snap.rest, vec![(KEY.to_owned(), 2)]);
    for id in 1..=4 {
        let digest = crate::store::alert_digest(KEY, &format!("d{id}"));
        assert_eq!(store.queued_of(digest, 0).expect("read"), vec![(id, true)]);
    }
    drop(store);
    let db = redb::Database::open(&path).expect("raw open");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("txn");
    let old: redb::TableDefinition<'_, (&str, u64), ()> = redb::TableDefinition::new("queued_by_key");
    assert!(
        matches!(txn.open_table(old), Err(redb::TableError::TableDoesNotExist(_))),
        "the old table is gone"
    );
}

/// Events kept in memory are filed by alert only once they may be out of
/// memory: when a start reads less of a routing key than memory held.
#[test]
fn events_that_were_in_memory_are_filed_by_alert_when_a_start_leaves_them_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    let digest = |id: u64| crate::store::alert_digest("R0UTINGKEY0000000000000000000000", &format!("d{id}"));
    {
        let store = reopen_store(&path);
        let mut fill = Change::durable();
        // 1-4 in memory when put; 5 out of it.
        fill.put = (1..=5).map(|id| big_record(id, 1)).collect();
        fill.by_alert = vec![5];
        store.commit_one(fill).expect("fill");
        assert_eq!(store.queued_of(digest(3), 0).expect("read"), vec![]);
        assert_eq!(store.queued_of(digest(5), 0).expect("read"), vec![(5, true)]);
        // A retry puts an event again without its row: a row it has stays.
        let retry = Change {
            put: vec![big_record(5, 1)],
            ..Change::default()
        };
        store.commit_one(retry).expect("retry");
        assert_eq!(store.queued_of(digest(5), 0).expect("read"), vec![(5, true)]);
    }
    let store = reopen_store(&path);
    // A start that reads one event, with memory for three of them: the
    // next three (2-4) may have been in memory, so they get their rows.
    let snap = store.resume(3, 1).expect("resume");
    assert_eq!(snap.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        snap.rest,
        vec![("R0UTINGKEY0000000000000000000000".to_owned(), 2)]
    );
    for id in 2..=5 {
        assert_eq!(
            store.queued_of(digest(id), 2).expect("read"),
            vec![(id, true)],
            "event {id}"
        );
    }
    // Delivered or dead, an event leaves no row behind.
    let mut gone = Change::durable();
    gone.delete = vec![crate::store::Unqueue {
        id: 3,
        alert: digest(3),
        routing_key: Arc::from("R0UTINGKEY0000000000000000000000"),
    }];
    let mut dead = big_record(4, 1);
    dead.dead_ms = Some(2);
    gone.dead_put = vec![dead];
    store.commit_one(gone).expect("settle");
    assert_eq!(store.queued_of(digest(3), 0).expect("read"), vec![]);
    assert_eq!(store.queued_of(digest(4), 0).expect("read"), vec![]);
    assert_eq!(store.queued_of(digest(2), 0).expect("read"), vec![(2, true)]);
}

#[tokio::test]
async fn a_backlog_on_one_routing_key_does_not_hold_back_another() {
    const OTHER: &str = "0THERKEY00000000000000000000000B";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    // The first key's sends all wait (a pause after a 429, say).
    let held_back = |key: &Arc<str>| {
        if &**key == OTHER {
            Admit::Go
        } else {
            Admit::Wait(Instant::now() + Duration::from_secs(3600))
        }
    };
    let other_id;
    {
        let spool = Spool::open(&path, CAPACITY).expect("open");
        for run in 0..(3 * index::WINDOW as u64) {
            let r = spool.accept("a", &run_event(run, "FAILED", "Failed"), None).await;
            assert!(matches!(r, Ok(Accepted::Queued { .. })), "run {run}: {r:?}");
        }
        let t = event_to(OTHER, "other-run", "e-other", "FAILED", "Failed");
        other_id = match spool.accept("a", &t, None).await {
            Ok(Accepted::Queued { id }) => id,
            other => panic!("{other:?}"),
        };
        let due = spool.take_due(100, held_back).0;
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![other_id]);
        spool.release(&due[0], Some(Duration::ZERO));
        spool.flush().await.expect("flush");
    }
    // After a restart too: each key's window is read at start.
    let spool = reopen(&path);
    assert_eq!(spool.stats().queued, 3 * index::WINDOW + 1);
    let due = spool.take_due(100, held_back).0;
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![other_id]);
}

#[tokio::test]
async fn a_back_off_from_before_a_restart_does_not_hold_an_event_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    let id = {
        let spool = Spool::open(&path, CAPACITY).expect("open");
        spool
            .accept("a", &translated("FAILED", "Failed"), None)
            .await
            .expect("accept");
        let due = spool.take_due(10, |_| Admit::Go).0;
        assert_eq!(due.len(), 1);
        let record = spool.record(&due[0]).await.expect("read").expect("stored");
        spool.retry_later(&due[0], record, Duration::from_secs(300));
        spool.flush().await.expect("flush");
        // In this run the back-off holds.
        assert!(spool.take_due(10, |_| Admit::Go).0.is_empty());
        due[0].id
    };
    let spool = reopen(&path);
    let stored = spool.shared().store.event(id).expect("read").expect("stored");
    assert!(
        stored.next_attempt_ms > now_ms() + 200_000,
        "the back-off was stored"
    );
    let due = spool.take_due(10, |_| Admit::Go).0;
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
}

/// The spool's file, with a commit that can be held open and then let
/// succeed or fail: what a slow fsync, or a disk that fills during one,
/// looks like from the writer.
#[derive(Debug)]
struct Gated {
    inner: RedbStore,
    /// Armed: the next commit says it started, then waits for the verdict.
    hold: std::sync::Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<bool>)>>,
}

impl Gated {
    /// Holds the next commit; returns (it started, let it end: `true`
    /// commits it, `false` fails it).
    fn arm(&self) -> (std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<bool>) {
        let (started_tx, started) = std::sync::mpsc::channel();
        let (verdict, verdict_rx) = std::sync::mpsc::channel();
        *self.hold.lock().expect("lock") = Some((started_tx, verdict_rx));
        (started, verdict)
    }
}

impl Store for Gated {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn snapshot(&self) -> Result<crate::store::Snapshot, Error> {
        self.inner.snapshot()
    }
    fn apply(&self, changes: &[&Change], durable: bool) -> Result<(), Error> {
        let held = self.hold.lock().expect("lock").take();
        if let Some((started, verdict)) = held {
            let _ = started.send(());
            if !verdict.recv().unwrap_or(true) {
                return Err(Error::Storage("no space left on device (test)".into()));
            }
        }
        self.inner.apply(changes, durable)
    }
    fn is_open(&self) -> bool {
        self.inner.is_open()
    }
    fn close(&self) {
        self.inner.close();
    }
    fn reopen(&self) -> Result<(), Error> {
        self.inner.reopen()
    }
    fn event(&self, id: u64) -> Result<Option<Record>, Error> {
        self.inner.event(id)
    }
    fn dead_letter(&self, id: u64) -> Result<Option<Record>, Error> {
        self.inner.dead_letter(id)
    }
    fn dead_letters(&self) -> Result<Vec<Record>, Error> {
        self.inner.dead_letters()
    }
    fn dead_count(&self) -> Result<usize, Error> {
        self.inner.dead_count()
    }
    fn actions(&self) -> Result<Vec<StoredAction>, Error> {
        self.inner.actions()
    }
    fn claims(&self, since_ms: u64, limit: usize) -> Result<Vec<(u64, u128)>, Error> {
        self.inner.claims(since_ms, limit)
    }
    fn quarantine(&self, rows: &[crate::store::Damaged]) -> Result<(), Error> {
        self.inner.quarantine(rows)
    }
    fn quarantined(&self) -> Result<Vec<crate::store::Quarantined>, Error> {
        self.inner.quarantined()
    }
    fn quarantined_count(&self) -> Result<usize, Error> {
        self.inner.quarantined_count()
    }
    fn drop_record(&self, id: &str) -> Result<Option<&'static str>, Error> {
        self.inner.drop_record(id)
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    fn resume(&self, limit: usize, max_bytes: usize) -> Result<crate::store::Snapshot, Error> {
        self.inner.resume(limit, max_bytes)
    }
    fn queued_from(
        &self,
        routing_key: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<crate::store::Page, Error> {
        self.inner.queued_from(routing_key, from, limit, max_bytes)
    }
    fn queued_of(&self, digest: u128, from: u64) -> Result<Vec<(u64, bool)>, Error> {
        self.inner.queued_of(digest, from)
    }
    fn open_alert(&self, digest: u128) -> Result<Option<(u64, OpenRow)>, Error> {
        self.inner.open_alert(digest)
    }
    fn expired_open(
        &self,
        from: u64,
        limit: usize,
        before_ms: i64,
        untimed_ms: i64,
    ) -> Result<crate::store::Expired, Error> {
        self.inner.expired_open(from, limit, before_ms, untimed_ms)
    }
}

/// A spool on a [`Gated`] file, past its first (maintenance) round.
async fn gated_spool(path: &Path) -> (Spool, Arc<Gated>) {
    let store = Arc::new(Gated {
        inner: RedbStore::open(path).expect("open"),
        hold: std::sync::Mutex::new(None),
    });
    let spool =
        Spool::open_store(store.clone(), CAPACITY, Retention::default(), Metrics::shared()).expect("open");
    spool.flush().await.expect("flush");
    (spool, store)
}

/// Waits (off the runtime's threads) until the held commit has started.
async fn started(rx: std::sync::mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .expect("join")
        .expect("the commit never started");
}

/// A webhook's event accepted on a [`Gated`] spool whose commit is held:
/// the webhook waiting for its answer, the verdict that ends the commit,
/// and the event, taken for sending while the commit runs.
struct HeldAccept {
    answer: tokio::task::JoinHandle<Result<Accepted, AcceptError>>,
    verdict: std::sync::mpsc::Sender<bool>,
    due: Due,
}

impl HeldAccept {
    /// Ends the commit as failed: the webhook is answered with a storage
    /// error. The event taken for sending.
    async fn fail_commit(self) -> Due {
        let Self { answer, verdict, due } = self;
        verdict.send(false).expect("verdict");
        let r = answer.await.expect("join");
        assert!(matches!(r, Err(AcceptError::Storage(_))), "{r:?}");
        due
    }
}

async fn accept_held(spool: &Spool, store: &Gated, t: Translation) -> HeldAccept {
    let (began, verdict) = store.arm();
    let answer = tokio::spawn({
        let spool = spool.clone();
        async move { spool.accept("a", &t, None).await }
    });
    started(began).await;
    let mut due = spool.take_due(10, |_| Admit::Go).0;
    assert_eq!(due.len(), 1, "the event may go while its commit runs");
    HeldAccept {
        answer,
        verdict,
        due: due.remove(0),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_goes_out_while_its_commit_runs_and_its_webhook_waits_for_the_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, store) = gated_spool(&dir.path().join("s.redb")).await;
    let HeldAccept {
        answer: accepting,
        verdict,
        due,
    } = accept_held(&spool, &store, translated("FAILED", "Failed")).await;
    assert!(due.wire.is_some());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!accepting.is_finished(), "answered before the commit ended");
    // A failed send reads the record only once the commit has ended.
    let reading = tokio::spawn({
        let spool = spool.clone();
        async move {
            let record = spool.record(&due).await;
            (due, record)
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reading.is_finished(), "read before the commit ended");
    verdict.send(true).expect("verdict");
    let accepted = accepting.await.expect("join");
    let (due, record) = reading.await.expect("join");
    assert_eq!(accepted.ok(), Some(Accepted::Queued { id: due.id }));
    assert_eq!(record.expect("read").map(|r| r.id), Some(due.id));
    spool.delivered(&due);
    spool.flush().await.expect("flush");
    assert_eq!(spool.stats().queued, 0);
    assert!(spool.shared().store.event(due.id).expect("read").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_after_its_event_went_out_answers_503_and_its_id_is_never_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, store) = gated_spool(&dir.path().join("s.redb")).await;
    let held = accept_held(&spool, &store, run_event(1, "FAILED", "Failed")).await;
    let sent = held.fail_commit().await;
    // Its send failed, say: there is no record to retry.
    assert_eq!(spool.record(&sent).await.expect("read").map(|r| r.id), None);
    // The file is back for the next event, which gets an id of its own.
    let r = spool.accept("a", &run_event(2, "FAILED", "Failed"), None).await;
    let Ok(Accepted::Queued { id }) = r else {
        panic!("{r:?}");
    };
    assert_ne!(id, sent.id);
    // The first send's late success does not touch the second event.
    spool.delivered(&sent);
    spool.flush().await.expect("flush");
    assert_eq!(spool.stats().queued, 1);
    let due = spool.take_due(10, |_| Admit::Go).0;
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
    assert!(spool.shared().store.event(id).expect("read").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_before_its_commit_fails_writes_nothing_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, store) = gated_spool(&dir.path().join("s.redb")).await;
    let held = accept_held(&spool, &store, run_event(1, "FAILED", "Failed")).await;
    // PagerDuty took it while the commit ran; its delete is on its way.
    spool.delivered(&held.due);
    held.fail_commit().await;
    // The delete has nothing to delete: no write, so the spool does not
    // open the file again before its time and call itself ready.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(spool.unready().is_some(), "a write followed the failed commit");
    assert_eq!(spool.stats().queued, 0);
}

/// A trigger of a new alert goes out while its commit runs, PagerDuty
/// answers it before or after that commit fails, and the run recovers:
/// the alert stayed open (also across a restart), so the resolve is sent.
async fn trigger_sent_then_commit_failed_then_recovery(answered_before_the_failure: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let (spool, store) = gated_spool(&path).await;
        let held = accept_held(&spool, &store, run_event(7, "FAILED", "Failed")).await;
        if answered_before_the_failure {
            spool.delivered(&held.due);
        }
        let sent = held.fail_commit().await;
        if !answered_before_the_failure {
            spool.delivered(&sent);
        }
        assert_eq!(spool.stats().open_alerts, 1, "PagerDuty has the trigger");
        // The file takes writes again: the open alert is written first.
        spool.flush().await.expect("flush");
        assert!(spool.unready().is_none());
    }
    let spool = reopen(&path);
    assert_eq!(spool.stats().open_alerts, 1);
    assert_eq!(spool.stats().queued, 0, "the trigger itself was never stored");
    let r = spool
        .accept("a", &run_event(7, "COMPLETED", "Completed"), None)
        .await;
    assert!(
        matches!(r, Ok(Accepted::Queued { .. })),
        "the recovery is sent: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_alert_whose_trigger_went_out_before_its_commit_failed_stays_open_for_its_recovery() {
    trigger_sent_then_commit_failed_then_recovery(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_still_in_flight_when_its_commit_failed_keeps_its_alert_open_for_its_recovery() {
    trigger_sent_then_commit_failed_then_recovery(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_while_the_trigger_is_still_in_flight_after_its_commit_failed_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, store) = gated_spool(&dir.path().join("s.redb")).await;
    let held = accept_held(&spool, &store, run_event(8, "FAILED", "Failed")).await;
    held.fail_commit().await;
    // No answer from PagerDuty yet: the trigger may reach it, so its
    // recovery must not be dropped as moot.
    let r = spool
        .accept("a", &run_event(8, "COMPLETED", "Completed"), None)
        .await;
    assert!(
        matches!(r, Ok(Accepted::Queued { .. })),
        "the recovery is sent: {r:?}"
    );
}
