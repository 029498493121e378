//! [`StreamDeadline`]: the service the layer wraps around yours.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request, Response};
use tower_service::Service;

use super::DeadlineCode;
use super::body::{DeadlineRequestBody, DeadlineResponseBody};
use super::future::ResponseFuture;
use super::grpc_timeout::parse_grpc_timeout;
use super::layer::Config;
use super::state::CallState;
use super::stats::DeadlineStats;
use crate::codes::RejectionCode;
use crate::labels::RequestLabels;
use crate::reject::Protocol;

// A name, not a `&str` key, which would be parsed on every lookup.
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Wraps request and response bodies with the call's deadlines. Made by
/// [`StreamDeadlineLayer`](super::StreamDeadlineLayer).
#[derive(Debug, Clone)]
pub struct StreamDeadline<S> {
    pub(crate) inner: S,
    // `None`: switched off inside a `GovernanceLayer` without deadlines.
    pub(crate) config: Option<Arc<Config>>,
    pub(crate) stats: DeadlineStats,
}

impl<S> StreamDeadline<S> {
    /// Passes every call through unbounded: the slot of an absent
    /// deadline layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            config: None,
            stats: DeadlineStats::default(),
        }
    }

    /// Counters of the calls this service ended (always zero for the
    /// pass-through a `GovernanceLayer` without deadlines builds).
    pub fn stats(&self) -> DeadlineStats {
        self.stats.clone()
    }
}

crate::macros::inner_accessors!([S] StreamDeadline<S>, inner: S);

impl<S, ReqB, ResB> Service<Request<ReqB>> for StreamDeadline<S>
where
    S: Service<Request<DeadlineRequestBody<ReqB>>, Response = Response<ResB>>,
{
    type Response = Response<DeadlineResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let Some(config) = &self.config else {
            return self.passthrough(req);
        };
        // Security: a path the service configured as gRPC gets the gRPC
        // deadlines whatever the client claims (tonic serves a call whatever
        // its content-type, so "HTTP" would escape them). Elsewhere a gRPC
        // claim can only add rules: the gRPC deadlines, frame by frame.
        let grpc = config.serves_grpc(req.uri().path()) || Protocol::of(req.headers()).is_grpc();
        let deadlines = match config {
            config if grpc || config.http => *config.for_path(req.uri().path()),
            _ => return self.passthrough(req),
        };
        let mut total = deadlines.max_duration;
        if grpc && let Some(value) = req.headers().get(&GRPC_TIMEOUT) {
            match parse_grpc_timeout(value.as_bytes()) {
                Ok(asked) => {
                    let asked = deadlines
                        .max_grpc_timeout
                        .map_or(asked, |cap| asked.min(cap));
                    total = Some(total.map_or(asked, |t| t.min(asked)));
                }
                Err(e) => {
                    let rejection = DeadlineCode::InvalidGrpcTimeout.reject(e.to_string());
                    return ResponseFuture::rejected(
                        rejection.respond(&req).map(DeadlineResponseBody::from),
                    );
                }
            }
        }
        if !deadlines.any_clock(total) {
            return self.passthrough(req);
        }
        let call = Arc::new(CallState::new(
            grpc,
            deadlines,
            total,
            req.uri().clone(),
            req.extensions().get::<RequestLabels>().cloned(),
            self.stats.clone(),
        ));
        let req = req.map(|body| DeadlineRequestBody::new(body, call.clone()));
        // Called at once: the service polled ready is the one called.
        ResponseFuture::governed(self.inner.call(req), call)
    }
}

impl<S> StreamDeadline<S> {
    fn passthrough<ReqB, ResB>(&mut self, req: Request<ReqB>) -> ResponseFuture<S::Future, ResB>
    where
        S: Service<Request<DeadlineRequestBody<ReqB>>, Response = Response<ResB>>,
    {
        // Called at once, so the service polled ready is the one called:
        // no clone needed.
        ResponseFuture::passthrough(self.inner.call(req.map(DeadlineRequestBody::passthrough)))
    }
}
