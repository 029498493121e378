//! Audit log verification on arbitrary files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::Unstructured;
use finmesh::audit::{AuditRecord, GENESIS, VerifyError, verify};
use serde_json::json;

fn scratch_base(tmp: &Path) -> PathBuf {
    tmp.join(format!("finmesh-fuzz-audit-{}", std::process::id()))
}

/// Removes this process's scratch directories.
pub fn cleanup() {
    for tmp in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        let _ = std::fs::remove_dir_all(scratch_base(&tmp));
    }
}

/// A fresh, empty directory of this process for one execution.
fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    // One directory per process and thread (the corpus replay runs
    // targets on several threads), reused across executions. RAM-backed
    // when the machine has /dev/shm: file I/O would dominate each run.
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = scratch_base(&tmp).join(format!(
        "{thread}-{}",
        N.fetch_add(1, Ordering::Relaxed) % 2
    ));
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Err(_) => std::fs::create_dir_all(&dir).unwrap(),
    }
    dir
}

/// A sealed record from fuzzed field values.
fn record(u: &mut Unstructured<'_>, seq: u64, prev: &str) -> AuditRecord {
    let s = |u: &mut Unstructured<'_>| -> Option<String> {
        u.arbitrary::<bool>()
            .unwrap_or(false)
            .then(|| u.arbitrary::<String>().unwrap_or_default())
    };
    let mut value = json!({
        "seq": seq,
        "time": "2026-01-01T00:00:00.000000Z",
        "kind": if u.arbitrary::<bool>().unwrap_or(false) { "event" } else { "request" },
        "event": s(u), "trace_id": s(u), "order_id": s(u), "tenant": s(u), "subject": s(u),
        "risk": null, "method": s(u), "route": s(u), "verb": s(u), "resource": s(u),
        "name": s(u), "decision": "allow", "code": s(u), "binding": s(u),
        "shadow": u.arbitrary::<bool>().unwrap_or(false),
        "http_status": u.arbitrary::<Option<u16>>().unwrap_or(None),
        "grpc_status": u.arbitrary::<Option<i32>>().unwrap_or(None),
        "latency_us": u.arbitrary::<Option<u64>>().unwrap_or(None),
        "outcome": "complete", "idempotency_key": s(u),
        "replayed": false,
        "data": s(u).map(|d| json!({ "d": d, "n": 1.5, "big": u64::MAX })),
        "prev": prev, "hash": "",
    });
    // The members omitted when absent, and an enum that is not null.
    if let Some(peer) = s(u) {
        value["peer"] = json!(peer);
    }
    if let Some(body) = s(u) {
        value["request_body"] = json!({ "text": body });
    }
    if let Some(body) = s(u) {
        value["response_body"] = json!(body);
    }
    if let Some(field) = s(u) {
        value["truncated"] = json!([field, "route"]);
    }
    if u.arbitrary::<bool>().unwrap_or(false) {
        value["risk"] = json!("high");
    }
    serde_json::from_value(value).unwrap()
}

fn ok_or_broken(r: &Result<finmesh::audit::VerifyReport, VerifyError>) {
    if let Err(e) = r {
        assert!(
            matches!(e, VerifyError::Broken(_)),
            "verification failed for another reason than a broken chain: {e}"
        );
        assert!(!e.to_string().is_empty());
    }
}

/// Checks a verified log: verifying again after rewriting the same bytes
/// (a no-op) gives the same report, and appending the next sealed record
/// gives a chain one longer whose head is that record.
fn reverify(log: &Path) {
    let Ok(report) = verify(log) else {
        return;
    };
    let bytes = std::fs::read(log).unwrap_or_default();
    std::fs::write(log, &bytes).unwrap();
    assert_eq!(
        verify(log).unwrap(),
        report,
        "the same bytes verify differently"
    );
    let Some(seq) = report.last_seq.map_or(Some(1), |s| s.checked_add(1)) else {
        return;
    };
    let mut next = record(&mut Unstructured::new(&[]), seq, &report.head);
    let line = next.seal();
    let mut longer = bytes;
    longer.extend_from_slice(&line);
    std::fs::write(log, &longer).unwrap();
    let after =
        verify(log).unwrap_or_else(|e| panic!("a correctly appended record breaks the chain: {e}"));
    assert_eq!(after.records, report.records + 1);
    assert_eq!(after.last_seq, Some(seq));
    assert_eq!(after.head, next.hash);
}

