//! [`HealthRegistry`]: the handle that holds the checks, the drain flag and
//! the gRPC serving statuses, and check registration.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;

use super::check::{Check, CheckFn, lock};
use super::error::RegisterError;
use super::report::{Builtin, ProbeKind};
use super::serving::Serving;

/// Longest accepted check name, in bytes.
pub const MAX_CHECK_NAME_LEN: usize = 128;

/// Whether `name` may name a check (and so a `/livez/<name>` path segment).
pub(crate) fn valid_check_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHECK_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A readiness warning: `Some(reason)` while degraded.
pub(crate) type WarningFn = dyn Fn() -> Option<String> + Send + Sync;

/// A registered readiness warning and whether it was raised when last
/// evaluated (logged on transitions only: every gRPC Watch stream and
/// probe re-evaluates readiness).
#[derive(Clone)]
struct Warning {
    name: Arc<str>,
    check: Arc<WarningFn>,
    raised: Arc<AtomicBool>,
}

struct Inner {
    cache_for: Duration,
    warnings: Mutex<Vec<Warning>>,
    liveness: ArcSwap<Vec<Arc<Check>>>,
    readiness: ArcSwap<Vec<Arc<Check>>>,
    // Serialises registrations (readers never take it).
    register: Mutex<()>,
    shutting_down: AtomicBool,
    serving: Serving,
}

/// The health of one process: named liveness and readiness checks, the
/// shutdown (drain) state, and the serving status of each gRPC service.
///
/// A cheap, cloneable handle (one `Arc`): register checks at start-up, hand
/// clones to [`HealthLayer`](super::HealthLayer) (which answers both the
/// HTTP probes and, with feature `grpc`, `grpc.health.v1`) and to the
/// shutdown future.
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
        Self {
            inner: Arc::new(Inner {
                cache_for,
                warnings: Mutex::default(),
                liveness: ArcSwap::from_pointee(Vec::new()),
                readiness: ArcSwap::from_pointee(Vec::new()),
                register: Mutex::new(()),
                shutting_down: AtomicBool::new(false),
                serving: Serving::new(),
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

    /// Registers a readiness *warning*: a condition that degrades the
    /// service without making it unfit for traffic (a rate limiter's Redis
    /// is down and its rules follow their fail mode). `warning` returns
    /// `Some(reason)` while degraded; the probe then still passes, and
    /// `/readyz?verbose` lists `warn: <name> degraded` (the reason goes to
    /// the log only, as for failed checks).
    pub fn add_readiness_warning<F>(&self, name: &str, warning: F) -> Result<(), RegisterError>
    where
        F: Fn() -> Option<String> + Send + Sync + 'static,
    {
        if !valid_check_name(name) {
            return Err(RegisterError::InvalidName(name.to_owned()));
        }
        let mut warnings = lock(&self.inner.warnings);
        if warnings.iter().any(|w| &*w.name == name) {
            return Err(RegisterError::Duplicate(name.to_owned()));
        }
        warnings.push(Warning {
            name: name.into(),
            check: Arc::new(warning),
            raised: Arc::default(),
        });
        Ok(())
    }

    /// The names of the readiness warnings raised now; logs a warning
    /// when it is raised (with its reason) and when it clears, not on
    /// every evaluation.
    pub(crate) fn raised_warnings(&self) -> Vec<Arc<str>> {
        let warnings = lock(&self.inner.warnings).clone();
        warnings
            .into_iter()
            .filter_map(|w| {
                let reason = (w.check)();
                let was = w.raised.swap(reason.is_some(), Ordering::Relaxed);
                match (&reason, was) {
                    (Some(reason), false) => {
                        tracing::warn!(warning = &*w.name, %reason, "readiness warning raised");
                    }
                    (None, true) => {
                        tracing::info!(warning = &*w.name, "readiness warning cleared");
                    }
                    _ => {}
                }
                reason.map(|_| w.name)
            })
            .collect()
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
        // Reserved in both probes, so `/livez/shutdown` never names a user check.
        if Builtin::ALL.iter().any(|b| b.name() == name) {
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
        next.push(Arc::new(Check::new(name, kind, timeout, run)));
        list.store(Arc::new(next));
        Ok(())
    }

    pub(crate) fn checks(&self, kind: ProbeKind) -> &ArcSwap<Vec<Arc<Check>>> {
        match kind {
            ProbeKind::Liveness => &self.inner.liveness,
            ProbeKind::Readiness => &self.inner.readiness,
        }
    }

    pub(crate) fn serving_state(&self) -> &Serving {
        &self.inner.serving
    }

    pub(crate) fn shutting_down_flag(&self) -> &AtomicBool {
        &self.inner.shutting_down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_raised_warning_is_listed_but_does_not_fail_readiness() {
        let r = HealthRegistry::new();
        let raised = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&raised);
        r.add_readiness_warning("redis", move || {
            flag.load(std::sync::atomic::Ordering::Relaxed)
                .then(|| "connection refused".to_owned())
        })
        .unwrap();
        assert!(matches!(
            r.add_readiness_warning("redis", || None),
            Err(RegisterError::Duplicate(_))
        ));
        assert!(r.readiness().await.warnings.is_empty());
        raised.store(true, std::sync::atomic::Ordering::Relaxed);
        let report = r.readiness().await;
        assert!(report.is_healthy());
        assert_eq!(report.warnings, [Arc::from("redis")]);
        let (status, body) = crate::health::probe::render_report(&report, "readyz", true);
        assert_eq!(status, 200);
        assert!(
            body.contains("warn: redis degraded: reason withheld\n"),
            "{body}"
        );
        assert!(!body.contains("refused"), "reasons stay in the log");
        assert!(r.liveness().await.warnings.is_empty());
    }

    /// Counts the WARN events it sees.
    struct CountWarnings(Arc<std::sync::atomic::AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_readiness_warning_is_logged_when_raised_not_on_every_evaluation() {
        use tracing_subscriber::layer::SubscriberExt;
        let warns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(CountWarnings(Arc::clone(&warns)));
        let _guard = tracing::subscriber::set_default(subscriber);
        let count = || warns.load(std::sync::atomic::Ordering::Relaxed);

        let r = HealthRegistry::new();
        let raised = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&raised);
        r.add_readiness_warning("redis", move || {
            flag.load(std::sync::atomic::Ordering::Relaxed)
                .then(|| "connection refused".to_owned())
        })
        .unwrap();
        // Many Watch streams re-evaluating readiness while Redis is down.
        for _ in 0..5 {
            assert_eq!(r.readiness().await.warnings, [Arc::from("redis")]);
        }
        assert_eq!(count(), 1, "one WARN when raised");
        raised.store(false, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..3 {
            assert!(r.readiness().await.warnings.is_empty());
        }
        raised.store(true, std::sync::atomic::Ordering::Relaxed);
        r.readiness().await;
        r.readiness().await;
        assert_eq!(count(), 2, "again once when raised again");
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
}
