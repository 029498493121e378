//! Where sealed records go: the [`AuditSink`] trait and [`FileSink`]
//! ([`MemorySink`](super::MemorySink) is in `memory_sink.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::AuditRecord;

use super::files::{
    free_bytes, last_line, parse_head, read_pruned, repair_tail, rotated_files, rotated_name,
    sync_dir, write_pruned,
};

/// The last record of a stored chain: where the writer resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
}

/// A torn last line found (and cut off) when a [`FileSink`] opened a log
/// left by a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The file it was in.
    pub file: PathBuf,
    /// Its line number (1-based) in that file.
    pub line: u64,
    /// The byte offset the file was truncated to.
    pub offset: u64,
    /// How many bytes were cut off.
    pub bytes: u64,
    /// Why it was judged torn.
    pub reason: &'static str,
}

/// Append-only storage for the audit chain. The writer task owns the sink
/// and calls it from its own thread, so implementations may block.
pub trait AuditSink: Send + 'static {
    /// The last record already stored, read once when the writer starts,
    /// so the chain resumes after a restart.
    fn head(&self) -> Option<ChainHead>;

    /// Appends one sealed record; `line` is its encoding, ending in `\n`.
    fn append(&mut self, record: &AuditRecord, line: &[u8]) -> io::Result<()>;

    /// Makes everything appended so far durable.
    fn sync(&mut self) -> io::Result<()>;

    /// Hands what [`append`](Self::append) buffered to the storage (not
    /// necessarily durably: that is [`sync`](Self::sync)). The writer
    /// calls it after every batch. The default has nothing buffered.
    fn end_batch(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// How many appended records are buffered, not yet handed to the
    /// storage. The writer counts a record
    /// [`written`](super::AuditStats::written) once it is no longer
    /// buffered, and lost if the sink fails while it is. The default: none.
    fn buffered(&self) -> u64 {
        0
    }

    /// When the sink next wants [`sync`](Self::sync) called (an interval
    /// durability policy with unsynced records), or `None`.
    fn sync_deadline(&self) -> Option<Instant> {
        None
    }

    /// A torn tail this sink repaired when it opened, if any.
    fn recovery(&self) -> Option<TornTail> {
        None
    }

    /// The free space left where the sink writes, when it is below the
    /// sink's threshold: the writer then turns readiness red and counts
    /// it, while records are still written. Called after every batch, so
    /// an implementation should rate-limit what it measures. `None` (the
    /// default): enough room, or not measured.
    fn low_space(&mut self) -> Option<u64> {
        None
    }

    /// Whether the sink takes the next record. Called before each append;
    /// `false` drops the record (a sink in batch mode whose buffer is
    /// full): the writer counts it ([`AuditStats::dropped`](super::AuditStats::dropped)),
    /// uses up its `seq`, and declares the gap with an
    /// `AUDIT_RECORDS_DROPPED` event before the next record it writes. A
    /// sink that must not drop may block here until there is room. The
    /// default takes everything.
    fn accepts(&mut self) -> bool {
        true
    }

    /// A flag the sink raises while requests must be refused before they
    /// run (503 `audit.unavailable`): a blocking-strict sink whose
    /// destination is down and whose buffer is full. Read once when the
    /// writer starts; `None` (the default): never.
    fn admission_gate(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        None
    }

    /// A flag the sink raises while [`accepts`](Self::accepts) blocks the
    /// writer (its destination is down and its buffer full), so that
    /// [`Auditor::readiness`](super::Auditor::readiness) fails meanwhile.
    /// Read once when the writer starts; `None` (the default): never.
    fn blocked_flag(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        None
    }
}

/// When a [`FileSink`] forces its records to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` (`sync_data`) after every record: nothing acknowledged by
    /// the writer is lost to a power cut; the slowest policy.
    EveryRecord,
    /// `fsync` at most this long after a record was written (group
    /// commit): a power cut loses at most this window.
    Interval(Duration),
    /// Leave it to the operating system (a process crash loses nothing, a
    /// power cut may).
    Os,
}

