//! [`verify_postgres`]: every chain in the table, checked as the file
//! verifier checks a log.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures_util::{StreamExt, pin_mut};
use tokio_postgres::NoTls;

use super::schema::Table;
use crate::audit::verify::{BreakKind, BrokenLink, Verifier, VerifyError, VerifyReport};

/// One chain's verdict.
#[derive(Debug)]
#[non_exhaustive]
pub struct ChainVerification {
    /// The chain id.
    pub chain_id: String,
    /// The report, or the first broken link. A broken link's `file` is
    /// `postgres:<table>/<chain>` and its `line` the row's position in
    /// the chain (1-based, by `seq`).
    pub result: Result<VerifyReport, BrokenLink>,
}

/// Why [`verify_postgres`] could not verify.
#[derive(Debug)]
#[non_exhaustive]
pub enum PostgresVerifyError {
    /// The URL or table name is not valid.
    Config(String),
    /// Connecting or querying failed.
    Postgres(tokio_postgres::Error),
    /// Timed out connecting.
    Timeout,
}

impl fmt::Display for PostgresVerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => f.write_str(e),
            Self::Postgres(e) => write!(f, "PostgreSQL: {e}"),
            Self::Timeout => f.write_str("PostgreSQL: connect timed out"),
        }
    }
}

impl std::error::Error for PostgresVerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Postgres(e) => Some(e),
            _ => None,
        }
    }
}

/// Verifies every chain in `table` of the database at `url`, chain by
/// chain, as [`verify`](crate::audit::verify()) does for a file: each
/// row's line must hash to its `hash`, carry the next `seq` (its `seq`
/// column must be the record's own), and hold the previous record's hash
/// in `prev`; declared gaps (records a batch-mode sink dropped) are
/// accepted and listed. An edited row is reported at itself, a deleted
/// one at the row after the gap, an inserted or reordered one where its
/// `seq` column and its record disagree or its `prev` does not link.
/// Rows are streamed, so the table may be larger than memory.
pub async fn verify_postgres(
    url: &str,
    table: &str,
) -> Result<Vec<ChainVerification>, PostgresVerifyError> {
    let table = Table::parse(table).map_err(PostgresVerifyError::Config)?;
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| PostgresVerifyError::Config(format!("PostgreSQL URL: {e}")))?;
    config.connect_timeout(Duration::from_secs(10));
    let (client, connection) = tokio::time::timeout(Duration::from_secs(15), config.connect(NoTls))
        .await
        .map_err(|_| PostgresVerifyError::Timeout)?
        .map_err(PostgresVerifyError::Postgres)?;
    let conn = tokio::spawn(connection);
    let chains: Vec<String> = client
        .query(&table.chains_sql(), &[])
        .await
        .map_err(PostgresVerifyError::Postgres)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::with_capacity(chains.len());
    for chain in chains {
        let source = PathBuf::from(format!("postgres:{table}/{chain}"));
        let rows = client
            .query_raw(&table.rows_sql(), [&chain])
            .await
            .map_err(PostgresVerifyError::Postgres)?;
        pin_mut!(rows);
        let mut v = Verifier::new();
        let mut n = 0u64;
        let mut broken = None;
        while let Some(row) = rows.next().await {
            let row = row.map_err(PostgresVerifyError::Postgres)?;
            n += 1;
            let column: i64 = row.get(0);
            let line: &str = row.get(1);
            match v.feed_line(&source, n, line.as_bytes(), |_| false) {
                Ok(seq) if i64::try_from(seq).ok() != Some(column) => {
                    // The row was moved: its seq column is not its record's.
                    broken = Some(BrokenLink {
                        file: source.clone(),
                        line: n,
                        seq: Some(seq),
                        kind: BreakKind::OutOfOrder {
                            expected: u64::try_from(column).unwrap_or(0),
                        },
                        verified: n - 1,
                    });
                    break;
                }
                Ok(_) => {}
                Err(VerifyError::Broken(mut link)) => {
                    // A record further down would have made a jump a
                    // reordering; rows are ordered by their seq column, so
                    // a moved row shows where its column and record differ.
                    if let BreakKind::Missing { expected } = link.kind
                        && link
                            .seq
                            .is_some_and(|s| i64::try_from(s).ok() != Some(column))
                    {
                        link.kind = BreakKind::OutOfOrder { expected };
                    }
                    broken = Some(link);
                    break;
                }
                Err(e) => return Err(PostgresVerifyError::Config(e.to_string())),
            }
        }
        let result = match broken {
            Some(link) => Err(link),
            None => {
                let mut report = v.finish();
                report.files = vec![source];
                Ok(report)
            }
        };
        out.push(ChainVerification {
            chain_id: chain,
            result,
        });
    }
    drop(client);
    let _ = conn.await;
    Ok(out)
}
