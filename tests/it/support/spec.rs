//! Validates request bodies against PagerDuty's official Events v2 OpenAPI
//! spec (`fixtures/pagerduty/events-v2.openapiv3.json`, a byte copy of
//! PagerDuty/api-schema) and against the limits PagerDuty documents outside
//! the spec (docs/pagerduty.md §1).
//!
//! The spec uses a small subset of JSON Schema: `$ref`, `type`, `properties`,
//! `required`, `enum`, `items`, `format`. This walker interprets exactly that
//! subset straight from the file and panics on any keyword it does not know,
//! so a spec change can never make it pass silently.

use std::path::Path;

use serde_json::Value;

/// Keywords that carry no constraint.
const ANNOTATIONS: [&str; 4] = ["description", "x-examples", "examples", "title"];

/// The loaded spec.
#[derive(Debug, Clone)]
pub struct Spec {
    root: Value,
}

impl Spec {
    /// Loads the copy in `fixtures/`.
    pub fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pagerduty/events-v2.openapiv3.json");
        let text = std::fs::read_to_string(&path).expect("spec fixture is readable");
        Self {
            root: serde_json::from_str(&text).expect("spec is JSON"),
        }
    }

    fn enqueue_schema(&self) -> &Value {
        &self.root["paths"]["/enqueue"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    }

    /// Every problem with `body` as a `/v2/enqueue` request: the spec, the
    /// documented limits, and fields the spec does not define.
    pub fn check_enqueue(&self, raw: &[u8]) -> Vec<String> {
        match serde_json::from_slice(raw) {
            Ok(body) => self.check_parsed(raw.len(), &body),
            Err(e) => vec![format!("JSON parse error: {e}")],
        }
    }

    /// [`Spec::check_enqueue`] for a body already parsed from `len` bytes.
    pub fn check_parsed(&self, len: usize, body: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        if len > 512_000 {
            errors.push(format!("request is {len} bytes; PagerDuty's limit is 512 KB"));
        }
        let schema = self.enqueue_schema();
        self.check(schema, body, "", &mut errors);
        self.strict_fields(schema, body, "", &mut errors);
        limits(body, &mut errors);
        errors
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("local $ref");
                self.root
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"))
            }
            None => schema,
        }
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let obj = schema.as_object().expect("schema is an object");
        for key in obj.keys() {
            let known = [
                "$ref",
                "type",
                "properties",
                "required",
                "enum",
                "items",
                "format",
            ];
            assert!(
                known.contains(&key.as_str()) || ANNOTATIONS.contains(&key.as_str()),
                "spec uses keyword {key:?} at {at:?} that this validator does not implement"
            );
        }
        let name = if at.is_empty() { "body" } else { at };
        if let Some(t) = obj.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => v.is_object(),
                "string" => v.is_string(),
                "array" => v.is_array(),
                "number" => v.is_number(),
                "integer" => v.is_i64() || v.is_u64(),
                "boolean" => v.is_boolean(),
                other => panic!("unknown type {other}"),
            };
            if !ok {
                errors.push(format!("{name} must be of type {t}"));
                return;
            }
        }
        if let Some(options) = obj.get("enum").and_then(Value::as_array)
            && !options.contains(v)
        {
            errors.push(format!(
                "{name} is {v}, not one of {}",
                Value::Array(options.clone())
            ));
        }
        if let (Some(format), Some(s)) = (obj.get("format").and_then(Value::as_str), v.as_str()) {
            let ok = match format {
                "url" => url::Url::parse(s).is_ok(),
                "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
                other => panic!("unknown format {other}"),
            };
            if !ok {
                errors.push(format!("{name} {s:?} is not a valid {format}"));
            }
        }
        if let Some(required) = obj.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if v.get(r).is_none() {
                    errors.push(format!("{name} is missing required field {r:?}"));
                }
            }
        }
        if let (Some(props), Some(o)) = (obj.get("properties").and_then(Value::as_object), v.as_object()) {
            for (k, sub) in props {
                if let Some(child) = o.get(k) {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    self.check(sub, child, &path, errors);
                }
            }
        }
        if let (Some(items), Some(a)) = (obj.get("items"), v.as_array()) {
            for (i, item) in a.iter().enumerate() {
                self.check(items, item, &format!("{name}[{i}]"), errors);
            }
        }
    }

    /// PagerDuty ignores fields the spec does not define, so a sender that
    /// puts `links` inside `payload` (as keep does) loses them silently; a
    /// correct sender sends none.
    fn strict_fields(&self, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let Some(o) = v.as_object() else { return };
        for (k, child) in o {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            match props.get(k) {
                None => errors.push(format!(
                    "{path} is not a field of the spec (PagerDuty would ignore it)"
                )),
                // custom_details is free-form.
                Some(sub) if k != "custom_details" => self.strict_fields(sub, child, &path, errors),
                Some(_) => {}
            }
        }
        if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
            for item in a {
                self.strict_fields(items, item, at, errors);
            }
        }
    }
}

/// Limits from PagerDuty's developer docs, not in the spec.
fn limits(body: &Value, errors: &mut Vec<String>) {
    let action = body["event_action"].as_str().unwrap_or_default();
    match body.get("routing_key").and_then(Value::as_str) {
        Some(k) if k.len() == 32 && k.bytes().all(|b| b.is_ascii_alphanumeric()) => {}
        Some(_) => errors.push("routing_key must be a 32-character integration key".to_owned()),
        None => {}
    }
    match body.get("dedup_key").and_then(Value::as_str) {
        Some(k) if k.chars().count() > 255 => {
            errors.push("'dedup_key' is too long (maximum is 255 characters)".into())
        }
        Some("") => errors.push("'dedup_key' is empty".into()),
        None if action != "trigger" => errors.push(format!("dedup_key is required for {action}")),
        _ => {}
    }
    if action == "trigger" {
        match body.pointer("/payload/summary").and_then(Value::as_str) {
            Some(s) if s.chars().count() > 1024 => {
                errors.push("'summary' is too long (maximum is 1024 characters)".into())
            }
            Some(s) if s.trim().is_empty() => errors.push("'summary' is empty".into()),
            _ => {}
        }
        if body.get("payload").is_none() {
            errors.push("payload is required for trigger".into());
        }
    }
    if let Some(images) = body.get("images").and_then(Value::as_array) {
        for img in images {
            if !img["src"].as_str().is_some_and(|s| s.starts_with("https://")) {
                errors.push("images[].src must be served over HTTPS".into());
            }
        }
    }
    if let Some(links) = body.get("links").and_then(Value::as_array) {
        for l in links {
            let ok = l["href"]
                .as_str()
                .and_then(|h| url::Url::parse(h).ok())
                .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                errors.push(format!("links[].href {} is not an http(s) URL", l["href"]));
            }
        }
    }
}
