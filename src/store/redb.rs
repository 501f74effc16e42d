//! The spool in one redb file beside the bridge.
//!
//! Tables: `events` (accepted, undelivered), `queued_keys` and
//! `queued_by_key` (the same by alert, and by routing key), `dead` (dead letters), `open_alerts` (alerts with an open
//! trigger, so resolves survive restarts) and `open_keys` (the same by alert),
//! `actions` (created over the API), `seen` (idempotency claims, so a repeat
//! after a restart is still a repeat), `quarantine` (rows that no longer
//! decode, kept for inspection) and `meta` (counters). Rows are
//! [`super::envelope`]s.
//!
//! After a failed write redb refuses further writes until the file is opened
//! again, so the handle can be closed and opened again in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::envelope;
use super::{
    Change, Counters, Damaged, Error, OpenRow, Quarantined, Queued, Record, Snapshot, Store, StoredAction,
    storage,
};
use crate::pagerduty::EventAction;

const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
const DEAD: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("dead");
/// Open alerts, keyed by the spool id of the trigger that opened them: new
/// rows append at the end of the tree instead of landing on random pages.
const OPEN: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("open_alerts");
/// The open-alert table of earlier versions (keyed by a digest); moved into
/// [`OPEN`] when such a spool is opened.
const OPEN_BY_DIGEST: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("open");
/// Which row of [`OPEN`] holds each open alert, by [`super::alert_digest`]:
/// how an event finds its alert without the spool holding every one.
const OPEN_KEYS: TableDefinition<'_, u128, u64> = TableDefinition::new("open_keys");
/// Queued events out of memory by their alert, (alert digest, event id) →
/// whether it is a trigger: how a decision finds an alert's queued events
/// when the spool holds only the first of a long queue in memory. Its keys
/// are random, so each row costs a page of its own in a commit: events in
/// memory get none (see [`Change::by_alert`] and [`index_by_alert`]).
const QUEUED_KEYS: TableDefinition<'_, (u128, u64), bool> = TableDefinition::new("queued_keys");
/// Every queued event by its routing key, (routing key, event id) → its
/// (alert digest, whether it is a trigger): how the spool reads a routing
/// key's queue in order, so that a backlog on one key does not hold back
/// the others, and what a start files by alert in [`QUEUED_KEYS`] for the
/// events that were in memory. `None` for rows carried over from
/// [`QUEUED_BY_KEY_V1`], whose events all have their row by alert.
const QUEUED_BY_KEY: TableDefinition<'_, (&str, u64), Option<(u128, bool)>> =
    TableDefinition::new("queued_by_routing_key");
/// [`QUEUED_BY_KEY`] as earlier versions wrote it, without the alert; moved
/// into it when such a spool is opened.
const QUEUED_BY_KEY_V1: TableDefinition<'_, (&str, u64), ()> = TableDefinition::new("queued_by_key");
/// The routing key in [`QUEUED_BY_KEY`] of queued rows that did not decode
/// when the table was built (no routing key is empty).
const UNREADABLE: &str = "";
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// The key in [`META`] of reconciliation's checkpoint (unix ms).
const CHECKPOINT: &str = "reconcile_checkpoint_ms";
const ACTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("actions");
/// Idempotency claims, keyed by (unix ms claimed, digest of action and
/// Prefect event id): time first, so expired claims are one range.
const SEEN: TableDefinition<'_, (u64, u128), ()> = TableDefinition::new("seen");
/// Rows that did not decode, moved out of their table so that nothing else
/// trips on them, keyed by a sequence of their own.
const QUARANTINE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("quarantine");

/// redb page cache; the spool is small and hot, and RSS matters more.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// A file smaller than this is never compacted: there is little to give back.
const COMPACT_MIN_FILE: u64 = 32 * 1024 * 1024;

/// The spool file.
#[derive(Debug)]
pub(crate) struct RedbStore {
    path: PathBuf,
    /// `None` after a failed write, until [`Store::reopen`] succeeds.
    db: RwLock<Option<Arc<Database>>>,
}

/// Runs a redb call that may panic on a damaged file; a panic becomes
/// [`Error::Damaged`] naming the file and what to do.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the storage engine panicked".to_owned());
            Err(Error::Damaged {
                path: path.display().to_string(),
                detail: crate::logging::escape(&detail).into_owned(),
            })
        }
    }
}

