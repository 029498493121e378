//! [`Audit`]: the service the layer wraps around yours.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::auditor::Auditor;
use super::body::AuditBody;
use super::capture::{AuditRequestBody, Capture, Settings};
use super::future::ResponseFuture;
use super::handle::AuditHandle;
use super::pending::{Ctx, Pending};
use super::policy::Level;
use super::slot::Reservation;
use crate::labels::RequestLabels;
use crate::reject::Protocol;

/// The service [`AuditLayer`](super::AuditLayer) builds.
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without audit.
    auditor: Option<Auditor>,
    settings: Arc<Settings>,
}

impl<S> Audit<S> {
    /// Audits `inner` through `auditor`.
    pub fn new(inner: S, auditor: Auditor) -> Self {
        Self::with_settings(inner, auditor, Arc::default())
    }

    pub(super) fn with_settings(inner: S, auditor: Auditor, settings: Arc<Settings>) -> Self {
        Self {
            inner,
            auditor: Some(auditor),
            settings,
        }
    }

    /// Passes every request through unrecorded: the slot of an absent
    /// audit layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            auditor: None,
            settings: Arc::default(),
        }
    }
}

crate::macros::inner_accessors!([S] Audit<S>, inner: S);

impl<S, ReqB, ResB> Service<Request<ReqB>> for Audit<S>
where
    S: Service<Request<AuditRequestBody<ReqB>>, Response = Response<ResB>> + Clone,
    ResB: Body,
{
    type Response = Response<AuditBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, AuditRequestBody<ReqB>, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let Some(auditor) = &self.auditor else {
            let req = req.map(|b| AuditRequestBody::new(b, None));
            return ResponseFuture::unrecorded(self.inner.call(req));
        };
        let (mut parts, body) = req.into_parts();
        let labels = RequestLabels::get_or_insert(&mut parts.extensions);
        let capture = self.settings.policy.as_ref().map(|source| {
            let policy = source.current();
            let bodies = policy.max_level() >= Level::Request;
            let capture = Arc::new(Capture::new(
                policy,
                self.settings.body_cap,
                labels.clone(),
                parts.method.clone(),
                parts.uri.clone(),
            ));
            (capture, bodies)
        });
        let body_capture = capture
            .as_ref()
            .filter(|(_, bodies)| *bodies)
            .map(|(c, _)| c.clone());
        let capture = capture.map(|(c, _)| c);
        parts.extensions.insert(
            AuditHandle::new(auditor.clone(), labels.clone()).with_capture(capture.clone()),
        );
        let req = Request::from_parts(parts, AuditRequestBody::new(body, body_capture));
        let ctx = Ctx {
            labels,
            start: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            grpc: Protocol::of(req.headers()).is_grpc(),
            capture,
        };
        // Security: the slot is reserved *before* the inner
        // service runs, so the record written when the response ends can
        // never find the queue full and can never be dropped.
        match auditor.try_reserve() {
            Reservation::Reserved(slot) => {
                ResponseFuture::calling(self.inner.call(req), Pending::new(slot, ctx))
            }
            Reservation::Wait(wait) => {
                // The call waits for a slot: the future takes the service
                // that was polled ready, and a clone takes its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::reserving(wait, req, inner, ctx)
            }
            Reservation::Closed => ResponseFuture::refused(&req, &ctx),
        }
    }
}
