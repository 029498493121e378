//! The in-memory idempotency path, per request: a first request (buffer,
//! fingerprint, claim, run, buffer the response, store it) and a replay,
//! against the same service without the layer.
//!
//! `cargo bench --bench idempotency -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use finmesh::idempotency::{IdempotencyLayer, IdempotencyRequestBody, InMemoryStore};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceBuilder, ServiceExt};

const REQUEST: &[u8] = br#"{"from":"DE89370400440532013000","to":"FR1420041010050500013M02606","amount":"100.00","currency":"EUR"}"#;
const RESPONSE: &[u8] = br#"{"id":"tr_8e03978e40d543e8bc936894a57f9324","status":"committed","amount":"100.00","currency":"EUR","created":"2026-11-25T02:00:00Z"}"#;

fn request(key: &'static str) -> Request<Full<Bytes>> {
    Request::post("/v1/transfers")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from_static(REQUEST)))
        .unwrap()
}

async fn handler<B: http_body::Body>(req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    black_box(req);
    let mut res = Response::new(Full::new(Bytes::from_static(RESPONSE)));
    res.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(res)
}

/// One request through a clone of `svc` (a clone per request, as a server
/// makes), its body read to the end.
async fn drive<S, B>(svc: S, req: Request<Full<Bytes>>) -> Bytes
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc.oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap().to_bytes()
}

fn idempotency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("idempotency");

    let bare = ServiceBuilder::new().service_fn(handler::<Full<Bytes>>);
    group.bench_function("no_layer", |b| {
        b.to_async(&rt).iter(|| drive(bare, request("k")))
    });

    // Completed records expire at once, so every request with the same key
    // takes the first-request path (claim, run, store) with bounded memory.
    let layer = IdempotencyLayer::new(InMemoryStore::new()).retention(Duration::ZERO);
    let first = ServiceBuilder::new()
        .layer(layer)
        .service_fn(handler::<IdempotencyRequestBody<Full<Bytes>>>);
    group.bench_function("first_request", |b| {
        b.to_async(&rt).iter(|| drive(first.clone(), request("k")))
    });

    let replay = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(InMemoryStore::new()))
        .service_fn(handler::<IdempotencyRequestBody<Full<Bytes>>>);
    rt.block_on(drive(replay.clone(), request("k")));
    group.bench_function("replay", |b| {
        b.to_async(&rt).iter(|| {
            let svc = replay.clone();
            async move {
                let res = svc.oneshot(request("k")).await.unwrap();
                assert_eq!(res.headers()["idempotency-replayed"], "true");
                res.into_body().collect().await.unwrap().to_bytes()
            }
        })
    });

    // An ungoverned GET through the layer: the cost of passing through.
    let pass = ServiceBuilder::new()
        .layer(IdempotencyLayer::new(InMemoryStore::new()))
        .service_fn(handler::<IdempotencyRequestBody<Full<Bytes>>>);
    group.bench_function("passthrough_get", |b| {
        b.to_async(&rt).iter(|| {
            let req = Request::get("/v1/transfers/1")
                .body(Full::default())
                .unwrap();
            drive(pass.clone(), req)
        })
    });
    group.finish();
}

criterion_group!(benches, idempotency);
criterion_main!(benches);
