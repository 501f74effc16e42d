//! The open-alert state machine: what a trigger, resolve or acknowledge
//! means for one alert (a routing key and dedup key), given what is open and
//! what is still queued for it. Pure: no storage, no clock, no I/O; the
//! spool applies the [`Plan`] and commits it.
//!
//! The rules:
//! - a trigger opens the alert (or updates its class) and is sent; triggers
//!   of it still queued are superseded by it (consecutive triggers collapse
//!   into the newest);
//! - a failure outranks lateness: a run that fails while late stays a
//!   failure, so its start (which resolves lateness) does not close it;
//! - a resolve closes an open alert within its scope and is sent only when
//!   PagerDuty may have seen a trigger (delivered, or in flight); its queued
//!   triggers are superseded, and a resolve of an alert PagerDuty never saw
//!   is itself moot;
//! - a resolve or acknowledge with nothing open is ignored;
//! - when the queue is full, only what needs no queue slot is decided.

use crate::translate::{AlertClass, Disposition};

/// An open alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Open {
    /// What kind of trouble it is; decides what may resolve it.
    pub(crate) class: AlertClass,
    /// Whether PagerDuty has taken a trigger for it.
    pub(crate) delivered: bool,
    /// Whether its trigger became a dead letter: PagerDuty never had it.
    pub(crate) dead: bool,
}

impl Open {
    /// An alert opened by a trigger not yet sent.
    pub(crate) fn new(class: AlertClass) -> Self {
        Self {
            class,
            delivered: false,
            dead: false,
        }
    }

    /// An alert read back from storage at start. Deliveries are not stored,
    /// so it counts as delivered unless its trigger died: an extra resolve
    /// is dropped harmlessly by PagerDuty, a missing one strands an incident.
    pub(crate) fn restored(class: AlertClass, dead: bool) -> Self {
        Self {
            class,
            delivered: !dead,
            dead,
        }
    }

    /// PagerDuty took its trigger.
    pub(crate) fn delivered(self) -> Self {
        Self {
            delivered: true,
            ..self
        }
    }

    /// Its trigger became a dead letter; `None` when PagerDuty already has
    /// an earlier trigger of it (the alert is open there regardless).
    pub(crate) fn trigger_died(self) -> Option<Self> {
        (!self.delivered).then_some(Self { dead: true, ..self })
    }
}

/// What is known about one alert when an event for it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Situation {
    /// The alert, if open.
    pub(crate) open: Option<Open>,
    /// Its triggers queued and not yet in flight.
    pub(crate) queued_triggers: u64,
    /// Whether one of its triggers is being sent now (PagerDuty may have it).
    pub(crate) trigger_in_flight: bool,
    /// Whether the queue is at capacity.
    pub(crate) full: bool,
}

/// What to do with the alert's open state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenChange {
    /// Leave it as it is (and its stored row).
    Keep,
    /// Store this as the alert's state (a new row).
    Set(Open),
    /// The alert is closed.
    Close,
}

/// What an event means, when it is not ignored or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The alert's open state afterwards.
    pub(crate) open: OpenChange,
    /// Whether its queued triggers are superseded (never sent).
    pub(crate) supersede_queued: bool,
    /// Whether the event itself is queued to be sent.
    pub(crate) send: bool,
    /// Events made moot, counted as superseded: the queued triggers (when
    /// superseded) plus the event itself when it is not sent.
    pub(crate) superseded: u64,
}

/// The decision for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Apply this plan.
    Apply(Plan),
    /// Nothing to do; the reason is shown to the caller.
    Ignore(&'static str),
    /// The queue is full and this event needs a slot.
    Full,
}

/// The class an alert has after a trigger of `incoming` class: a failure
/// (or anything else) replaces lateness, but lateness never replaces a
/// failure, so a late run that failed is not resolved by starting.
pub(crate) fn merged_class(open: AlertClass, incoming: AlertClass) -> AlertClass {
    if open == AlertClass::Lateness || incoming != AlertClass::Lateness {
        incoming
    } else {
        open
    }
}

