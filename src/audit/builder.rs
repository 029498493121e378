//! [`AuditorBuilder`]: queue capacity, wait timeout and batch window.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::auditor::Auditor;
use super::batch::Linger;
use super::error::AuditError;
use super::redact::Redactor;
use super::sink::AuditSink;
use super::stats::Shared;
use super::writer;

/// Builds an [`Auditor`].
#[derive(Clone, Debug)]
pub struct AuditorBuilder {
    capacity: usize,
    wait_timeout: Duration,
    batch_window: Duration,
    redactor: Redactor,
}

impl Default for AuditorBuilder {
    fn default() -> Self {
        Self {
            capacity: 8192,
            wait_timeout: Duration::from_secs(1),
            batch_window: Duration::from_millis(1),
            redactor: Redactor::default(),
        }
    }
}

impl AuditorBuilder {
    /// Queue capacity in records (default 8192). Every request in flight
    /// holds one slot from start to finish, so keep it well above the
    /// number of concurrent requests, plus room for handler events. The
    /// queue has no per-tenant share: bound each tenant's requests in
    /// flight (`RateLimitLayer`'s `maxInFlight`) so that together they stay
    /// below it (see the [module docs](super#the-queue-and-never-dropping-a-record)).
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

    /// JSON member names (`card_number`, `iban`) whose values are replaced
    /// by `"[redacted]"`, at any depth, in request and response bodies and
    /// in event data, before a record is hashed or written (default: none).
    /// Names match ignoring case, `_` and `-`: `card_number` also
    /// redacts `cardNumber`, `CardNumber` and `CARD-NUMBER`. With
    /// redaction on, only a whole JSON body (at most 32 levels deep) is
    /// written; any other body — gRPC frames, forms, gzip, NDJSON, JSON
    /// with a BOM or trailing bytes, a body cut at the cap — cannot be
    /// searched, so a marker with its size (`"[N bytes not recorded: not
    /// JSON, redaction on]"`) stands in for it.
    pub fn redact_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redactor = Redactor::new(fields);
        self
    }

    /// The batch window within its bounds.
    fn linger(&self) -> Linger {
        Linger::new(self.batch_window, self.wait_timeout)
    }

    /// Starts the writer thread over `sink`. Fails with
    /// [`AuditError::Spawn`] when the thread cannot be started.
    pub fn spawn(self, sink: impl AuditSink) -> Result<Auditor, AuditError> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let shared = Arc::new(Shared::new(
            sink.recovery(),
            sink.admission_gate(),
            sink.blocked_flag(),
        ));
        writer::spawn(sink, rx, shared.clone(), self.linger(), self.redactor)
            .map_err(AuditError::spawn)?;
        Ok(Auditor::new(tx, shared, self.wait_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch::MAX_BATCH_WINDOW;
    use super::*;

    #[test]
    fn the_window_is_bounded() {
        let auditor_window = |window, wait| {
            AuditorBuilder::default()
                .batch_window(window)
                .wait_timeout(wait)
                .linger()
                .window
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
