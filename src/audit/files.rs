//! The audit log's files: rotated names, the pruned head, torn-tail
//! repair, free space. Used by [`FileSink`](super::FileSink) and
//! [`verify`](super::verify()).

use super::record::ChainLink;
use super::sink::{ChainHead, TornTail};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes free for unprivileged writers on the file system holding `path`.
#[cfg(unix)]
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(not(unix))]
pub(super) fn free_bytes(_path: &Path) -> Option<u64> {
    None
}

/// `audit.log.pruned`: the head of the last record pruned with its file.
pub(crate) fn pruned_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pruned");
    PathBuf::from(name)
}

/// The head recorded when rotated files were last pruned, if any were.
pub(crate) fn read_pruned(path: &Path) -> io::Result<Option<ChainHead>> {
    let text = match fs::read_to_string(pruned_name(path)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct Pruned {
        seq: u64,
        hash: String,
    }
    let p: Pruned = serde_json::from_str(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", pruned_name(path).display()),
        )
    })?;
    Ok(Some(ChainHead {
        seq: p.seq,
        hash: p.hash,
    }))
}

pub(super) fn write_pruned(path: &Path, head: &ChainHead) -> io::Result<()> {
    let target = pruned_name(path);
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::json!({ "seq": head.seq, "hash": head.hash }).to_string() + "\n";
    let mut f = File::create(&tmp)?;
    f.write_all(body.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &target)?;
    sync_dir(path);
    Ok(())
}

pub(super) fn rotated_name(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `<path>.<n>` files next to `path`, sorted by `n`.
pub(crate) fn rotated_files(path: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(n) = name
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix('.'))
            .filter(|d| !d.is_empty() && d.len() <= 19 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((n, rotated_name(path, n)));
    }
    out.sort_unstable_by_key(|(n, _)| *n);
    Ok(out)
}

pub(super) fn sync_dir(path: &Path) {
    // Makes the rename durable on Unix; best effort elsewhere.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// Reads the last record of `file`, truncating a torn last line.
pub(super) fn repair_tail(
    file: &File,
    path: &Path,
    recovery: &mut Option<TornTail>,
) -> io::Result<Option<ChainHead>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let (last_start, last) = last_line(file, len)?;
    let complete = last.last() == Some(&b'\n');
    if complete {
        match (parse_head(&last), hash_matches(&last)) {
            (Some(head), true) => return Ok(Some(head)),
            // A complete line whose bytes do not hash to its `hash` was
            // not torn by a crash but edited: chaining onto it would
            // launder the edit, and cutting it would destroy the evidence.
            (Some(_), false) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the last record does not match its hash; run audit::verify",
                        path.display()
                    ),
                ));
            }
            // Security: a complete line that hashes to its `hash` is a
            // sealed record, never a torn one: cutting it would silently
            // delete evidence (and, shipped, reuse its seq).
            (None, true) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the last record is sealed but its seq cannot be read; refusing to truncate it",
                        path.display()
                    ),
                ));
            }
            (None, false) => {}
        }
    }
    // Torn: cut it off, and resume from the line before.
    let reason = if complete {
        "last line is not a sealed record"
    } else {
        "last line has no newline"
    };
    let line_no = count_newlines(file, last_start)? + 1;
    let head = if last_start == 0 {
        None
    } else {
        let (_, before) = last_line(file, last_start)?;
        match parse_head(&before) {
            Some(h) => Some(h),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: the two last lines are damaged; refusing to truncate more than a torn line",
                        path.display()
                    ),
                ));
            }
        }
    };
    file.set_len(last_start)?;
    file.sync_all()?;
    let torn = TornTail {
        file: path.to_path_buf(),
        line: line_no,
        offset: last_start,
        bytes: len - last_start,
        reason,
    };
    tracing::warn!(
        file = %path.display(),
        line = torn.line,
        bytes = torn.bytes,
        reason,
        "audit log: truncated a torn last line left by a crash"
    );
    *recovery = Some(torn);
    Ok(head)
}

pub(super) fn hash_matches(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    super::record::split_hash(line)
        .is_some_and(|(canonical, hash)| super::record::sha256_hex(&canonical) == hash)
}

pub(super) fn parse_head(line: &[u8]) -> Option<ChainHead> {
    let line = line.strip_suffix(b"\n")?;
    let (_, hash) = super::record::split_hash(line)?;
    let link = ChainLink::parse(line).ok()?;
    Some(ChainHead {
        seq: link.seq,
        hash: hash.to_owned(),
    })
}

/// The last line of `file[..end]` (with its newline if it has one) and
/// where it starts. Reads backwards in chunks, so a long log costs only
/// its tail.
pub(super) fn last_line(mut file: &File, end: u64) -> io::Result<(u64, Vec<u8>)> {
    const CHUNK: u64 = 8 * 1024;
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = end;
    loop {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
        let search = if buf.last() == Some(&b'\n') {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        if let Some(i) = search.iter().rposition(|&b| b == b'\n') {
            let line = buf.split_off(i + 1);
            return Ok((pos + i as u64 + 1, line));
        }
        if pos == 0 {
            return Ok((0, buf));
        }
    }
}

pub(super) fn count_newlines(mut file: &File, end: u64) -> io::Result<u64> {
    file.seek(SeekFrom::Start(0))?;
    let mut remaining = end;
    let mut buf = vec![0; 64 * 1024];
    let mut n = 0;
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..want])?;
        n += buf[..want].iter().filter(|&&b| b == b'\n').count() as u64;
        remaining -= want as u64;
    }
    Ok(n)
}