/// How a [`FileSink`] behaves.
#[derive(Clone, Debug)]
pub struct FileSinkOptions {
    /// Durability policy (default: [`Durability::Interval`] of 50 ms).
    pub durability: Durability,
    /// Rotate once the active file reaches this many bytes (default
    /// 64 MiB; `u64::MAX` never rotates).
    pub max_file_bytes: u64,
    /// Keep at most this many rotated files, deleting the oldest after a
    /// rotation (default `None`: keep them all, for your log shipper to
    /// prune).
    pub max_rotated_files: Option<usize>,
    /// Keep rotated files totalling at most this many bytes, deleting the
    /// oldest after a rotation (default `None`). With it, the log's
    /// directory holds at most this plus
    /// [`max_file_bytes`](Self::max_file_bytes) and a record.
    pub max_rotated_bytes: Option<u64>,
    /// Report low space once the file system holding the log has fewer
    /// than this many bytes free for unprivileged writers (default 256 MiB;
    /// `0` never reports). Measured with `statvfs` on Unix at most every
    /// second or every MiB written; not measured elsewhere.
    pub min_free_bytes: u64,
}

impl Default for FileSinkOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Interval(Duration::from_millis(50)),
            max_file_bytes: 64 * 1024 * 1024,
            max_rotated_files: None,
            max_rotated_bytes: None,
            min_free_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How often a [`FileSink`] measures free space, in time and bytes.
const SPACE_CHECK_EVERY: Duration = Duration::from_secs(1);
const SPACE_CHECK_BYTES: u64 = 1024 * 1024;
/// Pending lines past this size are written without waiting for the
/// batch to end.
const PENDING_FLUSH_BYTES: usize = 128 * 1024;

/// An append-only JSON-lines file with size-based rotation.
///
/// # Files
///
/// The active file is the path given (`audit.log`). When it reaches
/// [`max_file_bytes`](FileSinkOptions::max_file_bytes) after a record, it
/// is synced and renamed to `audit.log.<n>` with `n` one more than the
/// highest existing suffix (so `audit.log.1` is the **oldest**), and a new
/// `audit.log` is started. The chain simply continues: the first record of
/// the new file holds the hash of the last record of the previous one.
/// [`verify`](super::verify()) walks `audit.log.1`, `audit.log.2`, … in
/// numeric order, then `audit.log`. Rotation is one rename, so a crash
/// leaves either the old or the new layout.
///
/// # Retention and free space
///
/// By default rotated files are kept (ship or prune them with your log
/// tooling, and keep the head of what you prune to anchor the rest). With
/// [`max_rotated_files`](FileSinkOptions::max_rotated_files) or
/// [`max_rotated_bytes`](FileSinkOptions::max_rotated_bytes) the sink
/// deletes the oldest rotated files after a rotation. Before it deletes
/// any, it writes the `seq` and `hash` of the last record it deletes to
/// `audit.log.pruned` (written to a temporary file, synced, renamed), so
/// [`verify`](super::verify()) checks that the oldest file left starts
/// right after it. Keep that head elsewhere too: whoever can delete the
/// oldest files can also rewrite this one.
///
/// The sink also watches the free space of the file system it writes to
/// ([`min_free_bytes`](FileSinkOptions::min_free_bytes)); below the
/// threshold, [`Auditor::readiness`](super::Auditor::readiness) fails and
/// [`AuditStats::low_space_errors`](super::AuditStats::low_space_errors)
/// counts it, while there is still room for records — so a load balancer
/// drains the instance before a full disk makes every request fail.
///
/// # Restart and torn lines
///
/// On open the sink reads the last line of the newest file. A last line
/// without its newline, or one that does not parse as a sealed record, is
/// what a crash mid-write leaves: it is logged (`tracing::warn!`), reported
/// through [`recovery`](AuditSink::recovery) (and
/// [`Auditor::recovery`](super::Auditor::recovery)), and the file is
/// truncated to the end of the last good line. The chain resumes from that
/// record's `seq` and `hash`. If the line before it is damaged as well, the
/// log was not torn but tampered with or corrupted: opening fails rather
/// than cut more. So does a complete last line whose bytes do not hash to
/// its `hash` (an edit, not a crash): the chain never continues from a
/// forged head.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: File,
    size: u64,
    next_rotation: u64,
    options: FileSinkOptions,
    head: Option<ChainHead>,
    recovery: Option<TornTail>,
    dirty_since: Option<Instant>,
    /// When and after how many bytes free space is measured next.
    space_checked: Option<Instant>,
    written_since_check: u64,
    low_space: Option<u64>,
    /// Lines appended and not yet written: one `write` per batch, not
    /// one per record.
    pending: Vec<u8>,
    /// How many records `pending` holds.
    pending_records: u64,
    /// Set when writing pending lines failed: they are gone, so every
    /// later call fails too and the writer stops, rather than chain the
    /// next record to one that is not in the file.
    broken: Option<io::ErrorKind>,
}

