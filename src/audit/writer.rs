//! [`Auditor`]: the bounded queue and the writer that owns the sink.

use std::borrow::Cow;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::record::{AuditRecord, Decision, GENESIS, Outcome, RecordKind, rfc3339};
use super::sink::{AuditSink, TornTail};
use crate::labels::{LabelValues, RequestLabels};

/// Why a record could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditError {
    /// The queue stayed full for the whole wait timeout.
    Full,
    /// The writer stopped (its sink failed, or it was shut down).
    Closed,
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full => "audit queue full",
            Self::Closed => "audit writer stopped",
        })
    }
}

impl std::error::Error for AuditError {}

/// Counters of an [`Auditor`], read with [`Auditor::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditStats {
    /// Records written to the sink.
    pub written: u64,
    /// Requests refused with 503 `audit.unavailable` because no queue slot
    /// could be reserved in time. Such a refusal has no record (there was
    /// no slot to write it with); this counter and an `error!` log are its
    /// trace.
    pub refused: u64,
    /// Handler events refused (queue full or writer stopped).
    pub events_refused: u64,
    /// Records lost because the sink failed: queued but never written.
    pub lost: u64,
    /// Whether the writer stopped after a sink error.
    pub failed: bool,
}

#[derive(Default)]
pub(crate) struct Shared {
    written: AtomicU64,
    pub(crate) refused: AtomicU64,
    events_refused: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) failed: AtomicBool,
    recovery: Mutex<Option<TornTail>>,
    last_error: Mutex<Option<String>>,
}

/// What request and event records share, taken from [`RequestLabels`].
pub(crate) struct Entry {
    pub(crate) at: SystemTime,
    pub(crate) labels: LabelValues,
    pub(crate) detail: Detail,
}

pub(crate) enum Detail {
    Request {
        method: http::Method,
        path: Option<String>,
        http_status: Option<u16>,
        grpc_status: Option<i32>,
        latency: Duration,
        outcome: Outcome,
    },
    Event {
        name: Cow<'static, str>,
        data: serde_json::Value,
    },
}

