//! [`PostgresSink`]: the audit chain shipped to PostgreSQL, exactly once,
//! with the local log as the write-ahead spool (feature `audit-postgres`).
//!
//! # How a record travels
//!
//! 1. The writer thread appends it to the local spool — an ordinary
//!    [`FileSink`](super::FileSink) log, with its durability, rotation,
//!    torn-tail repair and verifier — and syncs it (every record, or at
//!    the interval of [`Durability::Interval`](super::Durability)).
//! 2. The shipper thread (`finmesh-audit-shipper`) reads what is durable
//!    past the delivered marker (`<spool>.delivered`) and inserts it in
//!    batches: `INSERT … ON CONFLICT (chain_id, seq) DO NOTHING`. A batch
//!    that was inserted but whose marker was lost (a crash, a power cut)
//!    is sent again and ignored by the table; a row already there with
//!    another hash stops the shipper with an error rather than hide it.
//! 3. Rotated spool files whose records are all delivered are deleted
//!    (their head kept in `<spool>.pruned`, as retention does).
//!
//! So a PostgreSQL outage loses nothing — records wait in the spool and
//! are shipped when it is back — and a restart duplicates nothing. Only
//! durable records are shipped, so the table never holds a record a crash
//! could take back from the spool.
//!
//! # One chain per replica
//!
//! Every spool has its own chain id, `<prefix>-<16 hex>` (the prefix is
//! [`PostgresOptions::chain_prefix`], say the pod name), made when the
//! spool is new and kept in `<spool>.chain`. Several replicas share one
//! table, each with its own chain: no coordination on the request path,
//! and a replica that loses its disk starts a new chain instead of
//! reusing numbers. [`verify_postgres`] checks every chain in the table.
//!
//! # Backpressure
//!
//! [`PostgresOptions::max_backlog`] bounds the records in the spool not
//! yet delivered. When PostgreSQL is away long enough to reach it, the
//! [`Backpressure`] mode decides, as the apiserver's webhook modes do:
//!
//! - `Batch`: records past the bound are **dropped** and counted
//!   ([`AuditStats::dropped`](super::AuditStats::dropped)); their numbers
//!   are used, and the next record written declares the gap
//!   (`AUDIT_RECORDS_DROPPED` with `first_seq`, `last_seq`), which the
//!   verifiers report in [`VerifyReport::gaps`](super::VerifyReport::gaps).
//! - `Blocking` (default): the writer waits for room; the queue fills, and
//!   requests wait for a slot up to the wait timeout, then are refused
//!   with 503 `audit.unavailable`. Readiness
//!   ([`Auditor::readiness`](super::Auditor::readiness)) fails while the
//!   writer waits, so traffic moves to replicas that can audit it.
//! - `BlockingStrict`: as `Blocking`, and while the spool is full every
//!   new request is refused at once with 503 `audit.unavailable`
//!   (readiness fails too): nothing is served unaudited, nothing waits.
//!
//! # The table
//!
//! Created by the sink when absent (checked with `to_regclass` first, so a
//! role without `CREATE` works with a table made for it):
//!
//! ```sql
//! CREATE TABLE finmesh_audit (
//!     chain_id  text        NOT NULL,
//!     seq       bigint      NOT NULL,
//!     hash      text        NOT NULL,  -- SHA-256 of the record, hex
//!     prev      text        NOT NULL,  -- hash of the record before
//!     line      text        NOT NULL,  -- the sealed JSON line, byte for byte
//!     stored_at timestamptz NOT NULL DEFAULT now(),
//!     PRIMARY KEY (chain_id, seq)
//! );
//! -- plus a statement trigger refusing UPDATE, DELETE and TRUNCATE.
//! ```
//!
//! `line` is what the hash covers; query it as JSON with `line::jsonb`.
//! Append-only for the writing role: create the table as an owner role,
//! and give the gateway's role only what it needs:
//!
//! ```sql
//! CREATE ROLE finmesh_audit_writer LOGIN PASSWORD '…';
//! GRANT USAGE ON SCHEMA public TO finmesh_audit_writer;
//! GRANT SELECT, INSERT ON finmesh_audit TO finmesh_audit_writer;
//! -- no UPDATE, DELETE, TRUNCATE: the trail cannot be rewritten by the
//! -- service that writes it; the trigger refuses them even to the owner.
//! ```
//!
//! A superuser can still disable the trigger and edit rows: that is what
//! the hash chains and [`verify_postgres`] (and `examples/audit_verify
//! --postgres URL`) are for.
//!
//! # Example
//!
//! ```no_run
//! use finmesh::audit::{AuditLayer, Auditor};
//! use finmesh::audit::postgres::{Backpressure, PostgresOptions, PostgresSink};
//!
//! # fn main() -> std::io::Result<()> {
//! let options = PostgresOptions::new("postgres://finmesh@db:5432/audit", "payments-7f9c")
//!     .mode(Backpressure::Blocking);
//! let sink = PostgresSink::open("/var/lib/finmesh/audit.log", options)?;
//! let shipper = sink.shipper();
//! let auditor = Auditor::spawn(sink).unwrap();
//! let layer = AuditLayer::new(auditor);
//! println!("chain {}", shipper.status().chain_id);
//! # Ok(())
//! # }
//! ```

