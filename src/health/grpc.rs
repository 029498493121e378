//! The `grpc.health.v1.Health` service backed by a [`HealthRegistry`]
//! (feature `grpc`).
//!
//! It follows the [gRPC Health Checking Protocol] where tonic-health
//! deviates from it:
//!
//! - **Check** answers `SERVING` or `NOT_SERVING`, and `NOT_FOUND` for a
//!   service the registry does not know. `""` is the whole server: it
//!   follows overall readiness (the readiness checks run, cached as
//!   configured).
//! - **Watch** sends the current status at once, then one message per
//!   change. An unknown service gets `SERVICE_UNKNOWN` and the stream stays
//!   open; if the service becomes known later, its status follows.
//!   Watchers of `""` re-run readiness every
//!   [`readiness_poll_interval`](GrpcHealthService::readiness_poll_interval)
//!   and see any readiness result an HTTP probe produced in between.
//! - A service is known once named: by its tonic type with
//!   [`HealthRegistry::add_grpc_service`] (it then follows readiness like
//!   `""`; the way to name each service the server mounts), or by name with
//!   [`HealthRegistry::set_serving`] (a status set by hand).
//! - **List** answers every known service, `""` included, and
//!   `RESOURCE_EXHAUSTED` past [`MAX_LIST_SERVICES`].
//! - Draining ([`HealthRegistry::begin_shutdown`]) flips every service to
//!   `NOT_SERVING`, and every open Watch stream sees it at once.
//!
//! Messages are tonic-health's generated types, plus `HealthListRequest`
//! and `HealthListResponse` (tonic-health 0.14 has no List) in [`pb`].
//!
//! [`HealthLayer`](super::HealthLayer) answers these calls itself, from
//! the same registry as its HTTP probes, before any inner layer: the probes
//! a load balancer or the kubelet sends (`grpc:` probes) carry no token.
//! [`GrpcHealthService`] is the same service on its own, for a tonic
//! `Server` without `HealthLayer` (`Server::builder().add_service(..)`,
//! below). Mounted that way behind an authenticating `Server::layer`, it
//! would need a token: `Server::layer` wraps every service, this one
//! included.
//!
//! [gRPC Health Checking Protocol]: https://github.com/grpc/grpc/blob/master/doc/health-checking.md
//!
//! # Example: tonic, with graceful shutdown
//!
//! ```
//! use std::time::Duration;
//! use finmesh::health::{HealthRegistry, GrpcHealthService};
//! use finmesh::health::grpc::pb::{HealthCheckRequest, health_check_response::ServingStatus};
//! use tonic_health::pb::health_client::HealthClient;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = HealthRegistry::new();
//! registry.set_serving("finmesh.test.v1.Echo", true);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! // Production: registry.graceful_shutdown(Duration::from_secs(5)) with
//! // `serve_with_shutdown(addr, ..)`.
//! let shutdown = registry.graceful_shutdown_on(stopped, Duration::from_millis(10));
//! let server = tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .add_service(GrpcHealthService::new(registry.clone()))
//!         .serve_with_incoming_shutdown(incoming, shutdown),
//! );
//!
//! let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
//!     .unwrap()
//!     .connect()
//!     .await
//!     .unwrap();
//! let mut client = HealthClient::new(channel);
//! let res = client
//!     .check(HealthCheckRequest { service: "finmesh.test.v1.Echo".into() })
//!     .await
//!     .unwrap();
//! assert_eq!(res.into_inner().status(), ServingStatus::Serving);
//!
//! stop.send(()).unwrap(); // SIGTERM arrives: every service turns NOT_SERVING
//! let res = client.check(HealthCheckRequest { service: String::new() }).await.unwrap();
//! assert_eq!(res.into_inner().status(), ServingStatus::NotServing);
//! drop(client);
//! server.await.unwrap().unwrap();
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tonic::Status;
use tonic::server::{Grpc, NamedService};
use tower::service_fn;
use tower_service::Service;

use self::pb::health_check_response::ServingStatus;
use self::pb::{HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse};
use super::HealthRegistry;

/// `grpc.health.v1` messages: tonic-health's generated types plus the List
/// messages it lacks.
pub mod pb {
    pub use tonic_health::pb::*;

    /// Request of `List` (no fields).
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct HealthListRequest {}

