//! [`HealthRegistry`]: named checks, single-flight runs with a result cache,
//! the shutdown flag and the per-service gRPC serving statuses.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, FutureExt, Shared, join_all};
use tokio::sync::watch;
use tokio::time::Instant;

/// Name of the built-in check present in both liveness and readiness; it
/// always passes (the process answers, so it is alive).
pub const PING_CHECK: &str = "ping";

/// Name of the built-in readiness check that fails from
/// [`HealthRegistry::begin_shutdown`] on.
pub const SHUTDOWN_CHECK: &str = "shutdown";

/// Longest accepted check name, in bytes.
pub const MAX_CHECK_NAME_LEN: usize = 128;

/// Which probe a check belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Is the process alive? A failure makes Kubernetes restart the pod, so
    /// liveness checks must only cover what a restart can fix.
    Liveness,
    /// Should the process receive traffic? A failure takes the pod out of
    /// the load balancer; it includes the built-in `shutdown` check.
    Readiness,
}

impl ProbeKind {
    fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
}

/// Why a check could not be registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The name is empty, longer than [`MAX_CHECK_NAME_LEN`] or holds a
    /// character outside `[A-Za-z0-9._-]` (names become URL path segments).
    InvalidName(String),
    /// `ping` and `shutdown` are built in.
    Reserved(String),
    /// A check of that name is already registered for this probe.
    Duplicate(String),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::InvalidName(n) => write!(
                f,
                "invalid health check name {n:?}: use 1 to {MAX_CHECK_NAME_LEN} characters of [A-Za-z0-9._-]"
            ),
            RegisterError::Reserved(n) => write!(f, "health check name {n:?} is built in"),
            RegisterError::Duplicate(n) => write!(f, "health check {n:?} is already registered"),
        }
    }
}

impl std::error::Error for RegisterError {}

/// Whether `name` may name a check (and so a `/livez/<name>` path segment).
pub(crate) fn valid_check_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHECK_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What one check reported in one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// The check passed.
    Passed,
    /// The check failed, timed out or panicked. The reason is for logs and
    /// for code holding the registry, never for the probe response.
    Failed(Arc<str>),
    /// The probe asked to skip the check (`?exclude=`).
    Excluded,
}

/// One line of a [`HealthReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The check's name.
    pub name: Arc<str>,
    /// What it reported.
    pub status: CheckStatus,
}

/// The result of one liveness or readiness probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// Every check in order: `ping`, the registered checks in registration
    /// order, then (readiness) `shutdown`.
    pub checks: Vec<CheckReport>,
    /// Excluded names that matched no check, sorted and deduplicated.
    pub unknown_excludes: Vec<String>,
}

impl HealthReport {
    /// True when no check failed.
    pub fn is_healthy(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| matches!(c.status, CheckStatus::Failed(_)))
    }
}

type Outcome = Result<(), Arc<str>>;
/// A run's outcome and when it finished (the cache window starts then).
type Finished = (Instant, Outcome);
type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

enum Slot {
    Idle,
    Running(Shared<BoxFuture<'static, Finished>>),
    Done { at: Instant, outcome: Outcome },
}

struct Check {
    name: Arc<str>,
    kind: ProbeKind,
    timeout: Duration,
    run: Arc<CheckFn>,
    // A std mutex is fine here: it is held only to read or swap the slot,
    // never across an await.
    slot: Mutex<Slot>,
}

impl Check {
    /// The check's outcome: the cached one while it is fresh, else the run
    /// in flight (shared by every concurrent caller), else a new run.
    async fn outcome(self: Arc<Self>, cache_for: Duration) -> Outcome {
        let asked = Instant::now();
        loop {
            let shared = {
                let mut slot = lock(&self.slot);
                match &*slot {
                    Slot::Done { at, outcome } if at.elapsed() < cache_for => {
                        return outcome.clone();
                    }
                    Slot::Running(run) => run.clone(),
                    Slot::Idle | Slot::Done { .. } => {
                        let run = self.start().shared();
                        *slot = Slot::Running(run.clone());
                        run
                    }
                }
            };
            let (at, outcome) = shared.clone().await;
            {
                let mut slot = lock(&self.slot);
                if matches!(&*slot, Slot::Running(run) if run.ptr_eq(&shared)) {
                    *slot = Slot::Done {
                        at,
                        outcome: outcome.clone(),
                    };
                }
            }
            // A run every earlier caller abandoned finishes on its own and
            // waits in the slot. If it finished before this probe asked and
            // is older than the cache allows, it is not this probe's
            // answer: go round once more, and a fresh run starts.
            if at < asked && at.elapsed() >= cache_for {
                continue;
            }
            return outcome;
        }
    }

