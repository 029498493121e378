//! [`Pending`]: the record of one request in flight, written whenever and
//! however the request ends.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Method, Uri};

use super::capture::Capture;
use super::entry::{Detail, Entry};
use super::policy::Stage;
use super::record::Outcome;
use super::slot::Slot;
use crate::labels::RequestLabels;

/// What a request record needs besides the labels.
pub(super) struct Ctx {
    pub(super) labels: RequestLabels,
    pub(super) start: Instant,
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) grpc: bool,
    /// The audit policy's view of the request, when the layer has one.
    pub(super) capture: Option<Arc<Capture>>,
}

/// The record of one request, with the queue slot reserved for it.
/// Whatever path the request takes, dropping this writes the record:
/// after the body ends, when the body or the future is dropped early, or
/// when the inner service fails.
pub(super) struct Pending {
    slot: Option<Slot>,
    pub(super) ctx: Ctx,
    pub(super) http_status: Option<u16>,
    pub(super) grpc_status: Option<i32>,
    pub(super) outcome: Outcome,
}

impl Pending {
    pub(super) fn new(slot: Slot, ctx: Ctx) -> Self {
        Self {
            slot: Some(slot),
            ctx,
            http_status: None,
            grpc_status: None,
            outcome: Outcome::Cancelled,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let (request_body, response_body) = match &self.ctx.capture {
            Some(capture) => {
                let (decision, request, response) = capture.finish();
                let stage = if self.outcome == Outcome::ServiceError {
                    Stage::Panic
                } else {
                    Stage::ResponseComplete
                };
                // Security: rejections are always audited, at least at
                // Metadata, whatever the policy says (a deliberate
                // deviation from the apiserver): a token brute force on a
                // probe-like path must leave a record.
                if !decision.records(stage) && !self.ctx.labels.update(|l| l.rejection.is_some()) {
                    // Level None, or the stage is omitted: the slot is
                    // released unused.
                    return;
                }
                (request, response)
            }
            None => (None, None),
        };
        let labels = self.ctx.labels.snapshot();
        // The record's route is the template when a layer recorded one;
        // the path is copied only when there is none.
        let path = labels.route.is_none().then(|| {
            // Just past the bound: the queue never holds a long path, and
            // the writer still sees that it was cut.
            super::bound::cut(self.ctx.uri.path(), super::bound::MAX_FIELD_BYTES + 4)
                .0
                .to_owned()
        });
        let entry = Entry {
            at: SystemTime::now(),
            labels,
            detail: Detail::Request {
                method: std::mem::take(&mut self.ctx.method),
                path,
                http_status: self.http_status,
                grpc_status: self.grpc_status,
                latency: self.ctx.start.elapsed(),
                outcome: self.outcome,
                request_body,
                response_body,
            },
        };
        if !slot.send(entry) {
            tracing::error!(
                path = self.ctx.uri.path(),
                "audit writer stopped; record of a request in flight lost"
            );
        }
    }
}

/// The `grpc-status` of trailers (or of a trailers-only response's
/// headers), if it is a well-formed one.
pub(super) fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    let v = headers.get(&crate::reject::GRPC_STATUS)?.to_str().ok()?;
    if v.is_empty() || v.len() > 3 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}
