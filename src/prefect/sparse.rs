//! The payload nearly every deployment sends, `{{ event | tojson }}`, read
//! in one pass without building a JSON tree of the whole body.
//!
//! The tree (a map per object, a string per key and value, all dropped
//! again) was most of the webhook handler's parse, and much of it is never
//! read: the state change's `payload` beyond `validated_state`, `received`,
//! the related resources' maps. Here the members the event reader consults
//! are kept, related resources keep only the four labels it reads (borrowed
//! from the body), and everything else is skipped as it is scanned.
//!
//! Exactly what the general reader would make of the body, or nothing: a
//! body this reader is not sure of (not an object, a member a Prefect
//! event does not have, an automation envelope, invalid JSON) gets
//! `false`, and the general reader takes it. The unit tests hold the two
//! readers to the same result, with one difference by design: skipped
//! members are skipped without serde_json's nesting limit of 128 (and
//! without recursion), so an event whose `payload` nests deeper is still
//! read as the event it is, where the tree gave up on the whole body.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Notification, event};

/// The visitor methods for strings, numbers, booleans and null, all
/// giving `$v`.
macro_rules! scalars_give {
    ($v:expr) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($v)
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($v)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($v)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($v)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($v)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
}

/// Reads `text` into `n` if it is a plain Prefect event; `false` leaves
/// `n` untouched.
pub(super) fn read(n: &mut Notification, text: &str, depth: u8) -> bool {
    let Ok(ev) = serde_json::from_str::<Event<'_>>(text) else {
        return false;
    };
    let is_plain_event = matches!(&ev.event, Some(Value::String(name))
            if name != "prefect.automation.triggered" && name != "prefect.automation.resolved")
        && matches!(ev.resource, Some(Value::Object(_)));
    if !is_plain_event {
        return false;
    }
    // The members `event::read` consults, and nothing else.
    let mut obj = Map::new();
    let members = [
        ("event", ev.event),
        ("resource", ev.resource),
        ("id", ev.id),
        ("occurred", ev.occurred),
        ("follows", ev.follows),
    ];
    for (key, value) in members {
        if let Some(v) = value {
            obj.insert(key.to_owned(), v);
        }
    }
    if let Some(Some(state)) = ev.validated_state {
        let mut payload = Map::new();
        payload.insert("validated_state".to_owned(), Value::Object(state));
        obj.insert("payload".to_owned(), Value::Object(payload));
    }
    super::read_object(n, &obj, depth);
    // Related resources only fill what is still empty, and nothing read
    // above looks at them, so reading them last gives the same result.
    for r in ev.related.iter().flatten().take(event::MAX_RELATED) {
        event::read_resource(n, r, false);
    }
    true
}

/// A body's members that matter, the last of each when one repeats (as in
/// a parsed map).
#[derive(Default)]
struct Event<'a> {
    event: Option<Value>,
    resource: Option<Value>,
    id: Option<Value>,
    occurred: Option<Value>,
    follows: Option<Value>,
    /// `Some` for each related item; `None` for one that is not an object.
    related: Vec<Option<Related<'a>>>,
    /// `Some(None)` when `payload` holds no `validated_state` object.
    validated_state: Option<Option<Map<String, Value>>>,
}

impl<'de> Deserialize<'de> for Event<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Event<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut ev = Event::default();
                while let Some(Key(key)) = map.next_key()? {
                    match &*key {
                        "event" => ev.event = Some(map.next_value()?),
                        "resource" => ev.resource = Some(map.next_value()?),
                        "id" => ev.id = Some(map.next_value()?),
                        "occurred" => ev.occurred = Some(map.next_value()?),
                        "follows" => ev.follows = Some(map.next_value()?),
                        "related" => ev.related = map.next_value::<RelatedList<'de>>()?.0,
                        "payload" => {
                            let payload = map.next_value::<IfObject<Payload>>()?.0;
                            ev.validated_state = Some(payload.and_then(|p| p.0).map(|s| s.0));
                        }
                        "received" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        // Not a member of a Prefect event: a wrapper, a
                        // firing, a template of its own. Said at the first
                        // such name, so the general reader loses no time.
                        _ => return Err(de::Error::custom("not a plain Prefect event")),
                    }
                }
                Ok(ev)
            }
        }
        // `deserialize_map`: an array is never read as an object.
        d.deserialize_map(Members)
    }
}