/// Opens the file, creating missing tables and migrating older layouts.
fn open_database(path: &Path) -> Result<Database, Error> {
    guarded(path, || {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse(path.display().to_string()),
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => Error::Damaged {
                    path: path.display().to_string(),
                    detail,
                },
                other => storage(other),
            })?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(DEAD).map_err(storage)?;
            txn.open_table(OPEN).map_err(storage)?;
            txn.open_table(OPEN_KEYS).map_err(storage)?;
            txn.open_table(QUEUED_KEYS).map_err(storage)?;
            txn.open_table(QUEUED_BY_KEY).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            txn.open_table(ACTIONS).map_err(storage)?;
            txn.open_table(SEEN).map_err(storage)?;
            txn.open_table(QUARANTINE).map_err(storage)?;
        }
        migrate_open_by_digest(&txn)?;
        index_open_rows(&txn)?;
        migrate_queued_by_key(&txn)?;
        index_queued_rows(&txn)?;
        txn.commit().map_err(storage)?;
        Ok(db)
    })
}

impl RedbStore {
    /// Opens (or creates, mode 0600) the spool file.
    ///
    /// # Errors
    /// [`Error::InUse`] when another process holds it; [`Error::Damaged`]
    /// when it cannot be read at all; storage errors.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        create_private(path)?;
        let db = open_database(path)?;
        Ok(Self {
            path: path.to_owned(),
            db: RwLock::new(Some(Arc::new(db))),
        })
    }

    fn db(&self) -> Result<Arc<Database>, Error> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                Error::Unavailable("the spool file is being opened again after a write failed".into())
            })
    }

    /// Everything needed to resume; the open rows too when `open_rows`
    /// (offline checks and tests), else only their count; every queued
    /// event, or with `window` = (rows, bytes) the first of each routing
    /// key as [`Store::queued_from`] reads them.
    fn read_snapshot(&self, open_rows: bool, window: Option<(usize, usize)>) -> Result<Snapshot, Error> {
        use redb::ReadableTableMetadata;
        let db = self.db()?;
        guarded(&self.path, || {
            let txn = db.begin_read().map_err(storage)?;
            let mut snap = Snapshot::default();
            let events = txn.open_table(EVENTS).map_err(storage)?;
            match window {
                None => {
                    // Each body is dropped as soon as its row is read.
                    for row in events.iter().map_err(storage)? {
                        let (k, v) = row.map_err(storage)?;
                        match envelope::decode_record(v.value()) {
                            Ok(r) => snap.events.push(Queued::from(r)),
                            Err(e) => snap.damaged.push(damaged("events", k.value(), &e, v.value())),
                        }
                    }
                }
                Some((limit, max_bytes)) => {
                    let by_key = txn.open_table(QUEUED_BY_KEY).map_err(storage)?;
                    let mut key = by_key
                        .first()
                        .map_err(storage)?
                        .map(|(k, _)| k.value().0.to_owned());
                    while let Some(this) = key {
                        let page = read_page(&by_key, &events, &this, 0, limit, max_bytes)?;
                        snap.events.extend(page.events);
                        snap.damaged.extend(page.damaged);
                        let after = (this.as_str(), u64::MAX);
                        key = by_key
                            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                            .map_err(storage)?
                            .next()
                            .transpose()
                            .map_err(storage)?
                            .map(|(k, _)| k.value().0.to_owned());
                        if let Some(next) = page.next {
                            snap.rest.push((this, next));
                        }
                    }
                    snap.events.sort_by_key(|e| e.id);
                }
            }
            snap.queued_count = usize::try_from(events.len().map_err(storage)?).unwrap_or(usize::MAX);
            let open = txn.open_table(OPEN).map_err(storage)?;
            snap.open_count = usize::try_from(open.len().map_err(storage)?).unwrap_or(usize::MAX);
            if open_rows {
                for row in open.iter().map_err(storage)? {
                    let (k, v) = row.map_err(storage)?;
                    match envelope::decode_open(v.value()) {
                        Ok(o) => snap.open.push((k.value(), o)),
                        Err(e) => snap
                            .damaged
                            .push(damaged("open_alerts", k.value(), &e, v.value())),
                    }
                }
            }
            let meta = txn.open_table(META).map_err(storage)?;
            let get = |k: &str| meta.get(k).ok().flatten().map(|v| v.value()).unwrap_or(0);
            snap.counters = Counters {
                delivered: get("delivered"),
                superseded: get("superseded"),
                dead_lettered: get("dead_lettered"),
            };
            snap.checkpoint = meta
                .get(CHECKPOINT)
                .ok()
                .flatten()
                .and_then(|v| i64::try_from(v.value()).ok());
            let dead = txn.open_table(DEAD).map_err(storage)?;
            for row in dead.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                if let Err(e) = envelope::decode_record(v.value()) {
                    snap.damaged.push(damaged("dead", k.value(), &e, v.value()));
                }
            }
            let actions = txn.open_table(ACTIONS).map_err(storage)?;
            for row in actions.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                if let Err(e) = envelope::decode_action(v.value()) {
                    snap.damaged.push(damaged("actions", k.value(), &e, v.value()));
                }
            }
            let last_dead = dead.last().map_err(storage)?.map(|(k, _)| k.value()).unwrap_or(0);
            let last_event = events
                .last()
                .map_err(storage)?
                .map(|(k, _)| k.value())
                .unwrap_or(0);
            let last_open = open.last().map_err(storage)?.map(|(k, _)| k.value()).unwrap_or(0);
            snap.next_id = get("next_id")
                .max(last_event + 1)
                .max(last_dead + 1)
                .max(last_open + 1)
                .max(1);
            Ok(snap)
        })
    }

    fn count<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<'_, K, V>,
    ) -> Result<usize, Error> {
        use redb::ReadableTableMetadata;
        let txn = self.db()?.begin_read().map_err(storage)?;
        let t = txn.open_table(table).map_err(storage)?;
        Ok(usize::try_from(t.len().map_err(storage)?).unwrap_or(usize::MAX))
    }

    fn record(&self, table: TableDefinition<'_, u64, &[u8]>, id: u64) -> Result<Option<Record>, Error> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let table = txn.open_table(table).map_err(storage)?;
        let Some(v) = table.get(id).map_err(storage)? else {
            return Ok(None);
        };
        envelope::decode_record(v.value())
            .map(Some)
            .map_err(|e| Error::Corrupt(id, e.to_string()))
    }
}

