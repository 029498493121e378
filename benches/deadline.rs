//! `StreamDeadlineLayer`: bidi throughput over loopback with and without
//! the layer (same run, same tonic server and client), and the frame
//! decoder's cost per message.
//!
//! `cargo bench --bench deadline -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use finmesh::deadline::{GrpcFrameDecoder, StreamDeadlineLayer};
use support::{EchoClient, EchoRequest, TestServer, echo_app, grpc_client, spawn};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Messages per bidi call (one call per iteration).
const MESSAGES: usize = 256;

async fn round(mut client: EchoClient<Channel>) {
    let (tx, rx) = mpsc::channel(64);
    let sender = tokio::spawn(async move {
        for i in 0..MESSAGES {
            let m = EchoRequest {
                message: String::new(),
                payload: vec![i as u8; 1024],
            };
            if tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut replies = client
        .bidi(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(r) = replies.message().await.unwrap() {
        black_box(&r);
        n += 1;
    }
    assert_eq!(n, MESSAGES);
    sender.await.unwrap();
}

fn bidi(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Every clock on: the layer's worst case.
    let layer = StreamDeadlineLayer::new()
        .request_message_timeout(Duration::from_secs(1))
        .response_message_timeout(Duration::from_secs(1))
        .idle_timeout(Duration::from_secs(5))
        .max_duration(Duration::from_secs(60))
        .max_message_bytes(4 << 20);
    let (bare, governed, bare_client, governed_client): (TestServer, TestServer, _, _) = rt
        .block_on(async {
            let bare = spawn(echo_app()).await;
            let governed = spawn(echo_app().layer(layer)).await;
            let bc = grpc_client(bare.addr).await;
            let gc = grpc_client(governed.addr).await;
            (bare, governed, bc, gc)
        });

    let mut group = c.benchmark_group("deadline_bidi_1kib");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| round(bare_client.clone()))
    });
    group.bench_function("with_layer", |b| {
        b.to_async(&rt).iter(|| round(governed_client.clone()))
    });
    group.finish();
    rt.block_on(async {
        bare.shutdown().await;
        governed.shutdown().await;
    });
}

fn decoder(c: &mut Criterion) {
    let mut wire = Vec::new();
    for _ in 0..1000 {
        wire.push(0);
        wire.extend_from_slice(&1024u32.to_be_bytes());
        wire.extend(std::iter::repeat_n(7u8, 1024));
    }
    let mut group = c.benchmark_group("deadline_decoder");
    group.throughput(Throughput::Elements(1000));
    // HTTP/2's default maximum frame size.
    group.bench_function("1kib_messages_in_16kib_frames", |b| {
        b.iter(|| {
            let mut d = GrpcFrameDecoder::new();
            let mut n = 0;
            for chunk in black_box(&wire).chunks(16 * 1024) {
                n += d.feed(chunk).messages;
            }
            assert_eq!(n, 1000);
        })
    });
    // The shape tonic writes: one message per frame.
    group.bench_function("1kib_messages_one_per_frame", |b| {
        b.iter(|| {
            let mut d = GrpcFrameDecoder::new();
            let mut n = 0;
            for chunk in black_box(&wire).chunks(1029) {
                n += d.feed(chunk).messages;
            }
            assert_eq!(n, 1000);
        })
    });
    group.finish();
}

criterion_group!(benches, decoder, bidi);
criterion_main!(benches);
