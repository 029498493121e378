//! The gRPC serving status of each service, and the change signal that
//! `Watch` streams follow.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::watch;

use super::check::lock;
use super::registry::HealthRegistry;

const READY_UNKNOWN: u8 = 0;
const READY_YES: u8 = 1;
const READY_NO: u8 = 2;

/// Serving statuses by service name (`""` is the whole server), the last
/// full readiness result, and the channel that wakes watchers.
pub(crate) struct Serving {
    services: Mutex<BTreeMap<String, bool>>,
    // Outcome of the last full readiness evaluation, for gRPC `""` watchers.
    last_ready: AtomicU8,
    // Bumped on every change a gRPC watcher may need to see.
    changes: watch::Sender<()>,
}

impl Serving {
    pub(crate) fn new() -> Self {
        let mut services = BTreeMap::new();
        services.insert(String::new(), true);
        Serving {
            services: Mutex::new(services),
            last_ready: AtomicU8::new(READY_UNKNOWN),
            changes: watch::Sender::new(()),
        }
    }

    /// Wakes every watcher.
    pub(crate) fn notify(&self) {
        self.changes.send_replace(());
    }

    fn get(&self, service: &str) -> Option<bool> {
        lock(&self.services).get(service).copied()
    }
}

impl HealthRegistry {
    pub(crate) fn record_readiness(&self, ready: bool) {
        let value = if ready { READY_YES } else { READY_NO };
        let serving = self.serving_state();
        if serving.last_ready.swap(value, Ordering::AcqRel) != value {
            serving.notify();
        }
    }

    /// Sets the gRPC serving status of `service` (its fully qualified name,
    /// e.g. `"finmesh.test.v1.Echo"`), making it known to `Check`, `Watch`
    /// and `List`.
    ///
    /// `""` is the whole server: it follows overall readiness;
    /// `set_serving("", false)` forces it to `NOT_SERVING` and
    /// `set_serving("", true)` returns it to following readiness. While
    /// draining every service is `NOT_SERVING` whatever is set here.
    pub fn set_serving(&self, service: &str, serving: bool) {
        let state = self.serving_state();
        let changed = lock(&state.services).insert(service.to_owned(), serving) != Some(serving);
        if changed {
            state.notify();
        }
    }

    /// Forgets `service`: `Check` answers `NOT_FOUND` and watchers see
    /// `SERVICE_UNKNOWN`. The whole server (`""`) cannot be removed.
    pub fn remove_service(&self, service: &str) {
        if service.is_empty() {
            return;
        }
        let state = self.serving_state();
        if lock(&state.services).remove(service).is_some() {
            state.notify();
        }
    }

    /// The names of every known gRPC service, `""` included, sorted.
    pub fn services(&self) -> Vec<String> {
        lock(&self.serving_state().services)
            .keys()
            .cloned()
            .collect()
    }

    /// The serving status of a named service as set (drain applied);
    /// `None` when unknown. For `""` this does not run the readiness checks
    /// and uses the last full readiness result (`true` before any).
    pub fn serving_now(&self, service: &str) -> Option<bool> {
        let state = self.serving_state();
        let set = state.get(service)?;
        if self.is_shutting_down() {
            return Some(false);
        }
        if service.is_empty() {
            let last = state.last_ready.load(Ordering::Acquire);
            return Some(set && last != READY_NO);
        }
        Some(set)
    }

    /// The serving status of `service`; for `""` the readiness checks run
    /// (cached as configured). `None` when unknown.
    pub async fn serving(&self, service: &str) -> Option<bool> {
        let set = self.serving_state().get(service)?;
        if self.is_shutting_down() {
            return Some(false);
        }
        if service.is_empty() {
            // Evaluate even when forced off, so the recorded readiness stays fresh.
            let ready = self.readiness().await.is_healthy();
            return Some(set && ready && !self.is_shutting_down());
        }
        Some(set)
    }

    /// A receiver that wakes on every change a gRPC watcher may need to see
    /// (a serving status set, a readiness flip, the start of draining).
    #[cfg(feature = "grpc")]
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.serving_state().changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serving_statuses_follow_set_and_drain() {
        let r = HealthRegistry::new();
        assert_eq!(r.serving_now("svc"), None);
        r.set_serving("svc", true);
        assert_eq!(r.serving_now("svc"), Some(true));
        assert_eq!(r.serving("").await, Some(true));
        r.set_serving("", false);
        assert_eq!(r.serving("").await, Some(false));
        r.set_serving("", true);
        r.begin_shutdown();
        assert_eq!(r.serving_now("svc"), Some(false));
        assert_eq!(r.serving("").await, Some(false));
        r.remove_service("svc");
        assert_eq!(r.services(), [""]);
    }
}
