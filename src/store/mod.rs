//! Where the spool keeps what must survive a restart, behind [`Store`]: the
//! spool decides, a store only reads and writes. One implementation today,
//! [`redb::RedbStore`] (one file beside the bridge); the trait is shaped so
//! that a shared one (PostgreSQL, for replicas: see `docs/design/replicas.md`)
//! is a new file plus wiring.
//!
//! What is stored: undelivered events and dead letters ([`Record`]), open
//! alerts ([`OpenRow`]), actions created over the API ([`StoredAction`]),
//! idempotency claims, lifetime [`Counters`], and rows that no longer decode
//! (the quarantine). Rows are written as a versioned [`envelope`].

pub(crate) mod envelope;
pub(crate) mod redb;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::pagerduty::EventAction;
use crate::translate::AlertClass;
pub(crate) use envelope::BodyKind;

/// One accepted event: what the spool needs to order, pace and show it,
/// and the body a sink sends, kept as it was encoded at accept time.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// Spool id; increases in accept order.
    pub(crate) id: u64,
    /// The action it came in on.
    pub(crate) action: String,
    /// Where it goes (the store is private to the bridge: mode 0600).
    pub(crate) routing_key: String,
    /// The alert it belongs to, within the routing key.
    pub(crate) dedup_key: String,
    /// trigger / acknowledge / resolve.
    pub(crate) event_action: EventAction,
    /// For triggers: what may resolve it.
    pub(crate) class: Option<AlertClass>,
    /// Unix ms when accepted.
    pub(crate) accepted_ms: i64,
    /// Sends tried so far.
    pub(crate) attempts: u32,
    /// Unix ms of the next attempt.
    pub(crate) next_attempt_ms: i64,
    /// Status of the last attempt (0: no answer).
    pub(crate) last_status: Option<u16>,
    /// What the sink (or the network) said last.
    pub(crate) last_error: Option<String>,
    /// Unix ms when it became a dead letter.
    pub(crate) dead_ms: Option<i64>,
    /// What `body` is.
    pub(crate) body_kind: BodyKind,
    /// The request body, exactly as sent.
    pub(crate) body: Box<RawValue>,
}

/// What resuming needs of an undelivered event: everything but its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    /// Spool id.
    pub(crate) id: u64,
    /// The action it came in on.
    pub(crate) action: String,
    /// Where it goes.
    pub(crate) routing_key: String,
    /// The alert it belongs to.
    pub(crate) dedup_key: String,
    /// trigger / acknowledge / resolve.
    pub(crate) event_action: EventAction,
    /// What its body is.
    pub(crate) body_kind: BodyKind,
    /// Unix ms when accepted.
    pub(crate) accepted_ms: i64,
    /// Unix ms of the next attempt.
    pub(crate) next_attempt_ms: i64,
}

impl From<Record> for Queued {
    fn from(r: Record) -> Self {
        Self {
            id: r.id,
            action: r.action,
            routing_key: r.routing_key,
            dedup_key: r.dedup_key,
            event_action: r.event_action,
            body_kind: r.body_kind,
            accepted_ms: r.accepted_ms,
            next_attempt_ms: r.next_attempt_ms,
        }
    }
}

impl Record {
    /// The alert summary the body carries, for showing (triggers).
    pub(crate) fn summary(&self) -> Option<String> {
        match self.body_kind {
            BodyKind::PagerDutyEventsV2 => crate::pagerduty::summary_of(self.body.get()),
        }
    }

    /// The request body to send.
    pub(crate) fn wire(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(self.body.get().as_bytes())
    }

    /// Makes a dead letter a new queued event with id `id`, due at `now_ms`.
    pub(crate) fn requeue(&mut self, id: u64, now_ms: i64) {
        self.id = id;
        self.attempts = 0;
        self.accepted_ms = now_ms;
        self.next_attempt_ms = now_ms;
        self.dead_ms = None;
    }
}

/// A row of the open-alert table. One row per (routing key, dedup key); a
/// row is rewritten only when its class changes or its trigger dies, so a
/// repeated trigger of an open alert writes nothing here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenRow {
    /// The routing key.
    pub(crate) routing_key: String,
    /// The dedup key.
    pub(crate) dedup_key: String,
    /// What kind of alert is open.
    pub(crate) class: AlertClass,
    /// Whether its trigger became a dead letter: PagerDuty never had it.
    pub(crate) dead: bool,
    /// When its last trigger was accepted (unix ms); rows written before
    /// this was stored have none.
    pub(crate) opened_ms: Option<i64>,
}

