//! [`Auditor`]: the cloneable front door of the audit log.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::builder::AuditorBuilder;
use super::entry::Msg;
use super::error::AuditError;
use super::sink::{AuditSink, TornTail};
use super::slot::{Reservation, Slot};
use super::stats::{AuditStats, Shared};
use crate::labels::LabelValues;

/// The audit log's front door: a cloneable handle to a bounded queue read
/// by one writer that owns the [`AuditSink`], assigns `seq`, chains and
/// seals records and writes them.
///
/// The writer runs on its own thread (`finmesh-audit-writer`), so sink I/O
/// — `write`, `fsync`, rotation — never blocks the async runtime. It stops
/// when every `Auditor` clone (and every layer and handle holding one) is
/// dropped, after writing and syncing what is queued.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    wait_timeout: Duration,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("capacity", &self.tx.max_capacity())
            .field("wait_timeout", &self.wait_timeout)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// A builder (queue capacity, wait timeout, batch window).
    pub fn builder() -> AuditorBuilder {
        AuditorBuilder::default()
    }

    /// Starts a writer over `sink` with the default settings.
    pub fn spawn(sink: impl AuditSink) -> Result<Self, AuditError> {
        Self::builder().spawn(sink)
    }

    /// The front door of a writer that reads the other end of `tx`.
    pub(super) fn new(tx: mpsc::Sender<Msg>, shared: Arc<Shared>, wait_timeout: Duration) -> Self {
        Self {
            tx,
            shared,
            wait_timeout,
        }
    }

    /// Counters.
    pub fn stats(&self) -> AuditStats {
        self.shared.stats()
    }

    /// The torn last line the sink cut off when it opened, if any.
    pub fn recovery(&self) -> Option<TornTail> {
        self.shared.recovery().cloned()
    }

    /// Whether the audit log can take records, as a readiness check
    /// wants it: an error when the writer stopped after a sink error, or
    /// when the sink reports less free space than its threshold
    /// (records are still written then; the instance should be drained
    /// before the disk is full), or while the sink blocks the writer (a
    /// PostgreSQL sink in a blocking mode whose spool is full).
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(e) = self.last_error() {
            return Err(e.to_string());
        }
        if self.shared.failed() {
            return Err("audit writer stopped".into());
        }
        // Security: a sink blocking the writer makes every request wait
        // for a slot and then fail: send traffic elsewhere meanwhile.
        if self.shared.gated() || self.shared.blocked() {
            return Err("audit sink full and its destination unreachable".into());
        }
        match self.shared.low_space() {
            Some(free) => Err(format!(
                "audit log: {free} bytes free, below the sink's threshold"
            )),
            None => Ok(()),
        }
    }

    /// The sink error that stopped the writer, if one did: always an
    /// [`AuditError::Sink`].
    pub fn last_error(&self) -> Option<AuditError> {
        self.shared.last_error().map(AuditError::Sink)
    }

    /// Waits until every record queued before this call is written and
    /// synced. Call it on shutdown, after the server has drained: records
    /// still queued when the process exits are not on disk.
    ///
    /// Fails with [`AuditError::Sink`] when the sink failed (now or
    /// before), [`AuditError::Closed`] when the writer is gone otherwise.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || self.last_error().unwrap_or(AuditError::Closed);
        self.tx.send(Msg::Flush(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(AuditError::Sink)
    }

    /// Appends an event outside any request (startup, configuration
    /// changes), waiting for a slot up to the wait timeout.
    pub async fn event(
        &self,
        name: impl Into<Cow<'static, str>>,
        data: serde_json::Value,
    ) -> Result<(), AuditError> {
        self.send_event(LabelValues::default(), name.into(), data)
            .await
    }

    pub(super) async fn send_event(
        &self,
        labels: LabelValues,
        name: Cow<'static, str>,
        data: serde_json::Value,
    ) -> Result<(), AuditError> {
        let msg = Msg::event(labels, name, data);
        match tokio::time::timeout(self.wait_timeout, self.tx.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.event_refused(AuditError::Closed)),
            Err(_) => Err(self.event_refused(AuditError::Full)),
        }
    }

    pub(super) fn try_send_event(
        &self,
        labels: LabelValues,
        name: Cow<'static, str>,
        data: serde_json::Value,
    ) -> Result<(), AuditError> {
        match self.tx.try_send(Msg::event(labels, name, data)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.event_refused(AuditError::Full)),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(self.event_refused(AuditError::Closed))
            }
        }
    }

    fn event_refused(&self, e: AuditError) -> AuditError {
        self.shared.count_event_refused();
        tracing::error!(error = %e, "audit event refused");
        e
    }

    /// Reserves the queue slot of one request's record. A request that gets
    /// none — the queue stays full past the wait timeout, or the writer has
    /// stopped — is refused, and counted in [`AuditStats::refused`] here.
    pub(super) fn try_reserve(&self) -> Reservation {
        // Security: a blocking-strict sink that can hold no more refuses
        // requests before they run, rather than let them go unaudited.
        if self.shared.gated() {
            self.shared.count_refused();
            return Reservation::Closed;
        }
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => Reservation::Reserved(Slot::new(permit, self.shared.clone())),
            Err(mpsc::error::TrySendError::Full(tx)) => {
                let shared = self.shared.clone();
                // The wait timeout runs from now, not from the first poll.
                let reserve = tokio::time::timeout(self.wait_timeout, tx.reserve_owned());
                Reservation::Wait(Box::pin(async move {
                    match reserve.await {
                        Ok(Ok(permit)) => Some(Slot::new(permit, shared)),
                        // Timed out, or the writer stopped: fail closed.
                        _ => {
                            shared.count_refused();
                            None
                        }
                    }
                }))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.count_refused();
                Reservation::Closed
            }
        }
    }
}
