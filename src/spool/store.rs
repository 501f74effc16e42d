//! The on-disk spool: one redb file, and the one thread that writes it.
//!
//! Tables: `events` (accepted, undelivered), `dead` (dead letters),
//! `open_alerts` (alerts with an open trigger, so resolves survive restarts),
//! `actions` (created over the API) and `meta` (counters). Every change goes through the writer thread, which takes all
//! changes waiting and commits them in one transaction: concurrent webhooks
//! share one fsync (group commit). A change that accepts an event is
//! committed with `Durability::Immediate` (fsync'd before its webhook is
//! answered); acks and retry bookkeeping ride along or use `Durability::None`
//! (a crash then only causes a resend, never a loss).

use std::path::Path;
use std::sync::mpsc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use serde_json::value::RawValue;

use crate::pagerduty::{Event, EventAction};
use crate::secret::Secret;
use crate::translate::AlertClass;

const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");
const DEAD: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("dead");
/// Open alerts, keyed by the spool id of the trigger that opened them: new
/// rows append at the end of the tree instead of landing on random pages.
const OPEN: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("open_alerts");
/// The open-alert table of earlier versions (keyed by a digest); moved into
/// [`OPEN`] when such a spool is opened.
const OPEN_BY_DIGEST: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("open");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const ACTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("actions");

/// Most changes committed in one transaction.
const MAX_BATCH: usize = 4096;
/// redb page cache; the spool is small and hot, and RSS matters more.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// One accepted event, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Spool id; increases in accept order.
    pub id: u64,
    /// The action it came in on.
    pub action: String,
    /// The event exactly as it is sent, encoded once when accepted (it holds
    /// the routing key: the spool file is 0600). Kept raw so that storing and
    /// sending it never decode and re-encode the whole event.
    pub event: Box<RawValue>,
    /// For triggers: what may resolve it.
    #[serde(default)]
    pub class: Option<AlertClass>,
    /// Unix ms when accepted.
    pub accepted_ms: i64,
    /// Sends tried so far.
    #[serde(default)]
    pub attempts: u32,
    /// Unix ms of the next attempt.
    #[serde(default)]
    pub next_attempt_ms: i64,
    /// Status of the last attempt (0: no answer).
    #[serde(default)]
    pub last_status: Option<u16>,
    /// What PagerDuty (or the network) said last.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Unix ms when it became a dead letter.
    #[serde(default)]
    pub dead_ms: Option<i64>,
}

/// The fields of a stored event the spool itself needs; the rest of the
/// event is skipped when reading it.
#[derive(Debug, Clone, Deserialize)]
pub struct Head {
    /// Routing key.
    #[serde(deserialize_with = "crate::pagerduty::secret_from_str")]
    pub routing_key: Secret,
    /// trigger / acknowledge / resolve.
    pub event_action: EventAction,
    /// Dedup key (the bridge always sets one).
    #[serde(default)]
    pub dedup_key: Option<String>,
    /// The summary, for triggers.
    #[serde(default)]
    pub payload: Option<HeadPayload>,
}

/// The part of a trigger's payload the spool shows.
#[derive(Debug, Clone, Deserialize)]
pub struct HeadPayload {
    /// The alert summary.
    pub summary: String,
}

impl Record {
    /// Encodes `event` for storing and sending.
    ///
    /// # Errors
    /// When the event does not encode (it always does: plain data).
    pub fn encode_event(event: &Event) -> Result<Box<RawValue>, Error> {
        serde_json::value::to_raw_value(event).map_err(storage)
    }

    /// The fields the spool needs from the stored event.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the stored event lacks them.
    pub fn head(&self) -> Result<Head, Error> {
        self.event_as()
    }

    /// The whole stored event.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it does not decode.
    pub fn decode_event(&self) -> Result<Event, Error> {
        self.event_as()
    }

