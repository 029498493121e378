//! [`RateLimits`]: the current policy, fixed or hot-reloaded from a file.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::policy::{RateLimitPolicy, RateLimitPolicyError};
use crate::config::{ConfigError, WatchOptions, Watched};

/// The policy a [`RateLimitLayer`](super::RateLimitLayer) enforces: a
/// handle, cheap to clone, every clone sees the same policy. Reading it
/// takes no lock; a new policy is validated and compiled whole, then
/// swapped in, so a request sees the old policy or the new one.
///
/// A policy swap keeps the state of every rule it keeps unchanged (buckets
/// are keyed by rule name and limit); a rule whose limit was edited applies
/// the new limit from the next request on, starting with full buckets.
#[derive(Clone)]
pub struct RateLimits {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Fixed(Arc<ArcSwap<RateLimitPolicy>>),
    File(Watched<RateLimitPolicy>),
}

impl RateLimits {
    /// A fixed policy (replaceable with [`replace`](Self::replace)).
    pub fn new(policy: RateLimitPolicy) -> Self {
        Self {
            source: Source::Fixed(Arc::new(ArcSwap::from_pointee(policy))),
        }
    }

    /// A fixed policy parsed from `yaml` (see
    /// [`RateLimitPolicy::from_yaml`]).
    pub fn from_yaml(yaml: impl AsRef<[u8]>) -> Result<Self, RateLimitPolicyError> {
        RateLimitPolicy::from_yaml(yaml).map(Self::new)
    }

    /// The policy in the file at `path`, reloaded when it changes (see
    /// [`crate::config`]): a version that fails to parse or validate is
    /// logged and counted, and the last good policy stays. The initial
    /// load's error is returned.
    pub fn watch(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::watch_with(path, WatchOptions::new())
    }

    /// [`watch`](Self::watch) with explicit [`WatchOptions`].
    pub fn watch_with(path: impl AsRef<Path>, options: WatchOptions) -> Result<Self, ConfigError> {
        let watched = options.watch(path, |bytes: &[u8]| RateLimitPolicy::from_yaml(bytes))?;
        Ok(Self {
            source: Source::File(watched),
        })
    }

    /// Swaps in `policy`. Returns `false`, and changes nothing, when the
    /// policy comes from a file: there the file is the source of truth.
    pub fn replace(&self, policy: RateLimitPolicy) -> bool {
        match &self.source {
            Source::Fixed(current) => {
                current.store(Arc::new(policy));
                true
            }
            Source::File(_) => false,
        }
    }

    /// The current policy.
    pub fn current(&self) -> Arc<RateLimitPolicy> {
        match &self.source {
            Source::Fixed(current) => current.load_full(),
            Source::File(watched) => watched.current(),
        }
    }

    /// The current policy without touching its reference count (the hot
    /// path).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Arc<RateLimitPolicy>) -> R) -> R {
        match &self.source {
            Source::Fixed(current) => f(&current.load()),
            Source::File(watched) => f(&watched.borrow()),
        }
    }

    /// The watched file, if any: for `reload`, `last_error`, counts.
    pub fn watched(&self) -> Option<&Watched<RateLimitPolicy>> {
        match &self.source {
            Source::Fixed(_) => None,
            Source::File(watched) => Some(watched),
        }
    }
}

impl fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RateLimits");
        d.field("policy", &self.current().name().to_owned());
        if let Some(w) = self.watched() {
            d.field("path", &w.path());
        }
        d.finish_non_exhaustive()
    }
}
