//! Unit tests of the service, its future and bodies, on paused time.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tower::{ServiceExt, service_fn};

use super::*;
use crate::RequestLabels;

type Chunks = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;
type ChunkTx = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

fn grpc_request<B>(body: B) -> Request<B> {
    Request::builder()
        .uri("/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .body(body)
        .unwrap()
}

fn message(len: usize) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.extend(std::iter::repeat_n(b'x', len));
    v
}

/// A service answering with a body fed through the returned sender.
fn streaming_service(
    layer: StreamDeadlineLayer,
) -> (
    ChunkTx,
    impl tower::Service<
        Request<Empty<Bytes>>,
        Response = Response<DeadlineResponseBody<Chunks>>,
        Error = Infallible,
    >,
) {
    let (tx, rx) = mpsc::channel(8);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            move |_req: Request<DeadlineRequestBody<Empty<Bytes>>>| {
                let rx = rx.lock().unwrap().take().unwrap();
                async move {
                    Ok::<_, Infallible>(Response::new(StreamBody::new(ReceiverStream::new(rx))))
                }
            },
        ));
    (tx, svc)
}

#[tokio::test(start_paused = true)]
async fn response_expiry_at_a_boundary_ends_with_grpc_status_4_trailers() {
    let layer = StreamDeadlineLayer::new().response_message_timeout(Duration::from_millis(100));
    let stats = layer.stats();
    let (tx, svc) = streaming_service(layer);
    let res = svc.oneshot(grpc_request(Empty::new())).await.unwrap();
    let mut body = std::pin::pin!(res.into_body());
    let mut two = message(3);
    two.extend(message(0));
    tx.send(Ok(Frame::data(two.into()))).await.unwrap();
    let frame = body.as_mut().frame().await.unwrap().unwrap();
    assert_eq!(frame.data_ref().unwrap().len(), 13);
    // The inner body stalls: the deadline ends the stream with trailers.
    let frame = body.as_mut().frame().await.unwrap().unwrap();
    let trailers = frame.trailers_ref().expect("trailers");
    assert_eq!(trailers["grpc-status"], "4");
    assert_eq!(
        trailers["grpc-message"],
        "response message deadline exceeded"
    );
    assert!(body.as_mut().frame().await.is_none());
    assert!(body.is_end_stream());
    // The inner body was dropped: its sender sees the receiver gone.
    assert!(tx.is_closed());
    assert_eq!(
        stats.exceeded_for("/pkg.Svc/Method", Direction::Response, TimeoutKind::Message),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn response_expiry_inside_a_message_resets_the_stream() {
    let layer = StreamDeadlineLayer::new().response_message_timeout(Duration::from_millis(100));
    let (tx, svc) = streaming_service(layer);
    let res = svc.oneshot(grpc_request(Empty::new())).await.unwrap();
    let mut body = std::pin::pin!(res.into_body());
    let half = message(10)[..8].to_vec();
    tx.send(Ok(Frame::data(half.into()))).await.unwrap();
    body.as_mut().frame().await.unwrap().unwrap();
    let err = body
        .frame()
        .await
        .unwrap()
        .expect_err("reset, not trailers");
    let err = err
        .downcast_ref::<StreamDeadlineError>()
        .expect("our error");
    assert_eq!(err.direction(), Some(Direction::Response));
    assert_eq!(err.kind(), Some(TimeoutKind::Message));
    assert!(tx.is_closed());
}

#[tokio::test(start_paused = true)]
async fn drip_fed_response_past_its_deadline_is_reset_though_bytes_flow() {
    let layer = StreamDeadlineLayer::new().response_message_timeout(Duration::from_millis(100));
    let (tx, svc) = streaming_service(layer);
    let res = svc.oneshot(grpc_request(Empty::new())).await.unwrap();
    let mut body = std::pin::pin!(res.into_body());
    let wire = message(50);
    let mut failed_at = None;
    for (i, b) in wire.iter().enumerate() {
        tx.send(Ok(Frame::data(Bytes::copy_from_slice(&[*b]))))
            .await
            .unwrap();
        if let Err(e) = body.as_mut().frame().await.expect("not ended") {
            assert!(e.is::<StreamDeadlineError>());
            failed_at = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A byte every 10 ms: the frame that crosses the 100 ms deadline is
    // passed on, and the poll after it fails (a partial message: reset).
    let failed_at = failed_at.expect("the drip was cut off");
    assert!((10..=12).contains(&failed_at), "failed at byte {failed_at}");
}

#[tokio::test(start_paused = true)]
async fn expiry_before_the_response_starts_is_a_trailers_only_deadline_exceeded() {
    let layer = StreamDeadlineLayer::new().max_duration(Duration::from_millis(100));
    let stats = layer.stats();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |_req: Request<DeadlineRequestBody<Empty<Bytes>>>| async {
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            },
        ));
    let mut req = grpc_request(Empty::new());
    let labels = RequestLabels::get_or_insert(req.extensions_mut());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "4");
    assert_eq!(res.headers()["grpc-message"], "call deadline exceeded");
    assert!(res.into_body().is_end_stream());
    assert_eq!(
        labels.snapshot().rejection.unwrap().code,
        "deadline.exceeded"
    );
    assert_eq!(stats.exceeded(Direction::Call, TimeoutKind::Total), 1);
}

#[tokio::test(start_paused = true)]
async fn handler_read_fails_with_a_boxed_tonic_status() {
    let layer = StreamDeadlineLayer::new().request_message_timeout(Duration::from_millis(100));
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |req: Request<DeadlineRequestBody<Chunks>>| async move {
                let err = req.into_body().collect().await.expect_err("late");
                let status = err.downcast::<tonic::Status>().expect("a tonic::Status");
                assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            },
        ));
    let (tx, rx) = mpsc::channel(1);
    let body = StreamBody::new(ReceiverStream::new(rx));
    let res = svc.oneshot(grpc_request(body)).await.unwrap();
    // The handler answered after its read failed; the caller still gets
    // the deadline.
    assert_eq!(res.headers()["grpc-status"], "4");
    assert_eq!(
        res.headers()["grpc-message"],
        "request message deadline exceeded"
    );
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn half_close_stops_the_request_clock_and_idle_pauses_for_a_unary_handler() {
    let layer = StreamDeadlineLayer::new()
        .request_message_timeout(Duration::from_millis(100))
        .idle_timeout(Duration::from_millis(100));
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |req: Request<DeadlineRequestBody<http_body_util::Full<Bytes>>>| async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, Infallible>(Response::new(http_body_util::Full::new(body)))
            },
        ));
    let req = grpc_request(http_body_util::Full::new(Bytes::from(message(4))));
    let res = svc.oneshot(req).await.unwrap();
    assert!(res.headers().get("grpc-status").is_none());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 9);
}

