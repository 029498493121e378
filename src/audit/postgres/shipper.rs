//! The shipper: one thread that reads the spool past the delivered
//! marker and inserts batches into PostgreSQL, idempotently.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_postgres::{Client, NoTls};

use super::PostgresOptions;
use super::schema::Table;
use super::spool::{self, Cursor, Row};

/// What the sink, the shipper and every handle share.
#[derive(Debug)]
pub(super) struct ShipState {
    chain_id: String,
    synced: AtomicU64,
    delivered: AtomicU64,
    connected: AtomicBool,
    closed: AtomicBool,
    alive: AtomicBool,
    batches: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    wake: Notify,
}

impl ShipState {
    pub(super) fn new(chain_id: String, synced: u64, delivered: u64) -> Self {
        Self {
            chain_id,
            synced: AtomicU64::new(synced),
            delivered: AtomicU64::new(delivered),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            batches: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            wake: Notify::new(),
        }
    }

    pub(super) fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    pub(super) fn set_synced(&self, seq: u64) {
        if self.synced.fetch_max(seq, Ordering::AcqRel) < seq {
            self.wake.notify_one();
        }
    }

    pub(super) fn shipper_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let msg = e.to_string();
        tracing::warn!(chain = %self.chain_id, error = %msg, "audit shipper: PostgreSQL not reachable or refused a batch; records wait in the spool");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
    }
}

/// What the shipper has done, from [`ShipperHandle::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShipperStatus {
    /// The chain this spool writes.
    pub chain_id: String,
    /// The last seq durable in the spool (shippable).
    pub synced_seq: u64,
    /// The last seq delivered to PostgreSQL.
    pub delivered_seq: u64,
    /// Whether the shipper holds a connection now.
    pub connected: bool,
    /// Batches delivered.
    pub batches: u64,
    /// Failed connections and batches (each retried).
    pub errors: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// A cloneable handle on a [`PostgresSink`](super::PostgresSink)'s
/// shipper.
#[derive(Clone, Debug)]
pub struct ShipperHandle {
    state: Arc<ShipState>,
}

impl ShipperHandle {
    pub(super) fn new(state: Arc<ShipState>) -> Self {
        Self { state }
    }

