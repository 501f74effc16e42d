//! Secrets that rotate without a restart. A routing key or token given as
//! `file:PATH` (a mounted Kubernetes Secret, a file a vault agent rewrites)
//! or `env:VAR` is read again once `--secret-refresh` has passed since it
//! was last read, through a moka cache with that TTL. A source that becomes
//! unreadable, or whose new value is not usable, keeps the last good value
//! and logs an error each time it is tried again: a rotation gone wrong
//! must not stop the pages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use moka::sync::Cache;

use crate::actions::Action;
use crate::secret::{Secret, SecretSource};

/// Checks a value read from a source; `Err` says why it is not usable.
pub(crate) type Check = fn(&str) -> Result<(), &'static str>;

/// The cache of values read from sources, shared by every rotating secret.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cache: Cache<SecretSource, Secret>,
    /// What each source last gave that was usable.
    last_good: Mutex<HashMap<SecretSource, Secret>>,
}

impl Rotation {
    /// Sources are read again `refresh` after they were last read.
    pub(crate) fn new(refresh: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache: Cache::builder().time_to_live(refresh).build(),
                last_good: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A secret read from `source` (already read once, as `first`).
    pub(crate) fn secret(&self, source: SecretSource, first: Secret, check: Option<Check>) -> Rotating {
        if !matches!(source, SecretSource::Value(_)) {
            self.remember(&source, &first);
        }
        Rotating {
            source,
            first,
            check,
            rotation: Some(self.clone()),
        }
    }

    fn remember(&self, source: &SecretSource, value: &Secret) {
        self.inner
            .last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(source.clone(), value.clone());
    }

    fn last_good(&self, source: &SecretSource) -> Option<Secret> {
        self.inner
            .last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(source)
            .cloned()
    }

    fn current(&self, source: &SecretSource, first: &Secret, check: Option<Check>) -> Secret {
        self.inner.cache.get_with_by_ref(source, || {
            let read = source
                .read()
                .map_err(|e| e.to_string())
                .and_then(|v| match check.map(|c| c(v.expose())) {
                    Some(Err(why)) => Err(why.to_owned()),
                    _ => Ok(v),
                });
            match read {
                Ok(value) => {
                    if self.last_good(source).as_ref() != Some(&value) {
                        tracing::info!(source = ?source, value = %value, "a secret changed; using the new value");
                    }
                    self.remember(source, &value);
                    value
                }
                Err(error) => {
                    tracing::error!(source = ?source, error = %error,
                        "a secret could not be read again; keeping its last good value");
                    self.last_good(source).unwrap_or_else(|| first.clone())
                }
            }
        })
    }
}

/// A routing key or token, current as of the last refresh.
#[derive(Debug, Clone)]
pub(crate) struct Rotating {
    source: SecretSource,
    first: Secret,
    check: Option<Check>,
    rotation: Option<Rotation>,
}

impl Rotating {
    /// A secret that never changes.
    #[cfg(test)]
    pub(crate) fn fixed(value: Secret) -> Self {
        Self {
            source: SecretSource::Value(value.clone()),
            first: value,
            check: None,
            rotation: None,
        }
    }

    /// Its value now.
    pub(crate) fn current(&self) -> Secret {
        match (&self.source, &self.rotation) {
            (SecretSource::Value(v), _) => v.clone(),
            (_, None) => self.first.clone(),
            (source, Some(r)) => r.current(source, &self.first, self.check),
        }
    }
}

/// The routing keys of the `--action` flags that name a file or variable.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActionKeys(Arc<HashMap<String, Rotating>>);

impl ActionKeys {
    /// Keys by action name.
    pub(crate) fn new(keys: HashMap<String, Rotating>) -> Self {
        Self(Arc::new(keys))
    }

    /// `action` with its routing key as of now.
    pub(crate) fn current(&self, mut action: Action) -> Action {
        if let Some(key) = self.0.get(&action.name) {
            action.routing_key = key.current();
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "R0UTINGKEYAAAAAAAAAAAAAAAAAAAAAA";
    const NEW: &str = "R0UTINGKEYBBBBBBBBBBBBBBBBBBBBBB";

    fn key_check(v: &str) -> Result<(), &'static str> {
        crate::pagerduty::check_routing_key(v)
    }

    #[test]
    fn a_rewritten_file_takes_effect_after_the_refresh_and_a_bad_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, OLD).expect("write");
        let rotation = Rotation::new(Duration::from_millis(50));
        let source = SecretSource::File(path.clone());
        let key = rotation.secret(source.clone(), source.read().expect("read"), Some(key_check));
        assert_eq!(key.current().expose(), OLD);

        std::fs::write(&path, format!("{NEW}\n")).expect("write");
        assert_eq!(key.current().expose(), OLD, "read again before the refresh");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(key.current().expose(), NEW);

        std::fs::write(&path, "not-a-routing-key").expect("write");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(key.current().expose(), NEW, "an unusable value is not taken");

        std::fs::remove_file(&path).expect("remove");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            key.current().expose(),
            NEW,
            "an unreadable file keeps the last good"
        );
    }

    #[test]
    fn a_fixed_secret_and_an_unlisted_action_stay_as_they_are() {
        let fixed = Rotating::fixed(Secret::new(OLD));
        assert_eq!(fixed.current().expose(), OLD);
        let action = Action {
            name: "a".into(),
            routing_key: Secret::new(OLD),
            severity: None,
        };
        assert_eq!(ActionKeys::default().current(action.clone()), action);
    }
}