impl Store for RedbStore {
    fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Compacts when the file is more than twice the pages in use: redb
    /// reuses freed pages but never shrinks its file, so a drained backlog
    /// would keep its size for good. Needs the only handle: while a reader
    /// holds one (a send reading its event), it waits for the next call.
    fn compact(&self) -> Result<Option<(u64, u64)>, Error> {
        let before = self.size_bytes();
        if before < COMPACT_MIN_FILE {
            return Ok(None);
        }
        let used = {
            let db = self.db()?;
            let txn = db.begin_write().map_err(storage)?;
            let stats = txn.stats().map_err(storage)?;
            txn.abort().map_err(storage)?;
            stats.allocated_pages() * stats.page_size() as u64
        };
        if before < used.saturating_mul(2) {
            return Ok(None);
        }
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        let Some(shared) = slot.take() else {
            return Ok(None);
        };
        let mut db = match Arc::try_unwrap(shared) {
            Ok(db) => db,
            Err(shared) => {
                *slot = Some(shared);
                return Ok(None);
            }
        };
        let result = guarded(&self.path, || {
            db.compact().map_err(|e| match e {
                redb::CompactionError::TransactionInProgress => Error::Unavailable(e.to_string()),
                other => storage(other),
            })
        });
        *slot = Some(Arc::new(db));
        match result {
            Ok(_) => Ok(Some((before, self.size_bytes()))),
            Err(Error::Unavailable(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn resume(&self, limit: usize, max_bytes: usize) -> Result<Snapshot, Error> {
        let snap = self.read_snapshot(false, Some((limit, max_bytes)))?;
        if !snap.rest.is_empty() {
            let db = self.db()?;
            // Not a reason to stay down (a full disk, say): without those
            // rows a recovery may miss a trigger on disk, which then goes
            // out before it, as it would without the recovery.
            if let Err(e) = guarded(&self.path, || index_by_alert(&db, &snap.rest, limit)) {
                tracing::warn!(error = %e, "cannot file queued events by alert at start; a recovery may not cancel a trigger still on disk");
                // redb refuses writes after a failed one: the writer opens
                // the file again before its first.
                drop(db);
                self.close();
            }
        }
        Ok(snap)
    }

    fn queued_from(
        &self,
        routing_key: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<super::Page, Error> {
        let db = self.db()?;
        guarded(&self.path, || {
            let txn = db.begin_read().map_err(storage)?;
            let by_key = txn.open_table(QUEUED_BY_KEY).map_err(storage)?;
            let events = txn.open_table(EVENTS).map_err(storage)?;
            read_page(&by_key, &events, routing_key, from, limit, max_bytes)
        })
    }

    fn queued_of(&self, digest: u128, from: u64) -> Result<Vec<(u64, bool)>, Error> {
        let db = self.db()?;
        guarded(&self.path, || {
            let txn = db.begin_read().map_err(storage)?;
            let keys = txn.open_table(QUEUED_KEYS).map_err(storage)?;
            let events = txn.open_table(EVENTS).map_err(storage)?;
            let mut found = Vec::new();
            for row in keys.range((digest, from)..=(digest, u64::MAX)).map_err(storage)? {
                let (k, trigger) = row.map_err(storage)?;
                let id = k.value().1;
                // A row whose event was quarantined is not queued.
                if events.get(id).map_err(storage)?.is_some() {
                    found.push((id, trigger.value()));
                }
            }
            Ok(found)
        })
    }

    fn open_alert(&self, digest: u128) -> Result<Option<(u64, OpenRow)>, Error> {
        let db = self.db()?;
        guarded(&self.path, || {
            let txn = db.begin_read().map_err(storage)?;
            let keys = txn.open_table(OPEN_KEYS).map_err(storage)?;
            let Some(row) = keys.get(digest).map_err(storage)?.map(|v| v.value()) else {
                return Ok(None);
            };
            let open = txn.open_table(OPEN).map_err(storage)?;
            let Some(v) = open.get(row).map_err(storage)? else {
                return Ok(None);
            };
            match envelope::decode_open(v.value()) {
                Ok(o) => Ok(Some((row, o))),
                Err(e) => {
                    tracing::warn!(row, error = %e, "an open-alert row no longer decodes; it counts as closed (see `spool check`)");
                    Ok(None)
                }
            }
        })
    }

    fn expired_open(
        &self,
        from: u64,
        limit: usize,
        before_ms: i64,
        untimed_ms: i64,
    ) -> Result<super::Expired, Error> {
        let db = self.db()?;
        guarded(&self.path, || {
            let txn = db.begin_read().map_err(storage)?;
            let open = txn.open_table(OPEN).map_err(storage)?;
            let mut found = super::Expired::default();
            for (seen, row) in open.range(from..).map_err(storage)?.enumerate() {
                let (k, v) = row.map_err(storage)?;
                if seen == limit {
                    found.next = Some(k.value());
                    break;
                }
                match envelope::decode_open(v.value()) {
                    Ok(o) if o.opened_ms.unwrap_or(untimed_ms) < before_ms => found
                        .rows
                        .push((k.value(), super::alert_digest(&o.routing_key, &o.dedup_key))),
                    Ok(_) => {}
                    Err(e) => found
                        .damaged
                        .push(damaged("open_alerts", k.value(), &e, v.value())),
                }
            }
            Ok(found)
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    /// Reads everything needed to resume. Rows that do not decode are
    /// listed in [`Snapshot::damaged`], not returned.
    ///
    /// # Errors
    /// Storage errors.
    fn snapshot(&self) -> Result<Snapshot, Error> {
        self.read_snapshot(true, None)
    }

    /// Commits `changes` in one transaction, fsync'd when `durable`.
    ///
    /// # Errors
    /// When the commit fails; the caller then [`Store::close`]s and later
    /// [`Store::reopen`]s the file.
    fn apply(&self, changes: &[&Change], durable: bool) -> Result<(), Error> {
        let db = self.db()?;
        guarded(&self.path, || apply(&db, changes, durable))
    }

    /// Whether the file is open for writing.
    fn is_open(&self) -> bool {
        self.db.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Closes the file after a failed write: redb refuses every write after
    /// one fails, until the file is opened again.
    fn close(&self) {
        self.db.write().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Opens the file again (after [`Store::close`]); redb repairs it if the
    /// failed write left it unclean.
    ///
    /// # Errors
    /// When it still cannot be opened (the disk is still full, say).
    fn reopen(&self) -> Result<(), Error> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return Ok(());
        }
        *slot = Some(Arc::new(open_database(&self.path)?));
        Ok(())
    }

    /// One undelivered event.
    ///
    /// # Errors
    /// Storage errors.
    fn event(&self, id: u64) -> Result<Option<Record>, Error> {
        self.record(EVENTS, id)
    }

    /// One dead letter.
    ///
    /// # Errors
    /// Storage errors.
    fn dead_letter(&self, id: u64) -> Result<Option<Record>, Error> {
        self.record(DEAD, id)
    }

    /// Every dead letter that decodes, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    fn dead_letters(&self) -> Result<Vec<Record>, Error> {
        let mut ignored = Vec::new();
        all_records(
            &self.db()?.begin_read().map_err(storage)?,
            DEAD,
            "dead",
            &mut ignored,
        )
    }

    /// How many dead letters there are, without reading them.
    ///
    /// # Errors
    /// Storage errors.
    fn dead_count(&self) -> Result<usize, Error> {
        self.count(DEAD)
    }

    /// Actions created over the API (rows that do not decode are in the
    /// quarantine after start).
    ///
    /// # Errors
    /// Storage errors.
    fn actions(&self) -> Result<Vec<StoredAction>, Error> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let table = txn.open_table(ACTIONS).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (_, v) = row.map_err(storage)?;
            if let Ok(a) = envelope::decode_action(v.value()) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Idempotency claims made at or after `since_ms`, newest first, at most `limit`.
    ///
    /// # Errors
    /// Storage errors.
    fn claims(&self, since_ms: u64, limit: usize) -> Result<Vec<(u64, u128)>, Error> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let t = txn.open_table(SEEN).map_err(storage)?;
        let mut out = Vec::new();
        for row in t.range((since_ms, 0)..).map_err(storage)?.rev() {
            let (k, _) = row.map_err(storage)?;
            out.push(k.value());
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Moves damaged rows into the quarantine, durably.
    ///
    /// # Errors
    /// Storage errors.
    fn quarantine(&self, rows: &[Damaged]) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let db = self.db()?;
        guarded(&self.path, || {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut q = txn.open_table(QUARANTINE).map_err(storage)?;
                let first = q
                    .last()
                    .map_err(storage)?
                    .map(|(k, _)| k.value() + 1)
                    .unwrap_or(1);
                for (next, d) in (first..).zip(rows) {
                    let bytes = serde_json::to_vec(d).map_err(storage)?;
                    q.insert(next, bytes.as_slice()).map_err(storage)?;
                    match d.table.as_str() {
                        "actions" => {
                            txn.open_table(ACTIONS)
                                .map_err(storage)?
                                .remove(d.key.as_str())
                                .map_err(storage)?;
                        }
                        table => {
                            let def = match table {
                                "events" => EVENTS,
                                "dead" => DEAD,
                                _ => OPEN,
                            };
                            if let Ok(id) = d.key.parse::<u64>() {
                                txn.open_table(def)
                                    .map_err(storage)?
                                    .remove(id)
                                    .map_err(storage)?;
                            }
                        }
                    }
                }
            }
            txn.commit().map_err(storage)
        })
    }

    /// Quarantined rows, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    fn quarantined(&self) -> Result<Vec<Quarantined>, Error> {
        let txn = self.db()?.begin_read().map_err(storage)?;
        let q = txn.open_table(QUARANTINE).map_err(storage)?;
        let mut out = Vec::new();
        for row in q.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let d: Damaged = serde_json::from_slice(v.value()).unwrap_or_else(|e| Damaged {
                table: "?".into(),
                key: "?".into(),
                error: format!("the quarantine row itself does not decode: {e}"),
                raw: v.value().to_vec(),
            });
            out.push(Quarantined {
                id: k.value(),
                table: d.table,
                key: d.key,
                error: d.error,
                bytes: d.raw.len(),
            });
        }
        Ok(out)
    }

    /// How many rows are quarantined, without reading them.
    ///
    /// # Errors
    /// Storage errors.
    fn quarantined_count(&self) -> Result<usize, Error> {
        self.count(QUARANTINE)
    }

    /// Deletes one record by id: an undelivered event, a dead letter, or a
    /// quarantined row (`quarantine:ID`). Returns the table it was in.
    ///
    /// # Errors
    /// Storage errors.
    fn drop_record(&self, id: &str) -> Result<Option<&'static str>, Error> {
        let db = self.db()?;
        let txn = db.begin_write().map_err(storage)?;
        let found = {
            if let Some(q) = id.strip_prefix("quarantine:") {
                let n: u64 = q
                    .parse()
                    .map_err(|_| storage(format!("{id:?} is not quarantine:<number>")))?;
                let mut t = txn.open_table(QUARANTINE).map_err(storage)?;
                t.remove(n).map_err(storage)?.map(|_| "quarantine")
            } else {
                let n: u64 = id.parse().map_err(|_| {
                    storage(format!(
                        "{id:?} is not a record id (a number, or quarantine:<number>)"
                    ))
                })?;
                let mut found = None;
                for (name, def) in [("events", EVENTS), ("dead", DEAD)] {
                    let mut t = txn.open_table(def).map_err(storage)?;
                    let gone = t
                        .remove(n)
                        .map_err(storage)?
                        .map(|v| envelope::decode_record(v.value()).ok());
                    if let Some(record) = gone {
                        if let (Some(r), "events") = (record, name) {
                            let mut keys = txn.open_table(QUEUED_KEYS).map_err(storage)?;
                            keys.remove(queued_key(&r)).map_err(storage)?;
                            let mut by_key = txn.open_table(QUEUED_BY_KEY).map_err(storage)?;
                            by_key.remove((r.routing_key.as_str(), r.id)).map_err(storage)?;
                        }
                        found = Some(name);
                        break;
                    }
                }
                found
            }
        };
        txn.commit().map_err(storage)?;
        Ok(found)
    }
}

fn damaged(table: &str, key: impl ToString, e: &dyn std::fmt::Display, raw: &[u8]) -> Damaged {
    Damaged {
        table: table.to_owned(),
        key: key.to_string(),
        error: e.to_string(),
        raw: raw.to_vec(),
    }
}

/// Every record of an id-keyed table that decodes, in id order; the others
/// go to `damaged`.
fn all_records(
    txn: &redb::ReadTransaction,
    table: TableDefinition<'_, u64, &[u8]>,
    name: &str,
    damaged_rows: &mut Vec<Damaged>,
) -> Result<Vec<Record>, Error> {
    let table = txn.open_table(table).map_err(storage)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        match envelope::decode_record(v.value()) {
            Ok(r) => out.push(r),
            Err(e) => damaged_rows.push(damaged(name, k.value(), &e, v.value())),
        }
    }
    Ok(out)
}

/// Queued events of a routing key from id `from` on that decode, in id
/// order, without their bodies (each dropped as soon as its row is read);
/// the others go to [`super::Page::damaged`]. Stops after `limit` rows or
/// once `max_bytes` were read.
fn read_page(
    by_key: &redb::ReadOnlyTable<(&'static str, u64), Option<(u128, bool)>>,
    events: &redb::ReadOnlyTable<u64, &'static [u8]>,
    routing_key: &str,
    from: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<super::Page, Error> {
    let mut page = super::Page::default();
    let mut rows = 0usize;
    for row in by_key
        .range((routing_key, from)..=(routing_key, u64::MAX))
        .map_err(storage)?
    {
        let id = row.map_err(storage)?.0.value().1;
        if rows >= limit || (rows > 0 && page.bytes >= max_bytes) {
            page.next = Some(id);
            break;
        }
        // A row whose event was quarantined is not queued.
        let Some(v) = events.get(id).map_err(storage)? else {
            continue;
        };
        rows += 1;
        page.bytes = page.bytes.saturating_add(v.value().len());
        match envelope::decode_record(v.value()) {
            Ok(r) => page.events.push(Queued::from(r)),
            Err(e) => page.damaged.push(damaged("events", id, &e, v.value())),
        }
    }
    Ok(page)
}

/// Creates the file with mode 0600 if it does not exist: it holds routing keys.
fn create_private(path: &Path) -> Result<(), Error> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(storage)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(storage(format!("creating {}: {e}", path.display()))),
    }
}

/// Moves the rows of an earlier version's digest-keyed open table into
/// [`OPEN`], under fresh ids, and drops the old table.
fn migrate_open_by_digest(txn: &redb::WriteTransaction) -> Result<(), Error> {
    let exists = txn
        .list_tables()
        .map_err(storage)?
        .any(|t| t.name() == OPEN_BY_DIGEST.name());
    if !exists {
        return Ok(());
    }
    {
        let old = txn.open_table(OPEN_BY_DIGEST).map_err(storage)?;
        let mut open = txn.open_table(OPEN).map_err(storage)?;
        let mut meta = txn.open_table(META).map_err(storage)?;
        let mut next = meta
            .get("next_id")
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(1)
            .max(1);
        for row in old.iter().map_err(storage)? {
            let (_, v) = row.map_err(storage)?;
            if let Ok(o) = envelope::decode_open(v.value()) {
                let bytes = envelope::encode_open(&o);
                open.insert(next, bytes.as_slice()).map_err(storage)?;
                next += 1;
            }
        }
        meta.insert("next_id", next).map_err(storage)?;
    }
    txn.delete_table(OPEN_BY_DIGEST).map_err(storage)?;
    Ok(())
}

/// Builds [`OPEN_KEYS`] for a spool written before it existed; of two rows
/// of one alert the later stays.
fn index_open_rows(txn: &redb::WriteTransaction) -> Result<(), Error> {
    use redb::ReadableTableMetadata;
    let mut keys = txn.open_table(OPEN_KEYS).map_err(storage)?;
    let mut open = txn.open_table(OPEN).map_err(storage)?;
    if !keys.is_empty().map_err(storage)? || open.is_empty().map_err(storage)? {
        return Ok(());
    }
    let mut older = Vec::new();
    for row in open.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        if let Ok(o) = envelope::decode_open(v.value()) {
            let digest = super::alert_digest(&o.routing_key, &o.dedup_key);
            if let Some(before) = keys.insert(digest, k.value()).map_err(storage)? {
                older.push(before.value());
            }
        }
    }
    for id in older {
        open.remove(id).map_err(storage)?;
    }
    Ok(())
}

/// Moves [`QUEUED_BY_KEY_V1`]'s rows into [`QUEUED_BY_KEY`], without their
/// alert (every event of such a spool has its row in [`QUEUED_KEYS`]), and
/// drops it. One sequential pass over the queue's keys; no event is read.
fn migrate_queued_by_key(txn: &redb::WriteTransaction) -> Result<(), Error> {
    let old = match txn.open_table(QUEUED_BY_KEY_V1) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(storage(e)),
    };
    {
        let mut by_key = txn.open_table(QUEUED_BY_KEY).map_err(storage)?;
        for row in old.iter().map_err(storage)? {
            let (k, _) = row.map_err(storage)?;
            let (key, id) = k.value();
            by_key.insert((key, id), None).map_err(storage)?;
        }
    }
    drop(old);
    txn.delete_table(QUEUED_BY_KEY_V1).map_err(storage)?;
    Ok(())
}

