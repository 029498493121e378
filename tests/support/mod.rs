//! Loopback test harness shared by the integration tests.
//!
//! [`spawn`] serves an axum router — HTTP routes with tonic routes merged
//! in, wrapped by whatever layer is under test — on `127.0.0.1:0`, speaking
//! HTTP/1.1 and h2c (gRPC) on the same port, and returns its address and a
//! shutdown handle. Tests talk to it with real clients: [`http_client`]
//! (hyper-util) and [`grpc_client`] (tonic).
//!
//! Each test file uses the parts it needs, so the rest is dead code there.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use bytes::Bytes;
use finmesh::{Principal, Tenant};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};

/// Code generated from `proto/finmesh/test/v1/echo.proto` (checked in; see
/// `tests/proto_codegen.rs`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    include!("pb/finmesh.test.v1.rs");
}

pub use pb::echo_client::EchoClient;
pub use pb::echo_server::{Echo, EchoServer};
pub use pb::{EchoReply, EchoRequest};

/// A server on loopback; shuts down gracefully when dropped or on
/// [`TestServer::shutdown`].
pub struct TestServer {
    /// Where it listens (`127.0.0.1:<port>`).
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `app` on `127.0.0.1:0` (HTTP/1.1 and h2c on one port).
pub async fn spawn(app: axum::Router) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    TestServer {
        addr,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

/// The test application: HTTP echo routes plus the gRPC `Echo` service.
pub fn echo_app() -> axum::Router {
    http_routes().merge(grpc_routes(EchoService))
}

/// HTTP routes: `/ok` answers `ok`; `/echo` and `/v1/{*rest}` answer JSON
/// describing what the handler saw (method, path, principal, tenant).
pub fn http_routes() -> axum::Router {
    use axum::routing::{any, get};
    axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/echo", any(describe))
        .route("/v1/{*rest}", any(describe))
}

/// Tonic routes for `svc`, ready to merge into an axum router.
pub fn grpc_routes<S: Echo>(svc: S) -> axum::Router {
    tonic::service::Routes::new(EchoServer::new(svc)).into_axum_router()
}

/// What the HTTP echo handler reports.
pub async fn describe(req: Request) -> impl IntoResponse {
    let principal = req.extensions().get::<Principal>();
    let tenant = req.extensions().get::<Tenant>();
    axum::Json(serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "subject": principal.map(|p| p.subject.to_string()),
        "groups": principal.map(|p| p.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>()),
        "risk": principal.and_then(|p| p.risk).map(|r| r.as_str()),
        "principal_tenant": principal.and_then(|p| p.tenant).map(|t| t.to_string()),
        "tenant": tenant.map(|t| t.namespace.to_string()),
    }))
}

/// The default `Echo` implementation.
#[derive(Clone, Default)]
pub struct EchoService;

fn seen<T>(req: &GrpcRequest<T>) -> (String, String) {
    let subject = req
        .extensions()
        .get::<Principal>()
        .map(|p| p.subject.to_string())
        .unwrap_or_default();
    let tenant = req
        .extensions()
        .get::<Tenant>()
        .map(|t| t.namespace.to_string())
        .unwrap_or_default();
    (subject, tenant)
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(
        &self,
        req: GrpcRequest<EchoRequest>,
    ) -> Result<GrpcResponse<EchoReply>, Status> {
        let (subject, tenant) = seen(&req);
        let msg = req.into_inner();
        Ok(GrpcResponse::new(EchoReply {
            message: msg.message,
            payload: msg.payload,
            subject,
            tenant,
            seq: 1,
        }))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        req: GrpcRequest<Streaming<EchoRequest>>,
    ) -> Result<GrpcResponse<Self::BidiStream>, Status> {
        let (subject, tenant) = seen(&req);
        let mut inbound = req.into_inner();
        let out = async_stream(move |tx| async move {
            let mut seq = 0;
            while let Some(item) = inbound.next().await {
                let reply = item.map(|m| {
                    seq += 1;
                    EchoReply {
                        message: m.message,
                        payload: m.payload,
                        subject: subject.clone(),
                        tenant: tenant.clone(),
                        seq,
                    }
                });
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(GrpcResponse::new(out))
    }
}

/// A stream fed by a task: `f` gets a sender; the stream ends when the task
/// does. Dropping the stream drops the receiver, so the task's next send
/// fails and it stops.
pub fn async_stream<F, Fut>(f: F) -> ReplyStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<EchoReply, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// An HTTP/1.1 client (hyper-util).
pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A buffered HTTP answer.
#[derive(Debug)]
pub struct HttpAnswer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl HttpAnswer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// A header as a string ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Sends `req` over HTTP/1.1 and buffers the answer.
pub async fn send(req: http::Request<Full<Bytes>>) -> HttpAnswer {
    let res = http_client().request(req).await.expect("HTTP request");
    let (parts, body) = res.into_parts();
    HttpAnswer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("HTTP body").to_bytes(),
    }
}

/// Sends `req` over h2c (HTTP/2 with prior knowledge, hyper-util) and
/// buffers the answer.
pub async fn send_h2c(req: http::Request<Full<Bytes>>) -> HttpAnswer {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let res = client.request(req).await.expect("h2c request");
    let (parts, body) = res.into_parts();
    HttpAnswer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("h2c body").to_bytes(),
    }
}

/// Writes `request` as raw bytes on a new HTTP/1.1 connection to `addr`
/// and returns everything the server answers until it closes: for heads
/// no client library would send (absolute-form targets, lowercase
/// methods, repeated headers in a chosen order).
pub async fn raw_http1(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET url` with `headers`.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> HttpAnswer {
    let mut builder = http::Request::get(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    send(builder.body(Full::default()).unwrap()).await
}

/// A tonic client for the `Echo` service at `addr` (h2c).
pub async fn grpc_client(addr: SocketAddr) -> EchoClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connect");
    EchoClient::new(channel)
}

/// A tonic request with metadata `headers`.
pub fn grpc_request<T>(msg: T, headers: &[(&'static str, &str)]) -> GrpcRequest<T> {
    let mut req = GrpcRequest::new(msg);
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}
pub mod postgres_server;
pub mod redis_server;

/// The path of an example binary. A plain `cargo test` builds every
/// example before it runs the tests, next to the test binaries' `deps/`
/// folder; `cargo test --test NAME` does not, and would run whatever build
/// of the example is already there (`cargo build --examples` first).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let mut dir = std::env::current_exe().expect("the test binary's path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo test`, which builds the examples",
        bin.display()
    );
    bin
}
