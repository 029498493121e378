//! The OpenTelemetry counter `finmesh.stream.deadline_exceeded`, read back
//! through the SDK's in-memory exporter. A file of its own: it installs
//! the global meter provider.
#![cfg(feature = "telemetry")]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use finmesh::deadline::{DeadlineRequestBody, StreamDeadlineLayer};
use http::{Request, Response};
use http_body_util::Empty;
use opentelemetry::Value;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test]
async fn expiries_increment_the_otel_counter_by_direction_kind_and_method() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let svc = ServiceBuilder::new()
        .layer(StreamDeadlineLayer::new().max_duration(Duration::from_millis(20)))
        .service_fn(|_req: Request<DeadlineRequestBody<Empty<Bytes>>>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
    for _ in 0..2 {
        let req = Request::builder()
            .uri("/payments.v1.Clearing/Stream")
            .header("content-type", "application/grpc")
            .body(Empty::new())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.headers()["grpc-status"], "4");
    }

    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let mut seen = Vec::new();
    for rm in &metrics {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                if m.name() != "finmesh.stream.deadline_exceeded" {
                    continue;
                }
                let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() else {
                    panic!("a u64 counter: {:?}", m.data());
                };
                for p in sum.data_points() {
                    let mut attrs: Vec<(String, String)> = p
                        .attributes()
                        .map(|kv| {
                            let v = match &kv.value {
                                Value::String(s) => s.to_string(),
                                other => other.to_string(),
                            };
                            (kv.key.to_string(), v)
                        })
                        .collect();
                    attrs.sort();
                    seen.push((attrs, p.value()));
                }
            }
        }
    }
    let want = vec![(
        vec![
            ("direction".to_owned(), "call".to_owned()),
            ("kind".to_owned(), "total".to_owned()),
            (
                "method".to_owned(),
                "/payments.v1.Clearing/Stream".to_owned(),
            ),
        ],
        2,
    )];
    assert_eq!(seen, want);
}
