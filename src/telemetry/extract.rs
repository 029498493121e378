//! Reading W3C headers for the stock propagators, closing their gaps.
//!
//! The OpenTelemetry propagators parse `traceparent`, `tracestate` and
//! `baggage`; this module only decides *which bytes* they are shown:
//!
//! - `traceparent`: at most one header, and only when its fields have the
//!   W3C lengths (`2-32-16-2` hex digits, a `-` after the flags for future
//!   versions, exactly 55 characters for version `00`). The stock parser
//!   reads the ids with `from_str_radix`, which accepts a short id (or a
//!   `+` sign) and would continue a malformed parent; hiding the header
//!   makes such a request start a new trace, as the spec requires.
//! - `tracestate`: several headers are one list (RFC 9110 §5.3), joined
//!   with `,`.
//! - `baggage`: several headers are joined with `,`; a `=` inside a value
//!   is percent-encoded before the stock parser sees it (it splits on every
//!   `=` and would cut the value short); baggage over the W3C limit of
//!   8192 bytes is dropped as a whole — the request goes on without it.

use std::borrow::Cow;

use http::HeaderMap;
use opentelemetry::propagation::Extractor;

/// W3C baggage limit for the whole header value, in bytes.
pub(crate) const MAX_BAGGAGE_BYTES: usize = 8192;
/// W3C tracestate limit: 32 list members of at most 256 characters.
const MAX_TRACESTATE_BYTES: usize = 32 * 257;

/// What the extractor saw, beyond what the propagators return.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtractNotes {
    /// The baggage was over the size limit and was dropped.
    pub baggage_dropped: bool,
}

/// An [`Extractor`] over request headers that hands the propagators only
/// well-formed, combined header values.
#[derive(Debug)]
pub(crate) struct HeaderCarrier<'a> {
    headers: &'a HeaderMap,
    traceparent: Option<&'a str>,
    tracestate: Option<Cow<'a, str>>,
    baggage: Option<Cow<'a, str>>,
    pub(crate) notes: ExtractNotes,
}

impl<'a> HeaderCarrier<'a> {
    pub(crate) fn new(headers: &'a HeaderMap) -> Self {
        let mut notes = ExtractNotes::default();
        let traceparent = single(headers, "traceparent").filter(|tp| traceparent_shape_ok(tp));
        // A tracestate without a valid traceparent is meaningless (W3C §3.3).
        let tracestate = traceparent
            .and_then(|_| joined(headers, "tracestate", MAX_TRACESTATE_BYTES))
            .and_then(|ts| ts.ok())
            .filter(|ts| tracestate_list_ok(ts));
        let baggage = match joined(headers, "baggage", MAX_BAGGAGE_BYTES) {
            None => None,
            Some(Err(TooLarge)) => {
                notes.baggage_dropped = true;
                None
            }
            Some(Ok(raw)) => Some(encode_equals_in_values(raw)),
        };
        Self {
            headers,
            traceparent,
            tracestate,
            baggage,
            notes,
        }
    }
}

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate.as_deref(),
            "baggage" => self.baggage.as_deref(),
            _ => self.headers.get(key).and_then(|v| v.to_str().ok()),
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.headers.keys().map(|k| k.as_str()).collect()
    }
}

struct TooLarge;

/// The only value of `name`, when there is exactly one and it is text.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Every value of `name` joined with `,`; `Err` when over `limit` bytes.
/// Non-text values are skipped.
fn joined<'a>(
    headers: &'a HeaderMap,
    name: &str,
    limit: usize,
) -> Option<Result<Cow<'a, str>, TooLarge>> {
    let mut values = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty());
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(if first.len() > limit {
            Err(TooLarge)
        } else {
            Ok(Cow::Borrowed(first))
        });
    };
    let mut out = String::with_capacity(first.len() + second.len() + 1);
    for v in [first, second].into_iter().chain(values) {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(v);
        if out.len() > limit {
            return Some(Err(TooLarge));
        }
    }
    Some(Ok(Cow::Owned(out)))
}

/// Whether a `tracestate` list has at most 32 members and no key twice;
/// the W3C test harness expects such a list discarded, while the stock
/// parser would keep the first 32 members and the duplicates.
fn tracestate_list_ok(ts: &str) -> bool {
    let mut keys: Vec<&str> = Vec::new();
    for member in ts.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let key = member.split_once('=').map_or(member, |(k, _)| k).trim();
        if keys.len() == 32 || keys.contains(&key) {
            return false;
        }
        keys.push(key);
    }
    true
}

