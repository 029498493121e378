//! [`Published`]: what readers see — the value, its generation, the last
//! reload error and the change channel — and the one order they change in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use super::error::ConfigError;
use super::reload::Serialized;

/// The reader-visible state of a [`Watched`](super::Watched).
///
/// # Invariants
///
/// Readers take no lock but `last_error`'s, for a moment. Writers hold the
/// reload lock (a [`Serialized`] witness, made only from the
/// `ReloadState` behind it) for the whole read-parse-publish,
/// so locks are always taken in the order *reload lock, then `last_error`*,
/// never the reverse, and reloads apply in the order they read the file.
///
/// [`apply`](Self::apply) publishes a new value in this order, which no
/// caller can change:
///
/// 1. clear `last_error` — a reader that sees the new value never also sees
///    the error of the version it replaces;
/// 2. store the value;
/// 3. bump the generation — a reader that sees the new generation then
///    reads the new value (or a newer one);
/// 4. notify subscribers.
///
/// `published_state_is_never_seen_out_of_order` checks both reader
/// guarantees against a writer racing them.
pub(crate) struct Published<T> {
    value: ArcSwap<T>,
    generation: AtomicU64,
    last_error: Mutex<Option<ConfigError>>,
    changes: watch::Sender<Arc<T>>,
}

impl<T> Published<T> {
    /// The initial value, generation 1, no error.
    pub(crate) fn new(value: T) -> Self {
        let value = Arc::new(value);
        let (changes, _) = watch::channel(Arc::clone(&value));
        Self {
            value: ArcSwap::new(value),
            generation: AtomicU64::new(1),
            last_error: Mutex::new(None),
            changes,
        }
    }

    /// Publishes `value` (see the struct docs for the order); returns the
    /// new generation.
    pub(crate) fn apply(&self, _: &Serialized<'_>, value: T) -> u64 {
        *lock(&self.last_error) = None;
        let value = Arc::new(value);
        self.value.store(Arc::clone(&value));
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.changes.send_replace(value);
        generation
    }

    /// Records the error of the latest reload attempt (`None`: it succeeded
    /// without a change). The value stays.
    pub(crate) fn set_error(&self, _: &Serialized<'_>, error: Option<ConfigError>) {
        *lock(&self.last_error) = error;
    }

    pub(crate) fn load(&self) -> Guard<Arc<T>> {
        self.value.load()
    }

    pub(crate) fn load_full(&self) -> Arc<T> {
        self.value.load_full()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn last_error(&self) -> Option<ConfigError> {
        lock(&self.last_error).clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.changes.subscribe()
    }
}

pub(crate) fn lock<S>(mutex: &Mutex<S>) -> MutexGuard<'_, S> {
    // The state stays consistent across a panic (the parser runs under
    // catch_unwind), so a poisoned lock is safe to keep using.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::config::ConfigErrorKind;

    /// The writer publishes 1, 2, 3, … and, between two values, fails with
    /// an error naming the value it followed. Readers check the two
    /// guarantees of the struct docs on every read.
    #[test]
    fn published_state_is_never_seen_out_of_order() {
        const LAST: u64 = 20_000;
        let published = Arc::new(Published::new(1u64));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (p, done) = (Arc::clone(&published), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !done.load(Ordering::Acquire) {
                        // Value n is generation n: a newer generation never
                        // shows an older value.
                        let generation = p.generation();
                        let value = **p.load();
                        assert!(value >= generation, "gen {generation} read value {value}");
                        // An error seen after a value is that value's or a
                        // later one's, never the replaced version's.
                        if let Some(err) = p.last_error() {
                            let after: u64 = err.message().parse().unwrap();
                            assert!(after >= value, "value {value} read error after {after}");
                        }
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let mut state = crate::config::reload::ReloadState::new();
        let serialized = state.serialized();
        for n in 2..=LAST {
            let err =
                ConfigError::new(Path::new("/n"), ConfigErrorKind::Parse, (n - 1).to_string());
            published.set_error(&serialized, Some(err));
            assert_eq!(published.apply(&serialized, n), n);
        }
        done.store(true, Ordering::Release);
        for reader in readers {
            assert!(reader.join().expect("a reader saw state out of order") > 0);
        }
        assert_eq!((published.generation(), **published.load()), (LAST, LAST));
        assert_eq!(published.last_error(), None);
    }
}
