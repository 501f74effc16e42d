//! Which alerts the bridge has open, per (routing key, dedup key).
//!
//! PagerDuty drops a resolve that matches no open alert, and drops it too when
//! it comes through another routing key (`FACTS.md` §1.3). Sending one for
//! every green run would spend the ~120/min rate limit for nothing, so a
//! resolve goes out only when this table says a trigger is open.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::secret::Secret;
use crate::translate::{AlertClass, ResolveScope};

/// The open-incident table.
#[derive(Debug, Default)]
pub struct Incidents {
    open: Mutex<HashMap<(Secret, String), AlertClass>>,
}

impl Incidents {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Secret, String), AlertClass>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every operation is one insert or remove), so poisoning is ignored.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a trigger. A failure outranks a lateness alert of the same
    /// object, so that a RUNNING event cannot resolve a failed run.
    pub fn open(&self, key: &Secret, dedup_key: &str, class: AlertClass) {
        let mut open = self.lock();
        let slot = open.entry((key.clone(), dedup_key.to_owned())).or_insert(class);
        if *slot == AlertClass::Lateness || class != AlertClass::Lateness {
            *slot = class;
        }
    }

    /// Closes the alert if one within `scope` is open; returns whether it was.
    pub fn close(&self, key: &Secret, dedup_key: &str, scope: ResolveScope) -> bool {
        let mut open = self.lock();
        let id = (key.clone(), dedup_key.to_owned());
        match open.get(&id) {
            Some(class) if scope.closes(*class) => {
                open.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Whether any alert is open for the pair.
    pub fn is_open(&self, key: &Secret, dedup_key: &str) -> bool {
        self.lock().contains_key(&(key.clone(), dedup_key.to_owned()))
    }

    /// How many alerts are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_resolves_only_lateness_and_keys_are_separate() {
        let t = Incidents::new();
        let (a, b) = (Secret::new("key-a-0000000000"), Secret::new("key-b-0000000000"));
        t.open(&a, "run", AlertClass::Lateness);
        assert!(!t.close(&b, "run", ResolveScope::Any), "other routing key");
        t.open(&a, "run", AlertClass::Failure);
        assert!(
            !t.close(&a, "run", ResolveScope::LatenessOnly),
            "failure outranks lateness"
        );
        t.open(&a, "run", AlertClass::Lateness);
        assert!(!t.close(&a, "run", ResolveScope::LatenessOnly), "still a failure");
        assert!(t.close(&a, "run", ResolveScope::Any));
        assert!(!t.close(&a, "run", ResolveScope::Any), "closed once");
        t.open(&a, "late", AlertClass::Lateness);
        assert!(t.close(&a, "late", ResolveScope::LatenessOnly));
        assert!(t.is_empty());
    }
}
