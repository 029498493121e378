//! `StreamDeadlineLayer` on a real tonic server and real clients over
//! loopback: tonic for whole calls, a raw h2c client (hyper, `http2_only`)
//! where a test needs to control every DATA frame.

#![cfg(feature = "deadline")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use finmesh::deadline::{Deadlines, Direction, StreamDeadlineLayer, TimeoutKind};
use http::HeaderMap;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use support::*;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

const BIDI: &str = "/finmesh.test.v1.Echo/Bidi";
const UNARY: &str = "/finmesh.test.v1.Echo/Unary";

// ---------------------------------------------------------------------------
// A tracked Echo service: counts live handler tasks, records what the
// handler's reads failed with, and can stall or linger on demand.

#[derive(Clone, Default)]
struct Tracked {
    /// Handler tasks alive now.
    live: Arc<AtomicUsize>,
    /// What ended the handler early: the code its read failed with, or
    /// `Cancelled` when it found its response stream dropped (tonic ends
    /// a cancelled request stream as if half-closed; the dropped response
    /// stream is how a streaming handler learns the call is gone).
    read_errors: Arc<Mutex<Vec<Code>>>,
    /// Stall (until the response stream is dropped) instead of answering
    /// the nth message.
    stall_before: Option<u64>,
    /// After the client half-closes, wait this long, then send one more
    /// reply (`"done"`).
    after_close: Option<Duration>,
    /// How long a unary call takes.
    unary_delay: Duration,
    /// How long a bidi call takes to send its response head.
    head_delay: Duration,
    /// On a failed read, say nothing and hang on (until the response
    /// stream is dropped) instead of passing the error on.
    swallow_read_errors: bool,
}

/// Decrements the live-task count when the handler task ends, however.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn enter(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        Self(live.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type Replies =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<EchoReply, Status>> + Send>>;

fn reply(message: String, payload: Vec<u8>, seq: u64) -> EchoReply {
    EchoReply {
        message,
        payload,
        seq,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Echo for Tracked {
    async fn unary(
        &self,
        req: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoReply>, Status> {
        let _guard = LiveGuard::enter(&self.live);
        sleep(self.unary_delay).await;
        let m = req.into_inner();
        Ok(tonic::Response::new(reply(m.message, m.payload, 1)))
    }

    type BidiStream = Replies;

    async fn bidi(
        &self,
        req: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<Replies>, Status> {
        let this = self.clone();
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let guard = LiveGuard::enter(&this.live);
        tokio::spawn(async move {
            let _guard = guard;
            let mut seq = 0;
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        seq += 1;
                        if this.stall_before == Some(seq) {
                            // Stuck until the layer drops the response stream.
                            tx.closed().await;
                            return;
                        }
                        if tx.send(Ok(reply(m.message, m.payload, seq))).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        if let Some(delay) = this.after_close {
                            tokio::select! {
                                _ = sleep(delay) => {
                                    let done = reply("done".into(), Vec::new(), seq + 1);
                                    let _ = tx.send(Ok(done)).await;
                                }
                                _ = tx.closed() => {
                                    this.read_errors.lock().unwrap().push(Code::Cancelled);
                                }
                            }
                        }
                        return;
                    }
                    Err(status) => {
                        this.read_errors.lock().unwrap().push(status.code());
                        if this.swallow_read_errors {
                            tx.closed().await;
                            return;
                        }
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        sleep(self.head_delay).await;
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve(svc: Tracked, layer: StreamDeadlineLayer) -> TestServer {
    spawn(grpc_routes(svc).merge(http_app()).layer(layer)).await
}

/// HTTP routes for the non-gRPC tests: `/upload` reads the whole body,
/// `/trickle` answers one chunk and then stalls.
fn http_app() -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("got {}", body.len()) }),
        )
        .route(
            "/trickle",
            get(|| async {
                let chunks = async_stream_body();
                axum::body::Body::from_stream(chunks)
            }),
        )
}

fn async_stream_body() -> ReceiverStream<Result<Bytes, Infallible>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from_static(b"first chunk\n"))).await;
        // Holds the stream open, silent, until the layer drops it.
        tx.closed().await;
    });
    ReceiverStream::new(rx)
}

