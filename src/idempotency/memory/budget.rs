//! The store's byte budget: each tenant's account, and the atomic
//! reservation that charges a tenant and the whole store together.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::Inner;
use crate::tenant::TenantNamespace;

/// A tenant's limit: a fraction of the budget or a number of bytes.
#[derive(Clone, Copy, Debug)]
pub(super) enum TenantLimit {
    Fraction(f64),
    Bytes(usize),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Settings {
    pub(super) max_entries: usize,
    pub(super) max_bytes: usize,
    pub(super) tenant_limit: TenantLimit,
    pub(super) sweep_every: Duration,
}

impl Settings {
    pub(super) fn tenant_max_bytes(&self) -> usize {
        match self.tenant_limit {
            TenantLimit::Fraction(f) => (self.max_bytes as f64 * f.clamp(0.0, 1.0)) as usize,
            TenantLimit::Bytes(b) => b.min(self.max_bytes),
        }
    }
}

/// One tenant's charges.
#[derive(Debug, Default)]
pub(super) struct Account {
    pub(super) used: AtomicUsize,
}

/// Why a charge could not be reserved.
#[derive(Debug)]
pub(super) enum Over {
    Tenant,
    Store,
}

impl Inner {
    pub(super) fn account(&self, tenant: Option<TenantNamespace>) -> Arc<Account> {
        if let Some(account) = self.accounts.get(&tenant) {
            return account.clone();
        }
        self.accounts.entry(tenant).or_default().clone()
    }

    /// Reserves `bytes` from `account` and from the whole budget, both or
    /// neither.
    pub(super) fn reserve(&self, account: &Account, bytes: usize) -> Result<(), Over> {
        // Security: a check-then-add would let concurrent claims of one
        // tenant all pass the check; each reservation is one atomic step
        // that never takes an account past its limit.
        account
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&n| n <= self.tenant_max_bytes)
            })
            .map_err(|_| Over::Tenant)?;
        let total = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&n| n <= self.settings.max_bytes)
            });
        if total.is_err() {
            account.used.fetch_sub(bytes, Ordering::AcqRel);
            return Err(Over::Store);
        }
        Ok(())
    }

    /// Gives back `bytes` reserved from `account`.
    pub(super) fn refund(&self, account: &Account, bytes: usize) {
        account.used.fetch_sub(bytes, Ordering::AcqRel);
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}
