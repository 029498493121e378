//! [`Watched`]: a value parsed from a file, swapped atomically when the file
//! changes — the handle readers hold.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;

use arc_swap::Guard;
use notify::RecommendedWatcher;
use tokio::sync::watch;

use super::error::ConfigError;
use super::options::WatchOptions;
use super::reload::Shared;

/// A value parsed from a file, replaced atomically when a new version of the
/// file parses and validates.
///
/// Cloning is cheap and every clone sees the same value. Reads never block:
/// [`borrow`](Self::borrow) and [`current`](Self::current) are an atomic load.
/// When the last clone is dropped, the file-system watcher and the reload
/// thread stop.
///
/// See the [module docs](crate::config) for how changes are detected.
pub struct Watched<T> {
    shared: Arc<Shared<T>>,
    // Owned only by handles, never by the reload thread: dropping the last
    // handle drops the OS watcher (whose callback holds the other wake-up
    // sender), the channel disconnects and the thread exits.
    _watch: Option<Arc<WatchGuard>>,
}

/// What keeps the reload thread alive: the OS watcher and a wake-up sender.
pub(crate) struct WatchGuard {
    _watcher: Option<RecommendedWatcher>,
    _wake: SyncSender<()>,
}

impl WatchGuard {
    pub(crate) fn new(watcher: Option<RecommendedWatcher>, wake: SyncSender<()>) -> Self {
        Self {
            _watcher: watcher,
            _wake: wake,
        }
    }
}

impl<T> Watched<T> {
    pub(crate) fn new(shared: Arc<Shared<T>>, watch: Option<WatchGuard>) -> Self {
        Self {
            shared,
            _watch: watch.map(Arc::new),
        }
    }
}

impl<T> Clone for Watched<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            _watch: self._watch.clone(),
        }
    }
}

impl<T> fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("path", &self.shared.path)
            .field("generation", &self.generation())
            .field("watching", &self._watch.is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Watched<T> {
    /// Reads `path` and turns its bytes into a `T` with `parse`, once; the
    /// file is not watched, but [`reload`](Self::reload) re-reads it.
    ///
    /// `parse` is the whole gate: do all validation in it, because whatever it
    /// returns `Ok` is what readers get. A missing, unreadable, oversized or
    /// invalid file is an `Err`.
    pub fn load<F, E>(path: impl AsRef<Path>, parse: F) -> Result<Self, ConfigError>
    where
        F: Fn(&[u8]) -> Result<T, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        WatchOptions::new().load(path, parse)
    }

    /// Like [`load`](Self::load), then watches the file with the default
    /// [`WatchOptions`] and swaps in each new version that `parse` accepts.
    ///
    /// Needs no async runtime: the reload loop runs on its own thread.
    pub fn watch<F, E>(path: impl AsRef<Path>, parse: F) -> Result<Self, ConfigError>
    where
        F: Fn(&[u8]) -> Result<T, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        WatchOptions::new().watch(path, parse)
    }
}

impl<T> Watched<T> {
    /// The current value, as an `Arc` the caller may keep.
    pub fn current(&self) -> Arc<T> {
        self.shared.published.load_full()
    }

    /// The current value, for a short read on a hot path: cheaper than
    /// [`current`](Self::current) (no reference-count traffic in the common
    /// case). Do not hold the guard across an `.await` or for long.
    pub fn borrow(&self) -> Guard<Arc<T>> {
        self.shared.published.load()
    }

    /// A number that changes whenever a new value is applied: 1 for the
    /// initial value, plus one for each reload that changed it.
    ///
    /// A cache can remember the generation it was built from and rebuild when
    /// this differs, without subscribing.
    pub fn generation(&self) -> u64 {
        self.shared.published.generation()
    }

    /// Re-reads the file now; `Ok(true)` if a new value was applied,
    /// `Ok(false)` if the file is byte-for-byte what is already applied.
    ///
    /// On `Err` the last good value stays. This does blocking file I/O; from
    /// async code, call it in `tokio::task::spawn_blocking`.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        self.shared.reload()
    }

    /// The error of the most recent reload attempt, or `None` if it succeeded
    /// (what is on disk is what is being served).
    pub fn last_error(&self) -> Option<ConfigError> {
        self.shared.published.last_error()
    }

    /// How many reloads have failed. A failure identical to the previous one
    /// (the same invalid bytes, the same I/O error) is counted once.
    pub fn error_count(&self) -> u64 {
        self.shared.error_count.load(Ordering::Relaxed)
    }

    /// How many times the file has been re-read after the initial load (by the
    /// watcher, by polling or by [`reload`](Self::reload)), whether or not it
    /// had changed or parsed.
    pub fn reload_count(&self) -> u64 {
        self.shared.reload_count.load(Ordering::Relaxed)
    }

    /// A receiver that is notified of each value applied from now on.
    ///
    /// Its current value is the value at the time of the call, marked seen, so
    /// `changed().await` waits for the next one. It reports an error once the
    /// last [`Watched`] handle is dropped and the reload thread has stopped.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.shared.published.subscribe()
    }

    /// The watched path: absolute, with symlinks left unresolved.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<S: Send + Sync>() {}

    #[test]
    fn watched_is_send_and_sync_when_the_value_is() {
        assert_send_sync::<Watched<String>>();
        assert_send_sync::<ConfigError>();
    }
}