/// Lifetime counters.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// Events PagerDuty took.
    pub delivered: u64,
    /// Events never sent because a newer one made them moot.
    pub superseded: u64,
    /// Events that became dead letters.
    pub dead_lettered: u64,
}

/// An action created over the API, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredAction {
    /// Name.
    pub(crate) name: String,
    /// Routing key.
    pub(crate) routing_key: String,
    /// Fixed severity, or `None` for auto.
    pub(crate) severity: Option<crate::pagerduty::Severity>,
}

/// A queued event to drop, with what the store files it under besides its id.
#[derive(Debug, Clone)]
pub(crate) struct Unqueue {
    /// Spool id.
    pub(crate) id: u64,
    /// [`alert_digest`] of its alert.
    pub(crate) alert: u128,
    /// Its routing key.
    pub(crate) routing_key: std::sync::Arc<str>,
}

/// One unit of work: everything in it is written in one transaction.
#[derive(Debug, Default, Clone)]
pub(crate) struct Change {
    /// Records to write to the queue.
    pub(crate) put: Vec<Record>,
    /// Ids among `put` the spool keeps out of memory: only those are ever
    /// looked up by their alert ([`Store::queued_of`]), so only those get a
    /// row by alert. A retry's put of an event names none (its row, if it
    /// has one, stays).
    pub(crate) by_alert: Vec<u64>,
    /// Events to drop from the queue.
    pub(crate) delete: Vec<Unqueue>,
    /// Dead letters to write (and drop from the queue).
    pub(crate) dead_put: Vec<Record>,
    /// Dead letters to drop.
    pub(crate) dead_delete: Vec<u64>,
    /// Open alerts to write, by row id.
    pub(crate) open_put: Vec<(u64, OpenRow)>,
    /// Open-alert rows to drop.
    pub(crate) open_delete: Vec<u64>,
    /// Counter increments.
    pub(crate) counters: Counters,
    /// Actions to store.
    pub(crate) action_put: Vec<StoredAction>,
    /// Actions to drop, by name.
    pub(crate) action_delete: Vec<String>,
    /// Idempotency claims to store: (unix ms, digest).
    pub(crate) seen_put: Vec<(u64, u128)>,
    /// Drop every claim made before this unix ms.
    pub(crate) seen_expire_before: Option<u64>,
    /// Reconciliation with Prefect has read everything before this unix ms.
    pub(crate) checkpoint: Option<i64>,
    /// Whether this change must be durable before it is acknowledged.
    pub(crate) durable: bool,
}

impl Change {
    /// A change that must be durable before it is acknowledged.
    pub(crate) fn durable() -> Self {
        Self {
            durable: true,
            ..Self::default()
        }
    }

    /// Whether it writes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.put.is_empty()
            && self.delete.is_empty()
            && self.dead_put.is_empty()
            && self.dead_delete.is_empty()
            && self.open_put.is_empty()
            && self.open_delete.is_empty()
            && self.counters == Counters::default()
            && self.action_put.is_empty()
            && self.action_delete.is_empty()
            && self.seen_put.is_empty()
            && self.seen_expire_before.is_none()
            && self.checkpoint.is_none()
    }
}

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Another process has the store open.
    #[error(
        "the spool {0} is in use by another running bridge; stop it first, or give this one its own --spool"
    )]
    InUse(String),
    /// The storage engine failed.
    #[error("spool storage error: {0}")]
    Storage(String),
    /// The store cannot be opened at all: its structure is damaged.
    #[error(
        "the spool file {path} is damaged and cannot be opened ({detail}). Stop the bridge, move the file \
         aside (mv {path} {path}.damaged) and start again: a new, empty spool is created. Events and open \
         alerts in the damaged file are not carried over; keep it for inspection or restore a backup"
    )]
    Damaged {
        /// The file.
        path: String,
        /// What the engine said.
        detail: String,
    },
    /// A stored record does not decode.
    #[error("spool record {0} is corrupt: {1}")]
    Corrupt(u64, String),
    /// The store is not open (a write failed and it could not be opened again yet).
    #[error("the spool cannot be written: {0}")]
    Unavailable(String),
    /// The writer is gone (shutdown).
    #[error("the spool is closed")]
    Closed,
}

pub(crate) fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// A row that did not decode, with where it came from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Damaged {
    /// Its table.
    pub(crate) table: String,
    /// Its key in that table.
    pub(crate) key: String,
    /// Why it did not decode.
    pub(crate) error: String,
    /// The bytes as stored.
    #[serde(default)]
    pub(crate) raw: Vec<u8>,
}

