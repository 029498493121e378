//! gRPC framing and `StreamDeadlineLayer`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;
use finmesh::deadline::{
    DeadlineRequestBody, Deadlines, FrameEvent, GrpcFrameDecoder, StreamDeadlineLayer,
    parse_grpc_timeout,
};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::Sleep;
use tower::{Layer, ServiceExt, service_fn};

/// Every event of `bytes` fed in one piece.
fn events_whole(bytes: &[u8]) -> (Vec<FrameEvent>, bool) {
    let mut d = GrpcFrameDecoder::new();
    let mut buf = bytes;
    let mut events = Vec::new();
    while let Some(e) = d.next_event(&mut buf) {
        events.push(e);
    }
    assert!(buf.is_empty());
    (events, d.is_mid_message())
}

/// The gRPC frame decoder: the same events, and the same `Fed` totals,
/// whatever the split points; the events agree with a direct reading of
/// the length prefixes.
pub fn grpc_frames(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let splits: Vec<u16> = u.arbitrary().unwrap_or_default();
    let bytes = u.take_rest();
    let (whole, mid) = events_whole(bytes);

    // Reference: walk the prefixes directly.
    let mut expected = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        if bytes.len() - at < 5 {
            break;
        }
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        expected.push(FrameEvent::Prefix {
            compressed: bytes[at] & 1 == 1,
            len,
        });
        at += 5;
        if bytes.len() - at < len as usize {
            at = bytes.len() + 1;
            break;
        }
        at += len as usize;
        expected.push(FrameEvent::Message);
    }
    assert_eq!(whole, expected);
    assert_eq!(
        mid,
        at != bytes.len(),
        "mid-message after {} bytes",
        bytes.len()
    );

    // The same bytes split at fuzzed points, event by event and with `feed`.
    let mut d = GrpcFrameDecoder::new();
    let mut fed = GrpcFrameDecoder::new();
    let mut events = Vec::new();
    let (mut messages, mut max_declared) = (0usize, None::<u32>);
    let mut rest = bytes;
    let mut splits = splits.into_iter();
    while !rest.is_empty() {
        let n = splits
            .next()
            .map_or(rest.len(), |s| usize::from(s) % (rest.len() + 1));
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let mut buf = chunk;
        while let Some(e) = d.next_event(&mut buf) {
            events.push(e);
        }
        assert!(buf.is_empty());
        let f = fed.feed(chunk);
        messages += f.messages;
        max_declared = max_declared.max(f.max_declared);
    }
    assert_eq!(events, whole);
    assert_eq!(d.is_mid_message(), mid);
    assert_eq!(fed, d);
    assert_eq!(
        messages,
        whole.iter().filter(|e| **e == FrameEvent::Message).count()
    );
    let declared = whole
        .iter()
        .filter_map(|e| match e {
            FrameEvent::Prefix { len, .. } => Some(*len),
            FrameEvent::Message => None,
        })
        .max();
    assert_eq!(max_declared, declared);
}

