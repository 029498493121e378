//! [`AuditHandle`]: a handler's way into the audit chain.

use std::borrow::Cow;

use super::auditor::Auditor;
use super::error::AuditError;
use crate::labels::RequestLabels;

/// A handler's way into the audit chain, found in the request extensions
/// (put there by [`AuditLayer`](super::AuditLayer)). Events carry the
/// request's trace id, order id, tenant, subject and risk as they are when
/// the event is appended.
///
/// If an event cannot be queued (queue full past the wait timeout, writer
/// stopped), the call returns an error: a money-moving handler should then
/// fail the operation rather than move money unaudited.
#[derive(Clone, Debug)]
pub struct AuditHandle {
    auditor: Auditor,
    labels: RequestLabels,
}

impl AuditHandle {
    /// A handle writing with `auditor` and labelling events from `labels`.
    pub fn new(auditor: Auditor, labels: RequestLabels) -> Self {
        Self { auditor, labels }
    }

    /// Appends an event, waiting for a queue slot up to the wait timeout.
    pub async fn event(
        &self,
        name: impl Into<Cow<'static, str>>,
        data: serde_json::Value,
    ) -> Result<(), AuditError> {
        self.auditor
            .send_event(self.labels.snapshot(), name.into(), data)
            .await
    }

    /// Appends an event if a queue slot is free right now.
    pub fn try_event(
        &self,
        name: impl Into<Cow<'static, str>>,
        data: serde_json::Value,
    ) -> Result<(), AuditError> {
        self.auditor
            .try_send_event(self.labels.snapshot(), name.into(), data)
    }

    /// The auditor behind this handle.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }
}
