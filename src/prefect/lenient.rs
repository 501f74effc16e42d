//! JSON as Python writes it. `json.dumps` (and so Jinja's `tojson`, which
//! Prefect templates use) writes `NaN`, `Infinity` and `-Infinity` for
//! non-finite floats by default, and a number such as `1e999` is valid JSON
//! that no `f64` holds. Strict JSON refuses all of them; one such value deep
//! in a flow's parameters must not turn a recovery into an unrecognised page.

/// `text` with every non-finite number outside strings rewritten: `NaN`,
/// `Infinity` and `-Infinity` as `null`, an out-of-range number as a string
/// of its digits. `None` when there is nothing to rewrite.
pub fn rewrite_non_finite(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'N' | b'I' | b'-' | b'+' | b'0'..=b'9' => {
                let start = i;
                let end = token_end(bytes, i);
                let token = &text[start..end];
                let replacement = match token {
                    "NaN" | "Infinity" | "-Infinity" | "+Infinity" | "-NaN" => Some("null".to_owned()),
                    t if t.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                        && t.parse::<f64>().is_ok_and(|f| f.is_infinite()) =>
                    {
                        Some(format!("\"{t}\""))
                    }
                    _ => None,
                };
                if let Some(r) = replacement {
                    out.push_str(&text[copied..start]);
                    out.push_str(&r);
                    copied = end;
                    changed = true;
                }
                i = end.max(start + 1);
            }
            _ => i += 1,
        }
    }
    if !changed {
        return None;
    }
    out.push_str(&text[copied.min(text.len())..]);
    Some(out)
}

/// Where a bare token (a number or a word) starting at `i` ends.
fn token_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"+-.".contains(&bytes[i])) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_numbers_become_null_or_strings() {
        let text = r#"{"a": NaN, "b": [Infinity, -Infinity], "c": 1e999, "d": -2E+400, "e": 1.5, "s": "NaN Infinity 1e999"}"#;
        let fixed = rewrite_non_finite(text).expect("something to rewrite");
        let v: serde_json::Value = serde_json::from_str(&fixed).expect("parses now");
        assert!(v["a"].is_null());
        assert_eq!(v["b"], serde_json::json!([null, null]));
        assert_eq!(v["c"], "1e999");
        assert_eq!(v["d"], "-2E+400");
        assert_eq!(v["e"], 1.5);
        assert_eq!(v["s"], "NaN Infinity 1e999", "strings are left alone");
    }

    #[test]
    fn plain_json_is_left_alone() {
        assert_eq!(
            rewrite_non_finite(r#"{"a": [1, -2.5e10, true, null, "x\"NaN"]}"#),
            None
        );
    }
}