impl FileSink {
    /// Opens (or creates) the log at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with(path, FileSinkOptions::default())
    }

    /// Opens (or creates) the log at `path`, repairing a torn last line.
    pub fn open_with(path: impl AsRef<Path>, options: FileSinkOptions) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let rotated = rotated_files(&path)?;
        let next_rotation = rotated.last().map_or(1, |(n, _)| n + 1);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut recovery = None;
        let mut head = repair_tail(&file, &path, &mut recovery)?;
        if head.is_none() {
            // The active file is empty (fresh, or a crash right after a
            // rotation): resume from the newest rotated file.
            if let Some((_, last)) = rotated.last() {
                let f = File::options().read(true).write(true).open(last)?;
                head = repair_tail(&f, last, &mut recovery)?;
            }
        }
        if head.is_none() {
            // Every rotated file was pruned: resume after the last pruned.
            head = read_pruned(&path)?;
        }
        let size = file.metadata()?.len();
        let mut sink = Self {
            path,
            file,
            size,
            next_rotation,
            options,
            head,
            recovery,
            dirty_since: None,
            space_checked: None,
            written_since_check: 0,
            low_space: None,
            pending: Vec::with_capacity(PENDING_FLUSH_BYTES),
            pending_records: 0,
            broken: None,
        };
        sink.check_space();
        Ok(sink)
    }

    /// Measures free space when due; `low_space` holds the free bytes
    /// when below the threshold.
    fn check_space(&mut self) {
        if self.options.min_free_bytes == 0 {
            return;
        }
        let due = self.written_since_check >= SPACE_CHECK_BYTES
            || self
                .space_checked
                .is_none_or(|t| t.elapsed() >= SPACE_CHECK_EVERY);
        if !due {
            return;
        }
        self.space_checked = Some(Instant::now());
        self.written_since_check = 0;
        self.low_space = free_bytes(&self.path).filter(|free| *free < self.options.min_free_bytes);
    }

    /// Deletes the oldest rotated files beyond the retention limits,
    /// after recording the head of the last one deleted.
    fn prune(&mut self) -> io::Result<()> {
        let (max_files, max_bytes) = (
            self.options.max_rotated_files,
            self.options.max_rotated_bytes,
        );
        if max_files.is_none() && max_bytes.is_none() {
            return Ok(());
        }
        let rotated = rotated_files(&self.path)?;
        let mut sizes = Vec::with_capacity(rotated.len());
        for (_, p) in &rotated {
            sizes.push(fs::metadata(p)?.len());
        }
        let mut total: u64 = sizes.iter().sum();
        let mut count = rotated.len();
        let mut doomed = 0;
        while doomed < rotated.len()
            && (max_files.is_some_and(|m| count > m) || max_bytes.is_some_and(|m| total > m))
        {
            total -= sizes[doomed];
            count -= 1;
            doomed += 1;
        }
        let Some((_, newest_doomed)) = doomed.checked_sub(1).map(|i| &rotated[i]) else {
            return Ok(());
        };
        let f = File::open(newest_doomed)?;
        let len = f.metadata()?.len();
        let (_, last) = last_line(&f, len)?;
        let head = parse_head(&last).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: its last line is not a sealed record; not pruning",
                    newest_doomed.display()
                ),
            )
        })?;
        write_pruned(&self.path, &head)?;
        for (_, p) in &rotated[..doomed] {
            fs::remove_file(p)?;
        }
        sync_dir(&self.path);
        tracing::info!(
            files = doomed,
            up_to_seq = head.seq,
            "audit log: pruned rotated files past the retention limit"
        );
        Ok(())
    }

    /// The active file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the pending lines. On failure they are dropped, not retried:
    /// part of them may be in the file, and the writer stops.
    fn write_pending(&mut self) -> io::Result<()> {
        self.usable()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.pending);
        self.pending.clear();
        self.pending_records = 0;
        if let Err(e) = &r {
            self.broken = Some(e.kind());
        }
        r
    }

    /// Fails once pending lines were lost (see `broken`).
    fn usable(&self) -> io::Result<()> {
        match self.broken {
            Some(kind) => Err(io::Error::new(
                kind,
                "audit log: an earlier write failed and lost buffered records",
            )),
            None => Ok(()),
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.file.sync_data()?;
        let target = rotated_name(&self.path, self.next_rotation);
        fs::rename(&self.path, &target)?;
        self.next_rotation += 1;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)?;
        self.size = 0;
        sync_dir(&self.path);
        // The rotation itself succeeded: a file that cannot be pruned is
        // logged, not a reason to stop auditing (the free-space check
        // still turns readiness red if the disk fills).
        if let Err(e) = self.prune() {
            tracing::error!(error = %e, "audit log: pruning rotated files failed");
        }
        // A new file is a good moment to look at the room left.
        self.space_checked = None;
        Ok(())
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // The writer flushes before it lets go; this covers a sink
        // dropped by its own user between appends.
        let _ = self.write_pending();
    }
}

