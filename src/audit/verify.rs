//! [`verify`]: walks an audit log and reports the first broken link.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::entry::DROPPED_EVENT;
use super::files::{read_pruned, rotated_files};
use super::record::{ChainLink, GENESIS, RecordKind, sha256_hex, split_hash};
use super::sink::ChainHead;

/// What a successful verification saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The files walked, oldest first.
    pub files: Vec<PathBuf>,
    /// How many records were verified.
    pub records: u64,
    /// The `seq` of the last record (`None` for an empty log).
    pub last_seq: Option<u64>,
    /// The hash of the last record ([`GENESIS`] for an empty log).
    ///
    /// A hash chain cannot tell a log cut after a complete record from a
    /// log that simply ended there. To catch that, store `(last_seq,
    /// head)` somewhere else (a ticket, another system) and compare.
    pub head: String,
    /// When older files were pruned by retention: the last pruned record
    /// (from `<log>.pruned`), which the oldest file left continues. Compare
    /// it with the head kept elsewhere when those files were shipped.
    pub pruned: Option<ChainHead>,
    /// Gaps declared in the chain: records a sink dropped on overflow
    /// (batch mode), as `(first_seq, last_seq)`, each declared by the
    /// `AUDIT_RECORDS_DROPPED` event right after it. A deleted record is
    /// never taken for one: only the declaring record, chained to the
    /// record before the gap, makes a gap declared.
    pub gaps: Vec<(u64, u64)>,
}

/// How a link is broken.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakKind {
    /// The record's bytes do not hash to its `hash`: it was changed.
    Changed {
        /// The hash it carries.
        recorded: String,
        /// The hash of its bytes.
        computed: String,
    },
    /// A record is missing before this one (its `seq` jumps ahead).
    Missing {
        /// The `seq` that should be here.
        expected: u64,
    },
    /// This record is out of place: inserted, duplicated or reordered (its
    /// `seq` is at or behind the one expected).
    OutOfOrder {
        /// The `seq` that should be here.
        expected: u64,
    },
    /// The record's `prev` is not the hash of the record before it (a
    /// record before it was changed and re-hashed, or replaced).
    PrevMismatch {
        /// The hash of the record before.
        expected: String,
        /// The `prev` it carries.
        found: String,
    },
    /// The line is not a sealed record.
    Malformed(String),
    /// The file ends in the middle of a line (cut, or torn by a crash and
    /// not yet repaired by reopening the sink).
    Truncated,
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Changed { recorded, computed } => write!(
                f,
                "record was changed (hash {recorded}, its bytes hash to {computed})"
            ),
            Self::Missing { expected } => write!(f, "record {expected} is missing"),
            Self::OutOfOrder { expected } => {
                write!(
                    f,
                    "record out of order (inserted or moved); expected seq {expected}"
                )
            }
            Self::PrevMismatch { expected, found } => write!(
                f,
                "prev {found} is not the hash of the record before ({expected})"
            ),
            Self::Malformed(why) => write!(f, "not a sealed audit record: {why}"),
            Self::Truncated => f.write_str("file ends mid-record (truncated)"),
        }
    }
}

/// The first broken link of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    /// The file it is in.
    pub file: PathBuf,
    /// Its line number in that file (1-based).
    pub line: u64,
    /// The `seq` the line carries, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: BreakKind,
    /// How many records verified before it.
    pub verified: u64,
}

impl fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(
            f,
            ": {} [{} records verified before]",
            self.kind, self.verified
        )
    }
}

