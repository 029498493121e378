//! The canonical encoding of an [`AuditRecord`], written by hand: the
//! same bytes as its `serde_json` encoding (the definition, see the
//! record's docs), at a fraction of the cost on the writer thread.
//!
//! Strings without a byte JSON must escape (a quote, a backslash, a
//! control character) are copied as they are, which is exactly what
//! `serde_json` writes for them; every other string, every enum and every
//! JSON value goes through `serde_json` itself. Tests compare the two
//! encodings over hostile records, and the `audit_verify` fuzz target
//! re-checks them on every input.

use serde::Serialize;

use super::record::AuditRecord;

/// Appends the canonical encoding of `r` to `out`.
pub(super) fn canonical_into(r: &AuditRecord, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut w = Writer { out };
    w.raw(b"{\"seq\":");
    w.uint(r.seq);
    w.key(b"time");
    w.str(&r.time)?;
    w.key(b"kind");
    w.serde(&r.kind)?;
    w.key(b"event");
    w.opt_str(r.event.as_deref())?;
    w.key(b"trace_id");
    w.opt_str(r.trace_id.as_deref())?;
    w.key(b"order_id");
    w.opt_str(r.order_id.as_deref())?;
    w.key(b"tenant");
    w.opt_str(r.tenant.as_deref())?;
    w.key(b"subject");
    w.opt_str(r.subject.as_deref())?;
    if let Some(peer) = &r.peer {
        w.key(b"peer");
        w.str(peer)?;
    }
    w.key(b"risk");
    w.serde(&r.risk)?;
    w.key(b"method");
    w.opt_str(r.method.as_deref())?;
    w.key(b"route");
    w.opt_str(r.route.as_deref())?;
    w.key(b"verb");
    w.opt_str(r.verb.as_deref())?;
    w.key(b"resource");
    w.opt_str(r.resource.as_deref())?;
    w.key(b"name");
    w.opt_str(r.name.as_deref())?;
    w.key(b"decision");
    w.serde(&r.decision)?;
    w.key(b"code");
    w.opt_str(r.code.as_deref())?;
    w.key(b"binding");
    w.opt_str(r.binding.as_deref())?;
    w.key(b"shadow");
    w.bool(r.shadow);
    w.key(b"http_status");
    w.opt_uint(r.http_status.map(u64::from));
    w.key(b"grpc_status");
    match r.grpc_status {
        Some(s) if s >= 0 => w.uint(s.unsigned_abs().into()),
        other => w.serde(&other)?,
    }
    w.key(b"latency_us");
    w.opt_uint(r.latency_us);
    w.key(b"outcome");
    w.serde(&r.outcome)?;
    w.key(b"idempotency_key");
    w.opt_str(r.idempotency_key.as_deref())?;
    w.key(b"replayed");
    w.bool(r.replayed);
    w.key(b"data");
    w.serde(&r.data)?;
    if let Some(body) = &r.request_body {
        w.key(b"request_body");
        w.serde(body)?;
    }
    if let Some(body) = &r.response_body {
        w.key(b"response_body");
        w.serde(body)?;
    }
    if !r.truncated.is_empty() {
        w.key(b"truncated");
        w.serde(&r.truncated)?;
    }
    w.key(b"prev");
    w.str(&r.prev)?;
    w.raw(b"}");
    Ok(())
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn raw(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    /// `,"key":`
    fn key(&mut self, key: &[u8]) {
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, s: &str) -> serde_json::Result<()> {
        if needs_escape(s.as_bytes()) {
            return self.serde(s);
        }
        self.out.push(b'"');
        self.out.extend_from_slice(s.as_bytes());
        self.out.push(b'"');
        Ok(())
    }

    fn opt_str(&mut self, s: Option<&str>) -> serde_json::Result<()> {
        match s {
            Some(s) => self.str(s),
            None => {
                self.raw(b"null");
                Ok(())
            }
        }
    }

    fn uint(&mut self, mut v: u64) {
        let mut buf = [0u8; 20];
        let mut at = buf.len();
        loop {
            at -= 1;
            buf[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&buf[at..]);
    }

    fn opt_uint(&mut self, v: Option<u64>) {
        match v {
            Some(v) => self.uint(v),
            None => self.raw(b"null"),
        }
    }

    fn bool(&mut self, v: bool) {
        self.raw(if v { b"true" } else { b"false" });
    }

    fn serde<T: Serialize + ?Sized>(&mut self, v: &T) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *self.out, v)
    }
}