    /// One run of the check, bounded by its timeout. A panic or a timeout
    /// is a failure like any other; the reason is logged once per run (not
    /// once per probe sharing it).
    ///
    /// Inside a tokio runtime the run is spawned: when every probe waiting
    /// on it gives up (a kubelet's own probe timeout closes the
    /// connection), the run still finishes on time. Left unpolled in the
    /// slot, it would be resumed by the next probe with its deadline long
    /// past and report a healthy dependency as timed out.
    fn start(&self) -> BoxFuture<'static, Finished> {
        use tracing::Instrument as _;
        let run = self
            .run_bounded()
            .map(|outcome| (Instant::now(), outcome))
            .in_current_span()
            .boxed();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let task = runtime.spawn(run);
                async move {
                    // The run catches its own panics; a join error means
                    // the runtime is shutting down.
                    task.await.unwrap_or_else(|_| {
                        (
                            Instant::now(),
                            Err("check cancelled: runtime shutting down".into()),
                        )
                    })
                }
                .boxed()
            }
            Err(_) => run,
        }
    }

    fn run_bounded(&self) -> BoxFuture<'static, Outcome> {
        let run = Arc::clone(&self.run);
        let name = Arc::clone(&self.name);
        let kind = self.kind;
        let timeout = self.timeout;
        async move {
            let guarded = AssertUnwindSafe(async move { run().await }).catch_unwind();
            let outcome: Outcome = match tokio::time::timeout(timeout, guarded).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(reason))) => Err(reason.into()),
                Ok(Err(_panic)) => Err("check panicked".into()),
                Err(_elapsed) => Err(format!("timed out after {timeout:?}").into()),
            };
            if let Err(reason) = &outcome {
                tracing::warn!(
                    probe = kind.as_str(),
                    check = &*name,
                    reason = &**reason,
                    "health check failed"
                );
            }
            outcome
        }
        .boxed()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the health endpoints down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const READY_UNKNOWN: u8 = 0;
const READY_YES: u8 = 1;
const READY_NO: u8 = 2;

struct Inner {
    cache_for: Duration,
    liveness: ArcSwap<Vec<Arc<Check>>>,
    readiness: ArcSwap<Vec<Arc<Check>>>,
    // Serialises registrations (readers never take it).
    register: Mutex<()>,
    shutting_down: AtomicBool,
    // Outcome of the last full readiness evaluation, for gRPC `""` watchers.
    last_ready: AtomicU8,
    // gRPC serving statuses by service name; `""` is the whole server.
    services: Mutex<BTreeMap<String, bool>>,
    // Bumped on every change a gRPC watcher may need to see.
    changes: watch::Sender<()>,
}

