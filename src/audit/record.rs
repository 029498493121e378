//! [`AuditRecord`], its canonical encoding and hash, and RFC 3339 time.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::principal::RiskLevel;

/// The `prev` of the first record of a chain: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Length of the `,"hash":"<64 hex>"}` suffix every line ends with
/// (before its newline).
pub(crate) const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// What a record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// One governed request, written when its response is known.
    Request,
    /// An event a handler appended (`PREPARE`, `COMMIT`, …).
    Event,
}

/// The verdict of a request record: did the governance layers let it
/// through? (Written as the record's `decision` field; not to be confused
/// with `rbac::Decision`, one RBAC check's answer.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No layer refused it (an RBAC shadow-mode deny is also `allow`,
    /// with `shadow: true`).
    Allow,
    /// A layer refused it; `code` says which and why.
    Deny,
}

/// How the response of a request record ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The response body was sent to its end.
    Complete,
    /// The response head was sent, but the body was dropped before its end
    /// (the client went away mid-stream).
    BodyDropped,
    /// The response body failed mid-stream.
    BodyError,
    /// The request was dropped before its response was known (the client
    /// cancelled; the server shut down).
    Cancelled,
    /// The inner service returned an error instead of a response.
    ServiceError,
}

/// One line of the audit log.
///
/// # Canonical encoding and hash
///
/// The **canonical encoding** of a record is its `serde_json` encoding
/// *without* the `hash` member: one JSON object, no whitespace, the members
/// in exactly the order of this struct's fields (`seq` first, `prev` last),
/// every member always present (`null` for an absent value, never
/// omitted) but `request_body` and `response_body`, omitted when absent,
/// `truncated`, omitted when empty, and `peer`, omitted when absent;
/// strings escaped
/// by `serde_json`. `Serialize` for this type
/// produces exactly that encoding (it skips `hash`).
///
/// `hash` is the lowercase hex SHA-256 of the canonical encoding. A log
/// line is the canonical encoding with its closing `}` replaced by
/// `,"hash":"<hash>"}`, then `\n`. The verifier therefore re-hashes the
/// exact bytes on disk (the line minus its hash member) and never
/// re-serializes parsed values, so number or key-order normalisation can
/// never make a faithful record look tampered, or the reverse.
///
/// `prev` is the `hash` of the record before it, or [`GENESIS`] for the
/// first record; `seq` counts up by one from 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuditRecord {
    /// Position in the chain, from 1, contiguous.
    pub seq: u64,
    /// When the record was decided: RFC 3339, UTC, microseconds
    /// (`2026-11-25T02:24:40.123456Z`).
    pub time: String,
    /// Request or handler event.
    pub kind: RecordKind,
    /// The event name (`PREPARE`), for handler events.
    pub event: Option<String>,
    /// W3C trace id.
    pub trace_id: Option<String>,
    /// Business order id.
    pub order_id: Option<String>,
    /// Tenant namespace.
    pub tenant: Option<String>,
    /// Verified subject.
    pub subject: Option<String>,
    /// The SPIFFE ID of the mutually authenticated peer the request came
    /// from (the `mtls` feature). Omitted when absent, so records without
    /// one encode as records did before it existed, and older logs verify
    /// unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Verified risk level.
    pub risk: Option<RiskLevel>,
    /// HTTP method.
    pub method: Option<String>,
    /// Route template or gRPC method when a layer labelled one, else the
    /// request path.
    pub route: Option<String>,
    /// RBAC verb.
    pub verb: Option<String>,
    /// RBAC resource (with subresource).
    pub resource: Option<String>,
    /// RBAC resource name.
    pub name: Option<String>,
    /// Allow or deny (request records); the JSON key is `decision`.
    pub decision: Option<Verdict>,
    /// The rejection code, when a layer refused (`rbac.denied`).
    pub code: Option<String>,
    /// The RBAC binding that allowed the request.
    pub binding: Option<String>,
    /// Whether the RBAC decision was only recorded (shadow mode).
    pub shadow: bool,
    /// HTTP status of the response.
    pub http_status: Option<u16>,
    /// gRPC status: from the trailers, or from the headers of a
    /// trailers-only response.
    pub grpc_status: Option<i32>,
    /// Time from the request entering the audit layer to the record, in
    /// microseconds.
    pub latency_us: Option<u64>,
    /// How the response ended (request records).
    pub outcome: Option<Outcome>,
    /// The idempotency key.
    pub idempotency_key: Option<String>,
    /// Whether the response was replayed from the idempotency store.
    pub replayed: bool,
    /// The handler's event payload.
    pub data: Option<serde_json::Value>,
    /// The request body, when the audit policy gave the request level
    /// `Request` or `RequestResponse`: the JSON itself (at most 32 levels
    /// deep, with redacted fields replaced), else the text, or
    /// `{"base64": …}` when it is not UTF-8, cut at the layer's body cap
    /// (then named in `truncated`); with redaction on, a body that is not
    /// whole JSON is only a marker with its size. Omitted when absent, so `Metadata` records
    /// encode as records did before audit policies, and older logs parse
    /// and verify unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<serde_json::Value>,
    /// The response body, at level `RequestResponse`; as `request_body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<serde_json::Value>,
    /// The fields cut to their bound (`order_id`, `route`, `data`, …):
    /// what the caller sent was longer. See
    /// [`MAX_FIELD_BYTES`](super::MAX_FIELD_BYTES) and
    /// [`MAX_DATA_BYTES`](super::MAX_DATA_BYTES). The one member omitted
    /// when empty, so a record with nothing cut encodes as records did
    /// before it existed, and older logs parse and verify unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
    /// Hash of the previous record ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 of the canonical encoding, lowercase hex.
    #[serde(skip_serializing)]
    pub hash: String,
}

