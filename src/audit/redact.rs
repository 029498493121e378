//! Redaction of named JSON fields, and how a captured body becomes the
//! record's `request_body` / `response_body`.

use std::sync::Arc;

use serde_json::Value;

use super::capture::Captured;

/// What a redacted value is replaced with.
pub(super) const REDACTED: &str = "[redacted]";

/// The JSON member names whose values are replaced before a record is
/// hashed or written. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(super) struct Redactor {
    fields: Arc<[Box<str>]>,
}

impl Redactor {
    pub(super) fn new<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let fields: Vec<Box<str>> = fields
            .into_iter()
            .map(|f| f.into().into_boxed_str())
            .collect();
        Self {
            fields: fields.into(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Replaces, at any depth, the value of every member named in the
    /// list. Returns whether anything was replaced.
    pub(super) fn redact(&self, value: &mut Value) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut any = false;
        // An explicit stack: parsed JSON is at most 128 levels deep
        // (serde_json's limit), but no recursion is cheaper still.
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    for (k, v) in map.iter_mut() {
                        if self.fields.iter().any(|f| **f == **k) {
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
    /// A complete JSON body is kept as JSON, redacted. Anything else is
    /// kept as text (invalid UTF-8 replaced), cut at the cap — except
    /// that, with redaction on, a body cut at the cap is not kept at all:
    /// its named fields could not be found, so a marker with its size
    /// stands in for it.
    pub(super) fn body(&self, captured: Captured) -> (Value, bool) {
        let cut = captured.cut();
        if !cut {
            if captured.bytes.is_empty() {
                return (Value::String(String::new()), false);
            }
            if let Ok(mut v) = serde_json::from_slice::<Value>(&captured.bytes) {
                self.redact(&mut v);
                return (v, false);
            }
        }
        // Security: a cut JSON body cannot be parsed, so its named fields
        // cannot be found: with redaction on it is never written.
        if cut && !self.is_empty() {
            return (
                Value::String(format!(
                    "[{} bytes not recorded: over the body cap, and redaction needs the whole JSON body]",
                    captured.seen
                )),
                true,
            );
        }
        (
            Value::String(String::from_utf8_lossy(&captured.bytes).into_owned()),
            cut,
        )
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
        let r = Redactor::new(["card_number", "iban"]);
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
        ];
        for (i, (r, c, want, cut)) in rows.into_iter().enumerate() {
            assert_eq!(r.body(c), (want, cut), "row {i}");
        }
    }
}
