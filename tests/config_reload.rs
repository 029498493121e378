//! Hot reload of watched files, against real files and the real OS watcher.
//!
//! Waits are polling loops with a generous deadline; nothing here asserts how
//! fast a reload happens.
#![cfg(feature = "config")]

// Note: a reload stores the value before it bumps the generation, so a test
// waits for the generation and then reads the value (whoever sees the new
// generation is guaranteed the new value; not the other way round).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use finmesh::config::{ConfigErrorKind, WatchOptions, Watched, parse_yaml_or_json};
use serde::Deserialize;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize, PartialEq)]
struct Doc {
    a: u64,
    b: String,
    c: Vec<u64>,
}

impl Doc {
    /// Every field carries the same number; a value stitched together from
    /// two versions would not.
    fn is_consistent(&self) -> bool {
        self.b == self.a.to_string() && self.c.len() == 3 && self.c.iter().all(|&n| n == self.a)
    }
}

fn json(n: u64) -> String {
    format!(r#"{{"a":{n},"b":"{n}","c":[{n},{n},{n}]}}"#)
}

fn yaml(n: u64) -> String {
    format!("a: {n}\nb: \"{n}\"\nc: [{n}, {n}, {n}]\n")
}

/// Parses YAML or JSON and refuses inconsistent documents (the validation
/// step).
fn parser(path: &Path) -> impl Fn(&[u8]) -> Result<Doc, String> + Send + Sync + 'static {
    let path = path.to_path_buf();
    move |bytes| {
        let doc: Doc = parse_yaml_or_json(&path, bytes)?;
        if !doc.is_consistent() {
            return Err(format!("inconsistent document: a = {}", doc.a));
        }
        Ok(doc)
    }
}

fn options() -> WatchOptions {
    WatchOptions::new().debounce(Duration::from_millis(50))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Replaces the file atomically (write a sibling, rename over), so the watcher
/// never reads a half-written file.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn setup(name: &str, contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

#[test]
fn initial_load_parses_the_file_and_starts_at_generation_one() {
    let (_dir, path) = setup("doc.json", &json(1));
    let w = options().watch(&path, parser(&path)).unwrap();
    assert_eq!(w.current().a, 1);
    assert_eq!(w.borrow().b, "1");
    assert_eq!(w.generation(), 1);
    assert_eq!(w.error_count(), 0);
    assert_eq!(w.last_error(), None);
    assert_eq!(w.path(), path);
}

#[test]
fn invalid_file_at_start_up_is_an_error_naming_the_path() {
    let (_dir, path) = setup("doc.yaml", "a: [unclosed\n");
    let err = options().watch(&path, parser(&path)).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Parse);
    assert_eq!(err.path(), path);
    assert!(err.to_string().contains("doc.yaml"), "{err}");

    // Valid syntax that fails validation is refused the same way.
    std::fs::write(&path, r#"{"a":1,"b":"2","c":[1,1,1]}"#).unwrap();
    let err = Watched::load(&path, parser(&path)).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Parse);
    assert!(err.message().contains("inconsistent"), "{err}");
}

#[test]
fn missing_file_at_start_up_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let err = options().watch(&path, parser(&path)).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Io);
    assert!(err.to_string().contains("absent.yaml"), "{err}");
}

#[test]
fn in_place_write_is_reloaded() {
    let (_dir, path) = setup("doc.json", &json(1));
    let w = options().watch(&path, parser(&path)).unwrap();
    std::fs::write(&path, json(2)).unwrap();
    wait_until("the in-place write to apply", || w.generation() == 2);
    assert_eq!(w.current().a, 2);
}