#[tokio::test(start_paused = true)]
async fn oversized_prefix_fails_the_read_with_resource_exhausted() {
    let layer = StreamDeadlineLayer::new().max_message_bytes(16);
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |req: Request<DeadlineRequestBody<http_body_util::Full<Bytes>>>| async move {
                let err = req.into_body().collect().await.expect_err("too large");
                let status = err.downcast::<tonic::Status>().unwrap();
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            },
        ));
    // Only the prefix of a 17-byte message.
    let req = grpc_request(http_body_util::Full::new(Bytes::from(
        message(17)[..5].to_vec(),
    )));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "8");
}

#[tokio::test(start_paused = true)]
async fn stalled_http_request_body_is_a_408_only_when_asked() {
    let handler = |req: Request<DeadlineRequestBody<Chunks>>| async move {
        let _ = req.into_body().collect().await;
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    };
    let layer = StreamDeadlineLayer::new().request_message_timeout(Duration::from_millis(100));
    let (tx, rx) = mpsc::channel(1);
    let req = Request::new(StreamBody::new(ReceiverStream::new(rx)));
    let svc = tower::ServiceBuilder::new()
        .layer(layer.clone().apply_to_http(true))
        .service(service_fn(handler));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 408);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    drop(tx);

    // Not asked: the body is passed through untouched, however slow.
    let (tx, rx) = mpsc::channel(1);
    let req = Request::new(StreamBody::new(ReceiverStream::new(rx)));
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(handler));
    let call = tokio::spawn(svc.oneshot(req));
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(tx);
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn calls_without_any_deadline_pass_through_ungoverned() {
    let svc = tower::ServiceBuilder::new()
        .layer(StreamDeadlineLayer::new())
        .service(service_fn(
            |req: Request<DeadlineRequestBody<Empty<Bytes>>>| async move {
                assert!(format!("{:?}", req.body()).contains("governed: false"));
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            },
        ));
    let res = svc.oneshot(grpc_request(Empty::new())).await.unwrap();
    assert!(format!("{:?}", res.body()).contains("governed: false"));
}

