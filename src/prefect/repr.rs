//! The Python repr of an event, which `{{ event }}` renders when a template
//! forgets `| tojson` (captures/failed_event_str.json). Not JSON, but it holds
//! the resource labels as Python dicts of strings, which is enough to page
//! with the right flow run instead of a blind "unrecognised" alert.

use serde_json::{Map, Value};

use super::{Format, Notification, event};

/// Reads a repr body; returns false when `text` does not look like one.
pub(super) fn read(n: &mut Notification, text: &str) -> bool {
    let Some(name) = quoted_after(text, "event=") else {
        return false;
    };
    let Some(resource) = text
        .find("resource=Resource(root=")
        .and_then(|i| dict_at(&text[i + 23..]))
    else {
        return false;
    };
    let mut related = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("RelatedResource(root=") {
        rest = &rest[i + 21..];
        if let Some(d) = dict_at(rest) {
            related.push(Value::Object(d));
        }
        if related.len() >= 200 {
            break;
        }
    }
    let mut ev = Map::new();
    ev.insert("event".to_owned(), Value::from(name));
    ev.insert("resource".to_owned(), Value::Object(resource));
    ev.insert("related".to_owned(), Value::Array(related));
    if let Some(id) = text
        .find(" id=UUID(")
        .and_then(|i| quoted_after(&text[i..], "UUID("))
    {
        ev.insert("id".to_owned(), Value::from(id));
    }
    if let Some(when) = text.strip_prefix("occurred=DateTime(").and_then(datetime) {
        ev.insert("occurred".to_owned(), Value::from(when));
    }
    event::read(n, &ev, 1);
    n.format = Format::PythonRepr;
    true
}

/// The Python string literal right after the first `marker`.
fn quoted_after(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    literal(&text[start..]).map(|(s, _)| s)
}

/// Parses a Python string literal at the start of `s`; returns it and the rest.
fn literal(s: &str) -> Option<(String, &str)> {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next().filter(|(_, c)| *c == '\'' || *c == '"')?;
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                (_, 'n') => out.push('\n'),
                (_, 't') => out.push('\t'),
                (_, other) => out.push(other),
            },
            c if c == quote => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Parses a flat `{'k': 'v', …}` dict of string literals at the start of `s`.
fn dict_at(s: &str) -> Option<Map<String, Value>> {
    let mut rest = s.strip_prefix('{')?;
    let mut map = Map::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            let _ = after;
            return Some(map);
        }
        let (key, after_key) = literal(rest)?;
        let after_colon = after_key.trim_start().strip_prefix(':')?.trim_start();
        let (value, after_value) = literal(after_colon)?;
        map.insert(key, Value::from(value));
        rest = after_value;
    }
}

/// `DateTime(2026, 11, 28, 8, 36, 31, 998336, tzinfo=Timezone('UTC'))` → RFC 3339.
fn datetime(s: &str) -> Option<String> {
    let inner = &s[..s.find("tzinfo").unwrap_or(s.len())];
    let parts: Vec<i64> = inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map_while(|p| p.parse().ok())
        .collect();
    if parts.len() < 6 {
        return None;
    }
    let micros = parts.get(6).copied().unwrap_or(0);
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], micros
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_dicts_parse() {
        assert_eq!(literal(r#"'a\'b' rest"#), Some(("a'b".to_owned(), " rest")));
        assert_eq!(literal(r#""it's" x"#), Some(("it's".to_owned(), " x")));
        let d = dict_at("{'k': 'v', 'x': \"y'z\"})").expect("dict");
        assert_eq!(d["k"], "v");
        assert_eq!(d["x"], "y'z");
        assert!(dict_at("{'k': 'v'").is_none());
        assert!(dict_at("{'k': 1}").is_none());
    }

    #[test]
    fn datetime_becomes_rfc3339() {
        assert_eq!(
            datetime("2026, 11, 28, 8, 36, 31, 998336, tzinfo=Timezone('UTC'))").as_deref(),
            Some("2026-11-28T08:36:31.998336Z")
        );
    }
}
