//! The bodies of finmesh's fuzz targets: plain functions over bytes that
//! use only finmesh's public API and the crates its own tests use, so the
//! same code runs under libFuzzer on nightly (`fuzz/fuzz_targets/*.rs`,
//! one line each) and replays the committed corpora on stable
//! (`tests/fuzz_corpus.rs`).
//!
//! Each function panics only when it finds a bug: a panic inside finmesh,
//! or a property it checks beyond "no panic" that does not hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod audit_policy;
mod deadline;
mod identity;
mod jwt;
mod limits;
mod parsers;
mod policy;
mod rbac;
mod routes;
mod telemetry;

pub use audit::{audit_verify, cleanup as audit_cleanup};
pub use audit_policy::audit_policy;
pub use deadline::{grpc_frames, stream_deadline};
pub use identity::spiffe_identity;
pub use jwt::jwt_auth;
pub use limits::ratelimit_policy;
pub use parsers::{gateway_amount, grpc_timeout, idempotency_key, tenant_namespace};
pub use policy::{jwks, tenants_yaml};
pub use rbac::rbac_yaml;
pub use routes::rbac_routes;
pub use telemetry::trace_context;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay: the name is the folder
/// under `fuzz/corpus/` and the `fuzz_targets/` file.
pub const TARGETS: &[(&str, Target)] = &[
    ("audit_policy", audit_policy),
    ("audit_verify", audit_verify),
    ("gateway_amount", gateway_amount),
    ("grpc_frames", grpc_frames),
    ("grpc_timeout", grpc_timeout),
    ("idempotency_key", idempotency_key),
    ("jwks", jwks),
    ("jwt_auth", jwt_auth),
    ("ratelimit_policy", ratelimit_policy),
    ("rbac_routes", rbac_routes),
    ("rbac_yaml", rbac_yaml),
    ("spiffe_identity", spiffe_identity),
    ("stream_deadline", stream_deadline),
    ("tenant_namespace", tenant_namespace),
    ("tenants_yaml", tenants_yaml),
    ("trace_context", trace_context),
];

/// Decodes unpadded base64url: the bytes, and whether the leftover bits
/// (fewer than six) are all zero; `None` on a byte outside the alphabet.
/// The JWT reference ignores the leftover bits, the JWKS one refuses them.
fn b64url_bits(s: &str) -> Option<(Vec<u8>, bool)> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some((out, bits < 6 && acc == 0))
}

/// One current-thread runtime per thread, with paused time: timers fire
/// in order, at once, without real waiting.
fn runtime() -> &'static tokio::runtime::Runtime {
    thread_local! {
        static RT: &'static tokio::runtime::Runtime = Box::leak(Box::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("a Tokio runtime"),
        ));
    }
    RT.with(|rt| *rt)
}