#[test]
fn write_to_temp_then_rename_is_reloaded() {
    let (dir, path) = setup("doc.yaml", &yaml(1));
    let w = options().watch(&path, parser(&path)).unwrap();
    // As editors do: a hidden sibling, then an atomic rename over the file.
    let tmp = dir.path().join(".doc.yaml.swp");
    std::fs::write(&tmp, yaml(2)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_until("the renamed file to apply", || w.current().a == 2);

    // The watch survives the replaced inode: a second rename is seen too.
    std::fs::write(&tmp, yaml(3)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_until("the second rename to apply", || w.generation() == 3);
    assert_eq!(w.current().a, 3);
}

#[cfg(unix)]
#[test]
fn configmap_symlink_swap_is_seen_as_an_update() {
    use std::os::unix::fs::symlink;

    // The layout the kubelet builds for a ConfigMap volume:
    //   tenants.yaml -> ..data/tenants.yaml
    //   ..data -> ..2024_01_01_00_00_00.000000001
    //   ..2024_01_01_00_00_00.000000001/tenants.yaml
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write_version = |stamp: &str, n: u64| {
        std::fs::create_dir(root.join(stamp)).unwrap();
        std::fs::write(root.join(stamp).join("tenants.yaml"), yaml(n)).unwrap();
    };
    let first = "..2024_01_01_00_00_00.000000001";
    write_version(first, 1);
    symlink(first, root.join("..data")).unwrap();
    symlink("..data/tenants.yaml", root.join("tenants.yaml")).unwrap();

    let path = root.join("tenants.yaml");
    let w = options().watch(&path, parser(&path)).unwrap();
    assert_eq!(w.current().a, 1);

    // The kubelet's update: a new timestamped dir, a `..data_tmp` symlink to
    // it, renamed atomically over `..data`, then the old dir removed.
    let update = |old: &str, new: &str, n: u64| {
        write_version(new, n);
        symlink(new, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join(old)).unwrap();
    };

    let second = "..2024_01_01_00_05_00.000000002";
    update(first, second, 2);
    wait_until("the first ..data swap to apply", || w.current().a == 2);

    let third = "..2024_01_01_00_10_00.000000003";
    update(second, third, 3);
    wait_until("the second ..data swap to apply", || w.generation() == 3);

    assert_eq!(w.current().a, 3);
    assert_eq!(w.error_count(), 0, "{:?}", w.last_error());
    assert_eq!(
        w.path(),
        path,
        "the symlink path, not its target, is watched"
    );
}

#[test]
fn burst_of_writes_is_debounced_and_ends_on_the_last_value() {
    let (_dir, path) = setup("doc.json", &json(0));
    let w = WatchOptions::new()
        .debounce(Duration::from_millis(100))
        .watch(&path, parser(&path))
        .unwrap();

    for n in 1..=50 {
        std::fs::write(&path, json(n)).unwrap();
    }
    wait_until("the last write of the burst to apply", || {
        w.current().a == 50
    });

    let reads = w.reload_count();
    assert!(
        reads < 10,
        "50 writes in a burst should be a few re-reads, not {reads}"
    );
    assert!(w.generation() <= 10, "generation {}", w.generation());
}

#[test]
fn invalid_new_version_keeps_the_last_good_value_until_a_valid_one_arrives() {
    let (_dir, path) = setup("doc.json", &json(1));
    let w = options().watch(&path, parser(&path)).unwrap();

    replace(&path, "{not json");
    wait_until("the parse error to be recorded", || w.error_count() == 1);
    assert_eq!(w.current().a, 1, "the last good value is still served");
    assert_eq!(w.generation(), 1);
    let err = w.last_error().expect("last_error is set");
    assert_eq!(err.kind(), ConfigErrorKind::Parse);
    assert_eq!(err.path(), w.path());
    assert!(err.to_string().contains("doc.json"), "{err}");

    // Parses, but fails validation: refused too.
    replace(&path, r#"{"a":7,"b":"8","c":[7,7,7]}"#);
    wait_until("the validation error to be recorded", || {
        w.error_count() == 2
    });
    assert_eq!(w.current().a, 1);
    assert!(
        w.last_error().unwrap().message().contains("inconsistent"),
        "{:?}",
        w.last_error()
    );

    replace(&path, &json(2));
    wait_until("the valid version to apply", || w.generation() == 2);
    assert_eq!(w.current().a, 2);
    assert_eq!(w.last_error(), None);
    assert_eq!(w.error_count(), 2, "the count is a total, not reset");
}

#[test]
fn deleted_file_keeps_the_last_good_value_and_recreated_file_is_loaded() {
    let (_dir, path) = setup("doc.yaml", &yaml(1));
    let w = options().watch(&path, parser(&path)).unwrap();

    std::fs::remove_file(&path).unwrap();
    wait_until("the deletion to be recorded", || w.last_error().is_some());
    assert_eq!(w.last_error().unwrap().kind(), ConfigErrorKind::Io);
    assert!(w.error_count() >= 1);
    assert_eq!(w.current().a, 1);
    assert!(w.reload().is_err(), "a manual reload fails the same way");
    assert_eq!(w.current().a, 1);

    replace(&path, &yaml(2));
    wait_until("the recreated file to apply", || w.current().a == 2);
    assert_eq!(w.last_error(), None);
}

#[tokio::test]
async fn subscribers_see_each_applied_value() {
    let (_dir, path) = setup("doc.json", &json(1));
    let w = options().watch(&path, parser(&path)).unwrap();
    let mut rx = w.subscribe();
    assert_eq!(rx.borrow().a, 1);

    replace(&path, &json(2));
    tokio::time::timeout(DEADLINE, rx.changed())
        .await
        .expect("notified in time")
        .expect("sender alive");
    assert_eq!(rx.borrow_and_update().a, 2);
    assert_eq!(w.generation(), 2);

    // An invalid version is not announced; the next valid one is.
    replace(&path, "{broken");
    replace(&path, &json(3));
    tokio::time::timeout(DEADLINE, async {
        loop {
            rx.changed().await.expect("sender alive");
            let doc = rx.borrow_and_update();
            assert!(doc.is_consistent());
            if doc.a == 3 {
                break;
            }
        }
    })
    .await
    .expect("the valid version is announced in time");
}

#[test]
fn manual_reload_reports_whether_the_value_changed() {
    let (_dir, path) = setup("doc.json", &json(1));
    // Not watched: only `reload()` re-reads.
    let w = Watched::load(&path, parser(&path)).unwrap();

    replace(&path, &json(2));
    assert_eq!(w.current().a, 1);
    assert_eq!(w.reload(), Ok(true));
    assert_eq!(w.current().a, 2);
    assert_eq!(w.generation(), 2);

    assert_eq!(w.reload(), Ok(false), "identical bytes are not a change");
    assert_eq!(w.generation(), 2);

    replace(&path, "[]");
    let err = w.reload().unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::Parse);
    assert_eq!(w.last_error(), Some(err));
    assert_eq!(w.current().a, 2);
    assert_eq!(w.reload_count(), 3);
}

#[test]
fn generation_lets_a_cache_detect_a_change_without_a_task() {
    let (_dir, path) = setup("doc.json", &json(1));
    let w = Watched::load(&path, parser(&path)).unwrap();
    let mut cached = (w.generation(), w.current().a * 10);

    let mut lookup = |w: &Watched<Doc>| {
        let generation = w.generation();
        if generation != cached.0 {
            cached = (generation, w.current().a * 10);
        }
        cached.1
    };
    assert_eq!(lookup(&w), 10);
    replace(&path, &json(4));
    w.reload().unwrap();
    assert_eq!(lookup(&w), 40);
}

#[test]
fn activity_in_the_directory_rereads_but_does_not_change_the_value() {
    let (dir, path) = setup("doc.json", &json(1));
    let w = options().watch(&path, parser(&path)).unwrap();

    std::fs::write(dir.path().join("unrelated.txt"), "hello").unwrap();
    wait_until("the watcher to re-read after the event", || {
        w.reload_count() >= 1
    });
    assert_eq!(w.generation(), 1, "identical bytes are not a new value");

    // Our own reads of the file must not wake the watcher again: with a 50 ms
    // debounce a feedback loop would re-read many times in half a second.
    std::thread::sleep(Duration::from_millis(300));
    let before = w.reload_count();
    std::thread::sleep(Duration::from_millis(500));
    let after = w.reload_count();
    assert!(
        after - before <= 1,
        "re-read {} times while idle",
        after - before
    );
}

#[cfg(unix)]
#[test]
fn poll_interval_catches_changes_the_directory_watch_cannot_see() {
    // The watched path is a symlink to a file in another directory, edited in
    // place there: no event reaches the watched directory.
    let watched_dir = tempfile::tempdir().unwrap();
    let (_target_dir, target) = setup("real.json", &json(1));
    let path = watched_dir.path().join("doc.json");
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let w = options()
        .poll_interval(Duration::from_millis(100))
        .watch(&path, parser(&path))
        .unwrap();
    replace(&target, &json(2));
    wait_until("polling to pick up the change", || w.current().a == 2);
}

#[test]
fn dropping_the_last_handle_stops_the_watcher_thread() {
    let (_dir, path) = setup("doc.json", &json(1));
    // The parser lives as long as the reload thread holds the shared state;
    // a weak reference to something it owns shows when that ends.
    let token = Arc::new(());
    let alive = Arc::downgrade(&token);
    let parse = parser(&path);
    let w = options()
        .watch(&path, move |bytes: &[u8]| {
            let _owned = &token;
            parse(bytes)
        })
        .unwrap();
    let rx = w.subscribe();

    // A clone keeps the watcher running.
    let clone = w.clone();
    drop(w);
    replace(&path, &json(2));
    wait_until("the clone to still see updates", || clone.current().a == 2);
    assert!(alive.upgrade().is_some());

    drop(clone);
    wait_until("the reload thread to stop", || alive.upgrade().is_none());
    assert!(
        rx.has_changed().is_err(),
        "subscribers learn that no more values will come"
    );
    assert_eq!(rx.borrow().a, 2, "the last value stays readable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_mixed_value_during_rapid_reloads() {
    const VERSIONS: u64 = 1_000;
    let (_dir, path) = setup("doc.json", &json(0));
    // No validation here: whatever the readers see is what was stored.
    let p = path.clone();
    let w = options()
        .watch(&path, move |bytes: &[u8]| {
            parse_yaml_or_json::<Doc>(&p, bytes)
        })
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));

    let mut readers = Vec::new();
    for _ in 0..4 {
        let (w, done) = (w.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let (mut reads, mut last) = (0u64, 0u64);
            while !done.load(Ordering::Acquire) {
                {
                    let doc = w.borrow();
                    assert!(doc.is_consistent(), "mixed value: {:?}", **doc);
                    assert!(doc.a >= last, "went back from {last} to {}", doc.a);
                    last = doc.a;
                }
                let doc = w.current();
                assert!(doc.is_consistent(), "mixed value: {doc:?}");
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        }));
    }

    let mut rx = w.subscribe();
    let notified = Arc::new(AtomicU64::new(0));
    let subscriber = {
        let notified = notified.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let doc = rx.borrow_and_update().clone();
                assert!(doc.is_consistent(), "mixed value: {doc:?}");
                notified.fetch_max(doc.a, Ordering::Relaxed);
                if doc.a == VERSIONS {
                    break;
                }
            }
        })
    };

    // The watcher thread reloads concurrently with these manual reloads.
    let writer = {
        let (w, path) = (w.clone(), path.clone());
        tokio::task::spawn_blocking(move || {
            for n in 1..=VERSIONS {
                replace(&path, &json(n));
                w.reload().expect("every version is valid");
                assert!(w.current().a >= n);
            }
        })
    };
    writer.await.unwrap();
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.await.unwrap() > 0, "every reader ran");
    }
    tokio::time::timeout(DEADLINE, subscriber)
        .await
        .expect("subscriber saw the last version")
        .unwrap();

    assert_eq!(w.current().a, VERSIONS);
    assert_eq!(notified.load(Ordering::Relaxed), VERSIONS);
    assert_eq!(w.error_count(), 0, "{:?}", w.last_error());
    assert!(w.generation() > 1);
}