    /// Counters and positions.
    pub fn status(&self) -> ShipperStatus {
        let s = &self.state;
        ShipperStatus {
            chain_id: s.chain_id.clone(),
            synced_seq: s.synced.load(Ordering::Acquire),
            delivered_seq: s.delivered(),
            connected: s.connected.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Whether the shipper thread has stopped (after its writer stopped
    /// and the drain ended).
    pub fn is_stopped(&self) -> bool {
        !self.state.shipper_alive()
    }

    /// Waits until everything durable in the spool now is delivered, up
    /// to `timeout`; whether it was. Call
    /// [`Auditor::flush`](crate::audit::Auditor::flush) first so that the
    /// records queued are in the spool and synced.
    pub async fn wait_delivered(&self, timeout: Duration) -> bool {
        let target = self.state.synced.load(Ordering::Acquire);
        let deadline = Instant::now() + timeout;
        while self.state.delivered() < target {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Starts the shipper thread.
pub(super) fn spawn(
    spool: PathBuf,
    table: Table,
    options: PostgresOptions,
    state: Arc<ShipState>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("finmesh-audit-shipper".into())
        .spawn(move || {
            rt.block_on(run(spool, table, options, state.clone()));
            state.alive.store(false, Ordering::Release);
        })?;
    Ok(())
}

async fn run(spool: PathBuf, table: Table, options: PostgresOptions, state: Arc<ShipState>) {
    let mut client: Option<Client> = None;
    let mut cursor = Cursor::default();
    let mut backoff = options.retry_min;
    let mut drain_until: Option<Instant> = None;
    loop {
        if state.closed.load(Ordering::Acquire) && drain_until.is_none() {
            drain_until = Some(Instant::now() + options.drain_timeout);
        }
        let synced = state.synced.load(Ordering::Acquire);
        let delivered = state.delivered();
        if delivered >= synced {
            if drain_until.is_some() {
                return;
            }
            // Woken by a sync, or looks again: a missed wake-up costs
            // at most this.
            let _ = tokio::time::timeout(Duration::from_millis(50), state.wake.notified()).await;
            continue;
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!(
                chain = %state.chain_id,
                undelivered = synced - delivered,
                "audit shipper stopping with records still in the spool; they are shipped on the next start"
            );
            return;
        }
        let result = async {
            if client.is_none() {
                client = Some(connect(&options, &table).await?);
                state.connected.store(true, Ordering::Relaxed);
            }
            let (rows, next) =
                spool::read_batch(&spool, cursor, delivered, synced, options.batch_size)
                    .map_err(|e| format!("reading the spool: {e}"))?;
            let Some(last) = rows.last().map(|r| r.seq) else {
                return Ok::<_, String>(());
            };
            let Some(c) = client.as_ref() else {
                return Ok(());
            };
            tokio::time::timeout(
                options.statement_timeout,
                insert(c, &table, &state.chain_id, &rows),
            )
            .await
            .map_err(|_| "insert timed out".to_owned())??;
            spool::write_delivered(&spool, last).map_err(|e| format!("delivered marker: {e}"))?;
            state.delivered.store(last, Ordering::Release);
            state.batches.fetch_add(1, Ordering::Relaxed);
            cursor = next;
            if let Err(e) = spool::prune_delivered(&spool, last) {
                tracing::warn!(error = %e, "audit spool: pruning delivered files failed");
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => backoff = options.retry_min,
            Err(e) => {
                state.error(e);
                client = None;
                state.connected.store(false, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.retry_max);
            }
        }
    }
}

async fn connect(options: &PostgresOptions, table: &Table) -> Result<Client, String> {
    let mut config = tokio_postgres::Config::from_str(&options.url)
        .map_err(|e| format!("PostgreSQL URL: {e}"))?;
    config.connect_timeout(options.connect_timeout);
    config.application_name("finmesh-audit");
    let (client, connection) = tokio::time::timeout(options.connect_timeout, config.connect(NoTls))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "audit shipper: connection closed");
        }
    });
    let exists: bool = client
        .query_one(&table.exists_sql(), &[])
        .await
        .map_err(|e| format!("checking table {table}: {e}"))?
        .get(0);
    if !exists {
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", table.create_sql()))
            .await
            .map_err(|e| format!("creating table {table}: {e}"))?;
        tracing::info!(%table, "audit shipper: created the audit table");
    }
    Ok(client)
}

/// Inserts `rows` of `chain`; rows already there must be the same record
/// (same hash), else two writers share a chain id and nothing more is
/// shipped until an operator looks.
async fn insert(client: &Client, table: &Table, chain: &str, rows: &[Row]) -> Result<(), String> {
    let seqs: Vec<i64> = rows
        .iter()
        .map(|r| i64::try_from(r.seq).unwrap_or(i64::MAX))
        .collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.hash.as_str()).collect();
    let prevs: Vec<&str> = rows.iter().map(|r| r.prev.as_str()).collect();
    let lines: Vec<&str> = rows.iter().map(|r| r.line.as_str()).collect();
    let inserted = client
        .query(
            &table.insert_sql(),
            &[&chain, &seqs, &hashes, &prevs, &lines],
        )
        .await
        .map_err(|e| format!("insert: {e}"))?;
    if inserted.len() == rows.len() {
        return Ok(());
    }
    // Some were already there: a batch delivered before a crash or a
    // lost marker. They must be the very same records.
    let stored = client
        .query(&table.hashes_sql(), &[&chain, &seqs])
        .await
        .map_err(|e| format!("checking existing rows: {e}"))?;
    for row in stored {
        let seq: i64 = row.get(0);
        let hash: &str = row.get(1);
        let ours = rows.iter().find(|r| i64::try_from(r.seq).ok() == Some(seq));
        if let Some(ours) = ours
            && ours.hash != hash
        {
            // Security: never paper over a different record under our
            // (chain, seq): that is a chain id shared by two writers, or
            // a table written by someone else.
            return Err(format!(
                "chain {chain} seq {seq} is already in {table} with another hash: two writers share a chain id?"
            ));
        }
    }
    Ok(())
}
