//! Rate-limit policies (issue 17): `RateLimitPolicy::from_yaml`.

use finmesh::ratelimit::{RateLimitPolicy, RateLimits};

/// `RateLimitPolicy::from_yaml` on arbitrary bytes: never panics; an error
/// names a field path that is a plain dotted/indexed path; a policy that
/// loads can be put in force.
pub fn ratelimit_policy(data: &[u8]) {
    match RateLimitPolicy::from_yaml(data) {
        Ok(policy) => {
            // Loading the same bytes twice gives the same verdict.
            assert!(RateLimitPolicy::from_yaml(data).is_ok());
            let limits = RateLimits::new(policy);
            let _ = limits.current();
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(
                e.field().len() <= data.len() + 64,
                "field path longer than the input"
            );
        }
    }
}