    fn event_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(self.event.get()).map_err(|e| Error::Corrupt(self.id, e.to_string()))
    }

    /// Makes a dead letter a new queued event with id `id`, due now.
    pub fn requeue(&mut self, id: u64) {
        self.id = id;
        self.attempts = 0;
        self.accepted_ms = super::now_ms();
        self.next_attempt_ms = self.accepted_ms;
        self.dead_ms = None;
    }

    /// The request body to send.
    pub fn wire(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(self.event.get().as_bytes())
    }
}

/// A row of the open-alert table. One row per (routing key, dedup key); a
/// row is rewritten only when its class changes or its trigger dies, so a
/// repeated trigger of an open alert writes nothing here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRow {
    /// The routing key.
    pub routing_key: String,
    /// The dedup key.
    pub dedup_key: String,
    /// What kind of alert is open.
    pub class: AlertClass,
    /// Whether its trigger became a dead letter: PagerDuty never had it.
    /// Written durably, so it is trusted after a crash. Otherwise the alert
    /// counts as delivered after a restart (an extra resolve is harmless).
    #[serde(default)]
    pub dead: bool,
}

/// Spool counters.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// Events PagerDuty took.
    pub delivered: u64,
    /// Events never sent because a newer one made them moot.
    pub superseded: u64,
    /// Events that became dead letters.
    pub dead_lettered: u64,
}

/// One transaction's worth of changes.
#[derive(Debug, Default)]
pub struct Change {
    /// Records to write to `events`.
    pub put: Vec<Record>,
    /// Ids to drop from `events`.
    pub delete: Vec<u64>,
    /// Dead letters to write (and drop from `events`).
    pub dead_put: Vec<Record>,
    /// Dead letters to drop.
    pub dead_delete: Vec<u64>,
    /// Open alerts to write, by row id.
    pub open_put: Vec<(u64, OpenRow)>,
    /// Open-alert rows to drop.
    pub open_delete: Vec<u64>,
    /// Counter increments.
    pub counters: Counters,
    /// Actions to store.
    pub action_put: Vec<StoredAction>,
    /// Actions to drop, by name.
    pub action_delete: Vec<String>,
    /// Whether this change must be on disk before it is acknowledged.
    pub durable: bool,
}

impl Change {
    fn is_empty(&self) -> bool {
        self.put.is_empty()
            && self.delete.is_empty()
            && self.dead_put.is_empty()
            && self.dead_delete.is_empty()
            && self.open_put.is_empty()
            && self.open_delete.is_empty()
            && self.counters == Counters::default()
            && self.action_put.is_empty()
            && self.action_delete.is_empty()
    }
}

/// An action created over the API, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredAction {
    /// Name.
    pub name: String,
    /// Routing key (the spool file is 0600).
    pub routing_key: String,
    /// Fixed severity, or `None` for auto.
    pub severity: Option<crate::pagerduty::Severity>,
}

/// A spool failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another process has the file open.
    #[error(
        "the spool {0} is in use by another running bridge; stop it first, or give this one its own --spool"
    )]
    InUse(String),
    /// redb failed.
    #[error("spool storage error: {0}")]
    Storage(String),
    /// A stored record does not decode.
    #[error("spool record {0} is corrupt: {1}")]
    Corrupt(u64, String),
    /// The writer thread is gone (shutdown).
    #[error("the spool is closed")]
    Closed,
}

fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

struct Job {
    change: Change,
    reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// The spool file, with its writer thread.
#[derive(Debug)]
pub struct Store {
    db: std::sync::Arc<Database>,
    writer: mpsc::Sender<Job>,
}

/// Everything in the spool, read at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Undelivered events, in id order.
    pub events: Vec<Record>,
    /// Open-alert rows by id, in id order.
    pub open: Vec<(u64, OpenRow)>,
    /// The next id to use.
    pub next_id: u64,
    /// Counters.
    pub counters: Counters,
}