impl AuditSink for FileSink {
    fn head(&self) -> Option<ChainHead> {
        self.head.clone()
    }

    fn append(&mut self, record: &AuditRecord, line: &[u8]) -> io::Result<()> {
        self.usable()?;
        self.pending.extend_from_slice(line);
        self.pending_records += 1;
        self.size += line.len() as u64;
        self.written_since_check += line.len() as u64;
        match self.options.durability {
            Durability::EveryRecord => {
                self.write_pending()?;
                self.file.sync_data()?;
            }
            Durability::Interval(_) => {
                self.dirty_since.get_or_insert_with(Instant::now);
            }
            Durability::Os => {}
        }
        // The head's string is reused: no allocation per record.
        match &mut self.head {
            Some(head) => {
                head.seq = record.seq;
                head.hash.clear();
                head.hash.push_str(&record.hash);
            }
            None => {
                self.head = Some(ChainHead {
                    seq: record.seq,
                    hash: record.hash.clone(),
                });
            }
        }
        if self.size >= self.options.max_file_bytes {
            self.rotate()?;
        } else if self.pending.len() >= PENDING_FLUSH_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    fn end_batch(&mut self) -> io::Result<()> {
        self.write_pending()
    }

    fn buffered(&self) -> u64 {
        self.pending_records
    }

    fn sync(&mut self) -> io::Result<()> {
        self.write_pending()?;
        self.dirty_since = None;
        self.file.sync_data()
    }

    fn sync_deadline(&self) -> Option<Instant> {
        match self.options.durability {
            Durability::Interval(every) => self.dirty_since.map(|t| t + every),
            _ => None,
        }
    }

    fn recovery(&self) -> Option<TornTail> {
        self.recovery.clone()
    }

    fn low_space(&mut self) -> Option<u64> {
        self.check_space();
        self.low_space
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{GENESIS, RecordKind};

    fn record(seq: u64, prev: &str) -> (AuditRecord, Vec<u8>) {
        let mut r: AuditRecord = serde_json::from_value(serde_json::json!({
            "seq": seq, "time": "2026-01-01T00:00:00.000000Z", "kind": "event",
            "event": "E", "trace_id": null, "order_id": null, "tenant": null,
            "subject": null, "risk": null, "method": null, "route": null, "verb": null,
            "resource": null, "name": null, "decision": null, "code": null,
            "binding": null, "shadow": false, "http_status": null, "grpc_status": null,
            "latency_us": null, "outcome": null, "idempotency_key": null,
            "replayed": false, "data": null, "prev": prev, "hash": ""
        }))
        .unwrap();
        assert_eq!(r.kind, RecordKind::Event);
        let line = r.seal();
        (r, line)
    }

    fn write_n(sink: &mut FileSink, n: u64) -> String {
        let mut prev = sink.head().map_or(GENESIS.to_string(), |h| h.hash);
        let start = sink.head().map_or(1, |h| h.seq + 1);
        for seq in start..start + n {
            let (r, line) = record(seq, &prev);
            sink.append(&r, &line).unwrap();
            prev = r.hash;
        }
        prev
    }

    #[test]
    fn lines_wait_for_the_flush_that_ends_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut sink = FileSink::open(&path).unwrap();
        write_n(&mut sink, 3);
        assert_eq!(fs::metadata(&path).unwrap().len(), 0, "buffered");
        sink.end_batch().unwrap();
        let three = fs::metadata(&path).unwrap().len();
        assert!(three > 0);
        write_n(&mut sink, 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), three);
        sink.sync().unwrap();
        assert!(
            fs::metadata(&path).unwrap().len() > three,
            "sync writes first"
        );
        assert_eq!(super::super::verify(&path).unwrap().records, 4);
        // Every record is written at once when each must be durable.
        let path = dir.path().join("every.log");
        let options = FileSinkOptions {
            durability: Durability::EveryRecord,
            ..FileSinkOptions::default()
        };
        let mut sink = FileSink::open_with(&path, options).unwrap();
        write_n(&mut sink, 1);
        assert!(fs::metadata(&path).unwrap().len() > 0);
    }

