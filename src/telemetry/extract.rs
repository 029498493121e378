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
//!   with `,`, then checked against the W3C grammar: a member with an
//!   illegal key or an empty or illegal value, or more than 32 members,
//!   discards the whole list; a key seen twice keeps its first (most
//!   recent) value. The stock `TraceState` parser gets these wrong in both
//!   directions: it keeps empty values and duplicates and silently cuts
//!   the list at 32, yet refuses keys the current grammar allows
//!   (`foo@@bar`, a vendor part of 14 or more characters). The checked
//!   list is kept beside the span context (see [`W3cTraceState`]) so that
//!   [`PropagateLayer`](super::PropagateLayer) carries it on even when the
//!   stock parser refused it.
//! - `baggage`: several headers are joined with `,`; a `=` inside a value
//!   is percent-encoded before the stock parser sees it (it splits on every
//!   `=` and would cut the value short); baggage over the W3C limit of
//!   8192 bytes is dropped as a whole — the request goes on without it.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};
use opentelemetry::propagation::Extractor;

/// W3C baggage limit for the whole header value, in bytes.
pub(crate) const MAX_BAGGAGE_BYTES: usize = 8192;
/// W3C tracestate limit: 32 list members.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest tracestate considered: 32 members of a 256-character key and a
/// 256-character value, with their `=` and `,`.
const MAX_TRACESTATE_BYTES: usize = MAX_TRACESTATE_MEMBERS * (256 + 1 + 256 + 1);

/// The `tracestate` a server request continued, as checked here, kept in
/// the OpenTelemetry [`Context`](opentelemetry::Context) beside the span
/// context of the same trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct W3cTraceState {
    /// The trace the list belongs to.
    pub trace_id: opentelemetry::trace::TraceId,
    /// The list, normalised (`k=v,k=v`).
    pub header: String,
}

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
    tracestate: Option<String>,
    baggage: Option<Cow<'a, str>>,
    pub(crate) notes: ExtractNotes,
}

// Looked up as names, not strings: a `&str` key is parsed into a header
// name on every lookup.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static BAGGAGE: HeaderName = HeaderName::from_static("baggage");