impl Store {
    /// Opens (or creates, mode 0600) the spool file and starts its writer.
    ///
    /// # Errors
    /// [`Error::InUse`] when another process holds it; storage errors.
    pub fn open(path: &Path) -> Result<Self, Error> {
        create_private(path)?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::InUse(path.display().to_string()),
                other => storage(other),
            })?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(DEAD).map_err(storage)?;
            txn.open_table(OPEN).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            txn.open_table(ACTIONS).map_err(storage)?;
        }
        migrate_open_by_digest(&txn)?;
        txn.commit().map_err(storage)?;
        let db = std::sync::Arc::new(db);
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("spool-writer".to_owned())
            .spawn(move || write_loop(&writer_db, &rx))
            .map_err(storage)?;
        Ok(Self { db, writer: tx })
    }

    /// Reads everything needed to resume.
    ///
    /// # Errors
    /// Storage errors, or a record that does not decode.
    pub fn snapshot(&self) -> Result<Snapshot, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let mut snap = Snapshot {
            events: all_records(&txn, EVENTS)?,
            ..Snapshot::default()
        };
        let open = txn.open_table(OPEN).map_err(storage)?;
        for row in open.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if let Ok(o) = serde_json::from_slice::<OpenRow>(v.value()) {
                snap.open.push((k.value(), o));
            }
        }
        let meta = txn.open_table(META).map_err(storage)?;
        let get = |k: &str| meta.get(k).ok().flatten().map(|v| v.value()).unwrap_or(0);
        snap.counters = Counters {
            delivered: get("delivered"),
            superseded: get("superseded"),
            dead_lettered: get("dead_lettered"),
        };
        let dead = txn.open_table(DEAD).map_err(storage)?;
        let last_dead = dead.last().map_err(storage)?.map(|(k, _)| k.value()).unwrap_or(0);
        let last_event = snap.events.last().map(|r| r.id).unwrap_or(0);
        let last_open = snap.open.last().map(|(id, _)| *id).unwrap_or(0);
        snap.next_id = get("next_id")
            .max(last_event + 1)
            .max(last_dead + 1)
            .max(last_open + 1)
            .max(1);
        Ok(snap)
    }

    /// Every dead letter, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_letters(&self) -> Result<Vec<Record>, Error> {
        all_records(&self.db.begin_read().map_err(storage)?, DEAD)
    }

    /// How many dead letters there are, without reading them.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_count(&self) -> Result<usize, Error> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read().map_err(storage)?;
        let dead = txn.open_table(DEAD).map_err(storage)?;
        Ok(usize::try_from(dead.len().map_err(storage)?).unwrap_or(usize::MAX))
    }

    /// Actions created over the API.
    ///
    /// # Errors
    /// Storage errors.
    pub fn actions(&self) -> Result<Vec<StoredAction>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(ACTIONS).map_err(storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(storage)? {
            let (_, v) = row.map_err(storage)?;
            if let Ok(a) = serde_json::from_slice(v.value()) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// One undelivered event.
    ///
    /// # Errors
    /// Storage errors.
    pub fn get(&self, id: u64) -> Result<Option<Record>, Error> {
        self.record(EVENTS, id)
    }

    /// One dead letter.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dead_letter(&self, id: u64) -> Result<Option<Record>, Error> {
        self.record(DEAD, id)
    }

    fn record(&self, table: TableDefinition<'_, u64, &[u8]>, id: u64) -> Result<Option<Record>, Error> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(table).map_err(storage)?;
        let Some(v) = table.get(id).map_err(storage)? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| Error::Corrupt(id, e.to_string()))
    }

    /// Commits `change`; returns once it is on disk (when `durable`).
    ///
    /// # Errors
    /// When the commit fails or the writer is gone.
    pub async fn commit(&self, change: Change) -> Result<(), Error> {
        let reply = self.send(change)?;
        reply.await.map_err(|_| Error::Closed)?.map_err(Error::Storage)
    }

    /// Commits `change` from synchronous code (the offline CLI).
    ///
    /// # Errors
    /// When the commit fails or the writer is gone.
    pub fn commit_blocking(&self, change: Change) -> Result<(), Error> {
        let reply = self.send(change)?;
        reply
            .blocking_recv()
            .map_err(|_| Error::Closed)?
            .map_err(Error::Storage)
    }

    /// Hands `change` to the writer; the receiver gets its commit's result.
    fn send(&self, change: Change) -> Result<oneshot::Receiver<Result<(), String>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Job {
                change,
                reply: Some(tx),
            })
            .map_err(|_| Error::Closed)?;
        Ok(rx)
    }

    /// Commits `change` on the calling thread, durably, without the writer
    /// thread: for start-up, which runs inside the async runtime but before
    /// anything else writes (redb would make it wait for a writer anyway).
    ///
    /// # Errors
    /// When the commit fails.
    pub fn commit_here(&self, change: Change) -> Result<(), Error> {
        apply(&self.db, &[Job { change, reply: None }], true)
    }

    /// Queues `change` without waiting for it.
    pub fn submit(&self, change: Change) {
        let _ = self.writer.send(Job { change, reply: None });
    }
}