    #[test]
    fn a_failed_write_breaks_the_sink_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut sink = FileSink::open(&path).unwrap();
        write_n(&mut sink, 2);
        assert_eq!(sink.buffered(), 2);
        // The disk fills up under the buffered lines.
        sink.file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        assert!(sink.end_batch().is_err());
        assert_eq!(sink.buffered(), 0, "the lines are gone");
        // Nothing may be chained to records that are not in the file.
        let (r, line) = record(3, "x");
        let e = sink.append(&r, &line).unwrap_err();
        assert!(e.to_string().contains("earlier write failed"), "{e}");
        assert!(sink.end_batch().is_err());
        assert!(sink.sync().is_err());
    }

    #[test]
    fn resumes_from_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut sink = FileSink::open(&path).unwrap();
        assert_eq!(sink.head(), None);
        let last = write_n(&mut sink, 3);
        drop(sink);
        let sink = FileSink::open(&path).unwrap();
        assert_eq!(sink.head(), Some(ChainHead { seq: 3, hash: last }));
        assert_eq!(sink.recovery(), None);
    }

    #[test]
    fn torn_tails_are_truncated_and_reported() {
        // (what the crash left, reason)
        let cases: [(&[u8], &str); 3] = [
            (b"{\"seq\":4,\"ti", "last line has no newline"),
            (b"\0\0\0\0", "last line has no newline"),
            (b"{\"seq\":4}\n", "last line is not a sealed record"),
        ];
        for (tail, reason) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.log");
            let mut sink = FileSink::open(&path).unwrap();
            let last = write_n(&mut sink, 3);
            drop(sink);
            let good_len = fs::metadata(&path).unwrap().len();
            OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap()
                .write_all(tail)
                .unwrap();
            let mut sink = FileSink::open(&path).unwrap();
            let torn = sink.recovery().expect("torn tail reported");
            assert_eq!(torn.line, 4);
            assert_eq!(torn.offset, good_len);
            assert_eq!(torn.bytes, tail.len() as u64);
            assert_eq!(torn.reason, reason);
            assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
            assert_eq!(sink.head().unwrap().hash, last);
            write_n(&mut sink, 2);
            drop(sink);
            let report = super::super::verify(&path).unwrap();
            assert_eq!(report.records, 5);
        }
    }

    #[test]
    fn a_torn_only_line_resets_to_genesis() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        fs::write(&path, b"{\"seq\":1,").unwrap();
        let sink = FileSink::open(&path).unwrap();
        assert_eq!(sink.head(), None);
        assert_eq!(sink.recovery().unwrap().line, 1);
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn an_edited_last_record_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut sink = FileSink::open(&path).unwrap();
        write_n(&mut sink, 2);
        drop(sink);
        let text = fs::read_to_string(&path).unwrap();
        let edited = text.replacen("\"seq\":2,\"time\":\"2026", "\"seq\":2,\"time\":\"2025", 1);
        assert_ne!(text, edited);
        fs::write(&path, &edited).unwrap();
        let err = FileSink::open(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(fs::read_to_string(&path).unwrap(), edited, "nothing cut");
    }

    #[test]
    fn two_damaged_lines_refuse_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut sink = FileSink::open(&path).unwrap();
        write_n(&mut sink, 2);
        drop(sink);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage\n{\"torn").unwrap();
        let err = FileSink::open(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn rotation_keeps_the_chain_and_resumes_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let opts = FileSinkOptions {
            durability: Durability::Os,
            max_file_bytes: 1500,
            ..FileSinkOptions::default()
        };
        let mut sink = FileSink::open_with(&path, opts.clone()).unwrap();
        // Write until a second rotation has just happened (active file empty).
        let mut written = 0;
        while rotated_files(&path).unwrap().len() < 2 || sink.size != 0 {
            write_n(&mut sink, 1);
            written += 1;
            assert!(written < 100);
        }
        drop(sink);
        // A crash right after a rotation leaves no active file.
        fs::remove_file(&path).unwrap();
        let mut sink = FileSink::open_with(&path, opts).unwrap();
        assert_eq!(sink.head().unwrap().seq, written);
        write_n(&mut sink, 5);
        drop(sink);
        let report = super::super::verify(&path).unwrap();
        assert_eq!(report.records, written + 5);
        assert_eq!(report.last_seq, Some(written + 5));
        assert!(report.files.len() >= 3);
    }
}
