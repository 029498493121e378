//! [`AuditStats`], and the state the writer shares with every
//! [`Auditor`](super::Auditor) clone.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::sink::TornTail;

/// Counters of an [`Auditor`](super::Auditor), read with
/// [`Auditor::stats`](super::Auditor::stats).
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
    /// Records the sink dropped when its buffer was full (batch mode);
    /// their numbers are a declared gap in the chain.
    pub dropped: u64,
    /// Whether the writer stopped after a sink error.
    pub failed: bool,
    /// Whether the sink reports less free space than its threshold now
    /// ([`FileSinkOptions::min_free_bytes`](super::FileSinkOptions::min_free_bytes)).
    pub low_space: bool,
    /// How many times the sink went below its free-space threshold.
    pub low_space_errors: u64,
}

/// Counters and the writer's fate, shared by the writer thread, every
/// `Auditor` clone and every reserved slot. Lock-free but for the error
/// that stopped the writer, which is written once and read rarely.
pub(super) struct Shared {
    written: AtomicU64,
    refused: AtomicU64,
    events_refused: AtomicU64,
    lost: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicBool,
    /// Raised by the sink while requests must be refused.
    gate: Option<Arc<AtomicBool>>,
    /// Raised by the sink while it blocks the writer.
    blocked: Option<Arc<AtomicBool>>,
    /// Free bytes while below the threshold, else `u64::MAX`.
    low_space: AtomicU64,
    low_space_errors: AtomicU64,
    recovery: Option<TornTail>,
    last_error: Mutex<Option<Arc<io::Error>>>,
}

impl Shared {
    /// State for a writer whose sink repaired `recovery` when it opened.
    pub(super) fn new(
        recovery: Option<TornTail>,
        gate: Option<Arc<AtomicBool>>,
        blocked: Option<Arc<AtomicBool>>,
    ) -> Self {
        Self {
            written: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            events_refused: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            gate,
            blocked,
            low_space: AtomicU64::new(u64::MAX),
            low_space_errors: AtomicU64::new(0),
            recovery,
            last_error: Mutex::new(None),
        }
    }

    /// Records what the sink reports about free space; going below the
    /// threshold is counted and logged once per crossing.
    pub(super) fn set_low_space(&self, free: Option<u64>) {
        let now = free.unwrap_or(u64::MAX);
        let before = self.low_space.swap(now, Ordering::Relaxed);
        match (before == u64::MAX, free) {
            (true, Some(free)) => {
                self.low_space_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    free_bytes = free,
                    "audit log: free space below the threshold; readiness fails until there is room"
                );
            }
            (false, None) => tracing::info!("audit log: free space above the threshold again"),
            _ => {}
        }
    }

    /// Free bytes, while the sink reports less than its threshold.
    pub(super) fn low_space(&self) -> Option<u64> {
        Some(self.low_space.load(Ordering::Relaxed)).filter(|f| *f != u64::MAX)
    }

    pub(super) fn stats(&self) -> AuditStats {
        AuditStats {
            written: self.written.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            events_refused: self.events_refused.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed(),
            low_space: self.low_space().is_some(),
            low_space_errors: self.low_space_errors.load(Ordering::Relaxed),
        }
    }

    pub(super) fn count_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_event_refused(&self) {
        self.events_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_lost(&self, n: u64) {
        self.lost.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the sink asks for requests to be refused now.
    pub(super) fn gated(&self) -> bool {
        self.gate
            .as_ref()
            .is_some_and(|g| g.load(Ordering::Relaxed))
    }

    /// Whether the sink is blocking the writer now.
    pub(super) fn blocked(&self) -> bool {
        self.blocked
            .as_ref()
            .is_some_and(|g| g.load(Ordering::Relaxed))
    }

    pub(super) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Whether the writer stopped after a sink error.
    pub(super) fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Marks the writer failed by `e` and keeps `e` for
    /// [`last_error`](Self::last_error).
    pub(super) fn fail(&self, e: io::Error) -> Arc<io::Error> {
        let e = Arc::new(e);
        self.failed.store(true, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        e
    }

    /// The sink error that stopped the writer, if one did.
    pub(super) fn last_error(&self) -> Option<Arc<io::Error>> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn recovery(&self) -> Option<&TornTail> {
        self.recovery.as_ref()
    }
}