async fn wait_until_zero(live: &AtomicUsize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "{} handler task(s) still alive after 5 s",
            live.load(Ordering::SeqCst)
        );
        sleep(Duration::from_millis(5)).await;
    }
}

fn msg(i: usize, payload: usize) -> EchoRequest {
    EchoRequest {
        message: format!("m{i}"),
        payload: vec![7; payload],
    }
}

/// Opens a bidi call with tonic; returns the sender of request messages
/// and the reply stream.
async fn open_bidi(addr: SocketAddr) -> (mpsc::Sender<EchoRequest>, Streaming<EchoReply>) {
    let mut client = grpc_client(addr).await;
    let (tx, rx) = mpsc::channel(64);
    let replies = client
        .bidi(ReceiverStream::new(rx))
        .await
        .expect("bidi call starts")
        .into_inner();
    (tx, replies)
}

// ---------------------------------------------------------------------------
// A raw h2c client: every chunk sent is one DATA frame.

/// What a raw call saw.
#[derive(Debug, Default)]
struct RawAnswer {
    /// `grpc-status` from the trailers (or the headers, trailers-only).
    status: Option<String>,
    message: Option<String>,
    replies: Vec<EchoReply>,
    /// The stream was reset (the body failed).
    reset: bool,
    /// `finmesh-code`, from the trailers or a trailers-only head.
    code: Option<String>,
}

type FrameTx = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

async fn raw_call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (FrameTx, tokio::task::JoinHandle<RawAnswer>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(4096);
    let mut req = http::Request::post(format!("http://{addr}{path}")).header("te", "trailers");
    // A test may claim another content-type; the default is gRPC's.
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("content-type", "application/grpc");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(StreamBody::new(ReceiverStream::new(rx))).unwrap();
    let answer = tokio::spawn(async move {
        let res = sender.send_request(req).await.expect("response head");
        let (parts, body) = res.into_parts();
        let mut answer = RawAnswer {
            status: header(&parts.headers, "grpc-status"),
            message: header(&parts.headers, "grpc-message"),
            code: header(&parts.headers, finmesh::reject::CODE_METADATA),
            ..Default::default()
        };
        match body.collect().await {
            Ok(collected) => {
                if let Some(trailers) = collected.trailers() {
                    answer.status = header(trailers, "grpc-status");
                    answer.message = header(trailers, "grpc-message");
                    answer.code = header(trailers, finmesh::reject::CODE_METADATA);
                }
                answer.replies = decode_replies(&collected.to_bytes());
            }
            Err(_) => answer.reset = true,
        }
        drop(sender);
        answer
    });
    (tx, answer)
}

fn header(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(name).map(|v| v.to_str().unwrap().to_owned())
}

fn grpc_frame(m: &EchoRequest) -> Vec<u8> {
    let body = m.encode_to_vec();
    let mut v = vec![0];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend(body);
    v
}

fn decode_replies(mut bytes: &[u8]) -> Vec<EchoReply> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        out.push(EchoReply::decode(&bytes[5..5 + len]).unwrap());
        bytes = &bytes[5 + len..];
    }
    assert!(bytes.is_empty(), "a truncated message reached the client");
    out
}

async fn send(tx: &FrameTx, bytes: &[u8]) {
    let _ = tx
        .send(Ok(Frame::data(Bytes::copy_from_slice(bytes))))
        .await;
}

// ---------------------------------------------------------------------------
// Acceptance

#[tokio::test]
async fn thousands_of_messages_with_pauses_shorter_than_the_deadlines_complete() {
    let layer = StreamDeadlineLayer::new()
        .request_message_timeout(Duration::from_millis(400))
        .response_message_timeout(Duration::from_millis(400))
        .idle_timeout(Duration::from_secs(1))
        .max_duration(Duration::from_secs(60));
    let stats = layer.stats();
    let svc = Tracked::default();
    let server = serve(svc.clone(), layer).await;
    let (tx, mut replies) = open_bidi(server.addr).await;
    for i in 0..3000 {
        if i % 500 == 499 {
            sleep(Duration::from_millis(100)).await;
        }
        tx.send(msg(i, 1024)).await.unwrap();
        let r = replies.message().await.unwrap().unwrap();
        assert_eq!(r.message, format!("m{i}"));
        assert_eq!(r.payload.len(), 1024);
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none(), "ends with OK");
    assert_eq!(stats.exceeded_total(), 0);
    wait_until_zero(&svc.live).await;
    assert!(svc.read_errors.lock().unwrap().is_empty());
}