#[tokio::test]
async fn malformed_grpc_timeout_is_refused_before_the_handler_runs() {
    let svc = tower::ServiceBuilder::new()
        .layer(StreamDeadlineLayer::new())
        .service(service_fn(
            |_req: Request<DeadlineRequestBody<Empty<Bytes>>>| async move {
                panic!("the handler must not run");
                #[allow(unreachable_code)]
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            },
        ));
    let mut req = grpc_request(Empty::new());
    req.headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("10 S"));
    let mut labels_req = req;
    let labels = RequestLabels::get_or_insert(labels_req.extensions_mut());
    let res = svc.oneshot(labels_req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "3");
    assert_eq!(
        labels.snapshot().rejection.unwrap().code,
        "deadline.invalid_grpc_timeout"
    );
}

/// `Duration::MAX` is a natural way to say "no limit" for every knob; a
/// body that pauses after its first byte made the idle clock add
/// `last_activity + idle` and panic (found by fuzzing).
#[tokio::test(start_paused = true)]
async fn duration_max_on_every_knob_means_no_limit_and_never_panics() {
    let max = Duration::MAX;
    let all = StreamDeadlineLayer::new()
        .request_message_timeout(max)
        .response_message_timeout(max)
        .idle_timeout(max)
        .max_duration(max)
        .max_grpc_timeout(max);
    let rows: &[(&str, StreamDeadlineLayer, Option<&'static str>)] = &[
        (
            "request message",
            StreamDeadlineLayer::new().request_message_timeout(max),
            None,
        ),
        (
            "response message",
            StreamDeadlineLayer::new().response_message_timeout(max),
            None,
        ),
        ("idle", StreamDeadlineLayer::new().idle_timeout(max), None),
        ("total", StreamDeadlineLayer::new().max_duration(max), None),
        (
            "grpc-timeout cap",
            StreamDeadlineLayer::new().max_grpc_timeout(max),
            Some("99999999H"),
        ),
        ("all", all.clone(), None),
        ("all, with grpc-timeout", all, Some("99999999H")),
    ];
    for (name, layer, grpc_timeout) in rows {
        let (res_tx, res_rx): (ChunkTx, _) = mpsc::channel(8);
        let res_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(res_rx)));
        let svc = tower::ServiceBuilder::new()
            .layer(layer.clone())
            .service(service_fn(
                move |req: Request<DeadlineRequestBody<Chunks>>| {
                    let res_rx = res_rx.lock().unwrap().take().unwrap();
                    async move {
                        let mut body = std::pin::pin!(req.into_body());
                        // The first byte, then a pause before answering.
                        let first = body.as_mut().frame().await.unwrap().unwrap();
                        assert_eq!(first.data_ref().unwrap().len(), 1);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Ok::<_, Infallible>(Response::new(StreamBody::new(ReceiverStream::new(
                            res_rx,
                        ))))
                    }
                },
            ));
        let (req_tx, req_rx) = mpsc::channel(8);
        let mut req = grpc_request(StreamBody::new(ReceiverStream::new(req_rx)));
        if let Some(t) = grpc_timeout {
            req.headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_static(t));
        }
        let call = tokio::spawn(svc.oneshot(req));
        // Bytes arrive only after the clocks started: `last_activity` > 0.
        tokio::time::sleep(Duration::from_millis(10)).await;
        req_tx
            .send(Ok(Frame::data(Bytes::copy_from_slice(&message(4)[..1]))))
            .await
            .unwrap();
        let res = call.await.expect(name).unwrap();
        assert!(res.headers().get("grpc-status").is_none(), "{name}");
        let mut body = std::pin::pin!(res.into_body());
        tokio::time::sleep(Duration::from_millis(10)).await;
        res_tx
            .send(Ok(Frame::data(Bytes::copy_from_slice(&message(4)[..1]))))
            .await
            .unwrap();
        let frame = body.as_mut().frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap().len(), 1, "{name}");
        // Both sides pause after their first byte: no deadline fires.
        let waited = tokio::time::timeout(Duration::from_secs(3600), body.as_mut().frame()).await;
        assert!(waited.is_err(), "{name}: the stream must stay open");
        drop(req_tx);
    }
}
