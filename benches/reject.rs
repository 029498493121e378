//! Cost of rendering a rejection, for each protocol.
//!
//! `cargo bench --bench reject`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use finmesh::{Protocol, Rejection, RejectionBody, RejectionKind};

fn render(c: &mut Criterion) {
    let rejection = Rejection::new(
        RejectionKind::PermissionDenied,
        "tenant.suspended",
        "tenant \"tenant-a\" is suspended",
    );
    let mut group = c.benchmark_group("rejection");
    group.bench_function("grpc", |b| {
        b.iter(|| -> http::Response<RejectionBody> {
            black_box(&rejection).render(Protocol::Grpc, None)
        })
    });
    group.bench_function("problem_json", |b| {
        b.iter(|| -> http::Response<RejectionBody> {
            black_box(&rejection).render(Protocol::Http, Some("4bf92f3577b34da6a3ce929d0e0e4736"))
        })
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
