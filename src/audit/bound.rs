//! Per-field bounds on what a caller can make the audit log store.
//!
//! Security: order ids, idempotency keys, paths, account ids and a
//! handler's event data come from the caller. Unbounded, ten requests with
//! megabyte fields write megabytes of audit log (and keep them for as long
//! as the log is retained), and a queue of 8192 such records holds
//! gigabytes. Each field is cut to its bound and named in the record's
//! `truncated` list, so a cut is visible and never mistaken for the value.

use serde_json::{Map, Value};

/// The most bytes kept of one text field of a record (`order_id`, `route`,
/// `subject`, …) and of one string inside event data.
pub const MAX_FIELD_BYTES: usize = 256;

/// About the most bytes of event data kept: strings, keys and scalars
/// count their length, so the JSON encoding is about this size (more only
/// for characters JSON escapes).
pub const MAX_DATA_BYTES: usize = 2048;

/// The deepest nesting of event data kept.
const MAX_DATA_DEPTH: usize = 8;

/// What a scalar, a separator or an empty container costs of the budget.
const NODE_COST: usize = 8;

/// `s` cut to at most `max` bytes at a character boundary.
pub(super) fn cut(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

/// Sets `slot` to `v` cut to [`MAX_FIELD_BYTES`], naming `field` in
/// `truncated` when it was cut; reuses the string `slot` holds.
pub(super) fn set_text(
    slot: &mut Option<String>,
    v: Option<&str>,
    field: &'static str,
    truncated: &mut Vec<String>,
) {
    let v = v.map(|v| {
        let (kept, was_cut) = cut(v, MAX_FIELD_BYTES);
        if was_cut {
            truncated.push(field.to_owned());
        }
        kept
    });
    set(slot, v);
}

/// Sets `slot` to a copy of `v`, reusing the string `slot` holds.
pub(super) fn set(slot: &mut Option<String>, v: Option<&str>) {
    match (slot.as_mut(), v) {
        (Some(s), Some(v)) => {
            s.clear();
            s.push_str(v);
        }
        (None, Some(v)) => *slot = Some(v.to_owned()),
        (_, None) => *slot = None,
    }
}

/// Event data within [`MAX_DATA_BYTES`]: every string cut to
/// [`MAX_FIELD_BYTES`], members and elements past the budget or nested
/// deeper than eight levels dropped. Returns whether anything was cut.
pub(super) fn data(value: Value) -> (Value, bool) {
    let mut b = Budget {
        left: MAX_DATA_BYTES,
        cut: false,
    };
    let value = b.value(value, 0);
    (value, b.cut)
}

struct Budget {
    left: usize,
    cut: bool,
}

impl Budget {
    fn take(&mut self, n: usize) {
        self.left = self.left.saturating_sub(n);
    }

    fn string(&mut self, s: String) -> String {
        let max = MAX_FIELD_BYTES.min(self.left);
        let (kept, was_cut) = cut(&s, max);
        self.take(kept.len() + 2);
        if was_cut {
            self.cut = true;
            return kept.to_owned();
        }
        s
    }

    fn value(&mut self, value: Value, depth: usize) -> Value {
        match value {
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(items) if depth < MAX_DATA_DEPTH => {
                self.take(NODE_COST);
                let total = items.len();
                let mut out = Vec::new();
                for item in items {
                    if self.left < NODE_COST {
                        break;
                    }
                    out.push(self.value(item, depth + 1));
                }
                self.cut |= out.len() < total;
                Value::Array(out)
            }
            Value::Object(members) if depth < MAX_DATA_DEPTH => {
                self.take(NODE_COST);
                let total = members.len();
                let mut out = Map::new();
                for (key, v) in members {
                    if self.left < 2 * NODE_COST {
                        break;
                    }
                    let key = self.string(key);
                    let v = self.value(v, depth + 1);
                    out.insert(key, v);
                }
                self.cut |= out.len() < total;
                Value::Object(out)
            }
            Value::Array(_) | Value::Object(_) => {
                self.cut = true;
                self.take(NODE_COST);
                Value::Null
            }
            scalar => {
                self.take(NODE_COST);
                scalar
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn small_data_is_kept_as_it_is() {
        let v = json!({"order_id": "o-1", "amount": "10.00", "n": [1, 2.5, null, true]});
        assert_eq!(data(v.clone()), (v, false));
    }

    #[test]
    fn cuts_strings_at_a_char_boundary() {
        let s = "é".repeat(200); // 400 bytes
        let (kept, was_cut) = cut(&s, 255);
        assert!(was_cut);
        assert_eq!(kept.len(), 254);
        assert_eq!(cut("short", 255), ("short", false));
    }

    #[test]
    fn hostile_data_stays_within_its_budget() {
        let huge = "x".repeat(1_000_000);
        let mut deep = json!("bottom");
        for _ in 0..100 {
            deep = json!([deep]);
        }
        let wide: Map<String, Value> = (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect();
        for v in [
            json!({ "memo": huge }),
            json!({ huge.clone(): 1 }),
            json!([huge, huge, huge]),
            deep,
            Value::Object(wide),
            json!((0..100_000).collect::<Vec<_>>()),
        ] {
            let (kept, was_cut) = data(v);
            assert!(was_cut);
            let len = serde_json::to_vec(&kept).unwrap().len();
            assert!(len <= MAX_DATA_BYTES + 64, "{len} bytes kept");
        }
    }

    #[test]
    fn text_names_the_cut_field_and_reuses_the_slot() {
        let mut truncated = Vec::new();
        let mut slot = None;
        set_text(&mut slot, Some("o-1"), "order_id", &mut truncated);
        assert_eq!(slot.as_deref(), Some("o-1"));
        assert!(truncated.is_empty());
        let long = "o".repeat(1000);
        set_text(&mut slot, Some(&long), "order_id", &mut truncated);
        assert_eq!(slot.as_ref().map(String::len), Some(MAX_FIELD_BYTES));
        assert_eq!(truncated, ["order_id"]);
        set_text(&mut slot, Some("o-2"), "order_id", &mut truncated);
        assert_eq!(slot.as_deref(), Some("o-2"));
        set_text(&mut slot, None, "order_id", &mut truncated);
        assert_eq!(slot, None);
        assert_eq!(truncated, ["order_id"]);
    }
}