/// Why [`verify`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum VerifyError {
    /// The chain is broken.
    Broken(BrokenLink),
    /// Neither the log nor any rotated file exists.
    NotFound(PathBuf),
    /// Reading failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Broken(b) => write!(f, "broken audit chain: {b}"),
            Self::NotFound(p) => write!(f, "no audit log at {}", p.display()),
            Self::Io { path, source } => write!(f, "reading {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Verifies the audit log at `path` and its rotated files.
///
/// Walks `path.1`, `path.2`, … (numeric order, oldest first), then `path`
/// itself, as [`FileSink`](super::FileSink) names them. The first record
/// must have `seq` 1 and `prev` [`GENESIS`]; every record must hash to its
/// `hash` (see [`AuditRecord`](super::AuditRecord) for the canonical encoding), carry the next
/// `seq`, and hold the previous record's hash in `prev`. Returns the first
/// broken link with its file, line and `seq`: a changed record is reported
/// at itself, a deleted one at the record after the gap, an inserted,
/// duplicated or reordered one at the first line out of place, a file cut
/// mid-record at its last line. A record changed *and re-hashed* is
/// reported at the record after it, whose `prev` no longer matches.
/// Whole records cut off the end leave a valid, shorter chain: compare
/// [`VerifyReport::head`] with a head kept elsewhere to catch that.
///
/// When the sink pruned old files by retention, `<log>.pruned` holds the
/// head of the last record deleted, and the walk starts right after it
/// (the first record must carry the next `seq` and that hash as `prev`);
/// see [`VerifyReport::pruned`].
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport, VerifyError> {
    let path = path.as_ref();
    let io_err = |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = rotated_files(path)
        .map_err(io_err)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    if files.is_empty() {
        return Err(VerifyError::NotFound(path.to_path_buf()));
    }
    let mut v = Verifier::new();
    v.pruned = read_pruned(path).map_err(io_err)?;
    for file in &files {
        let bytes = std::fs::read(file).map_err(|source| VerifyError::Io {
            path: file.clone(),
            source,
        })?;
        v.feed_file(file, &bytes)?;
    }
    Ok(v.finish())
}

/// Incremental verifier: feed it files in chain order.
pub(crate) struct Verifier {
    files: Vec<PathBuf>,
    records: u64,
    /// The `seq` the next record must carry; `None` once a record had
    /// `seq` `u64::MAX`, after which none can follow.
    next_seq: Option<u64>,
    prev: String,
    /// Where the chain starts when older files were pruned.
    pruned: Option<ChainHead>,
    started_after_pruned: bool,
    gaps: Vec<(u64, u64)>,
}

impl Verifier {
    pub(crate) fn new() -> Self {
        Self {
            files: Vec::new(),
            records: 0,
            next_seq: Some(1),
            prev: GENESIS.to_owned(),
            pruned: None,
            started_after_pruned: false,
            gaps: Vec::new(),
        }
    }

    pub(crate) fn feed_file(&mut self, file: &Path, bytes: &[u8]) -> Result<(), VerifyError> {
        self.files.push(file.to_path_buf());
        let mut rest = bytes;
        let mut line_no = 0;
        while !rest.is_empty() {
            line_no += 1;
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                return Err(VerifyError::Broken(BrokenLink {
                    file: file.to_path_buf(),
                    line: line_no,
                    seq: leading_seq(rest),
                    kind: BreakKind::Truncated,
                    verified: self.records,
                }));
            };
            let line = &rest[..end];
            rest = &rest[end + 1..];
            // The expected record further down this file means it was
            // moved, not deleted.
            let moved = |expected| {
                rest.split(|&b| b == b'\n')
                    .any(|l| leading_seq(l) == Some(expected))
            };
            self.feed_line(file, line_no, line, moved)?;
        }
        Ok(())
    }

    /// Checks one line (without its newline) of `source`; `moved(seq)`
    /// says whether the record numbered `seq` comes later, so a jump ahead
    /// is a reordering rather than a deletion.
    pub(crate) fn feed_line(
        &mut self,
        source: &Path,
        line_no: u64,
        line: &[u8],
        moved: impl Fn(u64) -> bool,
    ) -> Result<u64, VerifyError> {
        let broken = |seq, kind, verified| {
            VerifyError::Broken(BrokenLink {
                file: source.to_path_buf(),
                line: line_no,
                seq,
                kind,
                verified,
            })
        };
        {
            // Security: only the chain's members are read (see
            // `ChainLink`), so a record too deep for a full parse still
            // verifies by its hash.
            let record = ChainLink::parse(line);
            let seq = record
                .as_ref()
                .map(|r| r.seq)
                .ok()
                .or_else(|| leading_seq(line));
            let Some((canonical, recorded)) = split_hash(line) else {
                return Err(broken(
                    seq,
                    BreakKind::Malformed("no hash member at the end".into()),
                    self.records,
                ));
            };
            let computed = sha256_hex(&canonical);
            if computed != recorded {
                return Err(broken(
                    seq,
                    BreakKind::Changed {
                        recorded: recorded.to_owned(),
                        computed,
                    },
                    self.records,
                ));
            }
            let recorded = recorded.to_owned();
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    return Err(broken(
                        seq,
                        BreakKind::Malformed(e.to_string()),
                        self.records,
                    ));
                }
            };
            // The oldest file left after pruning continues the pruned
            // head; one still starting at 1 (a crash between recording the
            // head and deleting) is an ordinary chain.
            if self.records == 0
                && record.seq != 1
                && let Some(p) = &self.pruned
            {
                self.next_seq = p.seq.checked_add(1);
                self.prev = p.hash.clone();
                self.started_after_pruned = true;
            }
            // Security: a forged `seq` (or pruned head) of u64::MAX must end
            // the walk with a broken link, not overflow the counter.
            let Some(mut next_seq) = self.next_seq else {
                return Err(broken(
                    seq,
                    BreakKind::Malformed(format!("no record can follow seq {}", u64::MAX)),
                    self.records,
                ));
            };
            if record.seq > next_seq && declares_gap(&record, line, next_seq, &self.prev) {
                self.gaps.push((next_seq, record.seq - 1));
                next_seq = record.seq;
            }
            if record.seq > next_seq {
                let expected = next_seq;
                let kind = if moved(expected) {
                    BreakKind::OutOfOrder { expected }
                } else {
                    BreakKind::Missing { expected }
                };
                return Err(broken(seq, kind, self.records));
            }
            if record.seq < next_seq {
                return Err(broken(
                    seq,
                    BreakKind::OutOfOrder { expected: next_seq },
                    self.records,
                ));
            }
            if record.prev != self.prev {
                return Err(broken(
                    seq,
                    BreakKind::PrevMismatch {
                        expected: self.prev.clone(),
                        found: record.prev,
                    },
                    self.records,
                ));
            }
            self.records += 1;
            self.next_seq = next_seq.checked_add(1);
            self.prev = recorded;
            Ok(record.seq)
        }
    }

    pub(crate) fn finish(self) -> VerifyReport {
        VerifyReport {
            files: self.files,
            records: self.records,
            last_seq: self
                .next_seq
                .map_or(Some(u64::MAX), |n| n.checked_sub(1).filter(|s| *s > 0)),
            head: self.prev,
            pruned: self.pruned.filter(|_| self.started_after_pruned),
            gaps: self.gaps,
        }
    }
}