/// The health of one process: named liveness and readiness checks, the
/// shutdown (drain) state, and the serving status of each gRPC service.
///
/// A cheap, cloneable handle (one `Arc`): register checks at start-up, hand
/// clones to [`HealthLayer`](super::HealthLayer), the gRPC
/// `HealthService` (feature `grpc`) and the shutdown future.
///
/// # Checks
///
/// A check is an async closure returning `Result<(), String>` with its own
/// timeout. A probe runs all its checks concurrently, so it answers within
/// the longest timeout even when a dependency hangs. Concurrent probes share
/// one run of each check (single flight), and with
/// [`with_cache_interval`](Self::with_cache_interval) a finished result is
/// reused for that long, so several kubelets probing every few seconds do
/// not hammer a database.
///
/// Two checks are built in: `ping` (liveness and readiness, always passes)
/// and `shutdown` (readiness; fails from [`begin_shutdown`](Self::begin_shutdown) on).
#[derive(Clone)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |checks: &ArcSwap<Vec<Arc<Check>>>| {
            checks
                .load()
                .iter()
                .map(|c| c.name.to_string())
                .collect::<Vec<_>>()
        };
        f.debug_struct("HealthRegistry")
            .field("cache_for", &self.inner.cache_for)
            .field("liveness", &names(&self.inner.liveness))
            .field("readiness", &names(&self.inner.readiness))
            .field("shutting_down", &self.is_shutting_down())
            .finish()
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthRegistry {
    /// A registry whose check results are never reused once a run has
    /// finished (concurrent probes still share one run).
    pub fn new() -> Self {
        Self::with_cache_interval(Duration::ZERO)
    }

    /// A registry that reuses each check's result for `cache_for` after the
    /// run that produced it finished.
    pub fn with_cache_interval(cache_for: Duration) -> Self {
        let mut services = BTreeMap::new();
        services.insert(String::new(), true);
        Self {
            inner: Arc::new(Inner {
                cache_for,
                liveness: ArcSwap::from_pointee(Vec::new()),
                readiness: ArcSwap::from_pointee(Vec::new()),
                register: Mutex::new(()),
                shutting_down: AtomicBool::new(false),
                last_ready: AtomicU8::new(READY_UNKNOWN),
                services: Mutex::new(services),
                changes: watch::Sender::new(()),
            }),
        }
    }

    /// How long a finished check result is reused.
    pub fn cache_interval(&self) -> Duration {
        self.inner.cache_for
    }

    /// Registers a liveness check: it fails the liveness probe (and so
    /// restarts the pod) when it fails or exceeds `timeout`.
    pub fn add_liveness_check<F, Fut>(
        &self,
        name: &str,
        timeout: Duration,
        check: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add(ProbeKind::Liveness, name, timeout, check)
    }

    /// Registers a readiness check: it takes the pod out of the load
    /// balancer while it fails or exceeds `timeout`.
    pub fn add_readiness_check<F, Fut>(
        &self,
        name: &str,
        timeout: Duration,
        check: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.add(ProbeKind::Readiness, name, timeout, check)
    }

    fn add<F, Fut>(
        &self,
        kind: ProbeKind,
        name: &str,
        timeout: Duration,
        check: F,
    ) -> Result<(), RegisterError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        if !valid_check_name(name) {
            return Err(RegisterError::InvalidName(name.to_owned()));
        }
        if name == PING_CHECK || name == SHUTDOWN_CHECK {
            return Err(RegisterError::Reserved(name.to_owned()));
        }
        let _writer = lock(&self.inner.register);
        let list = self.checks(kind);
        let current = list.load_full();
        if current.iter().any(|c| &*c.name == name) {
            return Err(RegisterError::Duplicate(name.to_owned()));
        }
        let run: Arc<CheckFn> = Arc::new(move || check().boxed());
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(Arc::new(Check {
            name: name.into(),
            kind,
            timeout,
            run,
            slot: Mutex::new(Slot::Idle),
        }));
        list.store(Arc::new(next));
        Ok(())
    }

    fn checks(&self, kind: ProbeKind) -> &ArcSwap<Vec<Arc<Check>>> {
        match kind {
            ProbeKind::Liveness => &self.inner.liveness,
            ProbeKind::Readiness => &self.inner.readiness,
        }
    }

    /// Whether `name` is a check of this probe (built-ins included).
    pub fn has_check(&self, kind: ProbeKind, name: &str) -> bool {
        name == PING_CHECK
            || (kind == ProbeKind::Readiness && name == SHUTDOWN_CHECK)
            || self.checks(kind).load().iter().any(|c| &*c.name == name)
    }

    /// Runs every liveness check (concurrently, each within its timeout).
    pub async fn liveness(&self) -> HealthReport {
        self.evaluate(ProbeKind::Liveness, &[]).await
    }

    /// Runs every readiness check (concurrently, each within its timeout).
    pub async fn readiness(&self) -> HealthReport {
        self.evaluate(ProbeKind::Readiness, &[]).await
    }

    /// Runs the checks of `kind` except those named in `exclude`.
    pub async fn evaluate(&self, kind: ProbeKind, exclude: &[&str]) -> HealthReport {
        let checks = self.checks(kind).load_full();
        let cache_for = self.inner.cache_for;
        let excluded = |name: &str| exclude.contains(&name);

        let runs = checks
            .iter()
            .filter(|c| !excluded(&c.name))
            .map(|c| Arc::clone(c).outcome(cache_for));
        let mut outcomes = join_all(runs).await.into_iter();

        let mut report = HealthReport {
            checks: Vec::with_capacity(checks.len() + 2),
            unknown_excludes: Vec::new(),
        };
        let builtin = |name: &'static str, passed: bool| CheckReport {
            name: name.into(),
            status: if excluded(name) {
                CheckStatus::Excluded
            } else if passed {
                CheckStatus::Passed
            } else {
                CheckStatus::Failed("process is shutting down".into())
            },
        };
        report.checks.push(builtin(PING_CHECK, true));
        for check in checks.iter() {
            let status = if excluded(&check.name) {
                CheckStatus::Excluded
            } else {
                match outcomes.next() {
                    Some(Ok(())) => CheckStatus::Passed,
                    Some(Err(reason)) => CheckStatus::Failed(reason),
                    // join_all yields one outcome per check it was given.
                    None => CheckStatus::Failed("check did not run".into()),
                }
            };
            report.checks.push(CheckReport {
                name: Arc::clone(&check.name),
                status,
            });
        }
        if kind == ProbeKind::Readiness {
            report
                .checks
                .push(builtin(SHUTDOWN_CHECK, !self.is_shutting_down()));
        }

        let mut unknown: Vec<String> = exclude
            .iter()
            .filter(|name| !report.checks.iter().any(|c| &*c.name == **name))
            .map(|name| (*name).to_owned())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        report.unknown_excludes = unknown;

        if kind == ProbeKind::Readiness && exclude.is_empty() {
            self.record_readiness(report.is_healthy());
        }
        report
    }

    /// Runs one check of `kind` by name; `None` when there is no such check.
    pub async fn check(&self, kind: ProbeKind, name: &str) -> Option<CheckStatus> {
        if name == PING_CHECK {
            return Some(CheckStatus::Passed);
        }
        if kind == ProbeKind::Readiness && name == SHUTDOWN_CHECK {
            return Some(if self.is_shutting_down() {
                CheckStatus::Failed("process is shutting down".into())
            } else {
                CheckStatus::Passed
            });
        }
        let check = self
            .checks(kind)
            .load()
            .iter()
            .find(|c| &*c.name == name)
            .cloned()?;
        Some(match check.outcome(self.inner.cache_for).await {
            Ok(()) => CheckStatus::Passed,
            Err(reason) => CheckStatus::Failed(reason),
        })
    }

    fn record_readiness(&self, ready: bool) {
        let value = if ready { READY_YES } else { READY_NO };
        if self.inner.last_ready.swap(value, Ordering::AcqRel) != value {
            self.notify();
        }
    }

    /// Starts draining: from this instant the readiness probe fails
    /// (`shutdown`), liveness keeps passing, and every gRPC service reports
    /// `NOT_SERVING` (watchers are told at once). There is no way back.
    pub fn begin_shutdown(&self) {
        if !self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            tracing::info!("shutdown begun: readiness now fails, gRPC services NOT_SERVING");
            self.notify();
        }
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
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
        let changed =
            lock(&self.inner.services).insert(service.to_owned(), serving) != Some(serving);
        if changed {
            self.notify();
        }
    }

    /// Forgets `service`: `Check` answers `NOT_FOUND` and watchers see
    /// `SERVICE_UNKNOWN`. The whole server (`""`) cannot be removed.
    pub fn remove_service(&self, service: &str) {
        if service.is_empty() {
            return;
        }
        if lock(&self.inner.services).remove(service).is_some() {
            self.notify();
        }
    }

    /// The names of every known gRPC service, `""` included, sorted.
    pub fn services(&self) -> Vec<String> {
        lock(&self.inner.services).keys().cloned().collect()
    }

    /// The serving status of a named service as set (drain applied);
    /// `None` when unknown. For `""` this does not run the readiness checks
    /// and uses the last full readiness result (`true` before any).
    pub fn serving_now(&self, service: &str) -> Option<bool> {
        let set = lock(&self.inner.services).get(service).copied()?;
        if self.is_shutting_down() {
            return Some(false);
        }
        if service.is_empty() {
            let last = self.inner.last_ready.load(Ordering::Acquire);
            return Some(set && last != READY_NO);
        }
        Some(set)
    }

    /// The serving status of `service`; for `""` the readiness checks run
    /// (cached as configured). `None` when unknown.
    pub async fn serving(&self, service: &str) -> Option<bool> {
        let set = lock(&self.inner.services).get(service).copied()?;
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
        self.inner.changes.subscribe()
    }

    fn notify(&self) {
        self.inner.changes.send_replace(());
    }

    /// A future that waits for SIGTERM or Ctrl-C, then calls
    /// [`begin_shutdown`](Self::begin_shutdown), waits `drain_delay` so
    /// load balancers see the failing readiness and stop sending, and
    /// resolves. Hand it to `axum::serve(..).with_graceful_shutdown` or
    /// tonic's `serve_with_shutdown`.
    pub fn graceful_shutdown(
        &self,
        drain_delay: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.graceful_shutdown_on(shutdown_signal(), drain_delay)
    }

    /// Like [`graceful_shutdown`](Self::graceful_shutdown) with any trigger
    /// future instead of the process signals.
    pub fn graceful_shutdown_on<F>(
        &self,
        trigger: F,
        drain_delay: Duration,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future + Send + 'static,
    {
        let registry = self.clone();
        async move {
            trigger.await;
            registry.begin_shutdown();
            tokio::time::sleep(drain_delay).await;
            tracing::info!(?drain_delay, "drain delay over; shutting down");
        }
    }
}

