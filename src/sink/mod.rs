//! Where delivered events go, behind [`Sink`]: a sink sends one stored body
//! and classifies the answer as a [`Delivery`]; what to do about it (retry,
//! pause, give up) is decided once, in [`crate::deliver`], for every sink.
//!
//! Sinks today: PagerDuty's Events API v2 and its dry run, which logs
//! instead of sending ([`pagerduty`]).

pub(crate) mod pagerduty;

use std::future::Future;
use std::time::Duration;

use crate::store::BodyKind;

/// What became of one send, in terms every sink can answer in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Taken.
    Delivered {
        /// The status the sink answered (0 when there is none, as in a dry run).
        status: u16,
    },
    /// Not taken now because of a rate limit: send again later.
    Throttled {
        /// The status.
        status: u16,
        /// When the sink said to come back, if it did.
        retry_after: Option<Duration>,
    },
    /// Not taken, for a reason that may pass (a 5xx, no answer): send again later.
    Failed {
        /// The status (0: no answer).
        status: u16,
        /// What went wrong, for the log and the dead letter.
        detail: String,
    },
    /// Refused for what the event is: sending it again cannot succeed.
    Rejected {
        /// The status.
        status: u16,
        /// What the sink said is wrong.
        errors: Vec<String>,
    },
}

impl Delivery {
    /// The status code, or 0 when there was no answer; for logs.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::Delivered { status }
            | Self::Throttled { status, .. }
            | Self::Failed { status, .. }
            | Self::Rejected { status, .. } => *status,
        }
    }
}

/// One event to send.
#[derive(Debug, Clone)]
pub(crate) struct Outbound<'a> {
    /// The stored body, as encoded when it was accepted.
    pub(crate) body: bytes::Bytes,
    /// What the body is.
    pub(crate) kind: BodyKind,
    /// The action it came in on (for logs).
    pub(crate) action: &'a str,
    /// Its dedup key (for logs).
    pub(crate) dedup_key: &'a str,
    /// trigger / acknowledge / resolve (for logs).
    pub(crate) event_action: &'static str,
}

/// Something events are delivered to. Chosen once at start.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Its name in log lines ("PagerDuty").
    fn name(&self) -> &'static str;

    /// Sends one event and classifies the answer.
    ///
    /// # Cancel safety
    /// Cancelling may leave the sink with or without the event; events
    /// carry dedup keys, so sending one again is safe.
    fn send(&self, out: Outbound<'_>) -> impl Future<Output = Delivery> + Send;
}