/// Every record of an id-keyed table, in id order.
fn all_records(
    txn: &redb::ReadTransaction,
    table: TableDefinition<'_, u64, &[u8]>,
) -> Result<Vec<Record>, Error> {
    let table = txn.open_table(table).map_err(storage)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(storage)? {
        let (k, v) = row.map_err(storage)?;
        out.push(serde_json::from_slice(v.value()).map_err(|e| Error::Corrupt(k.value(), e.to_string()))?);
    }
    Ok(out)
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
            if let Ok(o) = serde_json::from_slice::<OpenRow>(v.value()) {
                let bytes = serde_json::to_vec(&o).map_err(storage)?;
                open.insert(next, bytes.as_slice()).map_err(storage)?;
                next += 1;
            }
        }
        meta.insert("next_id", next).map_err(storage)?;
    }
    txn.delete_table(OPEN_BY_DIGEST).map_err(storage)?;
    Ok(())
}

fn write_loop(db: &Database, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|j| j.change.durable);
        let result = apply(db, &batch, durable).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, changes = batch.len(), "spool commit failed");
        }
        for job in batch {
            if let Some(reply) = job.reply {
                let _ = reply.send(result.clone());
            }
        }
    }
}

fn apply(db: &Database, batch: &[Job], durable: bool) -> Result<(), Error> {
    // An empty durable change still commits: it makes earlier
    // `Durability::None` commits durable (the flush at shutdown).
    if !durable && batch.iter().all(|j| j.change.is_empty()) {
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
        let mut meta = txn.open_table(META).map_err(storage)?;
        let mut actions = txn.open_table(ACTIONS).map_err(storage)?;
        let mut max_id = 0;
        let mut counters = Counters::default();
        for c in batch.iter().map(|j| &j.change) {
            for r in &c.put {
                let bytes = serde_json::to_vec(r).map_err(storage)?;
                events.insert(r.id, bytes.as_slice()).map_err(storage)?;
                max_id = max_id.max(r.id);
            }
            for id in &c.delete {
                events.remove(*id).map_err(storage)?;
            }
            for r in &c.dead_put {
                let bytes = serde_json::to_vec(r).map_err(storage)?;
                events.remove(r.id).map_err(storage)?;
                dead.insert(r.id, bytes.as_slice()).map_err(storage)?;
                max_id = max_id.max(r.id);
            }
            for id in &c.dead_delete {
                dead.remove(*id).map_err(storage)?;
            }
            for id in &c.open_delete {
                open.remove(*id).map_err(storage)?;
            }
            for (id, o) in &c.open_put {
                let bytes = serde_json::to_vec(o).map_err(storage)?;
                open.insert(*id, bytes.as_slice()).map_err(storage)?;
                max_id = max_id.max(*id);
            }
            for a in &c.action_put {
                let bytes = serde_json::to_vec(a).map_err(storage)?;
                actions
                    .insert(a.name.as_str(), bytes.as_slice())
                    .map_err(storage)?;
            }
            for name in &c.action_delete {
                actions.remove(name.as_str()).map_err(storage)?;
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
