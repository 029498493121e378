//! [`AuditHandle`]: a handler's way into the audit chain.

use std::borrow::Cow;
use std::sync::Arc;

use super::auditor::Auditor;
use super::capture::Capture;
use super::error::AuditError;
use super::policy::Level;
use crate::labels::RequestLabels;

/// A handler's way into the audit chain, found in the request extensions
/// (put there by [`AuditLayer`](super::AuditLayer)). Events carry the
/// request's trace id, order id, tenant, subject and risk as they are when
/// the event is appended.
///
/// With an audit policy, events follow their request's level: at
/// [`Level::None`](super::Level::None) they are not written (and the call
/// succeeds).
///
/// If an event cannot be queued (queue full past the wait timeout, writer
/// stopped), the call returns an error: a money-moving handler should then
/// fail the operation rather than move money unaudited.
#[derive(Clone, Debug)]
pub struct AuditHandle {
    auditor: Auditor,
    labels: RequestLabels,
    capture: Option<Arc<Capture>>,
}

impl AuditHandle {
    /// A handle writing with `auditor` and labelling events from `labels`.
    pub fn new(auditor: Auditor, labels: RequestLabels) -> Self {
        Self {
            auditor,
            labels,
            capture: None,
        }
    }

    pub(super) fn with_capture(mut self, capture: Option<Arc<Capture>>) -> Self {
        self.capture = capture;
        self
    }

    /// Whether the request's audit level drops its events.
    fn silenced(&self) -> bool {
        self.capture
            .as_ref()
            .is_some_and(|c| c.decision().level == Level::None)
    }

    /// Appends an event, waiting for a queue slot up to the wait timeout.
    pub async fn event(
        &self,
        name: impl Into<Cow<'static, str>>,
        data: serde_json::Value,
    ) -> Result<(), AuditError> {
        if self.silenced() {
            return Ok(());
        }
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
        if self.silenced() {
            return Ok(());
        }
        self.auditor
            .try_send_event(self.labels.snapshot(), name.into(), data)
    }

    /// The auditor behind this handle.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }
}
