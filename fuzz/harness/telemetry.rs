//! W3C `traceparent`, `tracestate` and `baggage` extraction, through
//! `TelemetryLayer` (server) and `PropagateLayer` (the outgoing calls a
//! handler makes inside the request's context).

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use finmesh::telemetry::{PropagateLayer, TelemetryLayer, w3c_propagator};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::Full;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower::{Layer, ServiceExt, service_fn};

const NAMES: [&str; 4] = ["traceparent", "tracestate", "baggage", "order-id"];

fn provider() -> &'static SdkTracerProvider {
    static P: OnceLock<SdkTracerProvider> = OnceLock::new();
    P.get_or_init(|| SdkTracerProvider::builder().build())
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The W3C Trace Context rules for a `traceparent` the receiver may
/// continue: version 00 exactly 55 characters, a future version at least
/// that with a `-` after the flags, lowercase hex, no all-zero ids, never
/// version `ff`. Returns the trace id.
fn valid_traceparent(tp: &str) -> Option<&str> {
    let tp = tp.trim_matches([' ', '\t']);
    if tp.len() < 55 || !tp.is_char_boundary(55) {
        return None;
    }
    let (version, trace, parent, flags) = (&tp[0..2], &tp[3..35], &tp[36..52], &tp[53..55]);
    let dashes = tp.as_bytes()[2] == b'-' && tp.as_bytes()[35] == b'-' && tp.as_bytes()[52] == b'-';
    let ok = dashes
        && is_hex(version)
        && is_hex(trace)
        && is_hex(parent)
        && is_hex(flags)
        && version != "ff"
        && trace.bytes().any(|c| c != b'0')
        && parent.bytes().any(|c| c != b'0')
        && (tp.len() == 55 || (version != "00" && tp.as_bytes()[55] == b'-'));
    ok.then_some(trace)
}

/// A `tracestate` a sender may send: 1 to 32 `key=value` members with
/// W3C keys and values, no key twice.
fn valid_tracestate(ts: &str) -> bool {
    let members: Vec<&str> = ts.split(',').collect();
    let mut keys = Vec::new();
    (1..=32).contains(&members.len())
        && members.iter().all(|m| {
            let Some((k, v)) = m.split_once('=') else {
                return false;
            };
            let kb = k.as_bytes();
            let key_ok = (1..=256).contains(&kb.len())
                && matches!(kb[0], b'a'..=b'z' | b'0'..=b'9')
                && kb.iter().all(
                    |c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'),
                );
            let vb = v.as_bytes();
            let value_ok = (1..=256).contains(&vb.len())
                && vb
                    .iter()
                    .all(|c| matches!(c, b' '..=b'~') && *c != b',' && *c != b'=')
                && vb.last() != Some(&b' ');
            let new = !keys.contains(&k);
            keys.push(k);
            key_ok && value_ok && new
        })
}

/// The input is header lines: a first byte choosing the name
/// (`traceparent`, `tracestate`, `baggage`, `order-id`) and the value up
/// to `\n`. The handler makes two outgoing calls. Checked: each call
/// carries one well-formed `traceparent`, of the incoming trace exactly
/// when the incoming `traceparent` was valid, with its own parent id; a
/// `tracestate` only on a continued trace and only a valid one; and never
/// the caller's `user_risk_level` baggage (it is not verified).
pub fn trace_context(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n').take(16) {
        let Some((&which, value)) = line.split_first() else {
            continue;
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(NAMES[usize::from(which) % NAMES.len()], v);
        }
    }
    let incoming: Vec<HeaderValue> = headers.get_all("traceparent").iter().cloned().collect();
    let continued = match incoming.as_slice() {
        [one] => one
            .to_str()
            .ok()
            .and_then(valid_traceparent)
            .map(str::to_owned),
        _ => None,
    };

    let sent: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let sent2 = Arc::clone(&sent);
    let client = PropagateLayer::new()
        .propagator(w3c_propagator())
        .layer(service_fn(move |req: Request<Full<Bytes>>| {
            sent2.lock().unwrap().push(req.headers().clone());
            async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) }
        }));
    let handler = service_fn(move |_req: Request<Full<Bytes>>| {
        let client = client.clone();
        async move {
            for _ in 0..2 {
                let out = Request::get("http://127.0.0.1:1/next")
                    .body(Full::default())
                    .unwrap();
                let _ = client.clone().oneshot(out).await;
            }
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }
    });
    let svc = TelemetryLayer::builder()
        .tracer_provider(provider())
        .propagator(w3c_propagator())
        .build()
        .layer(handler);
    let mut req = Request::get("/fuzz")
        .body(Full::<Bytes>::default())
        .unwrap();
    *req.headers_mut() = headers;
    let res = super::runtime().block_on(svc.oneshot(req)).unwrap();
    let sent = sent.lock().unwrap();
    if res.status() != 200 {
        assert!(sent.is_empty());
        return;
    }
    assert_eq!(sent.len(), 2);
    let mut parents = Vec::new();
    for out in sent.iter() {
        let tps: Vec<_> = out.get_all("traceparent").iter().collect();
        assert_eq!(tps.len(), 1, "{out:?}");
        let tp = tps[0].to_str().unwrap();
        let trace =
            valid_traceparent(tp).unwrap_or_else(|| panic!("sent an invalid traceparent {tp:?}"));
        assert_eq!(&tp[..2], "00");
        match &continued {
            Some(t) => assert_eq!(trace, t, "a valid traceparent was not continued"),
            None => assert!(
                incoming.is_empty()
                    || incoming
                        .iter()
                        .all(|v| { v.to_str().ok().and_then(valid_traceparent) != Some(trace) }),
                "an invalid traceparent was continued: {incoming:?}"
            ),
        }
        parents.push(tp[36..52].to_owned());
        // The stock propagator writes an empty `tracestate` when there is
        // none; an empty header means no list (W3C: same as absent).
        for ts in out.get_all("tracestate").iter().filter(|v| !v.is_empty()) {
            let ts = ts.to_str().unwrap();
            assert!(continued.is_some(), "tracestate {ts:?} on a new trace");
            assert!(valid_tracestate(ts), "sent an invalid tracestate {ts:?}");
        }
        for b in out.get_all("baggage") {
            let b = b.to_str().unwrap();
            assert!(
                !b.split(',').any(|m| {
                    let key = m.split(['=', ';']).next().unwrap_or_default();
                    key.trim_matches([' ', '\t']) == "user_risk_level"
                }),
                "the caller's risk level was passed on: {b:?}"
            );
        }
    }
    assert_ne!(
        parents[0], parents[1],
        "two outgoing calls share a parent id"
    );
}
