//! The table, its creation, and the statements the shipper and the
//! verifier run.

use std::fmt;

/// A table name the sink accepts: a plain lowercase SQL identifier,
/// optionally schema-qualified (`<schema>.<table>`), so it can be put
/// into statements without quoting games.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Table(String);

impl Table {
    pub(super) fn parse(name: &str) -> Result<Self, String> {
        let ident = |part: &str| {
            !part.is_empty()
                && part.len() <= 63
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let mut parts = name.split('.');
        let ok = match (parts.next(), parts.next(), parts.next()) {
            (Some(t), None, None) => ident(t),
            (Some(s), Some(t), None) => ident(s) && ident(t),
            _ => false,
        };
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "table {name:?}: expected a lowercase SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes), optionally schema-qualified"
            ))
        }
    }

    /// The last part, for naming the trigger and function.
    fn base(&self) -> &str {
        self.0.rsplit('.').next().unwrap_or(&self.0)
    }

    fn schema_prefix(&self) -> &str {
        match self.0.rsplit_once('.') {
            Some((schema, _)) => &self.0[..schema.len() + 1],
            None => "",
        }
    }

    /// `CREATE TABLE` and the append-only trigger, run in one
    /// transaction when the table does not exist yet.
    pub(super) fn create_sql(&self) -> String {
        let t = &self.0;
        let base = self.base();
        let prefix = self.schema_prefix();
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                chain_id text NOT NULL,
                seq bigint NOT NULL,
                hash text NOT NULL,
                prev text NOT NULL,
                line text NOT NULL,
                stored_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (chain_id, seq)
            );
            CREATE OR REPLACE FUNCTION {prefix}{base}_append_only() RETURNS trigger
                LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'the audit table % is append-only', TG_TABLE_NAME;
                END $$;
            DROP TRIGGER IF EXISTS {base}_append_only ON {t};
            CREATE TRIGGER {base}_append_only
                BEFORE UPDATE OR DELETE OR TRUNCATE ON {t}
                FOR EACH STATEMENT EXECUTE FUNCTION {prefix}{base}_append_only();"
        )
    }

    /// Whether the table exists (`to_regclass`), checked first so that a
    /// writing role without `CREATE` works with a table made for it.
    pub(super) fn exists_sql(&self) -> String {
        format!("SELECT to_regclass('{}') IS NOT NULL", self.0)
    }

    /// One batch: rows `(seq, hash, prev, line)` of one chain, as arrays.
    /// Idempotent: a row already there is left alone, and the seqs really
    /// inserted are returned.
    pub(super) fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (chain_id, seq, hash, prev, line)
             SELECT $1, s, h, p, l
             FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[]) AS u(s, h, p, l)
             ON CONFLICT (chain_id, seq) DO NOTHING
             RETURNING seq",
            self.0
        )
    }

    /// The hashes already stored for some seqs of a chain.
    pub(super) fn hashes_sql(&self) -> String {
        format!(
            "SELECT seq, hash FROM {} WHERE chain_id = $1 AND seq = ANY($2::bigint[])",
            self.0
        )
    }

    pub(super) fn chains_sql(&self) -> String {
        format!("SELECT DISTINCT chain_id FROM {} ORDER BY 1", self.0)
    }

    pub(super) fn rows_sql(&self) -> String {
        format!(
            "SELECT seq, line FROM {} WHERE chain_id = $1 ORDER BY seq",
            self.0
        )
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_tables() {
        for ok in ["finmesh_audit", "audit.finmesh_audit", "_t1"] {
            assert!(Table::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Audit",
            "a;drop table x",
            "a.b.c",
            "1abc",
            "a b",
            "\"q\"",
            &"x".repeat(64),
        ] {
            assert!(Table::parse(bad).is_err(), "{bad}");
        }
        let t = Table::parse("audit.log_rows").unwrap();
        assert!(t.create_sql().contains("audit.log_rows_append_only()"));
    }
}