    /// Response of `List`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct HealthListResponse {
        /// Every known service and its status.
        #[prost(map = "string, message", tag = "1")]
        pub statuses: ::std::collections::HashMap<String, HealthCheckResponse>,
    }
}

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "grpc.health.v1.Health";
/// Every method of the service starts with this path.
pub const PATH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Path of the Check method.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// Path of the Watch method.
pub const WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";
/// Path of the List method.
pub const LIST_PATH: &str = "/grpc.health.v1.Health/List";
/// List refuses with `RESOURCE_EXHAUSTED` when more services are known
/// (the whole server, `""`, counts as one).
pub const MAX_LIST_SERVICES: usize = 100;

/// The `grpc.health.v1.Health` service. Mount it with tonic's
/// `Server::builder().add_service(..)` or
/// `tonic::service::Routes::new(..)`.
#[derive(Clone, Debug)]
pub struct GrpcHealthService {
    registry: HealthRegistry,
    poll: Duration,
}

impl GrpcHealthService {
    /// The service for `registry`; watchers of `""` re-run readiness every
    /// five seconds.
    pub fn new(registry: HealthRegistry) -> Self {
        GrpcHealthService {
            registry,
            poll: Duration::from_secs(5),
        }
    }

    /// How often a `Watch("")` stream re-runs the readiness checks (at least
    /// 100 ms). Status changes made through the registry (set_serving,
    /// begin_shutdown, an HTTP readiness probe's result) reach watchers at
    /// once regardless.
    pub fn readiness_poll_interval(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(100));
        self
    }
}

impl NamedService for GrpcHealthService {
    const NAME: &'static str = SERVICE_NAME;
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

fn status_of(serving: Option<bool>) -> ServingStatus {
    match serving {
        None => ServingStatus::ServiceUnknown,
        Some(true) => ServingStatus::Serving,
        Some(false) => ServingStatus::NotServing,
    }
}

async fn check(registry: HealthRegistry, service: String) -> Result<HealthCheckResponse, Status> {
    match registry.serving(&service).await {
        Some(serving) => Ok(response(status_of(Some(serving)))),
        None => Err(Status::not_found(format!("unknown service {service:?}"))),
    }
}

async fn list(registry: HealthRegistry) -> Result<HealthListResponse, Status> {
    let services = registry.services();
    if services.len() > MAX_LIST_SERVICES {
        return Err(Status::resource_exhausted(format!(
            "{} services exceed the limit of {MAX_LIST_SERVICES}",
            services.len()
        )));
    }
    // One readiness run for `""` and every service that follows it.
    registry.readiness().await;
    let mut statuses = std::collections::HashMap::with_capacity(services.len());
    for service in services {
        // A service removed meanwhile is simply not listed.
        if let Some(serving) = registry.serving_now(&service) {
            statuses.insert(service, response(status_of(Some(serving))));
        }
    }
    Ok(HealthListResponse { statuses })
}

/// The stream of a `Watch` call.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

struct Watcher {
    registry: HealthRegistry,
    service: String,
    changes: watch::Receiver<()>,
    // Ticks for every watcher; readiness runs only for a service that
    // follows it.
    poll: Interval,
    sent: Option<ServingStatus>,
    started: bool,
}

impl Watcher {
    /// The next status worth sending: the current one first, then each
    /// change. Ends only when the registry's change channel closes, which
    /// cannot happen while this watcher holds the registry.
    async fn next(mut self) -> Option<(Result<HealthCheckResponse, Status>, Self)> {
        loop {
            if !self.started {
                self.started = true;
                if self.registry.follows_readiness(&self.service) {
                    self.registry.readiness().await;
                }
            } else {
                let poll = self.poll.tick();
                tokio::select! {
                    changed = self.changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = poll => {
                        // Records the result, which wakes every watcher on a
                        // flip. Checked at each tick: the service may be
                        // added (or become known) after the Watch began.
                        if self.registry.follows_readiness(&self.service) {
                            self.registry.readiness().await;
                        }
                    }
                }
            }
            let status = status_of(self.registry.serving_now(&self.service));
            if self.sent != Some(status) {
                self.sent = Some(status);
                return Some((Ok(response(status)), self));
            }
        }
    }
}

fn watch_stream(registry: HealthRegistry, service: String, poll: Duration) -> WatchStream {
    // Subscribe before the first status is read, so no change falls between.
    let changes = registry.subscribe();
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let watcher = Watcher {
        registry,
        service,
        changes,
        poll,
        sent: None,
        started: false,
    };
    futures_util::stream::unfold(watcher, Watcher::next).boxed()
}

impl GrpcHealthService {
    /// Answers one call: `Check`, `Watch` or `List`, else `UNIMPLEMENTED`.
    /// Unboxed, so `HealthLayer` boxes it once.
    pub(crate) fn answer<B>(
        &self,
        req: http::Request<B>,
    ) -> impl Future<Output = http::Response<tonic::body::Body>> + Send + 'static
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let registry = self.registry.clone();
        let poll = self.poll;
        async move {
            match req.uri().path() {
                CHECK_PATH => {
                    let method = service_fn(move |req: tonic::Request<HealthCheckRequest>| {
                        let registry = registry.clone();
                        async move {
                            check(registry, req.into_inner().service)
                                .await
                                .map(tonic::Response::new)
                        }
                    });
                    Grpc::new(tonic_prost::ProstCodec::default())
                        .unary(method, req)
                        .await
                }
                WATCH_PATH => {
                    let method = service_fn(move |req: tonic::Request<HealthCheckRequest>| {
                        let stream = watch_stream(registry.clone(), req.into_inner().service, poll);
                        std::future::ready(Ok::<_, Status>(tonic::Response::new(stream)))
                    });
                    Grpc::new(tonic_prost::ProstCodec::default())
                        .server_streaming(method, req)
                        .await
                }
                LIST_PATH => {
                    let method = service_fn(move |_req: tonic::Request<HealthListRequest>| {
                        let registry = registry.clone();
                        async move { list(registry).await.map(tonic::Response::new) }
                    });
                    Grpc::new(tonic_prost::ProstCodec::default())
                        .unary(method, req)
                        .await
                }
                _ => Status::unimplemented("").into_http(),
            }
        }
    }
}

