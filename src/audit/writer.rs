//! The writer: one thread that owns the sink, takes records off the queue
//! in batches, numbers, chains and seals them, and writes them.

use std::io;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::batch::{BATCH, Linger};
use super::entry::{Entry, Msg};
use super::record::{AuditRecord, GENESIS};
use super::redact::Redactor;
use super::sink::AuditSink;
use super::stats::Shared;

/// How often a writer with little free space looks again, idle or not.
const SPACE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the writer thread (`finmesh-audit-writer`) over `sink`, reading
/// `rx` until every sender is gone or the sink fails.
pub(super) fn spawn<S: AuditSink>(
    sink: S,
    rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    linger: Linger,
    redactor: Redactor,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("finmesh-audit-writer".into())
        .spawn(move || rt.block_on(run(sink, rx, shared, linger, redactor)))?;
    Ok(())
}

async fn run<S: AuditSink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Msg>,
    shared: Arc<Shared>,
    linger: Linger,
    redactor: Redactor,
) {
    let (mut seq, prev) = match sink.head() {
        Some(h) => (h.seq, h.hash),
        None => (0, GENESIS.to_owned()),
    };
    // One record filled over and over: its strings are reused.
    let mut record = AuditRecord::blank(prev);
    shared.set_low_space(sink.low_space());
    let mut batch = Vec::with_capacity(BATCH);
    // Records handed to the sink and not yet flushed: counted written
    // once the sink has them in storage.
    let mut unflushed = 0u64;
    // The line being sealed: one buffer for every record.
    let mut line = Vec::with_capacity(1024);
    // Sequence numbers of records the sink refused (batch mode), not yet
    // declared in the chain.
    let mut dropped: Option<(u64, u64)> = None;
    // Marks the writer failed *before* anything queued is dropped, so a
    // `flush` that sees the writer gone also sees why; the records the
    // sink still buffered are counted lost first, so it sees them counted.
    let fail = |e: io::Error, unflushed: &mut u64| {
        shared.count_lost(std::mem::take(unflushed));
        shared.fail(e)
    };
    let result: Result<(), Arc<io::Error>> = async {
        loop {
            // While space is low, look again every second even if no
            // record comes: a drained instance gets none, and must see
            // the room come back to turn ready again.
            let recheck = shared
                .low_space()
                .map(|_| std::time::Instant::now() + SPACE_RECHECK);
            let wake = match (sink.sync_deadline(), recheck) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let n = match wake {
                Some(deadline) => {
                    tokio::select! {
                        n = rx.recv_many(&mut batch, BATCH) => n,
                        () = tokio::time::sleep_until(deadline.into()) => {
                            if sink.sync_deadline().is_some() {
                                sink.sync().map_err(|e| fail(e, &mut unflushed))?;
                                settle(&shared, &mut unflushed);
                            }
                            shared.set_low_space(sink.low_space());
                            continue;
                        }
                    }
                }
                None => rx.recv_many(&mut batch, BATCH).await,
            };
            if n == 0 {
                if let Some((first, last)) = dropped.take()
                    && sink.accepts()
                {
                    let gap = Entry::dropped(first, last);
                    let next = Seal {
                        seq: seq + 1,
                        record: &mut record,
                        line: &mut line,
                    };
                    append(&mut sink, &shared, &redactor, gap, next, &mut unflushed)
                        .map_err(|e| fail(e, &mut unflushed))?;
                }
                sink.sync().map_err(|e| fail(e, &mut unflushed))?;
                settle(&shared, &mut unflushed);
                return Ok(());
            }
            // Popped from the back, so on failure what is left stays in
            // `batch` to be counted.
            batch.reverse();
            let mut flushed = false;
            while let Some(msg) = batch.pop() {
                match msg {
                    Msg::Entry(entry) => {
                        if !sink.accepts() {
                            // Overflow of a sink that drops (batch mode):
                            // the number is used, so the chain shows the
                            // gap, and the next record declares it.
                            seq += 1;
                            dropped.get_or_insert((seq, seq)).1 = seq;
                            shared.count_dropped();
                            continue;
                        }
                        if let Some((first, last)) = dropped.take() {
                            seq += 1;
                            let gap = Entry::dropped(first, last);
                            let next = Seal {
                                seq,
                                record: &mut record,
                                line: &mut line,
                            };
                            append(&mut sink, &shared, &redactor, gap, next, &mut unflushed)
                                .map_err(|e| fail(e, &mut unflushed))?;
                        }
                        seq += 1;
                        let next = Seal {
                            seq,
                            record: &mut record,
                            line: &mut line,
                        };
                        append(&mut sink, &shared, &redactor, *entry, next, &mut unflushed)
                            .map_err(|e| fail(e, &mut unflushed))?;
                    }
                    Msg::Flush(reply) => {
                        flushed = true;
                        let r = sink.sync().map_err(|e| fail(e, &mut unflushed));
                        if r.is_ok() {
                            settle(&shared, &mut unflushed);
                        }
                        let _ = reply.send(r.clone());
                        r?;
                    }
                }
            }
            // One write for the whole batch.
            sink.end_batch().map_err(|e| fail(e, &mut unflushed))?;
            settle(&shared, &mut unflushed);
            shared.set_low_space(sink.low_space());
            // Under a steady stream of records the timer branch above may
            // rarely win the select: honour the interval here as well.
            if sink
                .sync_deadline()
                .is_some_and(|deadline| deadline <= std::time::Instant::now())
            {
                sink.sync().map_err(|e| fail(e, &mut unflushed))?;
                settle(&shared, &mut unflushed);
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
        // (What the sink still buffered was counted by `fail`.)
        let mut lost = batch.iter().filter(|m| matches!(m, Msg::Entry(_))).count() as u64;
        batch.clear();
        while let Ok(msg) = rx.try_recv() {
            if matches!(msg, Msg::Entry(_)) {
                lost += 1;
            }
        }
        shared.count_lost(lost);
        tracing::error!(
            error = %e,
            lost = shared.lost(),
            "audit sink failed; audit writer stopped, requests will be refused"
        );
    }
}

/// Where the next record goes in the chain: its number, the record to
/// fill (its `prev` holds the chain's head hash) and the buffer to seal it
/// in.
struct Seal<'a> {
    seq: u64,
    record: &'a mut AuditRecord,
    line: &'a mut Vec<u8>,
}

/// Numbers, chains, seals and appends one record, counting it
/// `unflushed`; on failure the record is counted among them (lost).
fn append<S: AuditSink>(
    sink: &mut S,
    shared: &Shared,
    redactor: &Redactor,
    entry: Entry,
    next: Seal<'_>,
    unflushed: &mut u64,
) -> io::Result<()> {
    entry.fill(next.seq, redactor, next.record);
    next.record.seal_into(next.line);
    *unflushed += 1;
    sink.append(next.record, next.line)?;
    // What the sink no longer holds in a buffer is in storage: written.
    let held = sink.buffered().min(*unflushed);
    shared.count_written(*unflushed - held);
    *unflushed = held;
    // This record's hash is the next one's `prev`; the old `prev` string
    // takes the next hash.
    let r = &mut *next.record;
    std::mem::swap(&mut r.prev, &mut r.hash);
    Ok(())
}

/// Counts the records the sink now holds in storage as written.
fn settle(shared: &Shared, unflushed: &mut u64) {
    shared.count_written(std::mem::take(unflushed));
}
