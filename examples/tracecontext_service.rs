//! The test service of the W3C Trace Context test harness
//! (<https://github.com/w3c/trace-context>, `test/README.md`).
//!
//! It serves `POST /test`, whose JSON body is an array of
//! `{"url": …, "arguments": …}`; for each element, in order, it POSTs
//! `arguments` as JSON to `url` through [`PropagateLayer`], inside the
//! context extracted from the incoming request by [`TelemetryLayer`] — so
//! the harness sees the trace continued (same trace id, a new parent id,
//! the `tracestate` carried on) or restarted when what it sent was invalid.
//!
//! ```sh
//! cargo run --example tracecontext_service -- --addr 127.0.0.1:5000
//! # in a checkout of w3c/trace-context:
//! python3 test/test.py http://127.0.0.1:5000/test
//! ```

use bytes::Bytes;
use finmesh::telemetry::{PropagateLayer, TelemetryLayer, w3c_propagator};
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower::{Layer, ServiceExt};

/// One call the harness asks for.
#[derive(serde::Deserialize)]
struct Case {
    url: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

/// The conformance app: `POST /test` behind a [`TelemetryLayer`] whose
/// spans come from `provider`.
pub fn app(provider: &SdkTracerProvider) -> axum::Router {
    let client = PropagateLayer::new()
        .propagator(w3c_propagator())
        .layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let handler = move |axum::Json(cases): axum::Json<Vec<Case>>| {
        let client = client.clone();
        async move {
            for case in cases {
                let body = serde_json::to_vec(&case.arguments).unwrap_or_default();
                let Ok(req) = Request::post(case.url.as_str())
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                else {
                    return StatusCode::BAD_REQUEST;
                };
                // The harness judges what it receives; a failed call is
                // its business, not a reason to stop the others.
                if let Ok(res) = client.clone().oneshot(req).await {
                    drop(res);
                }
            }
            StatusCode::OK
        }
    };
    axum::Router::new()
        .route("/test", axum::routing::post(handler))
        .layer(
            TelemetryLayer::builder()
                .tracer_provider(provider)
                .propagator(w3c_propagator())
                .build(),
        )
}

#[allow(dead_code)] // the integration test includes this file for `app`
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut addr = String::from("127.0.0.1:5000");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().unwrap_or(addr),
            other => {
                if let Some(v) = other.strip_prefix("--addr=") {
                    addr = v.to_owned();
                } else {
                    eprintln!("usage: tracecontext_service [--addr HOST:PORT]");
                    std::process::exit(2);
                }
            }
        }
    }
    // Spans are not exported anywhere: the harness only looks at headers.
    // The SDK's default sampler (parent-based, always on) follows the
    // caller's sampled flag.
    let provider = SdkTracerProvider::builder().build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}/test", listener.local_addr()?);
    axum::serve(listener, app(&provider)).await
}