/// A body that yields its chunks after the given pauses, then trailers.
struct Script {
    steps: VecDeque<(Duration, Bytes)>,
    trailers: Option<HeaderMap>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Body for Script {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some(&(pause, _)) = self.steps.front() else {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        };
        if !pause.is_zero() {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(pause)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        let (_, chunk) = self.steps.pop_front().unwrap_or_default();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// Bytes for a body: gRPC messages (mostly well framed) or raw bytes,
/// cut into chunks with pauses between them.
fn script(u: &mut Unstructured<'_>, grpc_status: bool) -> (Script, Vec<u8>) {
    let mut bytes = Vec::new();
    if u.ratio(3, 4u8).unwrap_or(true) {
        for _ in 0..u.int_in_range(0..=4u8).unwrap_or(0) {
            let n = usize::from(u.int_in_range(0..=24u8).unwrap_or(0));
            let payload: &[u8] = u.bytes(n).unwrap_or_default();
            bytes.push(u.int_in_range(0..=1u8).unwrap_or(0));
            let declared = if u.ratio(1, 16u8).unwrap_or(false) {
                u.arbitrary::<u32>().unwrap_or(0)
            } else {
                payload.len() as u32
            };
            bytes.extend_from_slice(&declared.to_be_bytes());
            bytes.extend_from_slice(payload);
        }
    } else {
        let n = usize::from(u.int_in_range(0..=64u8).unwrap_or(0));
        let raw: &[u8] = u.bytes(n).unwrap_or_default();
        bytes.extend_from_slice(raw);
    }
    let mut steps = VecDeque::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() && steps.len() < 12 {
        let n = usize::from(u.int_in_range(1..=16u8).unwrap_or(16)).min(rest.len());
        let pause = Duration::from_millis(u64::from(u.int_in_range(0..=250u8).unwrap_or(0)));
        steps.push_back((pause, Bytes::copy_from_slice(&rest[..n])));
        rest = &rest[n..];
    }
    if !rest.is_empty() {
        steps.push_back((Duration::ZERO, Bytes::copy_from_slice(rest)));
    }
    let trailers = grpc_status.then(|| {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        t
    });
    (
        Script {
            steps,
            trailers,
            sleep: None,
        },
        bytes,
    )
}

fn timeout(u: &mut Unstructured<'_>) -> Option<Duration> {
    match u.int_in_range(0..=7u8).unwrap_or(0) {
        0..=2 => None,
        3 => Some(Duration::ZERO),
        4 => Some(Duration::MAX),
        5 => Some(Duration::new(u64::MAX, 0)),
        _ => Some(Duration::from_millis(u64::from(
            u.int_in_range(1..=400u16).unwrap_or(50),
        ))),
    }
}

fn deadlines(u: &mut Unstructured<'_>) -> Deadlines {
    let mut d = Deadlines::new();
    if let Some(t) = timeout(u) {
        d = d.request_message_timeout(t);
    }
    if let Some(t) = timeout(u) {
        d = d.response_message_timeout(t);
    }
    if let Some(t) = timeout(u) {
        d = d.idle_timeout(t);
    }
    if let Some(t) = timeout(u) {
        d = d.max_duration(t);
    }
    if let Some(t) = timeout(u) {
        d = d.max_grpc_timeout(t);
    }
    if u.ratio(1, 4u8).unwrap_or(false) {
        d = d.max_message_bytes(u.int_in_range(0..=40u32).unwrap_or(0));
    }
    d
}

/// `StreamDeadlineLayer` on a scripted call (paused Tokio time, so every
/// timeout is exact and instant): fuzzed deadlines (including
/// `Duration::MAX`), route, content-type, `grpc-timeout`, request and
/// response bodies and pauses. Checked: no panic and no hang; the handler
/// sees a prefix of what was sent and the client a prefix of what the
/// handler produced; a stream the layer ends with DEADLINE_EXCEEDED in
/// trailers ends at a message boundary; a malformed `grpc-timeout` on a
/// gRPC call is INVALID_ARGUMENT before the handler runs; with no clock at
/// all, everything arrives.
pub fn stream_deadline(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let defaults = deadlines(&mut u);
    let mut layer = StreamDeadlineLayer::new().defaults(defaults);
    let mut any_clock = defaults != Deadlines::new();
    if u.ratio(1, 3u8).unwrap_or(false) {
        let d = deadlines(&mut u);
        any_clock |= d != Deadlines::new();
        layer = layer.method("/fuzz.v1.Stream/Call", d);
    }
    if u.arbitrary::<bool>().unwrap_or(false) {
        layer = layer.grpc_service("fuzz.v1.Stream");
    }
    let http = u.arbitrary::<bool>().unwrap_or(false);
    layer = layer.apply_to_http(http);
    let path = *u
        .choose(&[
            "/fuzz.v1.Stream/Call",
            "/fuzz.v1.Stream/Other",
            "/v1/upload",
        ])
        .unwrap_or(&"/v1/upload");
    let grpc_ct = u.arbitrary::<bool>().unwrap_or(false);
    let grpc_timeout: Option<Vec<u8>> = match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 => None,
        1 => Some(format!("{}m", u.int_in_range(0..=500u16).unwrap_or(0)).into_bytes()),
        2 => Some(b"99999999H".to_vec()),
        _ => {
            let n = usize::from(u.int_in_range(0..=10u8).unwrap_or(0));
            Some(u.bytes(n).unwrap_or_default().to_vec())
        }
    };
    let reads_body = u.ratio(7, 8u8).unwrap_or(true);
    let handler_pause = Duration::from_millis(u64::from(u.int_in_range(0..=300u16).unwrap_or(0)));
    let (req_body, sent) = script(&mut u, false);
    let (res_body, produced) = script(&mut u, true);

    let mut req = Request::builder().method("POST").uri(path);
    if grpc_ct {
        req = req.header("content-type", "application/grpc");
    }
    let grpc_timeout_valid = match &grpc_timeout {
        Some(v) => match http::HeaderValue::from_bytes(v) {
            Ok(v) => {
                req = req.header("grpc-timeout", v.clone());
                Some(parse_grpc_timeout(v.as_bytes()).is_ok())
            }
            Err(_) => None,
        },
        None => None,
    };
    let req = req.body(req_body).unwrap();

    let seen = Arc::new(Mutex::new((false, Vec::<u8>::new())));
    let seen2 = Arc::clone(&seen);
    let res_body = Mutex::new(Some(res_body));
    let svc = layer.layer(service_fn(
        move |req: Request<DeadlineRequestBody<Script>>| {
            let seen = Arc::clone(&seen2);
            let body = res_body.lock().unwrap().take();
            async move {
                seen.lock().unwrap().0 = true;
                let mut req_body = std::pin::pin!(req.into_body());
                if reads_body {
                    while let Some(Ok(frame)) = req_body.as_mut().frame().await {
                        if let Ok(data) = frame.into_data() {
                            seen.lock().unwrap().1.extend_from_slice(&data);
                        }
                    }
                }
                tokio::time::sleep(handler_pause).await;
                Ok::<_, Infallible>(Response::new(body.unwrap()))
            }
        },
    ));

    let outcome = super::runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(24 * 3600), async {
            let res = svc.oneshot(req).await.unwrap();
            let (parts, body) = res.into_parts();
            let mut body = std::pin::pin!(body);
            let mut received = Vec::new();
            let mut trailers = None;
            let mut errored = false;
            while let Some(frame) = body.as_mut().frame().await {
                match frame {
                    Ok(f) => match f.into_data() {
                        Ok(d) => received.extend_from_slice(&d),
                        Err(f) => trailers = f.into_trailers().ok(),
                    },
                    Err(_) => {
                        errored = true;
                        break;
                    }
                }
            }
            (parts, received, trailers, errored)
        })
        .await
    });
    let (parts, received, trailers, errored) = outcome.expect("the call never ended");
    let (handler_ran, handler_saw) = seen.lock().unwrap().clone();

    assert!(
        sent.starts_with(&handler_saw),
        "the handler saw bytes that were not sent"
    );
    let gated = grpc_ct || path.starts_with("/fuzz.v1.Stream/");
    if grpc_ct && grpc_timeout_valid == Some(false) {
        assert_eq!(
            parts.headers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
        assert!(
            !handler_ran,
            "the handler ran despite a malformed grpc-timeout"
        );
        return;
    }
    // A trailers-only or HTTP rejection carries the layer's own body.
    let rejected = parts.headers.contains_key("grpc-status") || parts.status != 200;
    if !rejected {
        assert!(
            produced.starts_with(&received),
            "the client got bytes the handler did not send"
        );
    }
    if let Some(t) = &trailers
        && t.get("grpc-status").map(|v| v.as_bytes()) == Some(b"4")
    {
        let (_, mid) = events_whole(&received);
        assert!(!mid, "DEADLINE_EXCEEDED after a partial message");
    }
    let clocks = any_clock || (gated && grpc_timeout.is_some());
    if !clocks {
        assert!(!rejected && !errored, "a call without deadlines was cut");
        assert_eq!(received, produced);
        if reads_body {
            assert_eq!(handler_saw, sent);
        }
    }
}