/// A quarantined row as shown outside (without its bytes).
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    /// Its id in the quarantine (for `spool drop`).
    pub id: u64,
    /// The table it was in.
    pub table: String,
    /// Its key there.
    pub key: String,
    /// Why it did not decode.
    pub error: String,
    /// How many bytes it holds.
    pub bytes: usize,
}

/// Everything needed to resume, read at start.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Undelivered events, in id order, without their bodies: those stay on
    /// disk until sent, so a restart after a long outage does not hold every
    /// queued body in memory at once. [`Store::resume`] reads only the
    /// first of each routing key (see [`Snapshot::queued_count`],
    /// [`Snapshot::rest`]).
    pub(crate) events: Vec<Queued>,
    /// How many rows the queue holds, read or not (undecodable ones too).
    pub(crate) queued_count: usize,
    /// Routing keys with queued events not read, and the id those start at.
    pub(crate) rest: Vec<(String, u64)>,
    /// Open-alert rows by id, in id order ([`Store::snapshot`] only: a
    /// resuming spool reads them when it needs them).
    pub(crate) open: Vec<(u64, OpenRow)>,
    /// How many alerts are open.
    pub(crate) open_count: usize,
    /// The next id to use.
    pub(crate) next_id: u64,
    /// Counters.
    pub(crate) counters: Counters,
    /// Reconciliation's checkpoint, unix ms.
    pub(crate) checkpoint: Option<i64>,
    /// Rows of events, open alerts, dead letters and actions that do not decode.
    pub(crate) damaged: Vec<Damaged>,
}

/// The stable name of an alert, (routing key, dedup key), by which its
/// open row is found: 128 bits of SHA-256, out of reach of anyone choosing
/// keys to collide.
pub(crate) fn alert_digest(routing_key: &str, dedup_key: &str) -> u128 {
    crate::digest::sha256_128(&[routing_key.as_bytes(), dedup_key.as_bytes()])
}

/// A slice of the queue in id order, read by [`Store::queued_from`].
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// The events that decode, without their bodies.
    pub(crate) events: Vec<Queued>,
    /// Rows read that no longer decode (for the quarantine).
    pub(crate) damaged: Vec<Damaged>,
    /// The id the next slice starts at; `None` when this one reached the end.
    pub(crate) next: Option<u64>,
    /// Bytes of rows read.
    pub(crate) bytes: usize,
}

/// Open rows past their time, found by [`Store::expired_open`].
#[derive(Debug, Default)]
pub(crate) struct Expired {
    /// (row id, alert digest) of each.
    pub(crate) rows: Vec<(u64, u128)>,
    /// Where the next look starts; `None` when this one reached the end.
    pub(crate) next: Option<u64>,
    /// Rows looked at that no longer decode (for the quarantine).
    pub(crate) damaged: Vec<Damaged>,
}

/// A store of the spool's state. Every call is synchronous (the spool's
/// writer thread and offline tools call it); implementations are shared
/// across threads.
pub(crate) trait Store: Send + Sync + std::fmt::Debug {
    /// Where it is, for logs (a path, a database name).
    fn location(&self) -> String;

    /// Reads everything needed to resume; rows that do not decode are in
    /// [`Snapshot::damaged`], not returned.
    ///
    /// # Errors
    /// Storage errors.
    fn snapshot(&self) -> Result<Snapshot, Error>;

    /// Commits `changes` as one transaction, durably when `durable`.
    /// Non-durable commits become durable with the next durable one.
    ///
    /// # Errors
    /// When the commit fails; nothing of it is applied.
    fn apply(&self, changes: &[&Change], durable: bool) -> Result<(), Error>;

    /// Whether it can take commits now.
    fn is_open(&self) -> bool;

    /// Gives up the connection after a failed commit.
    fn close(&self);

    /// Connects again after [`Store::close`].
    ///
    /// # Errors
    /// When it still cannot (a full disk, a database down).
    fn reopen(&self) -> Result<(), Error>;

    /// One undelivered event.
    ///
    /// # Errors
    /// Storage errors; [`Error::Corrupt`] when it does not decode.
    fn event(&self, id: u64) -> Result<Option<Record>, Error>;

    /// One dead letter.
    ///
    /// # Errors
    /// As [`Store::event`].
    fn dead_letter(&self, id: u64) -> Result<Option<Record>, Error>;

