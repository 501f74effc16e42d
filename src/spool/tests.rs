use super::*;
use crate::actions::Action;
use crate::secret::Secret;
use crate::translate::{Options, translate};

fn translated(state_type: &str, state_name: &str) -> Translation {
    let body = serde_json::json!({
        "event": format!("prefect.flow-run.{state_name}"), "id": format!("e-{state_name}"),
        "occurred": "2026-11-28T08:36:31Z", "related": [], "payload": {},
        "resource": {"prefect.resource.id": "prefect.flow-run.r1", "prefect.resource.name": "r",
                     "prefect.state-type": state_type, "prefect.state-name": state_name}
    });
    let n = crate::prefect::parse(body.to_string().as_bytes(), None);
    let action = Action {
        name: "a".into(),
        routing_key: Secret::new("R0UTINGKEY0000000000000000000000"),
        severity: None,
    };
    translate(&n, &action, &Options::default())
}

fn reopen(path: &Path) -> Spool {
    // The previous writer thread releases the file lock as it exits.
    for _ in 0..100 {
        match Spool::open(path, Settings::default()) {
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
    let spool = Spool::open(&dir.path().join("s.redb"), Settings::default()).expect("open");
    assert!(matches!(
        spool.accept("a", &translated("FAILED", "Failed")).await,
        Ok(Accepted::Queued { .. })
    ));
    assert_eq!(
        spool
            .accept("a", &translated("COMPLETED", "Completed"))
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
        spool.accept("a", &translated("COMPLETED", "Completed")).await,
        Ok(Accepted::Ignored { .. })
    ));
}

#[tokio::test]
async fn triggers_collapse_and_everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.redb");
    {
        let spool = Spool::open(&path, Settings::default()).expect("open");
        spool
            .accept("a", &translated("SCHEDULED", "Late"))
            .await
            .expect("late");
        spool
            .accept("a", &translated("FAILED", "Failed"))
            .await
            .expect("failed");
        let stats = spool.stats();
        assert_eq!(
            (stats.queued, stats.counters.superseded, stats.open_alerts),
            (1, 1, 1)
        );
    }
    let spool = reopen(&path);
    let stats = spool.stats();
    assert_eq!(
        (stats.queued, stats.counters.superseded, stats.open_alerts),
        (1, 1, 1)
    );
    // The open alert is a failure now, so RUNNING does not close it.
    assert!(matches!(
        spool.accept("a", &translated("RUNNING", "Running")).await,
        Ok(Accepted::Ignored { .. })
    ));
}
