//! The loopback harness itself: one port, HTTP/1.1 and h2c gRPC, real
//! clients, unary and bidi-streaming calls.

mod support;

use support::*;

#[tokio::test]
async fn serves_http1_and_grpc_unary_on_one_port() {
    let server = spawn(echo_app()).await;

    let res = get(&server.url("/ok"), &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "ok");
    let res = get(&server.url("/v1/accounts/a1"), &[]).await;
    assert_eq!(res.json()["path"], "/v1/accounts/a1");

    let mut client = grpc_client(server.addr).await;
    let reply = client
        .unary(EchoRequest {
            message: "grüß dich".into(),
            payload: vec![1, 2, 3],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.message, "grüß dich");
    assert_eq!(&reply.payload[..], &[1, 2, 3]);
    server.shutdown().await;
}

#[tokio::test]
async fn round_trips_a_bidi_stream() {
    let server = spawn(echo_app()).await;
    let mut client = grpc_client(server.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..100u64 {
        tx.send(EchoRequest {
            message: format!("m{i}"),
            payload: vec![0; 1024],
        })
        .await
        .unwrap();
        let reply = replies.message().await.unwrap().unwrap();
        assert_eq!(reply.message, format!("m{i}"));
        assert_eq!(reply.seq, i + 1);
        assert_eq!(reply.payload.len(), 1024);
    }
    drop(tx);
    assert!(
        replies.message().await.unwrap().is_none(),
        "stream ends after half-close"
    );
    server.shutdown().await;
}
