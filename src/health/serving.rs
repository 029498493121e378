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

/// The status of one known service: as set, and whether it also follows
/// overall readiness (the whole server, `""`, and every service added with
/// `add_grpc_service`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    set: bool,
    follows_readiness: bool,
}

/// Serving statuses by service name (`""` is the whole server), the last
/// full readiness result, and the channel that wakes watchers.
pub(crate) struct Serving {
    services: Mutex<BTreeMap<String, Entry>>,
    // Outcome of the last full readiness evaluation, for gRPC `""` watchers.
    last_ready: AtomicU8,
    // Bumped on every change a gRPC watcher may need to see.
    changes: watch::Sender<()>,
}

impl Serving {
    pub(crate) fn new() -> Self {
        let mut services = BTreeMap::new();
        services.insert(
            String::new(),
            Entry {
                set: true,
                follows_readiness: true,
            },
        );
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

    fn get(&self, service: &str) -> Option<Entry> {
        lock(&self.services).get(service).copied()
    }

    /// Sets `service` to `entry`, waking watchers on a change.
    fn put(&self, service: &str, entry: impl FnOnce(Option<Entry>) -> Entry) {
        let mut services = lock(&self.services);
        let old = services.get(service).copied();
        let new = entry(old);
        services.insert(service.to_owned(), new);
        drop(services);
        if old != Some(new) {
            self.notify();
        }
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
    /// `set_serving("", true)` returns it to following readiness. The same
    /// holds for a service added with `add_grpc_service` (feature `grpc`).
    /// While draining every service is `NOT_SERVING` whatever is set here.
    pub fn set_serving(&self, service: &str, serving: bool) {
        self.serving_state().put(service, |old| Entry {
            set: serving,
            follows_readiness: old.is_some_and(|e| e.follows_readiness),
        });
    }

    /// Adds the tonic service `S` under its fully qualified name
    /// ([`NamedService::NAME`](tonic::server::NamedService::NAME), e.g.
    /// `"finmesh.gateway.v1.Ledger"`), so `Check`, `Watch` and `List` name
    /// it: it is `SERVING` while the registry is ready (every readiness
    /// check passes, as for the whole server `""`) and `NOT_SERVING` once
    /// [`begin_shutdown`](Self::begin_shutdown) is called.
    /// [`set_serving(S::NAME, false)`](Self::set_serving) takes it out
    /// alone, `set_serving(S::NAME, true)` returns it to following
    /// readiness. Adding it again changes nothing.
    ///
    /// Call it once per service mounted on the server, next to
    /// `add_service` / `Routes::new`:
    ///
    /// ```
    /// use finmesh::health::{GrpcHealthService, HealthRegistry};
    /// use finmesh::health::grpc::pb::HealthCheckRequest;
    /// use finmesh::health::grpc::pb::health_check_response::ServingStatus;
    /// use tonic_health::pb::health_client::HealthClient;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Stands in for a tonic-generated `LedgerServer<MyLedger>`, which
    /// // implements `NamedService` with its proto's full name.
    /// struct LedgerServer;
    /// impl tonic::server::NamedService for LedgerServer {
    ///     const NAME: &'static str = "finmesh.gateway.v1.Ledger";
    /// }
    ///
    /// let registry = HealthRegistry::new();
    /// registry.add_grpc_service::<LedgerServer>();
    /// assert_eq!(registry.services(), ["", "finmesh.gateway.v1.Ledger"]);
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    /// let server = tokio::spawn(
    ///     tonic::transport::Server::builder()
    ///         .add_service(GrpcHealthService::new(registry.clone()))
    ///         .serve_with_incoming(incoming),
    /// );
    /// let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
    ///     .unwrap()
    ///     .connect()
    ///     .await
    ///     .unwrap();
    /// let mut client = HealthClient::new(channel);
    /// let check = HealthCheckRequest { service: "finmesh.gateway.v1.Ledger".into() };
    /// let res = client.check(check.clone()).await.unwrap().into_inner();
    /// assert_eq!(res.status(), ServingStatus::Serving);
    ///
    /// registry.begin_shutdown();
    /// let res = client.check(check).await.unwrap().into_inner();
    /// assert_eq!(res.status(), ServingStatus::NotServing);
    /// server.abort();
    /// # }
    /// ```
    #[cfg(feature = "grpc")]
    pub fn add_grpc_service<S: tonic::server::NamedService>(&self) {
        self.serving_state().put(S::NAME, |old| Entry {
            set: old.is_none_or(|e| e.set),
            follows_readiness: true,
        });
    }

    /// Whether `service` follows overall readiness (`""`, and services
    /// added with `add_grpc_service`).
    #[cfg(feature = "grpc")]
    pub(crate) fn follows_readiness(&self, service: &str) -> bool {
        self.serving_state()
            .get(service)
            .is_some_and(|e| e.follows_readiness)
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
        let entry = state.get(service)?;
        if self.is_shutting_down() {
            return Some(false);
        }
        if entry.follows_readiness {
            let last = state.last_ready.load(Ordering::Acquire);
            return Some(entry.set && last != READY_NO);
        }
        Some(entry.set)
    }

    /// The serving status of `service`; for `""` (and a service that
    /// follows readiness) the readiness checks run (cached as configured).
    /// `None` when unknown.
    pub async fn serving(&self, service: &str) -> Option<bool> {
        let entry = self.serving_state().get(service)?;
        if self.is_shutting_down() {
            return Some(false);
        }
        if entry.follows_readiness {
            // Evaluate even when forced off, so the recorded readiness stays fresh.
            let ready = self.readiness().await.is_healthy();
            return Some(entry.set && ready && !self.is_shutting_down());
        }
        Some(entry.set)
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

    #[cfg(feature = "grpc")]
    #[tokio::test]
    async fn added_services_follow_readiness_and_keep_following_after_set() {
        struct Svc;
        impl tonic::server::NamedService for Svc {
            const NAME: &'static str = "t.v1.Svc";
        }
        let r = HealthRegistry::new();
        r.set_serving("fixed", true);
        r.add_grpc_service::<Svc>();
        assert!(r.follows_readiness("t.v1.Svc") && !r.follows_readiness("fixed"));
        assert_eq!(r.serving("t.v1.Svc").await, Some(true));
        r.record_readiness(false);
        assert_eq!(r.serving_now("t.v1.Svc"), Some(false));
        assert_eq!(r.serving_now("fixed"), Some(true));
        r.record_readiness(true);
        // Forced off, then back: it still follows readiness.
        r.set_serving("t.v1.Svc", false);
        assert_eq!(r.serving_now("t.v1.Svc"), Some(false));
        r.set_serving("t.v1.Svc", true);
        assert!(r.follows_readiness("t.v1.Svc"));
        // Adding it again keeps a forced-off status.
        r.set_serving("t.v1.Svc", false);
        r.add_grpc_service::<Svc>();
        assert_eq!(r.serving_now("t.v1.Svc"), Some(false));
    }
}