/// Whether JSON needs an escape for any byte of `b`: a quote, a backslash
/// or a control character (`serde_json` escapes nothing else). One pass
/// the compiler vectorises, no early exit.
fn needs_escape(b: &[u8]) -> bool {
    b.iter().fold(false, |any, &c| {
        any | (c < 0x20) | (c == b'"') | (c == b'\\')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(r: &AuditRecord) -> Vec<u8> {
        serde_json::to_vec(r).unwrap()
    }

    fn ours(r: &AuditRecord) -> Vec<u8> {
        let mut out = Vec::new();
        canonical_into(r, &mut out).unwrap();
        out
    }

    fn record(strings: &str) -> AuditRecord {
        let s = Some(strings.to_owned());
        serde_json::from_value(serde_json::json!({
            "seq": u64::MAX, "time": strings, "kind": "request",
            "event": s, "trace_id": s, "order_id": s, "tenant": s,
            "subject": s, "peer": s, "risk": "high", "method": s, "route": s, "verb": s,
            "resource": s, "name": s, "decision": "deny", "code": s,
            "binding": s, "shadow": true, "http_status": 65535, "grpc_status": -7,
            "latency_us": 0, "outcome": "body_dropped", "idempotency_key": s,
            "replayed": true, "data": {"z": [1.5, strings, null], "a": {}},
            "request_body": {"base64": strings}, "response_body": strings,
            "truncated": [strings, "route"], "prev": strings, "hash": ""
        }))
        .unwrap()
    }

    #[test]
    fn the_hand_encoding_is_the_serde_encoding() {
        let strings = [
            "",
            "plain ascii / slash",
            "quote \" backslash \\ end",
            "controls \u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} del \u{7f}",
            "unicode é ü 漢字 \u{2028} \u{2029} 🦀",
            "\"",
            "\\",
            "\u{1f}",
        ];
        for s in strings {
            let full = record(s);
            assert_eq!(ours(&full), serde(&full), "{s:?}");
            // Every optional member absent.
            let mut empty = full.clone();
            empty.event = None;
            empty.trace_id = None;
            empty.order_id = None;
            empty.tenant = None;
            empty.subject = None;
            empty.peer = None;
            empty.risk = None;
            empty.method = None;
            empty.route = None;
            empty.verb = None;
            empty.resource = None;
            empty.name = None;
            empty.decision = None;
            empty.code = None;
            empty.binding = None;
            empty.shadow = false;
            empty.http_status = None;
            empty.grpc_status = Some(i32::MIN);
            empty.latency_us = None;
            empty.outcome = None;
            empty.idempotency_key = None;
            empty.replayed = false;
            empty.data = None;
            empty.request_body = None;
            empty.response_body = None;
            empty.truncated.clear();
            empty.seq = 0;
            assert_eq!(ours(&empty), serde(&empty), "{s:?}");
            empty.grpc_status = None;
            assert_eq!(ours(&empty), serde(&empty), "{s:?}");
            empty.grpc_status = Some(16);
            assert_eq!(ours(&empty), serde(&empty), "{s:?}");
        }
    }

    #[test]
    fn escapes_are_needed_exactly_where_serde_escapes() {
        for b in 0..=0x7fu8 {
            let s = String::from(char::from(b));
            let escaped = serde_json::to_string(&s).unwrap() != format!("\"{s}\"");
            assert_eq!(needs_escape(s.as_bytes()), escaped, "byte {b:#04x}");
        }
    }
}
