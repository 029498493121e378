//! The writer: one thread that owns the sink, takes records off the queue
//! in batches, numbers, chains and seals them, and writes them.

use std::io;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::batch::{BATCH, Linger};
use super::entry::{Entry, Msg};
use super::record::GENESIS;
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
    let (mut seq, mut prev) = match sink.head() {
        Some(h) => (h.seq, h.hash),
        None => (0, GENESIS.to_owned()),
    };
    shared.set_low_space(sink.low_space());
    let mut batch = Vec::with_capacity(BATCH);
    // Sequence numbers of records the sink refused (batch mode), not yet
    // declared in the chain.
    let mut dropped: Option<(u64, u64)> = None;
    // Marks the writer failed *before* anything queued is dropped, so a
    // `flush` that sees the writer gone also sees why.
    let fail = |e: io::Error| shared.fail(e);
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
                                sink.sync().map_err(fail)?;
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
                    append(&mut sink, &shared, &redactor, gap, seq + 1, &mut prev).map_err(fail)?;
                }
                return sink.sync().map_err(fail);
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
                            append(&mut sink, &shared, &redactor, gap, seq, &mut prev)
                                .map_err(fail)?;
                        }
                        seq += 1;
                        append(&mut sink, &shared, &redactor, *entry, seq, &mut prev)
                            .map_err(fail)?;
                    }
                    Msg::Flush(reply) => {
                        flushed = true;
                        let r = sink.sync().map_err(fail);
                        let _ = reply.send(r.clone());
                        r?;
                    }
                }
            }
            shared.set_low_space(sink.low_space());
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
        shared.count_lost(lost);
        tracing::error!(
            error = %e,
            lost = shared.lost(),
            "audit sink failed; audit writer stopped, requests will be refused"
        );
    }
}

/// Numbers, chains, seals and appends one record; counts it written, or
/// lost when the sink fails.
fn append<S: AuditSink>(
    sink: &mut S,
    shared: &Shared,
    redactor: &Redactor,
    entry: Entry,
    seq: u64,
    prev: &mut String,
) -> io::Result<()> {
    let mut record = entry.into_record(seq, std::mem::take(prev), redactor);
    let line = record.seal();
    if let Err(e) = sink.append(&record, &line) {
        shared.count_lost(1);
        return Err(e);
    }
    *prev = record.hash;
    shared.count_written();
    Ok(())
}