/// Resolves on SIGTERM (Unix) or Ctrl-C.
///
/// Inside a Tokio runtime the Unix handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives
/// while the server is still starting is then caught, instead of taking
/// the default action and killing the process mid-start.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let install = || {
            (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            )
        };
        let installed = tokio::runtime::Handle::try_current().is_ok().then(install);
        async move {
            let (terminate, interrupt) = installed.unwrap_or_else(install);
            let recv = |signal: std::io::Result<Signal>, name: &'static str| async move {
                match signal {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = recv(interrupt, "Ctrl-C") => tracing::info!("Ctrl-C received"),
                () = recv(terminate, "SIGTERM") => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting(
        count: &Arc<AtomicUsize>,
        delay: Duration,
    ) -> impl Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
        let count = Arc::clone(count);
        move || {
            let count = Arc::clone(&count);
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok(())
            }
            .boxed()
        }
    }

    #[test]
    fn names_are_validated() {
        let r = HealthRegistry::new();
        let ok = || async { Ok(()) };
        let t = Duration::from_secs(1);
        for (name, want) in [
            ("db", Ok(())),
            ("db", Err(RegisterError::Duplicate("db".into()))),
            ("", Err(RegisterError::InvalidName(String::new()))),
            ("a/b", Err(RegisterError::InvalidName("a/b".into()))),
            ("a b", Err(RegisterError::InvalidName("a b".into()))),
            ("ping", Err(RegisterError::Reserved("ping".into()))),
            ("shutdown", Err(RegisterError::Reserved("shutdown".into()))),
            ("redis-primary_1.eu", Ok(())),
        ] {
            assert_eq!(r.add_readiness_check(name, t, ok), want, "{name:?}");
        }
        let long = "x".repeat(MAX_CHECK_NAME_LEN + 1);
        assert!(matches!(
            r.add_liveness_check(&long, t, ok),
            Err(RegisterError::InvalidName(_))
        ));
        // The same name may be used once per probe.
        assert_eq!(r.add_liveness_check("db", t, ok), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_abandoned_by_its_probe_still_finishes_on_time() {
        let r = HealthRegistry::new();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        // Ten short steps: a run left unpolled makes no progress.
        r.add_readiness_check("db", Duration::from_secs(1), move || {
            let count = Arc::clone(&counted);
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .unwrap();
        // The caller gives up after 100 ms (its connection closed).
        let gave_up = tokio::time::timeout(Duration::from_millis(100), r.readiness()).await;
        assert!(gave_up.is_err());
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The run went on without it; the next probe is not handed a run
        // whose deadline passed while nobody polled it.
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let report = r.readiness().await;
        assert!(report.is_healthy(), "{report:?}");
        // Without a cache interval that finished run is not reused: the
        // probe above started a fresh one.
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_evaluations_share_one_run() {
        let r = HealthRegistry::new();
        let count = Arc::new(AtomicUsize::new(0));
        r.add_readiness_check(
            "db",
            Duration::from_secs(5),
            counting(&count, Duration::from_millis(100)),
        )
        .unwrap();
        let reports = join_all((0..20).map(|_| r.readiness())).await;
        assert!(reports.iter().all(HealthReport::is_healthy));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // Without a cache interval the next probe runs the check again.
        r.readiness().await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn cached_result_is_reused_until_the_interval_passes() {
        let r = HealthRegistry::with_cache_interval(Duration::from_secs(2));
        let count = Arc::new(AtomicUsize::new(0));
        r.add_readiness_check(
            "db",
            Duration::from_secs(5),
            counting(&count, Duration::ZERO),
        )
        .unwrap();
        r.readiness().await;
        r.readiness().await;
        assert_eq!(count.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(3)).await;
        r.readiness().await;
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_check_fails_at_its_timeout() {
        let r = HealthRegistry::new();
        r.add_readiness_check("stuck", Duration::from_millis(50), || {
            std::future::pending()
        })
        .unwrap();
        let report = r.readiness().await;
        assert!(!report.is_healthy());
        assert_eq!(
            report.checks[1].status,
            CheckStatus::Failed("timed out after 50ms".into())
        );
    }

    #[tokio::test]
    async fn panicking_check_fails_and_the_next_run_works() {
        let r = HealthRegistry::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        r.add_liveness_check("flaky", Duration::from_secs(1), move || {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    panic!("boom");
                }
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(
            r.check(ProbeKind::Liveness, "flaky").await,
            Some(CheckStatus::Failed("check panicked".into()))
        );
        assert_eq!(
            r.check(ProbeKind::Liveness, "flaky").await,
            Some(CheckStatus::Passed)
        );
        assert_eq!(r.check(ProbeKind::Liveness, "nope").await, None);
    }

    #[tokio::test]
    async fn shutdown_fails_readiness_only() {
        let r = HealthRegistry::new();
        assert!(r.readiness().await.is_healthy());
        r.begin_shutdown();
        let ready = r.readiness().await;
        assert!(!ready.is_healthy());
        assert_eq!(ready.checks.last().unwrap().name.as_ref(), SHUTDOWN_CHECK);
        assert!(r.liveness().await.is_healthy());
    }

    #[tokio::test]
    async fn excludes_skip_checks_and_unknown_ones_are_reported() {
        let r = HealthRegistry::new();
        r.add_readiness_check("db", Duration::from_secs(1), || async {
            Err("down".to_owned())
        })
        .unwrap();
        let report = r
            .evaluate(ProbeKind::Readiness, &["db", "zz", "aa", "zz"])
            .await;
        assert!(report.is_healthy());
        assert_eq!(report.checks[1].status, CheckStatus::Excluded);
        assert_eq!(report.unknown_excludes, ["aa", "zz"]);
    }

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

    #[tokio::test(start_paused = true)]
    async fn graceful_shutdown_on_trigger_drains_then_resolves() {
        let r = HealthRegistry::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(r.graceful_shutdown_on(rx, Duration::from_secs(5)));
        tokio::task::yield_now().await;
        assert!(!r.is_shutting_down());
        tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(r.is_shutting_down());
        assert!(!done.is_finished());
        tokio::time::sleep(Duration::from_secs(5)).await;
        done.await.unwrap();
    }
}