/// Whether a `traceparent` has the W3C field lengths. Hex digits, ranges
/// and the all-zero ids are left to the propagator; this only stops it
/// from accepting ids of the wrong length.
fn traceparent_shape_ok(tp: &str) -> bool {
    let b = tp.trim().as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if !(hex(0..2) && hex(3..35) && hex(36..52) && hex(53..55)) {
        return false;
    }
    match &b[0..2] {
        b"ff" => false,
        b"00" => b.len() == 55,
        // A future version may append fields, after a `-`.
        _ => b.len() == 55 || b[55] == b'-',
    }
}

/// Percent-encodes `=` inside baggage values (not in keys, not in
/// properties), so that `k=a=b` reaches the stock parser as `k=a%3Db` and
/// decodes to the value `a=b`. Falls back to the raw text if encoding would
/// push it over the size limit.
fn encode_equals_in_values(raw: Cow<'_, str>) -> Cow<'_, str> {
    let needs = raw.split(',').any(|member| {
        let kv = member.split(';').next().unwrap_or_default();
        kv.split_once('=').is_some_and(|(_, v)| v.contains('='))
    });
    if !needs {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 8);
    for (i, member) in raw.split(',').enumerate() {
        if i > 0 {
            out.push(',');
        }
        let (kv, props) = match member.find(';') {
            Some(at) => member.split_at(at),
            None => (member, ""),
        };
        match kv.split_once('=') {
            Some((k, v)) => {
                out.push_str(k);
                out.push('=');
                out.push_str(&v.replace('=', "%3D"));
            }
            None => out.push_str(kv),
        }
        out.push_str(props);
    }
    if out.len() > MAX_BAGGAGE_BYTES {
        raw
    } else {
        Cow::Owned(out)
    }
}

/// The W3C propagator: Trace Context and Baggage, composed — what to
/// give [`TelemetryLayerBuilder::propagator`](super::TelemetryLayerBuilder::propagator) and
/// [`PropagateLayer::propagator`](super::PropagateLayer::propagator), or to
/// `opentelemetry::global::set_text_map_propagator`.
pub fn w3c_propagator() -> opentelemetry::propagation::TextMapCompositePropagator {
    opentelemetry::propagation::TextMapCompositePropagator::new(vec![
        Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
        Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn traceparent_shapes() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert!(traceparent_shape_ok(ok));
        assert!(traceparent_shape_ok(
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-will-be-like"
        ));
        assert!(traceparent_shape_ok(
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        ));
        for bad in [
            "",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0.",
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01.what",
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        ] {
            assert!(!traceparent_shape_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn several_baggage_headers_are_joined_and_equals_encoded() {
        let mut h = HeaderMap::new();
        h.append("baggage", HeaderValue::from_static("a=1"));
        h.append("baggage", HeaderValue::from_static("b=x=y;p=q"));
        let c = HeaderCarrier::new(&h);
        assert_eq!(c.get("baggage"), Some("a=1,b=x%3Dy;p=q"));
        assert!(!c.notes.baggage_dropped);
    }

    #[test]
    fn oversized_baggage_is_dropped() {
        let mut h = HeaderMap::new();
        let big = format!("k={}", "v".repeat(MAX_BAGGAGE_BYTES));
        h.insert("baggage", HeaderValue::try_from(big).unwrap());
        let c = HeaderCarrier::new(&h);
        assert_eq!(c.get("baggage"), None);
        assert!(c.notes.baggage_dropped);
    }

    #[test]
    fn duplicated_traceparent_is_ignored_and_tracestate_needs_it() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut h = HeaderMap::new();
        h.append("traceparent", HeaderValue::from_static(tp));
        h.append("traceparent", HeaderValue::from_static(tp));
        h.append("tracestate", HeaderValue::from_static("a=1"));
        let c = HeaderCarrier::new(&h);
        assert_eq!(c.get("traceparent"), None);
        assert_eq!(c.get("tracestate"), None);
        h.remove("traceparent");
        h.insert("traceparent", HeaderValue::from_static(tp));
        h.append("tracestate", HeaderValue::from_static("b=2"));
        let c = HeaderCarrier::new(&h);
        assert_eq!(c.get("traceparent"), Some(tp));
        assert_eq!(c.get("tracestate"), Some("a=1,b=2"));
    }

    #[test]
    fn tracestate_with_duplicate_keys_or_too_many_members_is_discarded() {
        assert!(tracestate_list_ok("a=1, b=2,,c=3"));
        assert!(!tracestate_list_ok("foo=1,foo=2"));
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(tracestate_list_ok(&members(32)));
        assert!(!tracestate_list_ok(&members(33)));
    }
}
