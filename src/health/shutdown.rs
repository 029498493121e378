//! Draining: the shutdown flag, and the graceful-shutdown future that
//! waits for SIGTERM or Ctrl-C.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::registry::HealthRegistry;

impl HealthRegistry {
    /// Starts draining: from this instant the readiness probe fails
    /// (`shutdown`), liveness keeps passing, and every gRPC service reports
    /// `NOT_SERVING` (watchers are told at once). There is no way back.
    pub fn begin_shutdown(&self) {
        if !self.shutting_down_flag().swap(true, Ordering::AcqRel) {
            tracing::info!("shutdown begun: readiness now fails, gRPC services NOT_SERVING");
            self.serving_state().notify();
        }
    }

    /// Whether [`begin_shutdown`](Self::begin_shutdown) has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down_flag().load(Ordering::Acquire)
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