pub(crate) enum Msg {
    Entry(Box<Entry>),
    Flush(oneshot::Sender<Result<(), String>>),
}

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
    pub(crate) tx: mpsc::Sender<Msg>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) wait_timeout: Duration,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("capacity", &self.tx.max_capacity())
            .field("wait_timeout", &self.wait_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Auditor`].
#[derive(Clone, Debug)]
pub struct AuditorBuilder {
    capacity: usize,
    wait_timeout: Duration,
    batch_window: Duration,
}

impl Default for AuditorBuilder {
    fn default() -> Self {
        Self {
            capacity: 8192,
            wait_timeout: Duration::from_secs(1),
            batch_window: Duration::from_millis(1),
        }
    }
}

impl AuditorBuilder {
    /// Queue capacity in records (default 8192). Every request in flight
    /// holds one slot from start to finish, so keep it well above the
    /// number of concurrent requests, plus room for handler events.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How long a request or event waits for a queue slot before it is
    /// refused (default 1 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How long the writer waits, after writing a small batch, before it
    /// looks again (default 1 ms; zero: never waits; at most 100 ms and a
    /// quarter of the [wait timeout](Self::wait_timeout)).
    ///
    /// While it waits, requests enqueue their records without waking it;
    /// without a window, every record of a steady trickle of requests pays
    /// for a thread wake-up (a futex syscall, about a microsecond) on the
    /// request's own thread. Records reach the sink up to one window later
    /// (plus up to 1 ms: the timer ticks in milliseconds), and a file
    /// sink's sync interval is kept. The writer does not wait after a full
    /// batch (256 records), after a `flush`, or while the queue is half
    /// full or more — slots held by requests in flight count — so a queue
    /// near its limit is drained at once. An idle writer sleeps until the
    /// next record and costs nothing.
    pub fn batch_window(mut self, window: Duration) -> Self {
        self.batch_window = window;
        self
    }

    /// The batch window within its bounds.
    fn effective_window(&self) -> Duration {
        self.batch_window
            .min(MAX_BATCH_WINDOW)
            .min(self.wait_timeout / 4)
    }

    /// Starts the writer thread over `sink`.
    pub fn spawn(self, sink: impl AuditSink) -> io::Result<Auditor> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let shared = Arc::new(Shared::default());
        if let Some(torn) = sink.recovery() {
            *shared.recovery.lock().unwrap_or_else(|p| p.into_inner()) = Some(torn);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let writer_shared = shared.clone();
        let linger = Linger {
            window: self.effective_window(),
        };
        std::thread::Builder::new()
            .name("finmesh-audit-writer".into())
            .spawn(move || rt.block_on(run_writer(sink, rx, writer_shared, linger)))?;
        Ok(Auditor {
            tx,
            shared,
            wait_timeout: self.wait_timeout,
        })
    }
}

impl Auditor {
    /// A builder (queue capacity, wait timeout).
    pub fn builder() -> AuditorBuilder {
        AuditorBuilder::default()
    }

    /// Starts a writer over `sink` with the default settings.
    pub fn spawn(sink: impl AuditSink) -> io::Result<Self> {
        Self::builder().spawn(sink)
    }

    /// Counters.
    pub fn stats(&self) -> AuditStats {
        let s = &self.shared;
        AuditStats {
            written: s.written.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            events_refused: s.events_refused.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }

    /// The torn last line the sink cut off when it opened, if any.
    pub fn recovery(&self) -> Option<TornTail> {
        self.shared
            .recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The sink error that stopped the writer, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until every record queued before this call is written and
    /// synced. Call it on shutdown, after the server has drained: records
    /// still queued when the process exits are not on disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let closed = || {
            io::Error::other(
                self.last_error()
                    .unwrap_or_else(|| "audit writer stopped".into()),
            )
        };
        self.tx.send(Msg::Flush(tx)).await.map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?.map_err(io::Error::other)
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

    pub(crate) async fn send_event(
        &self,
        labels: LabelValues,
        name: Cow<'static, str>,
        data: serde_json::Value,
    ) -> Result<(), AuditError> {
        let msg = event_msg(labels, name, data);
        match tokio::time::timeout(self.wait_timeout, self.tx.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.event_refused(AuditError::Closed)),
            Err(_) => Err(self.event_refused(AuditError::Full)),
        }
    }

    pub(crate) fn try_send_event(
        &self,
        labels: LabelValues,
        name: Cow<'static, str>,
        data: serde_json::Value,
    ) -> Result<(), AuditError> {
        match self.tx.try_send(event_msg(labels, name, data)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.event_refused(AuditError::Full)),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(self.event_refused(AuditError::Closed))
            }
        }
    }

    fn event_refused(&self, e: AuditError) -> AuditError {
        self.shared.events_refused.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "audit event refused");
        e
    }
}

fn event_msg(labels: LabelValues, name: Cow<'static, str>, data: serde_json::Value) -> Msg {
    Msg::Entry(Box::new(Entry {
        at: SystemTime::now(),
        labels,
        detail: Detail::Event { name, data },
    }))
}

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

/// Most records the writer takes off the queue at once.
const BATCH: usize = 256;

/// Longest accepted batch window.
const MAX_BATCH_WINDOW: Duration = Duration::from_millis(100);

/// When the writer waits after a batch: see `AuditorBuilder::batch_window`.
#[derive(Clone, Copy, Debug)]
struct Linger {
    window: Duration,
}

impl Linger {
    /// Whether to wait after a batch of `taken` messages, `flushed` if it
    /// held a flush, with `free` of `max` queue slots unreserved now.
    fn waits(self, taken: usize, flushed: bool, free: usize, max: usize) -> bool {
        !self.window.is_zero() && taken < BATCH && !flushed && free * 2 > max
    }
}

async fn run_writer<S: AuditSink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    linger: Linger,
) {
    let (mut seq, mut prev) = match sink.head() {
        Some(h) => (h.seq, h.hash),
        None => (0, GENESIS.to_owned()),
    };
    let mut batch = Vec::with_capacity(BATCH);
    // Marks the writer failed *before* anything queued is dropped, so a
    // `flush` that sees the writer gone also sees why.
    let fail = |e: io::Error| {
        shared.failed.store(true, Ordering::Relaxed);
        *shared.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        e
    };
    let result: io::Result<()> = async {
        loop {
            let n = match sink.sync_deadline() {
                Some(deadline) => {
                    tokio::select! {
                        n = rx.recv_many(&mut batch, BATCH) => n,
                        () = tokio::time::sleep_until(deadline.into()) => {
                            sink.sync().map_err(fail)?;
                            continue;
                        }
                    }
                }
                None => rx.recv_many(&mut batch, BATCH).await,
            };
            if n == 0 {
                return sink.sync().map_err(fail);
            }
            // Popped from the back, so on failure what is left stays in
            // `batch` to be counted.
            batch.reverse();
            let mut flushed = false;
            while let Some(msg) = batch.pop() {
                match msg {
                    Msg::Entry(entry) => {
                        seq += 1;
                        let mut record = build(*entry, seq, std::mem::take(&mut prev));
                        let line = record.seal();
                        if let Err(e) = sink.append(&record, &line) {
                            shared.lost.fetch_add(1, Ordering::Relaxed);
                            return Err(fail(e));
                        }
                        prev = record.hash;
                        shared.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Msg::Flush(reply) => {
                        flushed = true;
                        let r = sink.sync().map_err(fail);
                        let _ = reply.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                        r?;
                    }
                }
            }
            // Under a steady stream of records the timer branch above may
            // rarely win the select: honour the interval here as well.
            if sink
                .sync_deadline()
                .is_some_and(|deadline| deadline <= std::time::Instant::now())
            {
                sink.sync().map_err(fail)?;
            }
            // A small batch and a roomy queue: let the next records gather
            // without waking this thread, but not past the sync deadline.
            if linger.waits(n, flushed, rx.capacity(), rx.max_capacity()) {
                let mut until = std::time::Instant::now() + linger.window;
                if let Some(deadline) = sink.sync_deadline() {
                    until = until.min(deadline);
                }
                tokio::time::sleep_until(until.into()).await;
            }
        }
    }
    .await;
    if let Err(e) = result {
        // Fail closed: stop taking records, so requests are refused with
        // `audit.unavailable` instead of going unaudited.
        rx.close();
        let mut lost = batch.iter().filter(|m| matches!(m, Msg::Entry(_))).count() as u64;
        batch.clear();
        while let Ok(msg) = rx.try_recv() {
            if matches!(msg, Msg::Entry(_)) {
                lost += 1;
            }
        }
        shared.lost.fetch_add(lost, Ordering::Relaxed);
        tracing::error!(
            error = %e,
            lost = shared.lost.load(Ordering::Relaxed),
            "audit sink failed; audit writer stopped, requests will be refused"
        );
    }
}

fn build(entry: Entry, seq: u64, prev: String) -> AuditRecord {
    let Entry { at, labels, detail } = entry;
    let s = |v: Option<Arc<str>>| v.map(|v| v.to_string());
    let authz = labels.authorization;
    let (verb, resource, name, binding, shadow) = match &authz {
        Some(a) => (
            Some(a.verb.to_string()),
            Some(a.resource.to_string()),
            a.name.as_ref().map(|n| n.to_string()),
            a.binding.as_ref().map(|b| b.to_string()),
            a.shadow,
        ),
        None => (None, None, None, None, false),
    };
    let code = labels.rejection.map(|r| r.code.into_owned());
    let mut record = AuditRecord {
        seq,
        time: rfc3339(at),
        kind: RecordKind::Event,
        event: None,
        trace_id: s(labels.trace_id),
        order_id: s(labels.order_id),
        tenant: labels.tenant.map(|t| t.to_string()),
        subject: s(labels.subject),
        risk: labels.risk,
        method: None,
        route: labels.route.map(Cow::into_owned),
        verb,
        resource,
        name,
        decision: None,
        code: None,
        binding,
        shadow,
        http_status: None,
        grpc_status: None,
        latency_us: None,
        outcome: None,
        idempotency_key: s(labels.idempotency_key),
        replayed: labels.replayed,
        data: None,
        prev,
        hash: String::new(),
    };
    match detail {
        Detail::Request {
            method,
            path,
            http_status,
            grpc_status,
            latency,
            outcome,
        } => {
            let denied = code.is_some() || authz.as_ref().is_some_and(|a| !a.allowed && !a.shadow);
            record.kind = RecordKind::Request;
            record.method = Some(method.as_str().to_owned());
            if record.route.is_none() {
                record.route = path;
            }
            record.decision = Some(if denied {
                Decision::Deny
            } else {
                Decision::Allow
            });
            record.code = code;
            record.http_status = http_status;
            record.grpc_status = grpc_status;
            record.latency_us = Some(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
            record.outcome = Some(outcome);
        }
        Detail::Event { name, data } => {
            record.event = Some(name.into_owned());
            record.data = Some(data);
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_waits_only_after_a_small_batch_with_a_roomy_queue() {
        let on = Linger {
            window: Duration::from_millis(1),
        };
        let off = Linger {
            window: Duration::ZERO,
        };
        // A trickle into an empty queue: wait.
        assert!(on.waits(1, false, 8192, 8192));
        // Zero window, a full batch, or a flush: never.
        assert!(!off.waits(1, false, 8192, 8192));
        assert!(!on.waits(BATCH, false, 8192, 8192));
        assert!(!on.waits(1, true, 8192, 8192));
        // Slots held by requests in flight count: 60 of 64 reserved, so
        // the batches are small but the queue is nearly full: no wait.
        assert!(!on.waits(2, false, 4, 64));
        assert!(!on.waits(1, false, 32, 64));
        assert!(on.waits(1, false, 33, 64));
        // A one-slot queue that is free.
        assert!(on.waits(1, false, 1, 1));
        assert!(!on.waits(1, false, 0, 1));
    }

    #[test]
    fn the_window_is_bounded() {
        let auditor_window = |window, wait| {
            AuditorBuilder::default()
                .batch_window(window)
                .wait_timeout(wait)
                .effective_window()
        };
        assert_eq!(
            auditor_window(Duration::MAX, Duration::from_secs(1)),
            MAX_BATCH_WINDOW
        );
        assert_eq!(
            auditor_window(Duration::from_millis(50), Duration::from_millis(40)),
            Duration::from_millis(10)
        );
    }
}
