//! [`RbacStats`]: what an [`RbacLayer`](super::RbacLayer) decided, counted.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Outcome counters of an [`RbacLayer`](super::RbacLayer): cheap to clone, shared.
///
/// In shadow mode `denied`, `unmapped` and `unauthenticated` count what
/// *would* have been refused.
#[derive(Clone, Default)]
pub struct RbacStats {
    pub(super) inner: Arc<Counters>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) allowed: AtomicU64,
    pub(super) denied: AtomicU64,
    pub(super) unmapped: AtomicU64,
    pub(super) unauthenticated: AtomicU64,
}

impl RbacStats {
    /// Requests the policy allowed.
    pub fn allowed(&self) -> u64 {
        self.inner.allowed.load(Ordering::Relaxed)
    }

    /// Requests the policy denied (`rbac.denied`).
    pub fn denied(&self) -> u64 {
        self.inner.denied.load(Ordering::Relaxed)
    }

    /// Requests no mapper knew (`rbac.unmapped`).
    pub fn unmapped(&self) -> u64 {
        self.inner.unmapped.load(Ordering::Relaxed)
    }

    /// Requests without a principal (`auth.missing`).
    pub fn unauthenticated(&self) -> u64 {
        self.inner.unauthenticated.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for RbacStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbacStats")
            .field("allowed", &self.allowed())
            .field("denied", &self.denied())
            .field("unmapped", &self.unmapped())
            .field("unauthenticated", &self.unauthenticated())
            .finish()
    }
}
