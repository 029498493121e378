//! Verifies a finmesh audit log and its rotated files, or every chain in
//! a PostgreSQL audit table.
//!
//! ```sh
//! cargo run --example audit_verify -- /var/log/finmesh/audit.log
//! cargo run --example audit_verify --features audit-postgres -- \
//!     --postgres postgres://auditor@db/audit [--table finmesh_audit]
//! ```
//!
//! A file: walks `audit.log.1`, `audit.log.2`, … then `audit.log`,
//! checking every record's hash, sequence number and link to the record
//! before it. PostgreSQL: the same for each chain (one per replica) in the
//! table. Prints a summary and exits 0 when every chain is intact; prints
//! the first broken link of each broken chain (where, seq, what is wrong)
//! and exits 1 when one is not; exits 2 when the log cannot be read.
//! Gaps declared by a sink in batch mode (records dropped on overflow)
//! are listed, and do not fail the verification.

use std::process::ExitCode;

use finmesh::audit::{VerifyError, VerifyReport, verify};

const USAGE: &str = "usage: audit_verify <path/to/audit.log>\n       \
    audit_verify --postgres <URL> [--table <name>]\n\n\
    Verifies the hash chain across the log and its rotated files\n\
    (audit.log.1, audit.log.2, …), or every chain of a PostgreSQL audit\n\
    table (feature audit-postgres). Exit 0: intact; 1: broken (the first\n\
    broken link of each chain is printed); 2: unreadable.";

fn print_gaps(report: &VerifyReport) {
    for (first, last) in &report.gaps {
        println!(
            "  declared gap: seq {first}..={last} ({} records dropped by the sink)",
            last - first + 1
        );
    }
}

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let Some(first) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if first == "-h" || first == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if first == "--postgres" {
        return postgres(&args[1..]);
    }
    match verify(first) {
        Ok(report) => {
            println!(
                "ok: {} records in {} file(s), last seq {}, head {}",
                report.records,
                report.files.len(),
                report
                    .last_seq
                    .map_or_else(|| "-".into(), |s| s.to_string()),
                report.head
            );
            for file in &report.files {
                println!("  {}", file.display());
            }
            print_gaps(&report);
            ExitCode::SUCCESS
        }
        Err(VerifyError::Broken(link)) => {
            println!("BROKEN: {link}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(feature = "audit-postgres")]
fn postgres(args: &[std::ffi::OsString]) -> ExitCode {
    use finmesh::audit::postgres::{DEFAULT_TABLE, verify_postgres};
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let (url, table) = match args.as_slice() {
        [url] => (url.clone(), DEFAULT_TABLE.to_owned()),
        [url, flag, table] if flag == "--table" => (url.clone(), table.clone()),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let chains = match rt.block_on(verify_postgres(&url, &table)) {
        Ok(chains) => chains,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut broken = 0;
    for chain in &chains {
        match &chain.result {
            Ok(report) => {
                println!(
                    "ok: chain {}: {} records, last seq {}, head {}",
                    chain.chain_id,
                    report.records,
                    report
                        .last_seq
                        .map_or_else(|| "-".into(), |s| s.to_string()),
                    report.head
                );
                print_gaps(report);
            }
            Err(link) => {
                broken += 1;
                println!("BROKEN: chain {}: {link}", chain.chain_id);
            }
        }
    }
    println!("{} chain(s), {broken} broken", chains.len());
    if broken > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(not(feature = "audit-postgres"))]
fn postgres(_args: &[std::ffi::OsString]) -> ExitCode {
    eprintln!("error: built without the audit-postgres feature");
    ExitCode::from(2)
}
