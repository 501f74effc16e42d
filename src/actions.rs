//! Named actions, as in the original Prefect Cloud PagerDuty integration: an
//! integration (routing) key plus a severity. Many actions may share one key
//! with different severities, and many automations may post to one action.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::pagerduty::Severity;
use crate::secret::Secret;

/// One named action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// `[A-Za-z0-9_-]+`; the last segment of `/v1/prefect/{action}`.
    pub name: String,
    /// The PagerDuty integration key events go to.
    pub routing_key: Secret,
    /// A fixed severity, or `None` to derive it from each Prefect event.
    pub severity: Option<Severity>,
}

/// A name that is not `[A-Za-z0-9_-]+` (or too long for a URL segment).
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid action name {0:?}: use 1 to 64 of A-Z, a-z, 0-9, '_' and '-'")]
pub struct InvalidName(pub String);

/// Checks an action name.
///
/// # Errors
/// When the name is empty, longer than 64, or has other characters.
pub fn check_name(name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidName(name.to_owned()))
    }
}

/// How an action is shown outside: routing key redacted.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Action name.
    pub name: String,
    /// Last four characters of the routing key.
    pub routing_key: String,
    /// `critical`, `error`, `warning`, `info` or `auto`.
    pub severity: String,
}

impl Action {
    /// The redacted view of this action.
    pub fn summary(&self) -> Summary {
        Summary {
            name: self.name.clone(),
            routing_key: self.routing_key.redacted(),
            severity: self
                .severity
                .map_or_else(|| "auto".to_owned(), |s| s.as_str().to_owned()),
        }
    }
}

/// The configured actions, by name.
#[derive(Clone, Default)]
pub struct Actions {
    by_name: BTreeMap<String, Action>,
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_name.values()).finish()
    }
}

impl Actions {
    /// Builds the table.
    ///
    /// # Errors
    /// The first name given twice.
    pub fn try_new(actions: Vec<Action>) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        for a in actions {
            if by_name.contains_key(&a.name) {
                return Err(a.name);
            }
            by_name.insert(a.name.clone(), a);
        }
        Ok(Self { by_name })
    }

    /// The action called `name`.
    pub fn get(&self, name: &str) -> Option<&Action> {
        self.by_name.get(name)
    }

    /// Every action name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    /// Every action, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Action> {
        self.by_name.values()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Adds an action; returns false when the name is taken.
    pub fn insert(&mut self, action: Action) -> bool {
        if self.by_name.contains_key(&action.name) {
            return false;
        }
        self.by_name.insert(action.name.clone(), action);
        true
    }

    /// Removes an action; returns it.
    pub fn remove(&mut self, name: &str) -> Option<Action> {
        self.by_name.remove(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("prod-critical_1").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duplicate_names_are_refused_and_keys_never_shown() {
        let a = Action {
            name: "a".into(),
            routing_key: Secret::new("0123456789abcdef0123456789abcdef"),
            severity: None,
        };
        assert!(Actions::try_new(vec![a.clone(), a.clone()]).is_err());
        let s = a.summary();
        assert_eq!(s.routing_key, "…cdef");
        assert_eq!(s.severity, "auto");
    }
}
