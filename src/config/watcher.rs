//! The file-system watch and the reload thread: which events count, and
//! how a burst of them becomes one reload.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::error::{ConfigError, ConfigErrorKind};
use super::reload::Shared;

/// A burst that never goes quiet is still re-read after this many debounce
/// windows, so a file rewritten in a tight loop cannot starve reloads.
const MAX_DEBOUNCE_WINDOWS: u32 = 10;

/// Watches the file's directory rather than the file: that sees an editor's
/// rename over the file, a deleted and recreated file, and a ConfigMap's
/// `..data` symlink swap, none of which a watch on the file's inode survives.
pub(crate) fn start_watcher(
    path: &Path,
    wake: SyncSender<()>,
) -> Result<RecommendedWatcher, ConfigError> {
    let watch_err = |e: notify::Error| ConfigError::caused_by(path, ConfigErrorKind::Watch, e);
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
pub(crate) fn reload_loop<T>(
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
