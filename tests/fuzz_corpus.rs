//! Replays the committed fuzz corpora on stable.
//!
//! `fuzz/` is a cargo-fuzz crate (nightly, libFuzzer); its targets are one
//! line each, calling the functions in `fuzz/harness/`. This test includes
//! the same harness and feeds it every file under `fuzz/corpus/<target>/`,
//! so an input that once crashed a target (committed there once fixed)
//! keeps being checked by `cargo test` without nightly.

use std::path::{Path, PathBuf};

#[path = "../fuzz/harness/mod.rs"]
mod harness;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Feeds every corpus file of `target` to its function; fails naming each
/// input that panics.
fn replay(target: &str) {
    let (_, run) = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no harness function for {target}"));
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{target}: no committed corpus");
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = match std::fs::read(path) {
                Ok(data) => data,
                // A fuzzer running on this checkout replaced it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            std::panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    if target == "audit_verify" {
        harness::audit_cleanup();
    }
    assert!(failed.is_empty(), "{target}: inputs that fail: {failed:#?}");
}

macro_rules! replays {
    ($($test:ident => $target:literal,)*) => {
        $(
            #[test]
            fn $test() {
                replay($target);
            }
        )*

        /// Every target under `fuzz/fuzz_targets/` is replayed here, and
        /// every harness function has a target.
        #[test]
        fn every_fuzz_target_is_replayed() {
            let mut targets: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
                .collect();
            targets.sort();
            let mut replayed = vec![$($target),*];
            replayed.sort();
            assert_eq!(targets, replayed);
            let mut harness: Vec<&str> = harness::TARGETS.iter().map(|(n, _)| *n).collect();
            harness.sort();
            assert_eq!(harness, replayed);
        }
    };
}

replays! {
    audit_policy_corpus_replays => "audit_policy",
    audit_verify_corpus_replays => "audit_verify",
    gateway_amount_corpus_replays => "gateway_amount",
    grpc_frames_corpus_replays => "grpc_frames",
    grpc_timeout_corpus_replays => "grpc_timeout",
    idempotency_key_corpus_replays => "idempotency_key",
    jwks_corpus_replays => "jwks",
    jwt_auth_corpus_replays => "jwt_auth",
    ratelimit_policy_corpus_replays => "ratelimit_policy",
    rbac_routes_corpus_replays => "rbac_routes",
    rbac_yaml_corpus_replays => "rbac_yaml",
    spiffe_identity_corpus_replays => "spiffe_identity",
    stream_deadline_corpus_replays => "stream_deadline",
    tenant_namespace_corpus_replays => "tenant_namespace",
    tenants_yaml_corpus_replays => "tenants_yaml",
    trace_context_corpus_replays => "trace_context",
}