#[tokio::test]
async fn client_pause_longer_than_request_message_timeout_ends_the_call_with_deadline_exceeded() {
    let timeout = Duration::from_millis(200);
    let layer = StreamDeadlineLayer::new().request_message_timeout(timeout);
    let stats = layer.stats();
    let svc = Tracked::default();
    let server = serve(svc.clone(), layer).await;
    let (tx, mut replies) = open_bidi(server.addr).await;
    for i in 0..3 {
        tx.send(msg(i, 64)).await.unwrap();
        replies.message().await.unwrap().unwrap();
    }
    // The server completed the third message before it answered it, so
    // its clock started before this instant.
    let paused = Instant::now();
    let status = replies.message().await.expect_err("deadline exceeded");
    let elapsed = paused.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    eprintln!("DEADLINE_EXCEEDED {elapsed:?} after the pause began (timeout {timeout:?})");
    assert!(
        elapsed <= timeout + Duration::from_millis(50),
        "DEADLINE_EXCEEDED after {elapsed:?}, want ≤ timeout + 50 ms"
    );
    assert!(
        elapsed >= timeout - Duration::from_millis(20),
        "too early: {elapsed:?}"
    );
    wait_until_zero(&svc.live).await;
    assert_eq!(*svc.read_errors.lock().unwrap(), [Code::DeadlineExceeded]);
    assert_eq!(
        stats.exceeded_for(BIDI, Direction::Request, TimeoutKind::Message),
        1
    );
    drop(tx);
}

#[tokio::test]
async fn client_gets_deadline_exceeded_whatever_the_handler_does_after_its_read_failed() {
    let timeout = Duration::from_millis(150);
    let layer = StreamDeadlineLayer::new().request_message_timeout(timeout);
    let svc = Tracked {
        swallow_read_errors: true,
        ..Default::default()
    };
    let server = serve(svc.clone(), layer).await;
    let (tx, mut replies) = open_bidi(server.addr).await;
    tx.send(msg(0, 8)).await.unwrap();
    replies.message().await.unwrap().unwrap();
    let paused = Instant::now();
    // The handler swallows its failed read and waits forever: only the
    // layer can end the call, and dropping the handler's stream ends it.
    let status = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("the layer ends the call by itself")
        .expect_err("deadline exceeded");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "request message deadline exceeded");
    assert!(
        paused.elapsed() <= timeout + Duration::from_millis(50),
        "{:?}",
        paused.elapsed()
    );
    wait_until_zero(&svc.live).await;
    assert_eq!(*svc.read_errors.lock().unwrap(), [Code::DeadlineExceeded]);
    drop(tx);
}

#[tokio::test]
async fn handler_stalling_before_its_nth_response_sends_the_first_n_minus_1_then_deadline_exceeded()
{
    let layer = StreamDeadlineLayer::new().response_message_timeout(Duration::from_millis(200));
    let stats = layer.stats();
    let svc = Tracked {
        stall_before: Some(4),
        ..Default::default()
    };
    let server = serve(svc.clone(), layer).await;
    let (tx, mut replies) = open_bidi(server.addr).await;
    for i in 0..6 {
        tx.send(msg(i, 512)).await.unwrap();
    }
    for i in 0..3 {
        let r = replies.message().await.unwrap().unwrap();
        assert_eq!(
            (r.message.as_str(), r.seq),
            (format!("m{i}").as_str(), i as u64 + 1)
        );
        assert_eq!(r.payload.len(), 512, "intact");
    }
    let status = replies.message().await.expect_err("deadline exceeded");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "response message deadline exceeded");
    // The stalled handler ends because its response stream was dropped.
    wait_until_zero(&svc.live).await;
    assert_eq!(
        stats.exceeded_for(BIDI, Direction::Response, TimeoutKind::Message),
        1
    );
    drop(tx);
}