    /// Every dead letter that decodes, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    fn dead_letters(&self) -> Result<Vec<Record>, Error>;

    /// How many dead letters there are.
    ///
    /// # Errors
    /// Storage errors.
    fn dead_count(&self) -> Result<usize, Error>;

    /// Actions created over the API.
    ///
    /// # Errors
    /// Storage errors.
    fn actions(&self) -> Result<Vec<StoredAction>, Error>;

    /// Idempotency claims made at or after `since_ms`, newest first, at most `limit`.
    ///
    /// # Errors
    /// Storage errors.
    fn claims(&self, since_ms: u64, limit: usize) -> Result<Vec<(u64, u128)>, Error>;

    /// Moves rows that do not decode out of their tables, durably.
    ///
    /// # Errors
    /// Storage errors.
    fn quarantine(&self, rows: &[Damaged]) -> Result<(), Error>;

    /// Quarantined rows, oldest first.
    ///
    /// # Errors
    /// Storage errors.
    fn quarantined(&self) -> Result<Vec<Quarantined>, Error>;

    /// How many rows are quarantined.
    ///
    /// # Errors
    /// Storage errors.
    fn quarantined_count(&self) -> Result<usize, Error>;

    /// Deletes one record: an undelivered event or dead letter by id, or a
    /// quarantined row (`quarantine:ID`). Returns the table it was in.
    ///
    /// # Errors
    /// Storage errors, or an id of neither form.
    fn drop_record(&self, id: &str) -> Result<Option<&'static str>, Error>;

    /// How many bytes it takes up (for `/metrics`; 0 when unknown).
    fn size_bytes(&self) -> u64;

    /// What resuming needs: [`Store::snapshot`] without the open-alert
    /// rows, only their count (there may be millions; the spool reads one
    /// when an event needs it), and only the first queued events of each
    /// routing key, as [`Store::queued_from`] reads them (there may be
    /// millions of those too; the spool reads the rest as it sends).
    ///
    /// Events put without a row by alert were in memory when they were
    /// put; memory held at most `limit` of a routing key's first events, so
    /// the `limit` events after those read here get their rows now, should
    /// they lack one, and [`Store::queued_of`] finds every event it is
    /// asked for after the stop too.
    ///
    /// # Errors
    /// Storage errors.
    fn resume(&self, limit: usize, max_bytes: usize) -> Result<Snapshot, Error>;

    /// Queued events of a routing key from id `from` on, in id order: at
    /// most `limit` rows, and no more once `max_bytes` of rows were read
    /// (always one at least).
    ///
    /// # Errors
    /// Storage errors.
    fn queued_from(
        &self,
        routing_key: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page, Error>;

    /// The queued events of an alert (by [`alert_digest`]) from id `from`
    /// on, in id order, each with whether it is a trigger. Only events put
    /// with a row by alert ([`Change::by_alert`]) are found: `from` must be
    /// where its routing key's events out of memory start, and nothing at
    /// or after it in memory.
    ///
    /// # Errors
    /// Storage errors.
    fn queued_of(&self, digest: u128, from: u64) -> Result<Vec<(u64, bool)>, Error>;

    /// The open row of an alert (by [`alert_digest`]) and its row id; a row
    /// that no longer decodes counts as none.
    ///
    /// # Errors
    /// Storage errors.
    fn open_alert(&self, digest: u128) -> Result<Option<(u64, OpenRow)>, Error>;

    /// Up to `limit` open rows from row id `from` on, and those among them
    /// whose alert opened before `before_ms` (rows with no time count as
    /// opened at `untimed_ms`).
    ///
    /// # Errors
    /// Storage errors.
    fn expired_open(
        &self,
        from: u64,
        limit: usize,
        before_ms: i64,
        untimed_ms: i64,
    ) -> Result<Expired, Error>;

    /// Gives space it no longer uses back to the file system, when most of
    /// it is free (after a backlog drained). Only the writer calls it, and
    /// no write runs meanwhile. Returns the size before and after when it
    /// did; `None` when there was little to gain, or it could not now.
    ///
    /// # Errors
    /// Storage errors.
    fn compact(&self) -> Result<Option<(u64, u64)>, Error> {
        Ok(None)
    }

    /// Commits one change durably (tests).
    ///
    /// # Errors
    /// When the commit fails.
    #[cfg(test)]
    fn commit_one(&self, change: Change) -> Result<(), Error> {
        self.apply(&[&change], true)
    }
}
