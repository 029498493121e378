//! What the tenant layer costs per request, and that it does not grow with
//! the number of tenants.
//!
//! `cargo bench --bench tenant -- --warm-up-time 1 --measurement-time 3`
//!
//! - `lookup_and_validate/{static,file}/{10,100000}`: validate a header
//!   value into a `TenantNamespace` and look it up — the layer's whole
//!   decision, without the request around it. Both sizes ask for the same
//!   number of tenants (10, spread evenly over the registry), so the only
//!   difference between the two is the registry's size: this pair is the
//!   "less than 1.5×" acceptance check.
//! - `lookup_and_validate/*/100000_hot1024` and `*/100000_uniform`: the
//!   same at 100,000 tenants, asking for 1,024 of them, or for all of them
//!   in turn, so that most probes miss the CPU caches. Not a property of
//!   the registry but of the memory hierarchy; reported for reference.
//! - `layer/{none,10,100000}`: one request through `TenantLayer` and a
//!   `service_fn` with `tower::ServiceExt::oneshot` (the request is built
//!   outside the timing), against the bare `service_fn`; and
//!   `layer/extension_insert_only`, a `service_fn` that inserts a `Tenant`
//!   into the extensions itself, to show what that one allocation site
//!   costs on its own.
//! - `load/{100,1000,10000}`: parsing and validating a tenants document of
//!   that many tenants (`StaticTenants::from_yaml`, what every reload of a
//!   tenants file does). Linear loading means the time per tenant is the
//!   same in all three rows; a superlinear path shows as a growing ratio.

use std::convert::Infallible;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use finmesh::tenant::{
    FileTenants, StaticTenants, Tenant, TenantLayer, TenantNamespace, TenantRegistry,
};
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};

const SIZES: [usize; 2] = [10, 100_000];
/// Tenants asked for in the size comparison: all of them at 10.
const PROBED: usize = 10;
const HOT_SET: usize = 1024;

fn name(i: usize) -> String {
    format!("tenant-{i:06}")
}

fn static_tenants(n: usize) -> Arc<StaticTenants> {
    let tenants = StaticTenants::with_capacity(n);
    for i in 0..n {
        tenants.insert(
            Tenant::new(TenantNamespace::parse(&name(i)).unwrap())
                .with_display_name(format!("Tenant {i}"))
                .with_labels([("region", "eu-west-1")]),
        );
    }
    Arc::new(tenants)
}

fn file_tenants(dir: &Path, n: usize) -> FileTenants {
    let path = dir.join(format!("tenants-{n}.yaml"));
    let mut yaml = String::from("tenants:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - namespace: {}\n    displayName: Tenant {i}\n    labels: {{region: eu-west-1}}\n",
            name(i)
        ));
    }
    std::fs::write(&path, yaml).unwrap();
    let tenants = FileTenants::load(&path).unwrap();
    assert_eq!(tenants.len(), n);
    tenants
}

/// Header values for `count` registered tenants spread evenly over `n`.
fn header_values(n: usize, count: usize) -> Vec<HeaderValue> {
    let count = count.min(n);
    (0..count)
        .map(|k| HeaderValue::from_str(&name(k * n / count)).unwrap())
        .collect()
}

fn decide(registry: &impl TenantRegistry, value: &HeaderValue) -> Option<Tenant> {
    let namespace = TenantNamespace::from_bytes(value.as_bytes()).ok()?;
    registry.lookup(&namespace)
}

fn bench_registry<R: TenantRegistry>(c: &mut Criterion, kind: &str, registries: &[(usize, R)]) {
    let mut group = c.benchmark_group("lookup_and_validate");
    for (n, registry) in registries {
        let mut cases = vec![(n.to_string(), header_values(*n, PROBED))];
        if *n > HOT_SET {
            cases.push((format!("{n}_hot{HOT_SET}"), header_values(*n, HOT_SET)));
            cases.push((format!("{n}_uniform"), header_values(*n, *n)));
        }
        for (label, values) in cases {
            let mut i = 0;
            group.bench_function(format!("{kind}/{label}"), |b| {
                b.iter(|| {
                    i = (i + 1) % values.len();
                    let tenant = decide(registry, black_box(&values[i]));
                    assert!(tenant.is_some());
                    tenant
                })
            });
        }
    }
    group.finish();
}

fn lookup_and_validate(c: &mut Criterion) {
    let statics: Vec<_> = SIZES.iter().map(|&n| (n, static_tenants(n))).collect();
    bench_registry(c, "static", &statics);
    drop(statics);

    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = SIZES
        .iter()
        .map(|&n| (n, file_tenants(dir.path(), n)))
        .collect();
    bench_registry(c, "file", &files);
}

async fn handler(_req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::default()))
}

fn request(value: &HeaderValue) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::default());
    req.headers_mut()
        .insert("x-tenant-namespace", value.clone());
    req
}

fn layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer");
    let bare = service_fn(handler);
    let value = HeaderValue::from_static("tenant-000000");
    group.bench_function("none", |b| {
        b.iter_batched(
            || request(&value),
            |req| bare.oneshot(req).now_or_never().unwrap().unwrap(),
            BatchSize::SmallInput,
        )
    });
    // What the layer's one allocation site costs alone: the handler itself
    // inserts a `Tenant` into the extensions, with no decision made.
    let tenant = static_tenants(1).tenants().remove(0);
    let inserting = service_fn(move |mut req: Request<Full<Bytes>>| {
        req.extensions_mut().insert(tenant.clone());
        handler(req)
    });
    group.bench_function("extension_insert_only", |b| {
        b.iter_batched(
            || request(&value),
            |req| {
                inserting
                    .clone()
                    .oneshot(req)
                    .now_or_never()
                    .unwrap()
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    for n in SIZES {
        let svc = TenantLayer::new(static_tenants(n)).layer(service_fn(handler));
        let values = header_values(n, PROBED);
        let mut i = 0;
        group.bench_function(n.to_string(), |b| {
            b.iter_batched(
                || {
                    i = (i + 1) % values.len();
                    request(&values[i])
                },
                |req| {
                    let res = svc.clone().oneshot(req).now_or_never().unwrap().unwrap();
                    assert_eq!(res.status(), 200);
                    res
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn tenants_yaml(n: usize) -> String {
    let mut yaml = String::from("tenants:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - namespace: {}\n    displayName: Tenant {i}\n    labels: {{region: eu-west-1, plan: p{}}}\n",
            name(i),
            i % 7
        ));
    }
    yaml
}

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    for n in [100, 1_000, 10_000] {
        let yaml = tenants_yaml(n);
        group.throughput(criterion::Throughput::Elements(n as u64));
        group.bench_function(n.to_string(), |b| {
            b.iter(|| {
                let tenants = StaticTenants::from_yaml(black_box(&yaml)).unwrap();
                assert_eq!(tenants.len(), n);
                tenants
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup_and_validate, layer, load);
criterion_main!(benches);
