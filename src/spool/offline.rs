//! The spool file with no bridge running on it, for the `spool` subcommand
//! (the file lock says whether one is). Reads go straight to the store;
//! changes go through a spool opened for the purpose, so that a requeued
//! dead letter follows the same rules as one requeued over the API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Spool, Stats};
use crate::store::redb::RedbStore;
use crate::store::{Error, Quarantined, Store};

/// What `spool check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Nothing undecodable and nothing quarantined.
    pub ok: bool,
    /// Rows still in their tables that do not decode (a running bridge
    /// moves them to the quarantine at its next start).
    pub undecodable: Vec<Quarantined>,
    /// Rows in the quarantine; `spool drop quarantine:ID` deletes one.
    pub quarantined: Vec<Quarantined>,
}

/// Opens the file (it must exist).
///
/// # Errors
/// When missing, in use or unreadable.
pub(crate) fn open(path: &Path) -> Result<Arc<dyn Store>, Error> {
    if !path.exists() {
        return Err(Error::Storage(format!("no spool file at {}", path.display())));
    }
    Ok(Arc::new(RedbStore::open(path)?))
}

/// What `spool check` reports: rows that do not decode (still in their
/// tables, or already quarantined). Reads only.
///
/// # Errors
/// Storage errors.
pub(crate) fn check(store: &dyn Store) -> Result<Check, Error> {
    let snap = store.snapshot()?;
    Ok(Check {
        ok: snap.damaged.is_empty() && store.quarantined_count()? == 0,
        undecodable: snap
            .damaged
            .into_iter()
            .map(|d| Quarantined {
                id: 0,
                bytes: d.raw.len(),
                table: d.table,
                key: d.key,
                error: d.error,
            })
            .collect(),
        quarantined: store.quarantined()?,
    })
}

/// Figures from the file.
///
/// # Errors
/// Storage errors.
pub(crate) fn stats(store: &dyn Store) -> Result<Stats, Error> {
    let snap = store.snapshot()?;
    Ok(Stats {
        queued: snap.events.len(),
        in_flight: 0,
        open_alerts: snap.open.len(),
        dead_letters: store.dead_count()?,
        paused_keys: 0,
        quarantined: store.quarantined_count()? + snap.damaged.len(),
        unavailable: None,
        counters: snap.counters,
    })
}

/// Runs `f` on a spool opened on `store`, then makes it all durable and
/// closes the file.
fn with_spool<T>(store: Arc<dyn Store>, f: impl AsyncFnOnce(&Spool) -> Result<T, Error>) -> Result<T, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::store::storage)?;
    rt.block_on(async {
        // Offline, nothing expires: the serving bridge's --open-alert-ttl
        // is not known here.
        let retention = super::Retention {
            open_alert_ttl: Duration::MAX,
            ..super::Retention::default()
        };
        let spool = Spool::open_store(store, usize::MAX, retention, crate::metrics::Metrics::shared())?;
        let out = f(&spool).await?;
        spool.close().await?;
        Ok(out)
    })
}

/// Moves a dead letter back to the queue; the next start sends it.
///
/// # Errors
/// Storage errors.
pub(crate) fn retry(store: Arc<dyn Store>, id: u64) -> Result<Option<u64>, Error> {
    with_spool(store, async |spool| spool.retry_dead_letter(id).await)
}

/// Deletes one dead letter, or all of them; returns how many.
///
/// # Errors
/// Storage errors.
pub(crate) fn purge(store: Arc<dyn Store>, id: Option<u64>) -> Result<usize, Error> {
    with_spool(store, async |spool| match id {
        Some(id) => Ok(usize::from(spool.purge_dead_letter(id).await?)),
        None => spool.purge_dead_letters().await,
    })
}
