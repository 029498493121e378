//! Rate-limit decisions stay flat as tenants grow; the Redis round trip.
//!
//! `cargo bench --bench ratelimit --features redis -- --warm-up-time 1 --measurement-time 3`
//!
//! - `ratelimit_decision/local/{10,1000,100000}`: one request's decision
//!   as the layer makes it (`RateLimitLayer::decide_head`: the extension
//!   lookups, rule matching, bucket-key hashing, the GCRA update in the
//!   sharded map, the outcome counters) for a request with a verified
//!   tenant and subject, under the demo policy's two rules (per tenant and
//!   per subject: two decisions per request), cycling over that many
//!   tenants whose buckets are all warm (a pseudo-random walk). Each
//!   request head is built outside the measurement, 64 at a time, so it is
//!   hot in cache as it is behind the tenant layer; its buckets are not.
//!   Target ≤ 150 ns per decision, flat.
//! - `ratelimit_layer/local`: the same through the whole service
//!   (`RateLimit<S>::call` and its future, an inner service that answers at
//!   once); the request is built outside the measurement, as above.
//! - `ratelimit_decision/redis`: one request's decisions in Redis (one
//!   pipeline of two `EVALSHA`s) over loopback, against a `redis-server`
//!   the bench starts; skipped when there is none or without `--features
//!   redis`.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use finmesh::ratelimit::{RateLimitLayer, RateLimits};
use finmesh::rbac::Action;
use finmesh::{Principal, Tenant, TenantNamespace};
use futures_util::FutureExt;
use http::{Request, Response};
use tower::{Layer, Service};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

/// The demo policy's shape with limits no bench reaches.
const POLICY: &str = "apiVersion: finmesh.io/v1
kind: RateLimitPolicy
metadata: {name: bench}
spec:
  rules:
    - name: transfers
      match: {verbs: [create], resources: [transfers]}
      key: tenant
      limit: {requests: 1000000000, period: 1s}
    - name: per-subject
      key: subject
      limit: {requests: 1000000000, period: 1s}
";

fn head(tenant: usize) -> Request<()> {
    let mut req = Request::post("/v1/transfer").body(()).unwrap();
    let ns = TenantNamespace::parse(&format!("tenant-{tenant}")).unwrap();
    req.extensions_mut().insert(Principal::new(
        format!("user-{tenant}"),
        "https://issuer.example",
    ));
    req.extensions_mut().insert(Tenant::new(ns));
    req.extensions_mut()
        .insert(Action::resource("create", "transfers"));
    req
}

/// Times `run` over fresh heads built outside the measurement, 64 at a
/// time: each request is hot in cache, as one the layers before just
/// built, while its buckets are spread over every tenant. Dropping the
/// heads is not measured.
fn timed(
    iters: u64,
    mut next: impl FnMut() -> Request<()>,
    mut run: impl FnMut(&mut Option<Request<()>>),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(64);
        let mut heads: Vec<_> = (0..n).map(|_| Some(next())).collect();
        let start = Instant::now();
        for h in &mut heads {
            run(h);
        }
        total += start.elapsed();
        drop(heads);
        done += n;
    }
    total
}

fn local(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit_decision");
    for size in SIZES {
        let layer = RateLimitLayer::new(RateLimits::from_yaml(POLICY).unwrap());
        // Warm every bucket: the map holds 2 × size keys.
        for i in 0..size {
            assert!(layer.decide_head(&head(i)).now_or_never().unwrap());
        }
        // A fixed pseudo-random walk over the tenants.
        let mut i: usize = 0;
        group.bench_function(BenchmarkId::new("local", size), |b| {
            b.iter_custom(|iters| {
                timed(
                    iters,
                    || {
                        i = (i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1)) % size;
                        head(i)
                    },
                    |h| {
                        let h = h.as_ref().unwrap();
                        black_box(layer.decide_head(h).now_or_never());
                    },
                )
            })
        });
        assert_eq!(layer.local_keys(), 2 * size);
    }
    group.finish();

    let layer = RateLimitLayer::new(RateLimits::from_yaml(POLICY).unwrap());
    let mut svc = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    let mut i = 0;
    c.bench_function("ratelimit_layer/local", |b| {
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    i = (i + 1) % 1_000;
                    head(i)
                },
                |req| {
                    // The inner service drops the request: measured.
                    black_box(svc.call(req.take().unwrap()).now_or_never());
                },
            )
        })
    });
}

#[cfg(feature = "redis")]
fn redis(c: &mut Criterion) {
    use std::process::{Command, Stdio};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(mut child) = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!("ratelimit_decision/redis: skipped: redis-server not found");
        return;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let limiter = finmesh::ratelimit::RedisRateLimiter::open(&format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .timeout(std::time::Duration::from_secs(5));
    let layer = RateLimitLayer::new(RateLimits::from_yaml(POLICY).unwrap()).redis(limiter.clone());
    let heads: Vec<_> = (0..1_000).map(head).collect();
    let mut i = 0;
    c.bench_function("ratelimit_decision/redis", |b| {
        b.to_async(&runtime).iter(|| {
            i = (i + 1) % heads.len();
            let (layer, h) = (&layer, &heads[i]);
            async move { assert!(layer.decide_head(h).await) }
        })
    });
    assert_eq!(limiter.store_errors(), 0);
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(not(feature = "redis"))]
fn redis(_: &mut Criterion) {
    eprintln!("ratelimit_decision/redis: skipped: built without --features redis");
}

criterion_group!(benches, local, redis);
criterion_main!(benches);
