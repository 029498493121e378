//! The shared state behind every [`Watched`](super::Watched) handle, and
//! one reload: read, skip if unchanged, parse, publish or record the error.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{ConfigError, ConfigErrorKind};
use super::published::{Published, lock};
pub(crate) use super::read::absolute;
use super::read::{guarded_parse, read_bounded};

pub(crate) type ParseFn<T> = dyn Fn(&[u8]) -> Result<T, String> + Send + Sync;

pub(crate) fn boxed_parser<T, F, E>(parse: F) -> Box<ParseFn<T>>
where
    F: Fn(&[u8]) -> Result<T, E> + Send + Sync + 'static,
    E: fmt::Display,
{
    Box::new(move |bytes| parse(bytes).map_err(|e| e.to_string()))
}

pub(crate) struct Shared<T> {
    pub(crate) path: PathBuf,
    max_bytes: u64,
    parse: Box<ParseFn<T>>,
    pub(crate) reload_count: AtomicU64,
    pub(crate) error_count: AtomicU64,
    // The reload lock, held for a whole read-parse-publish: reloads from the
    // thread and from `reload()` apply in the order they read, so an older
    // read never replaces a newer value. Writing `published` needs it.
    state: Mutex<ReloadState>,
    pub(crate) published: Published<T>,
}

/// What the reload path remembers between reloads; behind the reload lock.
pub(crate) struct ReloadState {
    // Randomly keyed per process, so crafted contents cannot collide with the
    // applied version on purpose and be skipped as "unchanged".
    hasher: RandomState,
    last_good: Fingerprint,
    last_failed: Option<Fingerprint>,
}

/// Proof that the caller holds the reload lock: only a `&mut ReloadState`
/// makes one, and [`Published`]'s writers demand one.
pub(crate) struct Serialized<'a>(PhantomData<&'a mut ReloadState>);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: usize,
    hash: u64,
}

impl ReloadState {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            last_good: Fingerprint { len: 0, hash: 0 },
            last_failed: None,
        }
    }

    fn fingerprint(&self, bytes: &[u8]) -> Fingerprint {
        Fingerprint {
            len: bytes.len(),
            hash: self.hasher.hash_one(bytes),
        }
    }

    pub(crate) fn serialized(&mut self) -> Serialized<'_> {
        Serialized(PhantomData)
    }
}

impl<T> Shared<T> {
    pub(crate) fn load(
        path: &Path,
        max_bytes: u64,
        parse: Box<ParseFn<T>>,
    ) -> Result<Self, ConfigError> {
        let path = absolute(path);
        let bytes = read_bounded(&path, max_bytes)?;
        let value = guarded_parse(&*parse, &bytes)
            .map_err(|message| ConfigError::new(&path, ConfigErrorKind::Parse, message))?;
        let mut state = ReloadState::new();
        state.last_good = state.fingerprint(&bytes);
        Ok(Self {
            path,
            max_bytes,
            parse,
            reload_count: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            state: Mutex::new(state),
            published: Published::new(value),
        })
    }

    pub(crate) fn reload(&self) -> Result<bool, ConfigError> {
        let mut state = lock(&self.state);
        self.reload_count.fetch_add(1, Ordering::Relaxed);

        let bytes = match read_bounded(&self.path, self.max_bytes) {
            Ok(bytes) => bytes,
            Err(err) => {
                state.last_failed = None;
                let repeated = self.published.last_error().as_ref() == Some(&err);
                return Err(self.record_failure(&state.serialized(), err, !repeated));
            }
        };

        let fingerprint = state.fingerprint(&bytes);
        if fingerprint == state.last_good {
            state.last_failed = None;
            self.published.set_error(&state.serialized(), None);
            tracing::trace!(path = %self.path.display(), "config file unchanged");
            return Ok(false);
        }
        if state.last_failed == Some(fingerprint)
            && let Some(err) = self.published.last_error()
        {
            // The same invalid bytes as last time: already logged and counted.
            return Err(err);
        }

        match guarded_parse(&*self.parse, &bytes) {
            Ok(value) => {
                let generation = self.published.apply(&state.serialized(), value);
                state.last_good = fingerprint;
                state.last_failed = None;
                tracing::info!(path = %self.path.display(), generation, "config file reloaded");
                Ok(true)
            }
            Err(message) => {
                state.last_failed = Some(fingerprint);
                let err = ConfigError::new(&self.path, ConfigErrorKind::Parse, message);
                Err(self.record_failure(&state.serialized(), err, true))
            }
        }
    }

    fn record_failure(
        &self,
        serialized: &Serialized<'_>,
        err: ConfigError,
        is_new: bool,
    ) -> ConfigError {
        if is_new {
            self.error_count.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                path = %self.path.display(),
                kind = %err.kind(),
                error = %err.message(),
                "config reload failed; keeping the last good version"
            );
        }
        self.published.set_error(serialized, Some(err.clone()));
        err
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigErrorKind, Watched};

    use crate::config::test_support::{number, write};

    #[test]
    fn panicking_parser_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "n.txt", "1");
        let w = Watched::load(&path, |b: &[u8]| {
            if b == b"boom" {
                panic!("parser bug");
            }
            number(b)
        })
        .unwrap();
        std::fs::write(&path, "boom").unwrap();
        let err = w.reload().unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Parse);
        assert!(err.message().contains("parser bug"), "{err}");
        assert_eq!(*w.current(), 1);
        // The lock is still usable after the panic.
        std::fs::write(&path, "2").unwrap();
        assert_eq!(w.reload(), Ok(true));
        assert_eq!(*w.current(), 2);
    }

    #[test]
    fn same_invalid_bytes_are_counted_once_but_still_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "n.txt", "1");
        let w = Watched::load(&path, number).unwrap();
        std::fs::write(&path, "x").unwrap();
        assert!(w.reload().is_err());
        assert!(w.reload().is_err());
        assert_eq!(w.error_count(), 1);
        assert_eq!(w.reload_count(), 2);
        std::fs::write(&path, "y").unwrap();
        assert!(w.reload().is_err());
        assert_eq!(w.error_count(), 2);
    }

    #[test]
    fn restoring_the_applied_bytes_clears_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "n.txt", "1");
        let w = Watched::load(&path, number).unwrap();
        std::fs::write(&path, "x").unwrap();
        assert!(w.reload().is_err());
        assert!(w.last_error().is_some());
        std::fs::write(&path, "1").unwrap();
        assert_eq!(w.reload(), Ok(false));
        assert_eq!(w.last_error(), None);
        assert_eq!(w.generation(), 1);
    }
}
