//! [`Watched`]: a value parsed from a file, swapped atomically when the file
//! changes.

use std::any::Any;
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// The largest file [`Watched`] reads unless told otherwise, and the largest
/// input [`parse_yaml_or_json`] accepts: 16 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// The quiet window a burst of file-system events must end with before the
/// file is re-read, unless told otherwise.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// A burst that never goes quiet is still re-read after this many debounce
/// windows, so a file rewritten in a tight loop cannot starve reloads.
const MAX_DEBOUNCE_WINDOWS: u32 = 10;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What went wrong loading a watched file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be opened or read (missing, unreadable, a directory).
    Io,
    /// The file is larger than the configured limit.
    TooLarge,
    /// The parse-and-validate function refused the contents (or panicked).
    Parse,
    /// The file-system watcher or the reload thread could not be started.
    Watch,
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Io => "cannot read",
            Self::TooLarge => "too large",
            Self::Parse => "invalid",
            Self::Watch => "cannot watch",
        })
    }
}

/// A watched file could not be loaded or reloaded.
///
/// Names the file and the cause; cheap to clone so that [`Watched::last_error`]
/// can hand it out, for example to a readiness check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    path: PathBuf,
    kind: ConfigErrorKind,
    message: String,
}

impl ConfigError {
    fn new(path: &Path, kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
            message: message.into(),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The class of failure.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The cause, as reported by the operating system or the parser.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config file {}: {}: {}",
            self.path.display(),
            self.kind,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// Parsing helper
// ---------------------------------------------------------------------------

/// Deserializes `bytes` as JSON when `path` ends in `.json` (any case), as
/// YAML otherwise.
///
/// Input larger than [`DEFAULT_MAX_BYTES`] is refused without being parsed.
/// The error is the parser's message, which carries the line and column.
///
/// ```
/// use finmesh::config::parse_yaml_or_json;
/// use std::collections::BTreeMap;
/// use std::path::Path;
///
/// let yaml: BTreeMap<String, u32> =
///     parse_yaml_or_json(Path::new("limits.yaml"), b"orders: 10\n").unwrap();
/// let json: BTreeMap<String, u32> =
///     parse_yaml_or_json(Path::new("limits.json"), br#"{"orders": 10}"#).unwrap();
/// assert_eq!(yaml, json);
/// ```
pub fn parse_yaml_or_json<D: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<D, String> {
    if bytes.len() as u64 > DEFAULT_MAX_BYTES {
        return Err(format!(
            "input is {} bytes, more than the {DEFAULT_MAX_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        serde_yaml_ng::from_slice(bytes).map_err(|e| e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

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
        Ok(Watched {
            shared: Arc::new(shared),
            _watch: None,
        })
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
            .map_err(|e| ConfigError::new(&path, ConfigErrorKind::Watch, e.to_string()))?;

        Ok(Watched {
            shared,
            _watch: Some(Arc::new(WatchGuard {
                _watcher: watcher,
                _wake: wake,
            })),
        })
    }
}

// ---------------------------------------------------------------------------
// Watched
// ---------------------------------------------------------------------------

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

struct WatchGuard {
    _watcher: Option<RecommendedWatcher>,
    _wake: SyncSender<()>,
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
        self.shared.value.load_full()
    }

    /// The current value, for a short read on a hot path: cheaper than
    /// [`current`](Self::current) (no reference-count traffic in the common
    /// case). Do not hold the guard across an `.await` or for long.
    pub fn borrow(&self) -> Guard<Arc<T>> {
        self.shared.value.load()
    }

    /// A number that changes whenever a new value is applied: 1 for the
    /// initial value, plus one for each reload that changed it.
    ///
    /// A cache can remember the generation it was built from and rebuild when
    /// this differs, without subscribing.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
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
        lock(&self.shared.last_error).clone()
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
        self.shared.changes.subscribe()
    }

    /// The watched path: absolute, with symlinks left unresolved.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

// ---------------------------------------------------------------------------
// Shared state and the reload itself
// ---------------------------------------------------------------------------

type ParseFn<T> = dyn Fn(&[u8]) -> Result<T, String> + Send + Sync;

fn boxed_parser<T, F, E>(parse: F) -> Box<ParseFn<T>>
where
    F: Fn(&[u8]) -> Result<T, E> + Send + Sync + 'static,
    E: fmt::Display,
{
    Box::new(move |bytes| parse(bytes).map_err(|e| e.to_string()))
}

struct Shared<T> {
    path: PathBuf,
    max_bytes: u64,
    parse: Box<ParseFn<T>>,
    value: ArcSwap<T>,
    generation: AtomicU64,
    reload_count: AtomicU64,
    error_count: AtomicU64,
    // Held for a whole read-parse-swap: reloads from the thread and from
    // `reload()` apply in the order they read, so an older read never
    // replaces a newer value.
    state: Mutex<ReloadState>,
    last_error: Mutex<Option<ConfigError>>,
    changes: watch::Sender<Arc<T>>,
}

struct ReloadState {
    // Randomly keyed per process, so crafted contents cannot collide with the
    // applied version on purpose and be skipped as "unchanged".
    hasher: RandomState,
    last_good: Fingerprint,
    last_failed: Option<Fingerprint>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: usize,
    hash: u64,
}

impl ReloadState {
    fn fingerprint(&self, bytes: &[u8]) -> Fingerprint {
        Fingerprint {
            len: bytes.len(),
            hash: self.hasher.hash_one(bytes),
        }
    }
}

impl<T> Shared<T> {
    fn load(path: &Path, max_bytes: u64, parse: Box<ParseFn<T>>) -> Result<Self, ConfigError> {
        let path = absolute(path);
        let bytes = read_bounded(&path, max_bytes)?;
        let value = Arc::new(
            guarded_parse(&*parse, &bytes)
                .map_err(|message| ConfigError::new(&path, ConfigErrorKind::Parse, message))?,
        );
        let mut state = ReloadState {
            hasher: RandomState::new(),
            last_good: Fingerprint { len: 0, hash: 0 },
            last_failed: None,
        };
        state.last_good = state.fingerprint(&bytes);
        let (changes, _) = watch::channel(Arc::clone(&value));
        Ok(Self {
            path,
            max_bytes,
            parse,
            value: ArcSwap::new(value),
            generation: AtomicU64::new(1),
            reload_count: AtomicU64::new(0),
            error_count: AtomicU64::new(0),
            state: Mutex::new(state),
            last_error: Mutex::new(None),
            changes,
        })
    }

    fn reload(&self) -> Result<bool, ConfigError> {
        let mut state = lock(&self.state);
        self.reload_count.fetch_add(1, Ordering::Relaxed);

        let bytes = match read_bounded(&self.path, self.max_bytes) {
            Ok(bytes) => bytes,
            Err(err) => {
                state.last_failed = None;
                let repeated = lock(&self.last_error).as_ref() == Some(&err);
                return Err(self.record_failure(err, !repeated));
            }
        };

        let fingerprint = state.fingerprint(&bytes);
        if fingerprint == state.last_good {
            state.last_failed = None;
            *lock(&self.last_error) = None;
            tracing::trace!(path = %self.path.display(), "config file unchanged");
            return Ok(false);
        }
        if state.last_failed == Some(fingerprint)
            && let Some(err) = lock(&self.last_error).clone()
        {
            // The same invalid bytes as last time: already logged and counted.
            return Err(err);
        }

        match guarded_parse(&*self.parse, &bytes) {
            Ok(value) => {
                // Before the store: whoever sees the new value must not
                // also see the error of the version it replaces.
                *lock(&self.last_error) = None;
                let value = Arc::new(value);
                self.value.store(Arc::clone(&value));
                // After the store, so whoever sees the new generation reads
                // the new value.
                let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
                self.changes.send_replace(value);
                state.last_good = fingerprint;
                state.last_failed = None;
                tracing::info!(path = %self.path.display(), generation, "config file reloaded");
                Ok(true)
            }
            Err(message) => {
                state.last_failed = Some(fingerprint);
                let err = ConfigError::new(&self.path, ConfigErrorKind::Parse, message);
                Err(self.record_failure(err, true))
            }
        }
    }

    fn record_failure(&self, err: ConfigError, is_new: bool) -> ConfigError {
        if is_new {
            self.error_count.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                path = %self.path.display(),
                kind = %err.kind(),
                error = %err.message(),
                "config reload failed; keeping the last good version"
            );
        }
        *lock(&self.last_error) = Some(err.clone());
        err
    }
}

/// Runs the caller's parser, turning a panic into an error: a parser bug
/// triggered by one bad file must not end hot reload for the process.
fn guarded_parse<T>(parse: &ParseFn<T>, bytes: &[u8]) -> Result<T, String> {
    match panic::catch_unwind(AssertUnwindSafe(|| parse(bytes))) {
        Ok(result) => result,
        Err(payload) => Err(format!("parser panicked: {}", panic_message(&*payload))),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Reads the file the path points to now (following symlinks), refusing more
/// than `max_bytes` even if the file grows while being read.
fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ConfigError> {
    let io_err = |e: std::io::Error| ConfigError::new(path, ConfigErrorKind::Io, e.to_string());
    let too_large = |len: u64| {
        ConfigError::new(
            path,
            ConfigErrorKind::TooLarge,
            format!("file is {len} bytes or more, over the {max_bytes}-byte limit"),
        )
    };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    if len > max_bytes {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

// The path is made absolute (so a later chdir does not matter) but
// deliberately not canonicalized: resolving the symlinks once would pin the
// ConfigMap's old `..2024_…` directory and miss every update after it.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn lock<S>(mutex: &Mutex<S>) -> MutexGuard<'_, S> {
    // The state stays consistent across a panic (the parser runs under
    // catch_unwind), so a poisoned lock is safe to keep using.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Watching
// ---------------------------------------------------------------------------

/// Watches the file's directory rather than the file: that sees an editor's
/// rename over the file, a deleted and recreated file, and a ConfigMap's
/// `..data` symlink swap, none of which a watch on the file's inode survives.
fn start_watcher(path: &Path, wake: SyncSender<()>) -> Result<RecommendedWatcher, ConfigError> {
    let watch_err =
        |e: notify::Error| ConfigError::new(path, ConfigErrorKind::Watch, e.to_string());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if triggers_reload(&event) {
            // Full means a wake-up is already pending; disconnected means
            // the handle is gone. Either way there is nothing to do.
            let _ = wake.try_send(());
        }
    })
    .map_err(watch_err)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(watch_err)?;
    Ok(watcher)
}

/// Every event in the directory may concern the file (a ConfigMap update
/// only touches `..data` entries, never the file's own name), so all count,
/// except opens and reads: our own read of the file would otherwise wake us
/// up again, forever.
fn triggers_reload(event: &notify::Result<Event>) -> bool {
    match event {
        Ok(event) => match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
        // The watcher lost track (e.g. queue overflow): re-read to be safe.
        Err(_) => true,
    }
}

/// The reload thread: waits for a wake-up (or the poll interval), lets the
/// burst settle, re-reads. Returns when every wake-up sender is gone, that is
/// when the last handle has been dropped.
fn reload_loop<T>(
    shared: &Shared<T>,
    woken: &Receiver<()>,
    debounce: Duration,
    poll: Option<Duration>,
) {
    loop {
        let first = match poll {
            Some(every) => woken.recv_timeout(every),
            None => woken.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match first {
            Ok(()) => {
                if !settle(woken, debounce) {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Failures are logged, counted and recorded inside.
        let _ = shared.reload();
    }
}

/// Waits until no wake-up has arrived for `debounce`, or until a burst has
/// lasted [`MAX_DEBOUNCE_WINDOWS`] windows. `false` if the channel closed.
fn settle(woken: &Receiver<()>, debounce: Duration) -> bool {
    let deadline = Instant::now() + debounce.saturating_mul(MAX_DEBOUNCE_WINDOWS);
    loop {
        let wait = debounce.min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            return true;
        }
        match woken.recv_timeout(wait) {
            Ok(()) => continue,
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
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

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn number(bytes: &[u8]) -> Result<u32, String> {
        std::str::from_utf8(bytes)
            .map_err(|e| e.to_string())?
            .trim()
            .parse::<u32>()
            .map_err(|e| e.to_string())
    }

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

    #[test]
    fn relative_path_is_made_absolute_without_resolving_symlinks() {
        let p = absolute(Path::new("some/dir/..data/file.yaml"));
        assert!(p.is_absolute());
        assert!(p.ends_with("some/dir/..data/file.yaml"));
    }

    #[test]
    fn yaml_or_json_is_chosen_by_extension() {
        let json: Result<Vec<u32>, _> = parse_yaml_or_json(Path::new("a.JSON"), b"- 1\n");
        assert!(json.is_err(), "YAML syntax must not pass as JSON");
        let yaml: Vec<u32> = parse_yaml_or_json(Path::new("a.yaml"), b"- 1\n- 2\n").unwrap();
        assert_eq!(yaml, [1, 2]);
        let no_ext: Vec<u32> = parse_yaml_or_json(Path::new("a"), b"[3]").unwrap();
        assert_eq!(no_ext, [3]);
    }

    #[test]
    fn yaml_or_json_refuses_oversized_input() {
        let big = vec![b' '; DEFAULT_MAX_BYTES as usize + 1];
        let err = parse_yaml_or_json::<Vec<u32>>(Path::new("a.yaml"), &big).unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }

    #[test]
    fn own_reads_do_not_trigger_reloads() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        let ev = |kind| Ok(Event::new(kind));
        assert!(!triggers_reload(&ev(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        )))));
        assert!(!triggers_reload(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        )))));
        assert!(triggers_reload(&ev(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        )))));
        assert!(triggers_reload(&ev(EventKind::Create(CreateKind::File))));
        assert!(triggers_reload(&ev(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        )))));
    }
}