/// Decides what `disposition` means for an alert in `now`.
pub(crate) fn decide(disposition: Disposition, now: &Situation) -> Decision {
    match disposition {
        Disposition::Trigger(class) => {
            if now.full {
                return Decision::Full;
            }
            let open = match now.open {
                Some(open) => {
                    let class = merged_class(open.class, class);
                    // A repeated trigger of an open alert leaves its row
                    // alone; a new class, or one whose trigger died, is
                    // written again.
                    if class != open.class || open.dead {
                        OpenChange::Set(Open {
                            class,
                            dead: false,
                            ..open
                        })
                    } else {
                        OpenChange::Keep
                    }
                }
                None => OpenChange::Set(Open::new(class)),
            };
            Decision::Apply(Plan {
                open,
                supersede_queued: true,
                send: true,
                superseded: now.queued_triggers,
            })
        }
        Disposition::Resolve(scope) => match now.open {
            Some(open) if scope.closes(open.class) => {
                let seen = open.delivered || now.trigger_in_flight;
                if now.full && seen {
                    return Decision::Full;
                }
                Decision::Apply(Plan {
                    open: OpenChange::Close,
                    supersede_queued: true,
                    send: seen,
                    superseded: now.queued_triggers + u64::from(!seen),
                })
            }
            _ => Decision::Ignore("no open alert for this dedup key through this action's routing key"),
        },
        Disposition::Acknowledge => match now.open {
            None => Decision::Ignore("no open alert to acknowledge"),
            Some(_) if now.full => Decision::Full,
            Some(_) => Decision::Apply(Plan {
                open: OpenChange::Keep,
                supersede_queued: false,
                send: true,
                superseded: 0,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::ResolveScope;

    const FAILURE: Disposition = Disposition::Trigger(AlertClass::Failure);
    const LATE: Disposition = Disposition::Trigger(AlertClass::Lateness);
    const RESOLVE: Disposition = Disposition::Resolve(ResolveScope::Any);
    const STARTED: Disposition = Disposition::Resolve(ResolveScope::LatenessOnly);

    fn open(class: AlertClass) -> Situation {
        Situation {
            open: Some(Open::new(class).delivered()),
            ..Situation::default()
        }
    }

    fn plan(d: Decision) -> Plan {
        match d {
            Decision::Apply(p) => p,
            other => panic!("expected a plan, got {other:?}"),
        }
    }

    #[test]
    fn a_first_trigger_opens_and_is_sent() {
        let p = plan(decide(FAILURE, &Situation::default()));
        assert_eq!(p.open, OpenChange::Set(Open::new(AlertClass::Failure)));
        assert!(p.send);
        assert_eq!(p.superseded, 0);
    }

    #[test]
    fn a_repeated_trigger_keeps_the_row_and_collapses_the_queue() {
        let now = Situation {
            queued_triggers: 2,
            ..open(AlertClass::Failure)
        };
        let p = plan(decide(FAILURE, &now));
        assert_eq!(p.open, OpenChange::Keep);
        assert!(p.send && p.supersede_queued);
        assert_eq!(p.superseded, 2);
    }

    #[test]
    fn failure_outranks_lateness() {
        let p = plan(decide(LATE, &open(AlertClass::Failure)));
        assert_eq!(
            p.open,
            OpenChange::Keep,
            "a late trigger leaves a failure a failure"
        );
        let p = plan(decide(FAILURE, &open(AlertClass::Lateness)));
        assert_eq!(
            p.open,
            OpenChange::Set(Open::new(AlertClass::Failure).delivered())
        );
        // Starting resolves lateness only.
        assert!(matches!(
            decide(STARTED, &open(AlertClass::Failure)),
            Decision::Ignore(_)
        ));
        assert_eq!(
            plan(decide(STARTED, &open(AlertClass::Lateness))).open,
            OpenChange::Close
        );
    }

    #[test]
    fn a_trigger_of_an_alert_whose_trigger_died_rewrites_it() {
        let died = Open::new(AlertClass::Failure)
            .trigger_died()
            .expect("never delivered");
        let now = Situation {
            open: Some(died),
            ..Situation::default()
        };
        let p = plan(decide(FAILURE, &now));
        assert_eq!(p.open, OpenChange::Set(Open::new(AlertClass::Failure)));
        assert_eq!(Open::new(AlertClass::Failure).delivered().trigger_died(), None);
    }

    #[test]
    fn a_resolve_is_sent_only_when_pagerduty_may_have_the_trigger() {
        let p = plan(decide(RESOLVE, &open(AlertClass::Failure)));
        assert_eq!((p.open, p.send, p.superseded), (OpenChange::Close, true, 0));

        // Never sent: the queued trigger and the resolve are both moot.
        let queued = Situation {
            open: Some(Open::new(AlertClass::Failure)),
            queued_triggers: 1,
            ..Situation::default()
        };
        let p = plan(decide(RESOLVE, &queued));
        assert_eq!((p.open, p.send, p.superseded), (OpenChange::Close, false, 2));

        // In flight: PagerDuty may have it, so the resolve goes.
        let in_flight = Situation {
            open: Some(Open::new(AlertClass::Failure)),
            trigger_in_flight: true,
            ..Situation::default()
        };
        assert!(plan(decide(RESOLVE, &in_flight)).send);

        assert!(matches!(
            decide(RESOLVE, &Situation::default()),
            Decision::Ignore(_)
        ));
    }

    #[test]
    fn acknowledge_needs_an_open_alert() {
        assert!(matches!(
            decide(Disposition::Acknowledge, &Situation::default()),
            Decision::Ignore(_)
        ));
        let p = plan(decide(Disposition::Acknowledge, &open(AlertClass::Health)));
        assert_eq!(
            (p.open, p.send, p.supersede_queued),
            (OpenChange::Keep, true, false)
        );
    }

    #[test]
    fn a_full_queue_refuses_only_what_needs_a_slot() {
        let full = |s: Situation| Situation { full: true, ..s };
        assert_eq!(decide(FAILURE, &full(Situation::default())), Decision::Full);
        assert_eq!(decide(RESOLVE, &full(open(AlertClass::Failure))), Decision::Full);
        assert_eq!(
            decide(Disposition::Acknowledge, &full(open(AlertClass::Failure))),
            Decision::Full
        );
        // A resolve that cancels a queued trigger frees a slot and needs none.
        let queued = full(Situation {
            open: Some(Open::new(AlertClass::Failure)),
            queued_triggers: 1,
            ..Situation::default()
        });
        assert!(!plan(decide(RESOLVE, &queued)).send);
        // Nothing open: ignored, full or not.
        assert!(matches!(
            decide(RESOLVE, &full(Situation::default())),
            Decision::Ignore(_)
        ));
    }

    #[test]
    fn restored_alerts_count_as_delivered_unless_their_trigger_died() {
        assert!(Open::restored(AlertClass::Failure, false).delivered);
        let dead = Open::restored(AlertClass::Failure, true);
        assert!(!dead.delivered && dead.dead);
        // A resolve of a dead alert is not sent: PagerDuty never had it.
        let now = Situation {
            open: Some(dead),
            ..Situation::default()
        };
        assert!(!plan(decide(RESOLVE, &now)).send);
    }
}