#[tokio::test]
async fn drip_fed_100_byte_message_under_the_deadline_succeeds() {
    let layer = StreamDeadlineLayer::new().request_message_timeout(Duration::from_secs(2));
    let svc = Tracked::default();
    let server = serve(svc.clone(), layer).await;
    let (tx, answer) = raw_call(server.addr, BIDI, &[]).await;
    let m = EchoRequest {
        message: String::new(),
        payload: vec![1; 98],
    };
    let wire = grpc_frame(&m);
    assert_eq!(wire.len(), 5 + 100, "a 100-byte message");
    for b in &wire {
        send(&tx, std::slice::from_ref(b)).await;
        sleep(Duration::from_millis(10)).await;
    }
    drop(tx);
    let answer = answer.await.unwrap();
    assert_eq!(answer.status.as_deref(), Some("0"), "{answer:?}");
    assert_eq!(answer.replies.len(), 1);
    assert_eq!(answer.replies[0].payload.len(), 98);
    wait_until_zero(&svc.live).await;
}

#[tokio::test]
async fn drip_fed_1kib_message_past_the_deadline_fails_though_bytes_keep_arriving() {
    let timeout = Duration::from_secs(2);
    let layer = StreamDeadlineLayer::new().request_message_timeout(timeout);
    let stats = layer.stats();
    let svc = Tracked::default();
    let server = serve(svc.clone(), layer).await;
    let (tx, answer) = raw_call(server.addr, BIDI, &[]).await;
    let m = EchoRequest {
        message: String::new(),
        payload: vec![1; 1021],
    };
    let wire = grpc_frame(&m);
    assert_eq!(wire.len(), 5 + 1024, "a 1 KiB message");
    let sent = Arc::new(AtomicUsize::new(0));
    let dripper = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for b in &wire {
                send(&tx, std::slice::from_ref(b)).await;
                sent.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let started = Instant::now();
    let answer = answer.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(answer.status.as_deref(), Some("4"), "{answer:?}");
    assert!(answer.replies.is_empty());
    // Dripping the whole message takes over 10 s; the call ended near the
    // deadline while bytes were still arriving.
    assert!(
        elapsed < timeout + Duration::from_millis(500),
        "{elapsed:?}"
    );
    let sent_by_then = sent.load(Ordering::SeqCst);
    assert!(
        (50..1029).contains(&sent_by_then),
        "{sent_by_then} bytes sent"
    );
    dripper.abort();
    wait_until_zero(&svc.live).await;
    assert_eq!(*svc.read_errors.lock().unwrap(), [Code::DeadlineExceeded]);
    assert_eq!(stats.exceeded(Direction::Request, TimeoutKind::Message), 1);
}

fn short_request_clock() -> StreamDeadlineLayer {
    StreamDeadlineLayer::new().request_message_timeout(Duration::from_millis(300))
}

#[tokio::test]
async fn several_messages_in_one_data_frame_are_several_messages() {
    let server = serve(Tracked::default(), short_request_clock()).await;
    let (tx, answer) = raw_call(server.addr, BIDI, &[]).await;
    let mut frame = grpc_frame(&msg(0, 10));
    frame.extend(grpc_frame(&EchoRequest::default()));
    frame.extend(grpc_frame(&msg(2, 300)));
    send(&tx, &frame).await;
    drop(tx);
    let answer = answer.await.unwrap();
    assert_eq!(answer.status.as_deref(), Some("0"), "{answer:?}");
    let seqs: Vec<u64> = answer.replies.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(answer.replies[2].payload.len(), 300);
}

#[tokio::test]
async fn a_message_split_across_frames_is_one_message() {
    let server = serve(Tracked::default(), short_request_clock()).await;
    let (tx, answer) = raw_call(server.addr, BIDI, &[]).await;
    let wire = grpc_frame(&msg(0, 600));
    for part in [&wire[..2], &wire[2..7], &wire[7..300], &wire[300..]] {
        send(&tx, part).await;
        sleep(Duration::from_millis(30)).await;
    }
    drop(tx);
    let answer = answer.await.unwrap();
    assert_eq!(answer.status.as_deref(), Some("0"), "{answer:?}");
    assert_eq!(answer.replies.len(), 1);
    assert_eq!(answer.replies[0].payload.len(), 600);
}

#[tokio::test]
async fn a_zero_length_message_is_a_message() {
    let server = serve(Tracked::default(), short_request_clock()).await;
    let (tx, answer) = raw_call(server.addr, BIDI, &[]).await;
    send(&tx, &[0, 0, 0, 0, 0]).await;
    // Every 200 ms another empty message keeps the 300 ms clock happy.
    sleep(Duration::from_millis(200)).await;
    send(&tx, &[0, 0, 0, 0, 0]).await;
    sleep(Duration::from_millis(200)).await;
    drop(tx);
    let answer = answer.await.unwrap();
    assert_eq!(answer.status.as_deref(), Some("0"), "{answer:?}");
    assert_eq!(answer.replies.len(), 2);
    assert_eq!(
        answer.replies[1],
        EchoReply {
            seq: 2,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn half_close_stops_the_request_clock() {
    let layer = StreamDeadlineLayer::new().request_message_timeout(Duration::from_millis(150));
    let stats = layer.stats();
    let svc = Tracked {
        after_close: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let server = serve(svc.clone(), layer).await;
    let (tx, mut replies) = open_bidi(server.addr).await;
    tx.send(msg(0, 8)).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().seq, 1);
    drop(tx);
    let done = replies.message().await.unwrap().unwrap();
    assert_eq!(done.message, "done");
    assert!(replies.message().await.unwrap().is_none(), "ends with OK");
    assert_eq!(stats.exceeded_total(), 0);
}

#[tokio::test]
async fn message_declaring_more_than_max_message_bytes_is_refused_before_its_bytes_arrive() {
    let layer = StreamDeadlineLayer::new().max_message_bytes(1024);
    let stats = layer.stats();
    let svc = Tracked::default();
    let server = serve(svc.clone(), layer).await;
    // Only the prefix: 1 MiB announced, not one byte of it sent.
    let (tx, answer) = raw_call(server.addr, BIDI, &[]).await;
    send(&tx, &[0, 0, 0x10, 0, 0]).await;
    let answer = answer.await.unwrap();
    assert_eq!(answer.status.as_deref(), Some("8"), "{answer:?}");
    assert_eq!(
        answer.message.as_deref(),
        Some("message larger than max_message_bytes")
    );
    assert_eq!(
        answer.code.as_deref(),
        Some("deadline.message_too_large"),
        "{answer:?}"
    );
    drop(tx);
    // The same through tonic.
    let (tx, mut replies) = open_bidi(server.addr).await;
    tx.send(msg(0, 100)).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().seq, 1);
    tx.send(msg(1, 2048)).await.unwrap();
    let status = replies.message().await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status
            .metadata()
            .get(finmesh::reject::CODE_METADATA)
            .and_then(|v| v.to_str().ok()),
        Some("deadline.message_too_large"),
        "{status:?}"
    );
    wait_until_zero(&svc.live).await;
    assert_eq!(stats.message_too_large(), 2);
    assert_eq!(stats.exceeded_total(), 0);
}

// ---------------------------------------------------------------------------
// grpc-timeout and the gRPC interop cases

#[tokio::test]
async fn malformed_grpc_timeout_is_invalid_argument() {
    let server = serve(Tracked::default(), StreamDeadlineLayer::new()).await;
    for bad in ["1s", "123456789m", "-5S", "S", "1.5S"] {
        let (tx, answer) = raw_call(server.addr, BIDI, &[("grpc-timeout", bad)]).await;
        drop(tx);
        let answer = answer.await.unwrap();
        assert_eq!(answer.status.as_deref(), Some("3"), "{bad}: {answer:?}");
    }
    // A valid one is accepted.
    let (tx, answer) = raw_call(server.addr, BIDI, &[("grpc-timeout", "5S")]).await;
    send(&tx, &grpc_frame(&msg(0, 1))).await;
    drop(tx);
    assert_eq!(answer.await.unwrap().status.as_deref(), Some("0"));
}

#[tokio::test]
async fn grpc_timeout_is_capped_by_the_configured_maximum() {
    let layer = StreamDeadlineLayer::new().max_grpc_timeout(Duration::from_millis(200));
    let stats = layer.stats();
    let svc = Tracked {
        stall_before: Some(1),
        ..Default::default()
    };
    let server = serve(svc.clone(), layer).await;
    let started = Instant::now();
    let (tx, answer) = raw_call(server.addr, BIDI, &[("grpc-timeout", "10S")]).await;
    send(&tx, &grpc_frame(&msg(0, 1))).await;
    let answer = answer.await.unwrap();
    assert_eq!(answer.status.as_deref(), Some("4"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "capped, not 10 s"
    );
    wait_until_zero(&svc.live).await;
    assert_eq!(stats.exceeded(Direction::Call, TimeoutKind::Total), 1);
    drop(tx);
}

/// gRPC interop `timeout_on_sleeping_server`: a full-duplex call with a
/// 1 ms deadline against a server that sleeps ends DEADLINE_EXCEEDED.
#[tokio::test]
async fn timeout_on_sleeping_server() {
    let layer = StreamDeadlineLayer::new();
    let svc = Tracked {
        stall_before: Some(1),
        ..Default::default()
    };
    let server = serve(svc.clone(), layer).await;
    // Raw: only the server's clock can end this call.
    let (tx, answer) = raw_call(server.addr, BIDI, &[("grpc-timeout", "1m")]).await;
    send(&tx, &grpc_frame(&msg(0, 27182))).await;
    let answer = answer.await.unwrap();
    assert_eq!(answer.status.as_deref(), Some("4"), "{answer:?}");
    drop(tx);
    // With tonic's client, which sends the header itself. (tonic's client
    // also times the response *head* with it and would report CANCELLED if
    // that lost the race; 100 ms lets the head through, then the server's
    // deadline ends the stream.)
    let mut client = grpc_client(server.addr).await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(msg(0, 27182)).await.unwrap();
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.set_timeout(Duration::from_millis(100));
    let status = match client.bidi(req).await {
        Ok(res) => res.into_inner().message().await.expect_err("deadline"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    wait_until_zero(&svc.live).await;
    drop(tx);
}

/// gRPC interop `cancel_after_begin`: the client cancels a call it just
/// started (drops it before the response head; hyper resets the stream
/// with CANCEL); the handler's read sees CANCELLED and nothing leaks.
#[tokio::test]
async fn cancel_after_begin() {
    let layer = StreamDeadlineLayer::new()
        .request_message_timeout(Duration::from_secs(10))
        .response_message_timeout(Duration::from_secs(10));
    let stats = layer.stats();
    let svc = Tracked {
        head_delay: Duration::from_secs(30),
        after_close: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let server = serve(svc.clone(), layer).await;
    let mut client = grpc_client(server.addr).await;
    let (tx, rx) = mpsc::channel::<EchoRequest>(4);
    let call = client.bidi(ReceiverStream::new(rx));
    let live = svc.live.clone();
    tokio::select! {
        _ = call => panic!("the head is delayed 30 s"),
        _ = async { while live.load(Ordering::SeqCst) == 0 { sleep(Duration::from_millis(1)).await } } => {}
    }
    // The call future is dropped here: the client cancelled.
    wait_until_zero(&svc.live).await;
    assert_eq!(*svc.read_errors.lock().unwrap(), [Code::Cancelled]);
    assert_eq!(stats.exceeded_total(), 0);
    drop(tx);
}

/// gRPC interop `cancel_after_first_response`: one message out, one reply
/// back, then the client drops the call; the handler sees it and nothing
/// leaks.
#[tokio::test]
async fn cancel_after_first_response() {
    let layer = StreamDeadlineLayer::new()
        .request_message_timeout(Duration::from_secs(10))
        .response_message_timeout(Duration::from_secs(10));
    let stats = layer.stats();
    let svc = Tracked {
        after_close: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let server = serve(svc.clone(), layer).await;
    let (tx, mut replies) = open_bidi(server.addr).await;
    tx.send(msg(0, 27182)).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().seq, 1);
    drop(replies);
    drop(tx);
    wait_until_zero(&svc.live).await;
    assert_eq!(*svc.read_errors.lock().unwrap(), [Code::Cancelled]);
    assert_eq!(stats.exceeded_total(), 0);
}

/// One message out, one reply back, then the client's connection goes away
/// with the stream open: the handler's read fails and nothing leaks.
#[tokio::test]
async fn client_connection_lost_mid_stream_ends_the_handler() {
    let layer = StreamDeadlineLayer::new()
        .request_message_timeout(Duration::from_secs(10))
        .response_message_timeout(Duration::from_secs(10));
    let stats = layer.stats();
    let svc = Tracked {
        after_close: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let server = serve(svc.clone(), layer).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let req = http::Request::post(format!("http://{}{BIDI}", server.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(ReceiverStream::new(rx)))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    send(&tx, &grpc_frame(&msg(0, 27182))).await;
    let mut body = res.into_body();
    let mut got = Vec::new();
    while got.len() < 5 + 27182 {
        let frame = body.frame().await.unwrap().unwrap();
        got.extend_from_slice(frame.data_ref().unwrap());
    }
    assert_eq!(decode_replies(&got)[0].seq, 1);
    // Cancel: the connection goes away with the stream still open.
    conn.abort();
    drop((body, sender, tx));
    wait_until_zero(&svc.live).await;
    let errors = svc.read_errors.lock().unwrap().clone();
    assert_eq!(
        errors.len(),
        1,
        "the handler saw the cancellation: {errors:?}"
    );
    assert_eq!(stats.exceeded_total(), 0);
}

#[tokio::test]
async fn unary_calls_are_bound_only_by_the_whole_call_deadline() {
    let short = Duration::from_millis(50);
    let per_message = Deadlines::new()
        .request_message_timeout(short)
        .response_message_timeout(short)
        .idle_timeout(short);
    let svc = Tracked {
        unary_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let layer = StreamDeadlineLayer::new().defaults(per_message);
    let stats = layer.stats();
    let server = serve(svc.clone(), layer).await;
    let mut client = grpc_client(server.addr).await;
    let r = client.unary(msg(0, 10)).await.expect("slow unary is fine");
    assert_eq!(r.into_inner().message, "m0");
    assert_eq!(stats.exceeded_total(), 0);

    // The same method with a whole-call deadline, as a per-method override.
    let layer = StreamDeadlineLayer::new()
        .defaults(per_message)
        .method(UNARY, per_message.max_duration(Duration::from_millis(100)));
    let stats = layer.stats();
    let server = serve(svc.clone(), layer).await;
    let mut client = grpc_client(server.addr).await;
    let started = Instant::now();
    let status = client.unary(msg(0, 10)).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_millis(290));
    assert_eq!(
        stats.exceeded_for(UNARY, Direction::Call, TimeoutKind::Total),
        1
    );
    wait_until_zero(&svc.live).await;
}

#[tokio::test]
async fn per_method_override_can_turn_deadlines_off() {
    let layer = StreamDeadlineLayer::new()
        .request_message_timeout(Duration::from_millis(100))
        .method(BIDI, Deadlines::new());
    let stats = layer.stats();
    let server = serve(Tracked::default(), layer).await;
    let (tx, mut replies) = open_bidi(server.addr).await;
    tx.send(msg(0, 1)).await.unwrap();
    replies.message().await.unwrap().unwrap();
    sleep(Duration::from_millis(300)).await;
    tx.send(msg(1, 1)).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().seq, 2);
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    assert_eq!(stats.exceeded_total(), 0);
}

#[tokio::test]
async fn idle_timeout_ends_a_silent_stream() {
    let layer = StreamDeadlineLayer::new().idle_timeout(Duration::from_millis(200));
    let stats = layer.stats();
    let svc = Tracked::default();
    let server = serve(svc.clone(), layer).await;
    let (tx, mut replies) = open_bidi(server.addr).await;
    for i in 0..3 {
        tx.send(msg(i, 1)).await.unwrap();
        replies.message().await.unwrap().unwrap();
        sleep(Duration::from_millis(120)).await;
    }
    let status = replies.message().await.expect_err("idle");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(status.message(), "stream idle timeout exceeded");
    wait_until_zero(&svc.live).await;
    assert_eq!(*svc.read_errors.lock().unwrap(), [Code::DeadlineExceeded]);
    assert_eq!(stats.exceeded(Direction::Call, TimeoutKind::Idle), 1);
    drop(tx);
}

// ---------------------------------------------------------------------------
// HTTP routes

async fn http1_streaming(
    url: &str,
    method: http::Method,
) -> (
    mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    tokio::task::JoinHandle<Result<(http::StatusCode, HeaderMap, Bytes), String>>,
) {
    let uri: http::Uri = url.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(16);
    let req = http::Request::builder()
        .method(method)
        .uri(uri.path())
        .header("host", "localhost")
        .body(StreamBody::new(ReceiverStream::new(rx)))
        .unwrap();
    let handle = tokio::spawn(async move {
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, body))
    });
    (tx, handle)
}

#[tokio::test]
async fn stalled_http_request_body_is_answered_408_when_configured() {
    let layer = StreamDeadlineLayer::new()
        .request_message_timeout(Duration::from_millis(200))
        .apply_to_http(true);
    let stats = layer.stats();
    let server = serve(Tracked::default(), layer).await;
    let (tx, res) = http1_streaming(&server.url("/upload"), http::Method::POST).await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"part one"))))
        .await
        .unwrap();
    let (status, headers, body) = res.await.unwrap().expect("an answer");
    assert_eq!(status, 408);
    assert_eq!(headers["content-type"], "application/problem+json");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "deadline.request_timeout");
    assert_eq!(stats.exceeded(Direction::Request, TimeoutKind::Message), 1);
    drop(tx);
}