mod schema;
mod shipper;
mod sink;
mod spool;
mod verify;

use std::io;
use std::time::Duration;

pub use shipper::{ShipperHandle, ShipperStatus};
pub use sink::PostgresSink;
pub use verify::{ChainVerification, PostgresVerifyError, verify_postgres};

use super::sink::FileSinkOptions;
use schema::Table;

/// The default table.
pub const DEFAULT_TABLE: &str = "finmesh_audit";

/// What happens when the spool's undelivered backlog reaches its bound;
/// see the [module docs](self#backpressure).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backpressure {
    /// Drop past the bound, counted, with a declared gap in the chain.
    Batch,
    /// Wait for room (requests wait for a queue slot, then get 503
    /// `audit.unavailable`); readiness fails while the writer waits.
    #[default]
    Blocking,
    /// Wait for room, and refuse new requests with 503
    /// `audit.unavailable` meanwhile.
    BlockingStrict,
}

impl std::str::FromStr for Backpressure {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "batch" => Ok(Self::Batch),
            "blocking" => Ok(Self::Blocking),
            "blocking-strict" => Ok(Self::BlockingStrict),
            other => Err(format!(
                "backpressure mode {other:?}: expected batch, blocking or blocking-strict"
            )),
        }
    }
}

/// How a [`PostgresSink`] connects, names its chain and ships.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// `postgres://user@host:port/db` (or key=value form). No TLS: reach
    /// the database over a trusted network or a local proxy.
    pub url: String,
    /// The chain id's prefix (`[A-Za-z0-9._-]`, 1-100 bytes), say the pod
    /// name.
    pub chain_prefix: String,
    /// The table (default [`DEFAULT_TABLE`]); a lowercase identifier,
    /// optionally schema-qualified.
    pub table: String,
    /// What happens when the backlog is full (default `Blocking`).
    pub mode: Backpressure,
    /// Most records in the spool not yet delivered (default 1,000,000).
    pub max_backlog: u64,
    /// Most rows per insert (default 500).
    pub batch_size: usize,
    /// The spool file's options (retention is ignored: the shipper
    /// deletes rotated files once delivered).
    pub file: FileSinkOptions,
    /// Connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Longest an insert may take before the connection is dropped and
    /// the batch retried (default 30 s).
    pub statement_timeout: Duration,
    /// First and longest wait between retries (default 100 ms, 5 s).
    pub retry_min: Duration,
    /// See `retry_min`.
    pub retry_max: Duration,
    /// How long the shipper keeps delivering after the writer stopped
    /// (default 5 s); what is left is shipped on the next start.
    pub drain_timeout: Duration,
}

impl PostgresOptions {
    /// Options for `url`, chains named `<chain_prefix>-<16 hex>`.
    pub fn new(url: impl Into<String>, chain_prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            chain_prefix: chain_prefix.into(),
            table: DEFAULT_TABLE.to_owned(),
            mode: Backpressure::default(),
            max_backlog: 1_000_000,
            batch_size: 500,
            file: FileSinkOptions::default(),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// Sets the backpressure mode.
    pub fn mode(mut self, mode: Backpressure) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the backlog bound, in records.
    pub fn max_backlog(mut self, records: u64) -> Self {
        self.max_backlog = records;
        self
    }

    /// Sets the table.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Sets the spool file's options.
    pub fn file_options(mut self, options: FileSinkOptions) -> Self {
        self.file = options;
        self
    }

    /// Sets the rows per insert.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.clamp(1, 10_000);
        self
    }

    /// Sets the retry waits.
    pub fn retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    /// The table, validated, and the prefix checked.
    fn table_checked(&self) -> io::Result<Table> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        if self.chain_prefix.len() > 100 || !spool::valid_chain_id(&self.chain_prefix) {
            return Err(invalid(format!(
                "chain prefix {:?}: expected 1-100 bytes of [A-Za-z0-9._-]",
                self.chain_prefix
            )));
        }
        Table::parse(&self.table).map_err(invalid)
    }
}
