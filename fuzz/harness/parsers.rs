//! Small header and value parsers: each checked against a reference
//! grammar written out here, and round-tripped where it has a display form.

use std::time::Duration;

use finmesh::deadline::parse_grpc_timeout;
use finmesh::idempotency::{IdempotencyKey, MAX_KEY_LEN};
use finmesh::tenant::{InvalidNamespace, MAX_NAMESPACE_LEN, TenantNamespace};

#[allow(dead_code)] // the gateway uses more of it than the fuzzer does
#[path = "../../examples/gateway/amount.rs"]
mod amount;

/// `TenantNamespace::from_bytes` against the DNS-1123 label grammar;
/// a parsed namespace displays as its input and parses again to itself.
pub fn tenant_namespace(data: &[u8]) {
    let reference = !data.is_empty()
        && data.len() <= MAX_NAMESPACE_LEN
        && data
            .iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && data[0] != b'-'
        && data[data.len() - 1] != b'-';
    let parsed = TenantNamespace::from_bytes(data);
    assert_eq!(parsed.is_ok(), reference, "{data:?}: {parsed:?}");
    match parsed {
        Ok(ns) => {
            assert_eq!(ns.as_str().as_bytes(), data);
            assert_eq!(ns.to_string().as_bytes(), data);
            let shown = ns.to_string();
            let again = TenantNamespace::parse(&shown).unwrap();
            assert_eq!(again, ns);
            // Serde agrees with the parser.
            let json = serde_json::to_string(&ns).unwrap();
            assert_eq!(serde_json::from_str::<TenantNamespace>(&json).unwrap(), ns);
        }
        Err(e) => {
            // The error names a real position.
            if let InvalidNamespace::InvalidCharacter(at) = e {
                assert!(at < data.len());
                assert!(!matches!(data[at], b'a'..=b'z' | b'0'..=b'9' | b'-'));
            }
            assert!(!e.to_string().is_empty());
            if let Ok(s) = std::str::from_utf8(data) {
                assert!(TenantNamespace::parse(s).is_err());
                assert!(serde_json::from_value::<TenantNamespace>(s.into()).is_err());
            }
        }
    }
}

/// `parse_grpc_timeout` against the gRPC spec's grammar (1–8 digits and a
/// unit), and round-tripped through the value it denotes.
pub fn grpc_timeout(data: &[u8]) {
    let parsed = parse_grpc_timeout(data);
    let reference = (2..=9).contains(&data.len())
        && data[..data.len() - 1].iter().all(u8::is_ascii_digit)
        && matches!(
            data[data.len() - 1],
            b'H' | b'M' | b'S' | b'm' | b'u' | b'n'
        );
    assert_eq!(parsed.is_ok(), reference, "{data:?}: {parsed:?}");
    if let Ok(d) = parsed {
        let n: u64 = std::str::from_utf8(&data[..data.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        let expected = match data[data.len() - 1] {
            b'H' => Duration::from_secs(n * 3600),
            b'M' => Duration::from_secs(n * 60),
            b'S' => Duration::from_secs(n),
            b'm' => Duration::from_millis(n),
            b'u' => Duration::from_micros(n),
            _ => Duration::from_nanos(n),
        };
        assert_eq!(d, expected);
        // The shortest encoding of the same duration parses back to it.
        let text = format!("{n}{}", data[data.len() - 1] as char);
        assert_eq!(parse_grpc_timeout(text.as_bytes()), Ok(d));
    }
}

/// `IdempotencyKey::parse`: a key is 1–255 visible ASCII characters; a
/// bare key and its quoted, escaped form are the same key; the raw header
/// length is bounded.
pub fn idempotency_key(data: &[u8]) {
    let Ok(key) = IdempotencyKey::parse(data) else {
        return;
    };
    let s = key.as_str();
    assert!((1..=MAX_KEY_LEN).contains(&s.len()), "{s:?}");
    assert!(s.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{s:?}");
    // The structured-field string form of the key parses to the same key.
    let mut quoted = String::with_capacity(s.len() + 8);
    quoted.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    assert_eq!(IdempotencyKey::parse(quoted.as_bytes()).as_ref(), Ok(&key));
    // So does the bare token, when the key can be one.
    if !s.bytes().any(|b| matches!(b, b'"' | b',')) {
        assert_eq!(IdempotencyKey::parse(s.as_bytes()).as_ref(), Ok(&key));
        let parsed: IdempotencyKey = s.parse().unwrap();
        assert_eq!(parsed, key);
    }
}

/// The gateway's amount parser: a parsed amount displays as a decimal that
/// parses back to the same amount; the JSON number and JSON string forms
/// agree; and the accepted language is exactly `digits[.d[d]]`, positive,
/// at most 13 integer digits.
pub fn gateway_amount(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = amount::Amount::parse(text);
    let (major, minor) = match text.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let shape =
        digits(major) && major.len() <= 13 && minor.is_none_or(|m| digits(m) && m.len() <= 2);
    let reference = shape && {
        let m: u64 = major.parse().unwrap();
        let c: u64 = minor.map_or(0, |s| {
            let v: u64 = s.parse().unwrap();
            if s.len() == 1 { v * 10 } else { v }
        });
        Some(m * 100 + c).filter(|&c| c > 0)
    }
    .is_some();
    assert_eq!(parsed.is_ok(), reference, "{text:?}: {parsed:?}");
    let Ok(a) = parsed else {
        return;
    };
    let shown = a.to_string();
    assert_eq!(amount::Amount::parse(&shown), Ok(a), "{shown}");
    let raw = |s: &str| serde_json::from_str::<Box<serde_json::value::RawValue>>(s).unwrap();
    // As a JSON string it is the same amount; as a JSON number too (every
    // accepted text is a valid JSON number unless it has leading zeros).
    let as_string = serde_json::to_string(text).unwrap();
    assert_eq!(amount::Amount::from_json(&raw(&as_string)), Ok(a));
    if serde_json::from_str::<Box<serde_json::value::RawValue>>(text).is_ok() {
        assert_eq!(amount::Amount::from_json(&raw(text)), Ok(a));
    }
}
