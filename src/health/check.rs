//! One registered check and its single-flight run with a result cache.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::report::ProbeKind;

/// A check's outcome: the reason is for logs, never for probe responses.
pub(crate) type Outcome = Result<(), Arc<str>>;
/// A run's outcome and when it finished (the cache window starts then).
type Finished = (Instant, Outcome);
pub(crate) type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

enum Slot {
    Idle,
    Running(Shared<BoxFuture<'static, Finished>>),
    Done { at: Instant, outcome: Outcome },
}

/// A named check with its timeout and the slot its runs share.
pub(crate) struct Check {
    pub(crate) name: Arc<str>,
    kind: ProbeKind,
    timeout: Duration,
    run: Arc<CheckFn>,
    // A std mutex is fine here: it is held only to read or swap the slot,
    // never across an await.
    slot: Mutex<Slot>,
}

impl Check {
    pub(crate) fn new(name: &str, kind: ProbeKind, timeout: Duration, run: Arc<CheckFn>) -> Self {
        Check {
            name: name.into(),
            kind,
            timeout,
            run,
            slot: Mutex::new(Slot::Idle),
        }
    }

    /// The check's outcome: the cached one while it is fresh, else the run
    /// in flight (shared by every concurrent caller), else a new run.
    pub(crate) async fn outcome(self: Arc<Self>, cache_for: Duration) -> Outcome {
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the health endpoints down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::join_all;

    use super::super::{CheckStatus, HealthRegistry, HealthReport, ProbeKind};
    use super::*;

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
}
