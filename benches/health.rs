//! Cost of HealthLayer: a request passing through to the app (the hot
//! path) next to the bare service, and a probe answered by the layer.
//!
//! `cargo bench --bench health -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use finmesh::health::{HealthLayer, HealthRegistry};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn request(uri: &'static str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"app"))))
    });
    let registry = HealthRegistry::new();
    registry
        .add_readiness_check("db", Duration::from_secs(1), || async { Ok(()) })
        .unwrap();
    let layered = ServiceBuilder::new()
        .layer(HealthLayer::new(registry))
        .service(app);

    let mut group = c.benchmark_group("health");
    group.bench_function("bare_app", |b| {
        b.to_async(&rt).iter(|| async {
            let mut svc = app;
            black_box(svc.ready().await.unwrap().call(request("/v1/orders")).await)
        })
    });
    group.bench_function("pass_through", |b| {
        b.to_async(&rt).iter(|| async {
            let mut svc = layered.clone();
            black_box(svc.ready().await.unwrap().call(request("/v1/orders")).await)
        })
    });
    group.bench_function("probe_readyz", |b| {
        b.to_async(&rt).iter(|| async {
            let mut svc = layered.clone();
            black_box(svc.ready().await.unwrap().call(request("/readyz")).await)
        })
    });
    group.bench_function("probe_readyz_verbose", |b| {
        b.to_async(&rt).iter(|| async {
            let mut svc = layered.clone();
            black_box(
                svc.ready()
                    .await
                    .unwrap()
                    .call(request("/readyz?verbose"))
                    .await,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