/// Finding 1 of issue 14: a configured gRPC method gets its deadlines
/// whatever `content-type` the client claims — a client cannot escape
/// them by calling the method as "HTTP" (tonic serves the call anyway).
#[tokio::test]
async fn a_grpc_method_keeps_its_deadlines_whatever_content_type_the_client_claims() {
    let timeout = Duration::from_millis(200);
    let layer =
        StreamDeadlineLayer::new().method(BIDI, Deadlines::new().request_message_timeout(timeout));
    let stats = layer.stats();
    let svc = Tracked::default();
    let server = serve(svc.clone(), layer).await;
    let claims = [
        "application/json",
        "application/grpcx",
        "text/plain",
        "",
        "Application/GRPC",
    ];
    for (i, content_type) in claims.into_iter().enumerate() {
        let (tx, answer) = raw_call(server.addr, BIDI, &[("content-type", content_type)]).await;
        send(&tx, &grpc_frame(&msg(i, 8))).await;
        // ... and then nothing: the request clock must end the call.
        let answer = tokio::time::timeout(Duration::from_secs(3), answer)
            .await
            .unwrap_or_else(|_| panic!("{content_type:?}: no deadline ended the stalled call"))
            .unwrap();
        assert_eq!(
            answer.status.as_deref(),
            Some("4"),
            "{content_type:?}: {answer:?}"
        );
        assert_eq!(answer.replies.len(), 1, "{content_type:?}");
        drop(tx);
    }
    wait_until_zero(&svc.live).await;
    assert_eq!(
        stats.exceeded_for(BIDI, Direction::Request, TimeoutKind::Message),
        claims.len() as u64
    );
}

#[tokio::test]
async fn http_routes_are_untouched_unless_configured() {
    let layer = StreamDeadlineLayer::new().request_message_timeout(Duration::from_millis(100));
    let server = serve(Tracked::default(), layer).await;
    let (tx, res) = http1_streaming(&server.url("/upload"), http::Method::POST).await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
        .await
        .unwrap();
    sleep(Duration::from_millis(300)).await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"def"))))
        .await
        .unwrap();
    drop(tx);
    let (status, _, body) = res.await.unwrap().expect("an answer");
    assert_eq!(status, 200);
    assert_eq!(body, "got 6");
}

#[tokio::test]
async fn stalled_http_response_body_is_aborted_when_configured() {
    let layer = StreamDeadlineLayer::new()
        .response_message_timeout(Duration::from_millis(200))
        .apply_to_http(true);
    let stats = layer.stats();
    let server = serve(Tracked::default(), layer).await;
    let (tx, res) = http1_streaming(&server.url("/trickle"), http::Method::GET).await;
    drop(tx);
    let started = Instant::now();
    let err = res.await.unwrap().expect_err("aborted");
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    assert_eq!(stats.exceeded(Direction::Response, TimeoutKind::Message), 1);
}