/// Builds [`QUEUED_KEYS`] and [`QUEUED_BY_KEY`] for a spool written before
/// they existed. A row that does not decode has no routing key to be filed
/// under: it goes under [`UNREADABLE`], where the next start reads it and
/// quarantines it.
fn index_queued_rows(txn: &redb::WriteTransaction) -> Result<(), Error> {
    use redb::ReadableTableMetadata;
    let mut keys = txn.open_table(QUEUED_KEYS).map_err(storage)?;
    let mut by_key = txn.open_table(QUEUED_BY_KEY).map_err(storage)?;
    let events = txn.open_table(EVENTS).map_err(storage)?;
    // QUEUED_KEYS may be empty in a built spool: it has rows only for
    // events out of memory.
    let built = !by_key.is_empty().map_err(storage)?;
    if built || events.is_empty().map_err(storage)? {
        return Ok(());
    }
    for row in events.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        match envelope::decode_record(v.value()) {
            Ok(r) => {
                let (digest, id) = queued_key(&r);
                let trigger = r.event_action == EventAction::Trigger;
                keys.insert((digest, id), trigger).map_err(storage)?;
                by_key
                    .insert((r.routing_key.as_str(), id), Some((digest, trigger)))
                    .map_err(storage)?;
            }
            Err(_) => {
                by_key.insert((UNREADABLE, k.value()), None).map_err(storage)?;
            }
        }
    }
    Ok(())
}

