//! Redaction of named JSON fields, and how a captured body becomes the
//! record's `request_body` / `response_body`.

use std::sync::Arc;

use serde_json::Value;

use super::capture::Captured;

/// What a redacted value is replaced with.
pub(super) const REDACTED: &str = "[redacted]";

/// The deepest nesting of a body kept as JSON. A record holds its body
/// one level down, and every reader of the log must be able to parse it:
/// far below serde_json's limit of 128.
pub(super) const MAX_BODY_DEPTH: usize = 32;

/// The JSON member names whose values are replaced before a record is
/// hashed or written. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(super) struct Redactor {
    /// Each name folded by [`fold`].
    fields: Arc<[Box<[u8]>]>,
}

/// A member name with case and `_`/`-` dropped: `card_number`,
/// `cardNumber`, `CardNumber` and `CARD-NUMBER` all fold to `cardnumber`.
fn fold(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes()
        .filter(|b| !matches!(b, b'_' | b'-'))
        .map(|b| b.to_ascii_lowercase())
}

/// Whether `value` nests more than `limit` levels (a scalar is 1).
fn depth_over(value: &Value, limit: usize) -> bool {
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        if d > limit {
            return true;
        }
        match v {
            Value::Object(map) => stack.extend(map.values().map(|v| (v, d + 1))),
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, d + 1))),
            _ => {}
        }
    }
    false
}

impl Redactor {
    pub(super) fn new<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let fields: Vec<Box<[u8]>> = fields
            .into_iter()
            .map(|f| fold(&f.into()).collect::<Vec<u8>>().into_boxed_slice())
            .collect();
        Self {
            fields: fields.into(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether the member `key` is one to redact, case- and
    /// style-insensitively.
    fn names(&self, key: &str) -> bool {
        // Security: a client choosing `cardNumber` over `card_number`
        // must not get the digits into the log.
        self.fields.iter().any(|f| fold(key).eq(f.iter().copied()))
    }

    /// Replaces, at any depth, the value of every member named in the
    /// list. Returns whether anything was replaced.
    pub(super) fn redact(&self, value: &mut Value) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut any = false;
        // An explicit stack: no recursion, whatever the depth.
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    for (k, v) in map.iter_mut() {
                        if self.names(k) {
                            *v = Value::String(REDACTED.to_owned());
                            any = true;
                        } else {
                            stack.push(v);
                        }
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                _ => {}
            }
        }
        any
    }

    /// A captured body as a record value, and whether it was cut.
    ///
    /// A complete JSON body at most [`MAX_BODY_DEPTH`] deep is kept as
    /// JSON, redacted. With redaction on, nothing else is kept: a marker
    /// with the body's size stands in for it. Without redaction, anything
    /// else is kept as text, or as `{"base64": …}` when it is not UTF-8,
    /// cut at the cap.
    pub(super) fn body(&self, captured: Captured) -> (Value, bool) {
        let cut = captured.cut();
        let marker =
            |why: &str| Value::String(format!("[{} bytes not recorded: {why}]", captured.seen));
        if !cut {
            if captured.bytes.is_empty() {
                return (Value::String(String::new()), false);
            }
            if let Ok(mut v) = serde_json::from_slice::<Value>(&captured.bytes) {
                // Security: a body nested to the parser's limit would make
                // the record holding it one level too deep to parse, so
                // verification, repair and shipping would stop at it.
                if !depth_over(&v, MAX_BODY_DEPTH) {
                    self.redact(&mut v);
                    return (v, false);
                }
                if !self.is_empty() {
                    return (marker("JSON nested too deep, redaction on"), false);
                }
                // Parsed, so UTF-8: kept as its text, never as JSON.
                let text = String::from_utf8_lossy(&captured.bytes).into_owned();
                return (Value::String(text), false);
            }
        }
        // Security: fields can only be found in a whole JSON body: with
        // redaction on, gRPC frames, forms, gzip, NDJSON and cut bodies are
        // never written.
        if !self.is_empty() {
            let why = if cut {
                "over the body cap, and redaction needs the whole JSON body"
            } else {
                "not JSON, redaction on"
            };
            return (marker(why), cut);
        }
        (raw(&captured.bytes, cut), cut)
    }
}

/// Bytes as text, or as `{"base64": …}` when they are not UTF-8 (a body
/// cut at the cap may end mid-character: that tail is dropped).
fn raw(bytes: &[u8], cut: bool) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::String(text.to_owned()),
        Err(e) if cut && e.error_len().is_none() => {
            Value::String(String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned())
        }
        Err(_) => {
            use base64::Engine as _;
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn captured(bytes: &[u8], seen: u64) -> Captured {
        Captured {
            bytes: bytes.to_vec(),
            seen,
        }
    }

    #[test]
    fn named_fields_are_redacted_at_any_depth() {
        let r = Redactor::new(["card_number", "IBAN"]);
        let mut v = json!({"card_number": "4111", "a": [{"iban": {"x": 1}}, {"ok": "iban"}], "amount": "1"});
        assert!(r.redact(&mut v));
        assert_eq!(
            v,
            json!({"card_number": REDACTED, "a": [{"iban": REDACTED}, {"ok": "iban"}], "amount": "1"})
        );
    }

    #[test]
    fn bodies_table() {
        let on = Redactor::new(["pan"]);
        let off = Redactor::default();
        let json = br#"{"pan":"4111111111111111","amount":"5.00"}"#;
        let n = json.len() as u64;
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let shallow = format!("{}{}", "[".repeat(32), "]".repeat(32));
        // (redactor, captured, expected value, cut)
        let rows: Vec<(&Redactor, Captured, Value, bool)> = vec![
            (
                &on,
                captured(json, n),
                json!({"pan": REDACTED, "amount": "5.00"}),
                false,
            ),
            (
                &off,
                captured(json, n),
                json!({"pan": "4111111111111111", "amount": "5.00"}),
                false,
            ),
            (
                &off,
                captured(b"plain text", 10),
                json!("plain text"),
                false,
            ),
            (&off, captured(b"", 0), json!(""), false),
            (&off, captured(&json[..10], n), json!("{\"pan\":\"41"), true),
            (
                &on,
                captured(&json[..10], n),
                json!(format!(
                    "[{n} bytes not recorded: over the body cap, and redaction needs the whole JSON body]"
                )),
                true,
            ),
            (
                &on,
                captured(b"pan=4111", 8),
                json!("[8 bytes not recorded: not JSON, redaction on]"),
                false,
            ),
            (
                &off,
                captured(b"\x00\x00\x00\x00\x02\xff\xfe", 7),
                json!({"base64": "AAAAAAL//g=="}),
                false,
            ),
            (
                &on,
                captured(deep.as_bytes(), deep.len() as u64),
                json!(format!(
                    "[{} bytes not recorded: JSON nested too deep, redaction on]",
                    deep.len()
                )),
                false,
            ),
            (
                &off,
                captured(deep.as_bytes(), deep.len() as u64),
                json!(deep),
                false,
            ),
            (
                &off,
                captured(shallow.as_bytes(), shallow.len() as u64),
                serde_json::from_str(&shallow).unwrap(),
                false,
            ),
        ];
        for (i, (r, c, want, cut)) in rows.into_iter().enumerate() {
            assert_eq!(r.body(c), (want, cut), "row {i}");
        }
    }
}
