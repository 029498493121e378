//! The local log as the write-ahead spool: its chain id, the delivered
//! marker, and reading the records not yet delivered.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::audit::files::{last_line, parse_head, rotated_files, sync_dir, write_pruned};
use crate::audit::record::{sha256_hex, split_hash};

/// `<spool>.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Most bytes of a chain id.
const MAX_CHAIN_ID: usize = 128;

/// The chain id of the spool at `path`: read from `<spool>.chain`, or
/// made (`<prefix>-<16 hex>`) and stored when the spool is new. A spool
/// with records but no chain id is refused: its records could be shipped
/// under a chain they do not start.
pub(super) fn chain_id(path: &Path, prefix: &str, spool_has_records: bool) -> io::Result<String> {
    let file = sibling(path, ".chain");
    match fs::read_to_string(&file) {
        Ok(text) => {
            let id = text.trim();
            if valid_chain_id(id) {
                return Ok(id.to_owned());
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a chain id", file.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if spool_has_records {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the spool holds records but its chain id file is missing",
                file.display()
            ),
        ));
    }
    // Unique per spool: a replica that loses its disk starts a new chain
    // rather than reuse numbers already in the table.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!(
        "{prefix}/{nanos}/{}/{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    let id = format!("{prefix}-{}", &sha256_hex(seed.as_bytes())[..16]);
    let tmp = sibling(path, ".chain.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(format!("{id}\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &file)?;
    sync_dir(path);
    Ok(id)
}

/// A chain id: 1 to 128 bytes of `[A-Za-z0-9._-]`.
pub(super) fn valid_chain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CHAIN_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The last seq delivered, from `<spool>.delivered` (0 when absent).
pub(super) fn read_delivered(path: &Path) -> io::Result<u64> {
    match fs::read_to_string(sibling(path, ".delivered")) {
        Ok(text) => text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}.delivered: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Records `seq` as delivered. Not synced: a marker lost to a power cut
/// only makes the shipper send rows the table already has, which the
/// idempotent insert ignores.
pub(super) fn write_delivered(path: &Path, seq: u64) -> io::Result<()> {
    let tmp = sibling(path, ".delivered.tmp");
    fs::write(&tmp, format!("{seq}\n"))?;
    fs::rename(&tmp, sibling(path, ".delivered"))
}

/// One sealed line of the spool, ready to ship.
#[derive(Clone, Debug)]
pub(super) struct Row {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) prev: String,
    pub(super) line: String,
}

impl Row {
    fn parse(line: &[u8]) -> io::Result<Self> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("spool: {why}"));
        let (_, hash) = split_hash(line).ok_or_else(|| bad("a line is not a sealed record"))?;
        let hash = hash.to_owned();
        #[derive(serde::Deserialize)]
        struct Head {
            seq: u64,
            prev: String,
        }
        let head: Head = serde_json::from_slice(line).map_err(|e| bad(&e.to_string()))?;
        let line = String::from_utf8(line.to_vec()).map_err(|_| bad("a line is not UTF-8"))?;
        Ok(Self {
            seq: head.seq,
            hash,
            prev: head.prev,
            line,
        })
    }
}

/// Where the next undelivered line is: the file (named by the seq of its
/// first record, which survives its rename by rotation) and the offset.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cursor {
    first_seq: u64,
    offset: u64,
}

/// The seq a file starts with, read from its first bytes.
fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut head = [0u8; 32];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let digits = match head[..n].strip_prefix(b"{\"seq\":") {
        Some(d) => d,
        None => return Ok(None),
    };
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    Ok(std::str::from_utf8(&digits[..end])
        .ok()
        .and_then(|d| d.parse().ok()))
}

/// The spool's files in chain order, each with the seq it starts with.
fn files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let mut all: Vec<PathBuf> = rotated_files(path)?.into_iter().map(|(_, p)| p).collect();
    all.push(path.to_path_buf());
    for p in all {
        if let Some(first) = first_seq(&p)? {
            out.push((first, p));
        }
    }
    Ok(out)
}

/// Up to `max` rows with `delivered < seq <= synced`, in order, and the
/// cursor just past the last one.
pub(super) fn read_batch(
    path: &Path,
    cursor: Cursor,
    delivered: u64,
    synced: u64,
    max: usize,
) -> io::Result<(Vec<Row>, Cursor)> {
    let files = files(path)?;
    // The file holding the first undelivered record: the last one that
    // starts at or before it.
    let start = files
        .iter()
        .rposition(|(first, _)| *first <= delivered + 1)
        .unwrap_or(0);
    let mut rows = Vec::new();
    let mut next = cursor;
    for (first, file) in files.iter().skip(start) {
        let offset = if *first == cursor.first_seq {
            cursor.offset
        } else {
            0
        };
        let f = match File::open(file) {
            Ok(f) => f,
            // Rotated or pruned under us: the next round lists again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(f);
        reader.seek(SeekFrom::Start(offset))?;
        let mut pos = offset;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 || buf.last() != Some(&b'\n') {
                // End of file, or a line still being written.
                break;
            }
            let row = Row::parse(&buf[..n - 1])?;
            if row.seq > synced {
                return Ok((rows, next));
            }
            pos += n as u64;
            if row.seq > delivered {
                rows.push(row);
            }
            next = Cursor {
                first_seq: *first,
                offset: pos,
            };
            if rows.len() >= max {
                return Ok((rows, next));
            }
        }
    }
    Ok((rows, next))
}

/// Deletes rotated spool files whose records are all delivered, after
/// recording the head of the last one deleted in `<spool>.pruned` (so the
/// file verifier and a restart know where the local log now starts).
pub(super) fn prune_delivered(path: &Path, delivered: u64) -> io::Result<usize> {
    let rotated = rotated_files(path)?;
    let mut doomed = Vec::new();
    for (i, (_, p)) in rotated.iter().enumerate() {
        // A file is delivered when the next file starts at or before the
        // first undelivered record.
        let next = match rotated.get(i + 1) {
            Some((_, n)) => first_seq(n)?,
            None => first_seq(path)?,
        };
        match next {
            Some(next_first) if next_first <= delivered + 1 => doomed.push(p.clone()),
            _ => break,
        }
    }
    let Some(newest) = doomed.last() else {
        return Ok(0);
    };
    let f = File::open(newest)?;
    let len = f.metadata()?.len();
    let (_, last) = last_line(&f, len)?;
    let head = parse_head(&last).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: its last line is not a sealed record", newest.display()),
        )
    })?;
    write_pruned(path, &head)?;
    for p in &doomed {
        fs::remove_file(p)?;
    }
    sync_dir(path);
    Ok(doomed.len())
}
