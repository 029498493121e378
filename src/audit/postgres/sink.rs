//! [`PostgresSink`]: the spool file in front, the shipper behind.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::shipper::{self, ShipState, ShipperHandle};
use super::spool;
use super::{Backpressure, PostgresOptions};
use crate::audit::record::AuditRecord;
use crate::audit::sink::{AuditSink, ChainHead, Durability, FileSink, FileSinkOptions, TornTail};

/// An [`AuditSink`] that writes every record to a local file first — the
/// write-ahead spool — and ships it from there to a PostgreSQL table, in
/// batches, exactly once; see the [module docs](super).
#[derive(Debug)]
pub struct PostgresSink {
    file: FileSink,
    state: Arc<ShipState>,
    mode: Backpressure,
    max_backlog: u64,
    /// The seq of the last record appended to the spool.
    appended: u64,
    /// Whether the file syncs only when asked (interval durability).
    interval: bool,
    gate: Arc<AtomicBool>,
    /// Raised while `accepts` waits for room, in either blocking mode.
    blocked: Arc<AtomicBool>,
}

impl PostgresSink {
    /// Opens (or creates) the spool at `spool` and starts the shipper
    /// thread (`finmesh-audit-shipper`). Fails when the spool cannot be
    /// opened, its chain id is missing or malformed, or the options are
    /// invalid. PostgreSQL being down is not an error: records wait in
    /// the spool.
    pub fn open(spool: impl AsRef<Path>, options: PostgresOptions) -> io::Result<Self> {
        let path: PathBuf = spool.as_ref().to_path_buf();
        let table = options.table_checked()?;
        let file_options = FileSinkOptions {
            // The shipper deletes rotated files once delivered; the
            // file sink must never delete what is not yet shipped.
            max_rotated_files: None,
            max_rotated_bytes: None,
            ..options.file.clone()
        };
        let interval = matches!(file_options.durability, Durability::Interval(_));
        let mut file = FileSink::open_with(&path, file_options)?;
        let head = file.head();
        let chain_id = spool::chain_id(&path, &options.chain_prefix, head.is_some())?;
        // Whatever survived on disk is what the chain continues from:
        // make it durable before any of it is shipped.
        file.sync()?;
        let appended = head.as_ref().map_or(0, |h| h.seq);
        let delivered = spool::read_delivered(&path)?.min(appended);
        let state = Arc::new(ShipState::new(chain_id, appended, delivered));
        shipper::spawn(path, table, options.clone(), state.clone())?;
        Ok(Self {
            file,
            state,
            mode: options.mode,
            max_backlog: options.max_backlog.max(1),
            appended,
            interval,
            gate: Arc::new(AtomicBool::new(false)),
            blocked: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A handle on the shipper: what is delivered, and waiting for it.
    pub fn shipper(&self) -> ShipperHandle {
        ShipperHandle::new(self.state.clone())
    }

    /// This spool's chain id (`<prefix>-<16 hex>`).
    pub fn chain_id(&self) -> &str {
        self.state.chain_id()
    }

    fn backlog(&self) -> u64 {
        self.appended.saturating_sub(self.state.delivered())
    }

    fn publish_synced(&self) {
        self.state.set_synced(self.appended);
    }
}

impl AuditSink for PostgresSink {
    fn head(&self) -> Option<ChainHead> {
        self.file.head()
    }

    fn append(&mut self, record: &AuditRecord, line: &[u8]) -> io::Result<()> {
        self.file.append(record, line)?;
        self.appended = record.seq;
        Ok(())
    }

    fn buffered(&self) -> u64 {
        self.file.buffered()
    }

    fn end_batch(&mut self) -> io::Result<()> {
        self.file.end_batch()?;
        if !self.interval {
            // In the file, and synced by the file sink itself (every
            // record) or left to the OS by choice: shippable now.
            self.publish_synced();
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync()?;
        self.publish_synced();
        Ok(())
    }

    fn sync_deadline(&self) -> Option<Instant> {
        self.file.sync_deadline()
    }

    fn recovery(&self) -> Option<TornTail> {
        self.file.recovery()
    }

    fn low_space(&mut self) -> Option<u64> {
        self.file.low_space()
    }

    fn accepts(&mut self) -> bool {
        if self.backlog() < self.max_backlog {
            return true;
        }
        match self.mode {
            Backpressure::Batch => false,
            Backpressure::Blocking | Backpressure::BlockingStrict => {
                // Unsynced records cannot be shipped: sync them so the
                // backlog can drain at all.
                if let Err(e) = self.sync() {
                    tracing::error!(error = %e, "audit spool: sync failed while full");
                }
                // Security: readiness fails while the writer waits, so
                // traffic moves to replicas that can audit it.
                self.blocked.store(true, Ordering::Relaxed);
                if self.mode == Backpressure::BlockingStrict {
                    self.gate.store(true, Ordering::Relaxed);
                    tracing::error!(
                        backlog = self.backlog(),
                        "audit spool full and PostgreSQL not taking records: refusing requests"
                    );
                }
                // Security: wait rather than drop; the queue fills behind
                // and requests wait for a slot (blocking) or are refused
                // at once (blocking-strict).
                while self.backlog() >= self.max_backlog && self.state.shipper_alive() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.gate.store(false, Ordering::Relaxed);
                self.blocked.store(false, Ordering::Relaxed);
                true
            }
        }
    }

    fn admission_gate(&self) -> Option<Arc<AtomicBool>> {
        (self.mode == Backpressure::BlockingStrict).then(|| self.gate.clone())
    }

    fn blocked_flag(&self) -> Option<Arc<AtomicBool>> {
        (self.mode != Backpressure::Batch).then(|| self.blocked.clone())
    }
}

impl Drop for PostgresSink {
    fn drop(&mut self) {
        // The writer is done: the shipper delivers what is left (within
        // its drain timeout) and stops; the rest waits in the spool.
        self.state.close();
    }
}