/// The labels of a related resource the reader uses: each the text of its
/// last occurrence, or `None` when that is not a string.
#[derive(Default)]
struct Related<'a> {
    id: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    role: Option<Cow<'a, str>>,
    pool_type: Option<Cow<'a, str>>,
}

impl event::Labels for Related<'_> {
    fn text(&self, key: &str) -> Option<Cow<'_, str>> {
        let s = match key {
            "prefect.resource.id" => self.id.as_deref(),
            "prefect.resource.name" => self.name.as_deref(),
            "prefect.resource.role" => self.role.as_deref(),
            "prefect.work-pool.type" => self.pool_type.as_deref(),
            _ => None,
        }?;
        let s = s.trim();
        (!s.is_empty() && s != "None").then_some(Cow::Borrowed(s))
    }
}

/// `related`: its object items, in order; nothing when it is not an array.
struct RelatedList<'a>(Vec<Option<Related<'a>>>);

impl<'de> Deserialize<'de> for RelatedList<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> Visitor<'de> for Items {
            type Value = RelatedList<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(IfObject(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RelatedList(items))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| RelatedList(Vec::new()))
            }

            scalars_give!(RelatedList(Vec::new()));
        }
        d.deserialize_any(Items)
    }
}

/// A value read by `T` if it is an object; `None` for any other value,
/// which is skipped. `related`'s items, `payload` and `validated_state`
/// are all read this way.
struct IfObject<T>(Option<T>);

/// What reads an object's members into `Self`.
trait FromMembers<'de>: Sized {
    fn read<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

impl<'de, T: FromMembers<'de>> Deserialize<'de> for IfObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(PhantomData<T>);
        impl<'de, T: FromMembers<'de>> Visitor<'de> for Object<T> {
            type Value = IfObject<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::read(map).map(|t| IfObject(Some(t)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| IfObject(None))
            }

            scalars_give!(IfObject(None));
        }
        d.deserialize_any(Object(PhantomData))
    }
}

impl<'de> FromMembers<'de> for Related<'de> {
    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut r = Related::default();
        while let Some(Key(key)) = map.next_key()? {
            let slot = match &*key {
                "prefect.resource.id" => &mut r.id,
                "prefect.resource.name" => &mut r.name,
                "prefect.resource.role" => &mut r.role,
                "prefect.work-pool.type" => &mut r.pool_type,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value::<Text<'de>>()?.0;
        }
        Ok(r)
    }
}

/// `payload`: its `validated_state`, when that is an object.
struct Payload(Option<ValidatedState>);

impl<'de> FromMembers<'de> for Payload {
    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut state = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == "validated_state" {
                state = map.next_value::<IfObject<ValidatedState>>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Payload(state))
    }
}

/// `validated_state`'s type, name and message.
struct ValidatedState(Map<String, Value>);

impl<'de> FromMembers<'de> for ValidatedState {
    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut state = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            if matches!(&*key, "type" | "name" | "message") {
                state.insert(key.into_owned(), map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ValidatedState(state))
    }
}

/// A string's text, borrowed from the body unless it had escapes; `None`
/// for any other value.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Chars;
        impl<'de> Visitor<'de> for Chars {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(s))))
            }

            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(s.to_owned()))))
            }

            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(s))))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| Text(None))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Text(None))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Text(None))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
        }
        d.deserialize_any(Chars)
    }
}

/// A member name, borrowed from the body unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Text::deserialize(d)?.0 {
            Some(name) => Ok(Key(name)),
            None => Err(de::Error::custom("a member name that is not a string")),
        }
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}