/// Whether `record` is the writer's declaration of the records dropped
/// from `expected` up to just before it, chained to the record before.
fn declares_gap(record: &ChainLink, line: &[u8], expected: u64, prev: &str) -> bool {
    if record.kind != RecordKind::Event
        || record.event.as_deref() != Some(DROPPED_EVENT)
        || record.prev != prev
    {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Gap {
        first_seq: u64,
        last_seq: u64,
    }
    #[derive(serde::Deserialize)]
    struct Declared {
        data: Gap,
    }
    serde_json::from_slice::<Declared>(line).is_ok_and(|d| {
        d.data.first_seq == expected && Some(d.data.last_seq) == record.seq.checked_sub(1)
    })
}

/// The `seq` a line starts with (`{"seq":42,`), read without parsing the
/// rest, so a cut or damaged line can still be named.
fn leading_seq(line: &[u8]) -> Option<u64> {
    let digits = line.strip_prefix(b"{\"seq\":")?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || end > 20 {
        return None;
    }
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::super::record::AuditRecord;
    use super::*;

    /// A sealed request record with this `seq` and `prev`.
    fn sealed(seq: u64, prev: &str) -> (Vec<u8>, String) {
        let mut r: AuditRecord = serde_json::from_value(serde_json::json!({
            "seq": seq, "time": "2026-01-01T00:00:00.000000Z", "kind": "request",
            "event": null, "trace_id": null, "order_id": null, "tenant": null,
            "subject": null, "risk": null, "method": null, "route": null, "verb": null,
            "resource": null, "name": null, "decision": null, "code": null,
            "binding": null, "shadow": false, "http_status": null, "grpc_status": null,
            "latency_us": null, "outcome": null, "idempotency_key": null,
            "replayed": false, "data": null, "prev": prev, "hash": "",
        }))
        .unwrap();
        let line = r.seal();
        (line, r.hash)
    }

    fn pruned_at(dir: &Path, seq: u64, hash: &str) {
        std::fs::write(
            dir.join("audit.log.pruned"),
            serde_json::json!({ "seq": seq, "hash": hash }).to_string(),
        )
        .unwrap();
    }

    // Found by the `audit_verify` fuzz target: `seq` u64::MAX overflowed
    // the verifier's counter (a panic in debug builds).
    #[test]
    fn a_record_at_seq_max_ends_the_chain_instead_of_overflowing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let anchor = "ab".repeat(32);
        pruned_at(dir.path(), u64::MAX - 1, &anchor);
        let (last, head) = sealed(u64::MAX, &anchor);
        std::fs::write(&log, &last).unwrap();
        let report = verify(&log).unwrap();
        assert_eq!((report.records, report.last_seq), (1, Some(u64::MAX)));
        assert_eq!(report.head, head);

        // Nothing can follow it: whatever `seq` comes next is a broken link.
        for next in [u64::MAX, 0, 1] {
            let mut bytes = last.clone();
            bytes.extend_from_slice(&sealed(next, &head).0);
            std::fs::write(&log, &bytes).unwrap();
            match verify(&log) {
                Err(VerifyError::Broken(b)) => {
                    assert_eq!((b.line, b.verified), (2, 1), "{b}");
                    assert!(matches!(b.kind, BreakKind::Malformed(_)), "{b}");
                }
                other => panic!("seq {next} after u64::MAX: {other:?}"),
            }
        }
    }

    #[test]
    fn a_pruned_head_at_seq_max_has_no_continuation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let anchor = "cd".repeat(32);
        pruned_at(dir.path(), u64::MAX, &anchor);
        std::fs::write(&log, sealed(u64::MAX, &anchor).0).unwrap();
        assert!(matches!(verify(&log), Err(VerifyError::Broken(b)) if b.line == 1));
    }
}
