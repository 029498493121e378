//! [`Audit`]: the service the layer wraps around yours.

use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::auditor::Auditor;
use super::body::AuditBody;
use super::future::ResponseFuture;
use super::handle::AuditHandle;
use super::pending::{Ctx, Pending};
use super::slot::Reservation;
use crate::labels::RequestLabels;
use crate::reject::Protocol;

/// The service [`AuditLayer`](super::AuditLayer) builds.
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without audit.
    auditor: Option<Auditor>,
}

impl<S> Audit<S> {
    /// Audits `inner` through `auditor`.
    pub fn new(inner: S, auditor: Auditor) -> Self {
        Self {
            inner,
            auditor: Some(auditor),
        }
    }

    /// Passes every request through unrecorded: the slot of an absent
    /// audit layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            auditor: None,
        }
    }
}

crate::macros::inner_accessors!([S] Audit<S>, inner: S);

impl<S, ReqB, ResB> Service<Request<ReqB>> for Audit<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ResB: Body,
{
    type Response = Response<AuditBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let Some(auditor) = &self.auditor else {
            return ResponseFuture::unrecorded(self.inner.call(req));
        };
        let labels = RequestLabels::get_or_insert(req.extensions_mut());
        req.extensions_mut()
            .insert(AuditHandle::new(auditor.clone(), labels.clone()));
        let ctx = Ctx {
            labels,
            start: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            grpc: Protocol::of(req.headers()).is_grpc(),
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