/// Gives the queued events after each routing key's window read at start,
/// `limit` of them (`rest`: routing key and first id not read), the row in
/// [`QUEUED_KEYS`] they lack if they were in memory before the stop: a
/// window held at most `limit` of its key's first events, so none further
/// on lacks one.
fn index_by_alert(db: &Database, rest: &[(String, u64)], limit: usize) -> Result<(), Error> {
    let txn = db.begin_write().map_err(storage)?;
    let mut added = 0usize;
    {
        let by_key = txn.open_table(QUEUED_BY_KEY).map_err(storage)?;
        let mut keys = txn.open_table(QUEUED_KEYS).map_err(storage)?;
        for (key, from) in rest {
            for row in by_key
                .range((key.as_str(), *from)..=(key.as_str(), u64::MAX))
                .map_err(storage)?
                .take(limit)
            {
                let (k, alert) = row.map_err(storage)?;
                let id = k.value().1;
                let Some((digest, trigger)) = alert.value() else {
                    continue;
                };
                if keys.get((digest, id)).map_err(storage)?.is_none() {
                    keys.insert((digest, id), trigger).map_err(storage)?;
                    added += 1;
                }
            }
        }
    }
    if added == 0 {
        txn.abort().map_err(storage)?;
    } else {
        txn.commit().map_err(storage)?;
        tracing::debug!(
            added,
            "queued events that were in memory before the stop indexed by alert"
        );
    }
    Ok(())
}

