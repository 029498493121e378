//! [`WatchOptions`]: how a file is read and watched, and the two ways to
//! start a [`Watched`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::error::{ConfigError, ConfigErrorKind};
use super::reload::{Shared, absolute, boxed_parser};
use super::watched::{WatchGuard, Watched};
use super::watcher::{reload_loop, start_watcher};

/// The largest file [`Watched`] reads unless told otherwise, and the largest
/// input [`parse_yaml_or_json`](super::parse_yaml_or_json) accepts: 16 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The quiet window a burst of file-system events must end with before the
/// file is re-read, unless told otherwise.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// How a [`Watched`] file is read and watched.
///
/// ```
/// use finmesh::config::WatchOptions;
/// use std::time::Duration;
///
/// let options = WatchOptions::new()
///     .debounce(Duration::from_millis(50))
///     .poll_interval(Duration::from_secs(30))
///     .max_bytes(1024 * 1024);
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    debounce: Duration,
    poll_interval: Option<Duration>,
    max_bytes: u64,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchOptions {
    /// [`DEFAULT_DEBOUNCE`], no polling, files up to [`DEFAULT_MAX_BYTES`].
    pub fn new() -> Self {
        Self {
            debounce: DEFAULT_DEBOUNCE,
            poll_interval: None,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Re-read the file once file-system events have been quiet for this
    /// long, so an editor's or kubelet's burst of events is one reload.
    pub fn debounce(mut self, quiet_for: Duration) -> Self {
        self.debounce = quiet_for;
        self
    }

    /// Also re-read the file this often, whether or not an event was seen
    /// (`None`, the default, turns polling off).
    ///
    /// A fallback for file systems without change notification (some network
    /// and FUSE mounts) and for a path that is a symlink to a file edited in
    /// place in another directory. With polling on, failing to start the
    /// file-system watcher is logged instead of being an error.
    pub fn poll_interval(mut self, every: impl Into<Option<Duration>>) -> Self {
        self.poll_interval = every.into();
        self
    }

    /// Refuse files larger than this many bytes ([`ConfigErrorKind::TooLarge`]).
    pub fn max_bytes(mut self, limit: u64) -> Self {
        self.max_bytes = limit;
        self
    }

    /// Loads `path` once through `parse`, without watching it; see
    /// [`Watched::load`].
    pub fn load<T, F, E>(&self, path: impl AsRef<Path>, parse: F) -> Result<Watched<T>, ConfigError>
    where
        T: Send + Sync + 'static,
        F: Fn(&[u8]) -> Result<T, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let shared = Shared::load(path.as_ref(), self.max_bytes, boxed_parser(parse))?;
        Ok(Watched::new(Arc::new(shared), None))
    }

    /// Loads `path` through `parse` and reloads it when it changes; see
    /// [`Watched::watch`].
    pub fn watch<T, F, E>(
        &self,
        path: impl AsRef<Path>,
        parse: F,
    ) -> Result<Watched<T>, ConfigError>
    where
        T: Send + Sync + 'static,
        F: Fn(&[u8]) -> Result<T, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        let path = absolute(path.as_ref());
        // A slot of one: a pending wake-up already covers every event that
        // arrives before the thread takes it, and the notify thread never blocks.
        let (wake, woken) = mpsc::sync_channel::<()>(1);

        // Watch before the initial read, so a change made while we read is not lost.
        let watcher = match start_watcher(&path, wake.clone()) {
            Ok(watcher) => Some(watcher),
            Err(err) if self.poll_interval.is_some() => {
                tracing::warn!(
                    path = %path.display(),
                    error = %err.message(),
                    "cannot watch config file for changes; relying on polling"
                );
                None
            }
            Err(err) => return Err(err),
        };

        let shared = Arc::new(Shared::load(&path, self.max_bytes, boxed_parser(parse))?);

        let worker = Arc::clone(&shared);
        let (debounce, poll) = (self.debounce, self.poll_interval);
        thread::Builder::new()
            .name("finmesh-config-watch".into())
            .spawn(move || reload_loop(&worker, &woken, debounce, poll))
            .map_err(|e| ConfigError::caused_by(&path, ConfigErrorKind::Watch, e))?;

        Ok(Watched::new(shared, Some(WatchGuard::new(watcher, wake))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_support::{number, write};

    #[test]
    fn file_over_the_size_limit_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "n.txt", "12345678");
        let err = WatchOptions::new()
            .max_bytes(4)
            .load(&path, |_: &[u8]| -> Result<u32, String> {
                panic!("parser must not run")
            })
            .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::TooLarge);
        assert!(err.to_string().contains("n.txt"), "{err}");
    }

    #[test]
    fn file_at_the_size_limit_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "n.txt", "1234");
        let w = WatchOptions::new()
            .max_bytes(4)
            .load(&path, number)
            .unwrap();
        assert_eq!(*w.current(), 1234);
    }
}
