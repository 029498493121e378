//! Verifies a finmesh audit log and its rotated files.
//!
//! ```sh
//! cargo run --example audit_verify -- /var/log/finmesh/audit.log
//! ```
//!
//! Walks `audit.log.1`, `audit.log.2`, … then `audit.log`, checking every
//! record's hash, sequence number and link to the record before it.
//! Prints a summary and exits 0 when the chain is intact; prints the first
//! broken link (file, line, seq, what is wrong) and exits 1 when it is not;
//! exits 2 when the log cannot be read.

use std::process::ExitCode;

use finmesh::audit::{VerifyError, verify};

fn main() -> ExitCode {
    const USAGE: &str = "usage: audit_verify <path/to/audit.log>\n\n\
        Verifies the hash chain across the log and its rotated files\n\
        (audit.log.1, audit.log.2, …). Exit 0: intact; 1: broken (the first\n\
        broken link is printed); 2: unreadable.";
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if path == "-h" || path == "--help" {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match verify(&path) {
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