impl<'a> HeaderCarrier<'a> {
    pub(crate) fn new(headers: &'a HeaderMap) -> Self {
        let mut notes = ExtractNotes::default();
        let traceparent = single(headers, &TRACEPARENT).filter(|tp| traceparent_shape_ok(tp));
        // A tracestate without a valid traceparent is meaningless (W3C §3.3).
        let tracestate = traceparent
            .and_then(|_| joined(headers, &TRACESTATE, MAX_TRACESTATE_BYTES))
            .and_then(|ts| ts.ok())
            .and_then(|ts| checked_tracestate(&ts));
        let baggage = match joined(headers, &BAGGAGE, MAX_BAGGAGE_BYTES) {
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

impl HeaderCarrier<'_> {
    /// The checked `tracestate` shown to the propagator, if any.
    pub(crate) fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
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
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
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
    name: &HeaderName,
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

/// The `tracestate` list normalised (`k=v,k=v`, first value of a key
/// kept), or `None` when the W3C grammar says to discard it: a member
/// without `=`, an illegal key or value, or more than 32 members. Empty
/// members (`a=1,,b=2`) are allowed and dropped.
fn checked_tracestate(ts: &str) -> Option<String> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    let mut count = 0;
    for member in ts.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if member.is_empty() {
            continue;
        }
        count += 1;
        let (key, value) = member.split_once('=')?;
        if count > MAX_TRACESTATE_MEMBERS || !tracestate_key_ok(key) || !tracestate_value_ok(value)
        {
            return None;
        }
        // The spec lets a vendor drop duplicates; the left-most is the
        // most recent, so it is the one kept.
        if !members.iter().any(|(k, _)| *k == key) {
            members.push((key, value));
        }
    }
    if members.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(ts.len());
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Some(out)
}

/// W3C: `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`, with
/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`. This also
/// admits every Level 1 key (`tenant@vendor`).
fn tracestate_key_ok(key: &str) -> bool {
    let b = key.as_bytes();
    let Some((first, rest)) = b.split_first() else {
        return false;
    };
    b.len() <= 256
        && matches!(first, b'a'..=b'z' | b'0'..=b'9')
        && rest
            .iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'))
}

/// W3C: `value = 0*255(chr) nblk-chr`: 1 to 256 printable ASCII
/// characters other than `,` and `=`, not ending in a space.
fn tracestate_value_ok(value: &str) -> bool {
    let b = value.as_bytes();
    (1..=256).contains(&b.len())
        && b.iter()
            .all(|c| matches!(c, b' '..=b'~') && *c != b',' && *c != b'=')
        && b.last() != Some(&b' ')
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
    fn tracestate_rows() {
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let key256 = "z".repeat(256);
        let vendor_14 = format!("{}@{}", "t".repeat(241), "v".repeat(14));
        let tenant_242 = format!("{}@v", "t".repeat(242));
        let vendor_15 = format!("t@{}", "v".repeat(15));
        let value256 = "v".repeat(256);
        let all_value_chars: String = (0x20u8..=0x7e)
            .filter(|c| *c != b',' && *c != b'=')
            .map(char::from)
            .collect();
        // (tracestate, what is kept)
        let should_pass: Vec<(String, String)> = vec![
            ("foo=1".into(), "foo=1".into()),
            (" a=1 ,\tb=2,,c=3 ".into(), "a=1,b=2,c=3".into()),
            ("foo=1,foo=1".into(), "foo=1".into()),
            ("foo=1,bar=2,foo=2".into(), "foo=1,bar=2".into()),
            ("foo@=1,bar=2".into(), "foo@=1,bar=2".into()),
            ("foo@@bar=1,bar=2".into(), "foo@@bar=1,bar=2".into()),
            ("foo@bar@baz=1,bar=2".into(), "foo@bar@baz=1,bar=2".into()),
            ("1tenant@vendor=1".into(), "1tenant@vendor=1".into()),
            ("0=1".into(), "0=1".into()),
            ("a_-*/z=1".into(), "a_-*/z=1".into()),
            (format!("{key256}=1"), format!("{key256}=1")),
            (format!("{vendor_14}=1"), format!("{vendor_14}=1")),
            (format!("{tenant_242}=1"), format!("{tenant_242}=1")),
            (format!("{vendor_15}=1"), format!("{vendor_15}=1")),
            (format!("k={value256}"), format!("k={value256}")),
            (
                format!("k={all_value_chars}"),
                format!("k={all_value_chars}"),
            ),
            ("k=a b".into(), "k=a b".into()),
            ("k= 1".into(), "k= 1".into()),
            (members(32), members(32)),
        ];
        for (ts, kept) in &should_pass {
            assert_eq!(checked_tracestate(ts).as_ref(), Some(kept), "{ts:?}");
        }
        let should_fail: Vec<String> = vec![
            "".into(),
            " , ".into(),
            "foo".into(),
            "foo=".into(),
            "foo=,bar=3".into(),
            "foo=bar=baz".into(),
            "foo=1,bar".into(),
            "@foo=1,bar=2".into(),
            "Foo=1".into(),
            "_foo=1".into(),
            "fo o=1".into(),
            "foo =1".into(),
            "foo=a\tb".into(),
            "foo=\u{e9}".into(),
            "foo=a\u{7f}".into(),
            format!("{}=1", "z".repeat(257)),
            format!("k={}", "v".repeat(257)),
            members(33),
        ];
        for ts in &should_fail {
            assert_eq!(checked_tracestate(ts), None, "{ts:?}");
        }
    }

    #[test]
    fn several_tracestate_headers_are_one_list_checked_as_a_whole() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for (headers, kept) in [
            (&["foo=1", "foo=2"][..], Some("foo=1")),
            (&["foo=1", "bar=,x=1"][..], None),
            (&["foo=1", "@bar=1"][..], None),
        ] {
            let mut h = HeaderMap::new();
            h.insert("traceparent", HeaderValue::from_static(tp));
            for v in headers {
                h.append("tracestate", HeaderValue::from_static(v));
            }
            let c = HeaderCarrier::new(&h);
            assert_eq!(c.get("tracestate"), kept, "{headers:?}");
        }
    }
}
