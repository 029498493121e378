//! Loading and hot-reloading policy files.
//!
//! [`Watched<T>`] reads a file, turns its bytes into a `T` with a
//! parse-and-validate function you supply, and keeps the result behind an
//! atomic pointer swap. Readers get the current value without taking a lock;
//! when the file changes, the new version is parsed and validated completely
//! on a background thread and only then swapped in. The tenant registry, the
//! RBAC policy and the JWT key sets are all built on it.
//!
//! ```
//! use finmesh::config::{Watched, parse_yaml_or_json};
//! use std::path::PathBuf;
//!
//! #[derive(serde::Deserialize)]
//! struct Limits {
//!     max_open_orders: u32,
//! }
//!
//! // Parsing and validation are one step: whatever passes is served.
//! fn parse(path: PathBuf) -> impl Fn(&[u8]) -> Result<Limits, String> {
//!     move |bytes| {
//!         let limits: Limits = parse_yaml_or_json(&path, bytes)?;
//!         if limits.max_open_orders == 0 {
//!             return Err("max_open_orders must be at least 1".into());
//!         }
//!         Ok(limits)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?; // under std::env::temp_dir()
//! let path = dir.path().join("limits.yaml");
//! std::fs::write(&path, "max_open_orders: 10\n")?;
//!
//! let limits = Watched::watch(&path, parse(path.clone()))?;
//! assert_eq!(limits.borrow().max_open_orders, 10);
//! assert_eq!(limits.generation(), 1);
//!
//! // An invalid version is refused; the last good one keeps being served.
//! std::fs::write(&path, "max_open_orders: 0\n")?;
//! assert!(limits.reload().is_err());
//! assert_eq!(limits.current().max_open_orders, 10);
//! assert!(limits.last_error().unwrap().to_string().contains("limits.yaml"));
//!
//! // A valid one is applied: by the watcher shortly after the write, or at
//! // once by an explicit reload.
//! std::fs::write(&path, "max_open_orders: 20\n")?;
//! let _ = limits.reload()?;
//! assert_eq!(limits.current().max_open_orders, 20);
//! assert!(limits.last_error().is_none());
//! # Ok(())
//! # }
//! ```
//!
//! # How changes are seen
//!
//! The file's *directory* is watched (with `notify`), not the file itself, so
//! that all the ways a file gets replaced are seen:
//!
//! - an in-place write;
//! - an editor's write to a temporary file, then a rename over the original;
//! - deletion and re-creation;
//! - a Kubernetes ConfigMap volume update, where `tenants.yaml` is a symlink
//!   to `..data/tenants.yaml`, `..data` a symlink to a timestamped directory,
//!   and the kubelet renames a new `..data_tmp` symlink over `..data`.
//!
//! Events arrive in bursts, so the file is re-read once they have been quiet
//! for a debounce window ([`WatchOptions::debounce`], 100 ms by default). The
//! path is re-opened each time, following symlinks; bytes identical to the
//! version already applied are skipped, so unrelated activity in the directory
//! costs a read and a hash, never a swap. [`WatchOptions::poll_interval`]
//! adds a periodic re-read for file systems without change notification, and
//! for a path that is a symlink to a file edited in place in another
//! directory (a change the directory watch cannot see).
//!
//! # When a new version is bad
//!
//! A version that cannot be read, is larger than [`WatchOptions::max_bytes`]
//! (16 MiB by default) or that the parse function refuses never replaces the
//! last good value. The failure is logged with `tracing::warn!`, counted
//! ([`Watched::error_count`]) and kept ([`Watched::last_error`]) until a
//! later reload succeeds. A deleted file is such a failure; once it is back,
//! it is loaded again. Only the *initial* load returns the error to the
//! caller, so a service does not start on a missing or invalid policy.
//!
//! # Noticing changes
//!
//! - [`Watched::borrow`] / [`Watched::current`]: always the latest value.
//! - [`Watched::generation`]: a counter to compare against, for caches
//!   derived from the value.
//! - [`Watched::subscribe`]: a `tokio::sync::watch` receiver woken on each
//!   applied value.
//!
//! # Lifetime
//!
//! The reload loop runs on its own thread, so no async runtime is needed to
//! create a [`Watched`]. Clones share everything; when the last one is
//! dropped, the watcher and the thread stop.

mod error;
mod options;
mod parse;
mod published;
mod read;
mod reload;
#[cfg(test)]
mod test_support;
mod watched;
mod watcher;

pub use error::{ConfigError, ConfigErrorKind};
pub use options::{DEFAULT_DEBOUNCE, DEFAULT_MAX_BYTES, WatchOptions};
pub use parse::parse_yaml_or_json;
#[cfg(feature = "rbac")]
pub(crate) use parse::tagged_at;
pub use watched::Watched;