impl<B> Service<http::Request<B>> for GrpcHealthService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.answer(req).map(Ok).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn check_and_list_follow_the_registry() {
        let registry = HealthRegistry::new();
        registry.set_serving("a", true);
        registry.set_serving("b", false);
        assert_eq!(
            check(registry.clone(), "a".into()).await.unwrap().status(),
            ServingStatus::Serving
        );
        assert_eq!(
            check(registry.clone(), "x".into())
                .await
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
        let listed = list(registry.clone()).await.unwrap().statuses;
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[""].status(), ServingStatus::Serving);
        assert_eq!(listed["b"].status(), ServingStatus::NotServing);

        for i in 0..MAX_LIST_SERVICES {
            registry.set_serving(&format!("svc{i}"), true);
        }
        assert_eq!(
            list(registry).await.unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }

    async fn next(s: &mut WatchStream) -> ServingStatus {
        s.next().await.unwrap().unwrap().status()
    }

    #[tokio::test]
    async fn watch_sends_the_current_status_then_each_change() {
        let registry = HealthRegistry::new();
        let mut stream = watch_stream(registry.clone(), "svc".into(), Duration::from_secs(5));
        assert_eq!(next(&mut stream).await, ServingStatus::ServiceUnknown);
        registry.set_serving("svc", true);
        assert_eq!(next(&mut stream).await, ServingStatus::Serving);
        // Setting the same status again is not a change.
        registry.set_serving("svc", true);
        registry.set_serving("other", false);
        registry.begin_shutdown();
        assert_eq!(next(&mut stream).await, ServingStatus::NotServing);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), stream.next())
                .await
                .is_err(),
            "no message without a change"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watch_of_the_server_polls_readiness() {
        let registry = HealthRegistry::new();
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let h = healthy.clone();
        registry
            .add_readiness_check("db", Duration::from_secs(1), move || {
                let ok = h.load(std::sync::atomic::Ordering::SeqCst);
                async move { if ok { Ok(()) } else { Err("down".into()) } }
            })
            .unwrap();
        let mut stream = watch_stream(registry.clone(), String::new(), Duration::from_secs(1));
        assert_eq!(
            stream.next().await.unwrap().unwrap().status(),
            ServingStatus::Serving
        );
        healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            stream.next().await.unwrap().unwrap().status(),
            ServingStatus::NotServing
        );
    }
}