impl AuditRecord {
    /// A record with nothing set but `prev`, for the writer to fill.
    pub(crate) fn blank(prev: String) -> Self {
        Self {
            seq: 0,
            time: String::with_capacity(32),
            kind: RecordKind::Event,
            event: None,
            trace_id: None,
            order_id: None,
            tenant: None,
            subject: None,
            peer: None,
            risk: None,
            method: None,
            route: None,
            verb: None,
            resource: None,
            name: None,
            decision: None,
            code: None,
            binding: None,
            shadow: false,
            http_status: None,
            grpc_status: None,
            latency_us: None,
            outcome: None,
            idempotency_key: None,
            replayed: false,
            data: None,
            request_body: None,
            response_body: None,
            truncated: Vec::new(),
            prev,
            hash: String::with_capacity(64),
        }
    }

    /// The canonical encoding (see the type docs).
    pub fn canonical(&self) -> Vec<u8> {
        // A request record is 500-900 bytes: one allocation, not the
        // half-dozen reallocations of growing from empty (each of which
        // takes the allocator's lock the request threads want too).
        let mut out = Vec::with_capacity(1024);
        // Serializing a struct of strings, numbers, enums and a `Value`
        // into a Vec cannot fail.
        match super::encode::canonical_into(self, &mut out) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Computes `hash` from the canonical encoding and returns the log
    /// line (with its trailing newline).
    pub fn seal(&mut self) -> Vec<u8> {
        let mut line = Vec::with_capacity(1024);
        self.seal_into(&mut line);
        line
    }

    /// [`seal`](Self::seal) into `line`, replacing what it held: the
    /// writer seals every record into one buffer.
    pub(crate) fn seal_into(&mut self, line: &mut Vec<u8>) {
        line.clear();
        // Serializing a struct of strings, numbers, enums and a `Value`
        // into a Vec cannot fail.
        if super::encode::canonical_into(self, line).is_err() {
            line.clear();
        }
        sha256_hex_into(line, &mut self.hash);
        line.pop(); // the closing '}'
        line.reserve(HASH_SUFFIX_LEN + 1);
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(self.hash.as_bytes());
        line.extend_from_slice(b"\"}\n");
    }
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(64);
    sha256_hex_into(bytes, &mut out);
    out
}

/// [`sha256_hex`] into `out`, replacing what it held.
pub(crate) fn sha256_hex_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    out.clear();
    for b in digest {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// Splits a line (without its newline) into the canonical encoding it was
/// hashed over and the recorded hash; `None` when it does not end with a
/// well-formed hash member.
pub(crate) fn split_hash(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    if line.len() < HASH_SUFFIX_LEN + 2 || line.first() != Some(&b'{') {
        return None;
    }
    let (head, suffix) = line.split_at(line.len() - HASH_SUFFIX_LEN);
    let hex = suffix.strip_prefix(b",\"hash\":\"")?.strip_suffix(b"\"}")?;
    if !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut canonical = Vec::with_capacity(head.len() + 1);
    canonical.extend_from_slice(head);
    canonical.push(b'}');
    // The hex digits were checked to be ASCII.
    Some((canonical, std::str::from_utf8(hex).ok()?))
}

/// What the chain needs of a sealed line — its `seq`, `prev` and, for a
/// gap declaration, `kind` and `event` — read without building the rest.
///
/// Security: every other member is skipped, and serde_json skips without
/// a depth limit, so a record nested deeper than the parser's 128 levels
/// (a request body written by an older version, say) can never stop
/// verification, torn-tail repair or shipping: its hash still decides.
#[derive(Debug, Deserialize)]
pub(crate) struct ChainLink {
    pub(crate) seq: u64,
    pub(crate) prev: String,
    pub(crate) kind: RecordKind,
    #[serde(default)]
    pub(crate) event: Option<String>,
}

impl ChainLink {
    /// Reads a line (without its newline).
    pub(crate) fn parse(line: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// Formats `t` as RFC 3339 UTC with microseconds
/// (`1970-01-01T00:00:00.000000Z`). Times before the epoch print as the
/// epoch: a clock that far wrong is not worth a panic.
pub fn rfc3339(t: SystemTime) -> String {
    let mut out = String::with_capacity(32);
    rfc3339_into(t, &mut out);
    out
}

/// [`rfc3339`] into `out`, replacing what it held.
pub(crate) fn rfc3339_into(t: SystemTime, out: &mut String) {
    out.clear();
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    if y > 9999 {
        let _ = write!(
            out,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            d.subsec_micros()
        );
        return;
    }
    // Digit by digit into a fixed buffer: `core::fmt` costs the writer
    // thread thirty times as much per record.
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(day));
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 6, u64::from(d.subsec_micros()));
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&b).unwrap_or_default());
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (y, m, d)
/// in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_table() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 0, "2000-02-29T00:00:00.000000Z"),
            (1_709_164_799, 999_999, "2024-02-28T23:59:59.999999Z"),
            (1_709_251_200, 0, "2024-03-01T00:00:00.000000Z"),
            (1_798_761_599, 1, "2026-12-31T23:59:59.000001Z"),
            (4_102_444_800, 0, "2100-01-01T00:00:00.000000Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
            (253_402_300_800, 7, "10000-01-01T00:00:00.000007Z"),
        ];
        for (secs, micros, want) in cases {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            assert_eq!(rfc3339(t), want, "{secs}");
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn peer_is_omitted_when_absent_so_old_records_encode_unchanged() {
        let mut record = sample();
        let without = String::from_utf8(record.canonical()).unwrap();
        assert!(!without.contains("\"peer\""), "{without}");
        record.peer = Some("spiffe://finmesh.demo/ns/a/sa/b".into());
        let with = String::from_utf8(record.canonical()).unwrap();
        assert!(
            with.contains("\"subject\":\"alice \\\"the\\\" payer\\n\",\"peer\":\"spiffe://finmesh.demo/ns/a/sa/b\""),
            "{with}"
        );
        let line = record.seal();
        let parsed: AuditRecord = serde_json::from_slice(&line[..line.len() - 1]).unwrap();
        assert_eq!(parsed, record);
    }

    fn sample() -> AuditRecord {
        AuditRecord {
            seq: 1,
            time: "2026-01-01T00:00:00.000000Z".into(),
            event: Some("PREPARE".into()),
            order_id: Some("o-1".into()),
            subject: Some("alice \"the\" payer\n".into()),
            risk: Some(RiskLevel::High),
            data: Some(serde_json::json!({"z": 1.5, "a": [1, 2]})),
            ..AuditRecord::blank(GENESIS.into())
        }
    }

    #[test]
    fn canonical_encoding_has_fixed_order_and_explicit_nulls() {
        let r = sample();
        let c = String::from_utf8(r.canonical()).unwrap();
        assert!(c.starts_with("{\"seq\":1,\"time\":\"2026-01-01T00:00:00.000000Z\",\"kind\":\"event\",\"event\":\"PREPARE\",\"trace_id\":null,"), "{c}");
        assert!(c.ends_with(&format!(",\"prev\":\"{GENESIS}\"}}")), "{c}");
        assert!(!c.contains("\"hash\""));
        assert!(!c.contains('\n'));
    }

    #[test]
    fn sealed_line_round_trips_and_hash_covers_exact_bytes() {
        let mut r = sample();
        let line = r.seal();
        assert_eq!(*line.last().unwrap(), b'\n');
        let body = &line[..line.len() - 1];
        let (canonical, hash) = split_hash(body).unwrap();
        assert_eq!(hash, r.hash);
        assert_eq!(sha256_hex(&canonical), r.hash);
        assert_eq!(canonical, r.canonical());
        let parsed: AuditRecord = serde_json::from_slice(body).unwrap();
        assert_eq!(parsed, r);
        // Known-answer check of the hex encoding.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn truncated_is_omitted_when_empty_and_round_trips_when_not() {
        let mut r = sample();
        let plain = String::from_utf8(r.canonical()).unwrap();
        assert!(!plain.contains("truncated"), "{plain}");
        r.truncated = vec!["order_id".into(), "data".into()];
        let line = r.seal();
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            text.contains(&format!(
                ",\"truncated\":[\"order_id\",\"data\"],\"prev\":\"{GENESIS}\""
            )),
            "{text}"
        );
        let parsed: AuditRecord = serde_json::from_slice(&line[..line.len() - 1]).unwrap();
        assert_eq!(parsed, r);
    }

    #[test]
    fn split_hash_refuses_malformed_suffixes() {
        for bad in [
            &b""[..],
            b"{}",
            b"{\"seq\":1,\"hash\":\"XYZ\"}",
            b"{\"seq\":1,\"hash\":\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015AD\"}",
            b"[\"seq\",1,\"hash\":\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"}",
        ] {
            assert!(split_hash(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