/// Mode 0: the input is the files themselves — split at `0xFF` bytes
/// (never in UTF-8) into rotated files oldest first and the live log last,
/// with a `.pruned` head first when the mode byte says so. Mode 1: a chain
/// of sealed records from fuzzed fields (after a fuzzed pruned head, or
/// from the genesis) must verify, and then must not verify once one byte
/// of it is changed.
pub fn audit_verify(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    let log = dir.join("audit.log");
    if mode % 2 == 0 {
        let mut parts: Vec<&[u8]> = rest.split(|&b| b == 0xff).take(5).collect();
        if mode & 2 != 0 && parts.len() > 1 {
            std::fs::write(dir.join("audit.log.pruned"), parts.remove(0)).unwrap();
        }
        let live = parts.pop().unwrap_or_default();
        for (i, p) in parts.iter().enumerate() {
            std::fs::write(dir.join(format!("audit.log.{}", i + 1)), p).unwrap();
        }
        std::fs::write(&log, live).unwrap();
        let r = verify(&log);
        if let Err(VerifyError::Io { .. }) = &r {
            // An unreadable .pruned head is reported as an I/O error.
            assert!(dir.join("audit.log.pruned").exists(), "{r:?}");
            return;
        }
        ok_or_broken(&r);
        if let Ok(report) = &r {
            assert_eq!(report.files.len(), parts.len() + 1);
            // Every line of a verified log is a record.
            let lines: usize = parts
                .iter()
                .chain(std::iter::once(&live))
                .map(|p| p.iter().filter(|&&b| b == b'\n').count())
                .sum();
            assert_eq!(report.records, lines as u64);
            reverify(&log);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let (mut seq, mut prev) = (1u64, GENESIS.to_owned());
    if u.ratio(1, 3u8).unwrap_or(false) {
        let head = match u.int_in_range(0..=3u8).unwrap_or(0) {
            0 => u64::MAX,
            1 => u64::MAX - 1,
            2 => u64::MAX - 2,
            // A head is a record that was written: its seq is at least 1.
            _ => u.arbitrary::<u64>().unwrap_or(1).max(1),
        };
        prev = format!("{:064x}", u.arbitrary::<u128>().unwrap_or(7));
        std::fs::write(
            dir.join("audit.log.pruned"),
            json!({ "seq": head, "hash": prev }).to_string(),
        )
        .unwrap();
        let Some(s) = head.checked_add(1) else {
            return;
        };
        seq = s;
    }
    let n = u.int_in_range(0..=6u8).unwrap_or(0);
    let mut bytes = Vec::new();
    let mut written = 0u64;
    for _ in 0..n {
        let mut r = record(&mut u, seq, &prev);
        // The hand-written canonical encoding is, byte for byte, the
        // serde_json encoding that defines it.
        assert_eq!(r.canonical(), serde_json::to_vec(&r).unwrap());
        bytes.extend_from_slice(&r.seal());
        prev = r.hash;
        written += 1;
        match seq.checked_add(1) {
            Some(s) => seq = s,
            None => break,
        }
    }
    std::fs::write(&log, &bytes).unwrap();
    let report = verify(&log).unwrap_or_else(|e| panic!("a sealed chain does not verify: {e}"));
    assert_eq!(report.records, written);
    if written > 0 {
        assert_eq!(report.head, prev);
    }
    reverify(&log);
    std::fs::write(&log, &bytes).unwrap();
    if !bytes.is_empty() && u.arbitrary::<bool>().unwrap_or(true) {
        let at = u.choose_index(bytes.len()).unwrap_or(0);
        bytes[at] ^= u.int_in_range(1..=255u8).unwrap_or(1);
        std::fs::write(&log, &bytes).unwrap();
        let r = verify(&log);
        assert!(r.is_err(), "a changed byte at {at} still verifies");
        ok_or_broken(&r);
    }
}