/// A record's row in [`QUEUED_KEYS`].
fn queued_key(r: &Record) -> (u128, u64) {
    (super::alert_digest(&r.routing_key, &r.dedup_key), r.id)
}

fn apply(db: &Database, changes: &[&Change], durable: bool) -> Result<(), Error> {
    // An empty durable change still commits: it makes earlier
    // `Durability::None` commits durable (the flush at shutdown).
    if !durable && changes.iter().all(|c| c.is_empty()) {
        return Ok(());
    }
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    })
    .map_err(storage)?;
    {
        let mut events = txn.open_table(EVENTS).map_err(storage)?;
        let mut dead = txn.open_table(DEAD).map_err(storage)?;
        let mut open = txn.open_table(OPEN).map_err(storage)?;
        let mut keys = txn.open_table(OPEN_KEYS).map_err(storage)?;
        let mut queued = txn.open_table(QUEUED_KEYS).map_err(storage)?;
        let mut by_key = txn.open_table(QUEUED_BY_KEY).map_err(storage)?;
        let mut meta = txn.open_table(META).map_err(storage)?;
        let mut actions = txn.open_table(ACTIONS).map_err(storage)?;
        let mut seen = txn.open_table(SEEN).map_err(storage)?;
        let mut max_id = 0;
        let mut counters = Counters::default();
        for c in changes {
            for r in &c.put {
                let bytes = envelope::encode_record(r);
                events.insert(r.id, bytes.as_slice()).map_err(storage)?;
                let (digest, id) = queued_key(r);
                let trigger = r.event_action == EventAction::Trigger;
                if c.by_alert.contains(&id) {
                    queued.insert((digest, id), trigger).map_err(storage)?;
                }
                by_key
                    .insert((r.routing_key.as_str(), id), Some((digest, trigger)))
                    .map_err(storage)?;
                max_id = max_id.max(r.id);
            }
            // Removing a row that is not there writes nothing.
            for u in &c.delete {
                events.remove(u.id).map_err(storage)?;
                queued.remove((u.alert, u.id)).map_err(storage)?;
                by_key.remove((&*u.routing_key, u.id)).map_err(storage)?;
            }
            for r in &c.dead_put {
                let bytes = envelope::encode_record(r);
                events.remove(r.id).map_err(storage)?;
                queued.remove(queued_key(r)).map_err(storage)?;
                by_key.remove((r.routing_key.as_str(), r.id)).map_err(storage)?;
                dead.insert(r.id, bytes.as_slice()).map_err(storage)?;
                max_id = max_id.max(r.id);
            }
            for id in &c.dead_delete {
                dead.remove(*id).map_err(storage)?;
            }
            for id in &c.open_delete {
                let gone = open.remove(*id).map_err(storage)?;
                if let Some(o) = gone.and_then(|v| envelope::decode_open(v.value()).ok()) {
                    let digest = super::alert_digest(&o.routing_key, &o.dedup_key);
                    if keys.get(digest).map_err(storage)?.map(|v| v.value()) == Some(*id) {
                        keys.remove(digest).map_err(storage)?;
                    }
                }
            }
            for (id, o) in &c.open_put {
                let bytes = envelope::encode_open(o);
                open.insert(*id, bytes.as_slice()).map_err(storage)?;
                let digest = super::alert_digest(&o.routing_key, &o.dedup_key);
                // One row per alert: an older one (a commit that failed
                // half-way, once) would reopen it after a resolve.
                let older = keys.insert(digest, *id).map_err(storage)?.map(|v| v.value());
                if let Some(older) = older.filter(|r| r != id) {
                    open.remove(older).map_err(storage)?;
                }
                max_id = max_id.max(*id);
            }
            for a in &c.action_put {
                let bytes = envelope::encode_action(a);
                actions
                    .insert(a.name.as_str(), bytes.as_slice())
                    .map_err(storage)?;
            }
            for name in &c.action_delete {
                actions.remove(name.as_str()).map_err(storage)?;
            }
            for claim in &c.seen_put {
                seen.insert(*claim, ()).map_err(storage)?;
            }
            if let Some(at) = c.checkpoint {
                meta.insert(CHECKPOINT, u64::try_from(at).unwrap_or(0))
                    .map_err(storage)?;
            }
            if let Some(before) = c.seen_expire_before {
                seen.retain_in(..(before, 0), |_, ()| false).map_err(storage)?;
            }
            counters.delivered += c.counters.delivered;
            counters.superseded += c.counters.superseded;
            counters.dead_lettered += c.counters.dead_lettered;
        }
        let mut bump = |k: &str, by: u64| -> Result<(), Error> {
            if by > 0 {
                let cur = meta.get(k).map_err(storage)?.map(|v| v.value()).unwrap_or(0);
                meta.insert(k, cur + by).map_err(storage)?;
            }
            Ok(())
        };
        bump("delivered", counters.delivered)?;
        bump("superseded", counters.superseded)?;
        bump("dead_lettered", counters.dead_lettered)?;
        if max_id > 0 {
            let cur = meta
                .get("next_id")
                .map_err(storage)?
                .map(|v| v.value())
                .unwrap_or(0);
            if max_id + 1 > cur {
                meta.insert("next_id", max_id + 1).map_err(storage)?;
            }
        }
    }
    txn.commit().map_err(storage)
}
