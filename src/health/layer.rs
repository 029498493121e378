//! [`HealthLayer`]: which paths are probes, whether `grpc.health.v1` is
//! answered too, and the registry behind them.

use std::sync::Arc;

use tower_layer::Layer;

#[cfg(feature = "grpc")]
use super::grpc::GrpcHealthService;
use super::registry::HealthRegistry;
use super::report::ProbeKind;
use super::service::Health;

/// Answers the probe endpoints (and, with feature `grpc`, the
/// `grpc.health.v1.Health` service) from one [`HealthRegistry`] and passes
/// every other request through untouched. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct HealthLayer {
    config: Arc<ProbeConfig>,
}

/// The probe paths and the registry (one `Arc`, shared by every clone).
#[derive(Clone, Debug)]
pub(crate) struct ProbeConfig {
    pub(crate) registry: HealthRegistry,
    pub(crate) endpoints: [Endpoint; 3],
    /// Answers `grpc.health.v1` calls when `serve_grpc` is on.
    #[cfg(feature = "grpc")]
    pub(crate) grpc: GrpcHealthService,
    #[cfg(feature = "grpc")]
    pub(crate) serve_grpc: bool,
}

/// One probe endpoint: its path and the probe it runs.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) path: String,
    pub(crate) kind: ProbeKind,
    /// The last path segment, used in `<name> check passed`.
    pub(crate) name: String,
}

impl Endpoint {
    fn new(path: &str, kind: ProbeKind) -> Self {
        let path = normalize(path);
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        Endpoint { path, kind, name }
    }
}

/// A leading `/`, no trailing `/`, no query.
fn normalize(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let trimmed = path.trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

const LIVEZ: usize = 0;
const READYZ: usize = 1;
const HEALTHZ: usize = 2;

impl HealthLayer {
    /// Probes at `/livez`, `/readyz` and `/healthz` (an alias of liveness)
    /// and, with feature `grpc`, `grpc.health.v1.Health` (`Check`, `Watch`,
    /// `List`), all answered from `registry`.
    pub fn new(registry: HealthRegistry) -> Self {
        HealthLayer {
            config: Arc::new(ProbeConfig {
                #[cfg(feature = "grpc")]
                grpc: GrpcHealthService::new(registry.clone()),
                #[cfg(feature = "grpc")]
                serve_grpc: true,
                registry,
                endpoints: [
                    Endpoint::new("/livez", ProbeKind::Liveness),
                    Endpoint::new("/readyz", ProbeKind::Readiness),
                    Endpoint::new("/healthz", ProbeKind::Liveness),
                ],
            }),
        }
    }

    /// Whether calls under `/grpc.health.v1.Health/` are answered here
    /// (`true`, the default) or passed to the inner service like any other
    /// request, for an application that serves its own health service.
    #[cfg(feature = "grpc")]
    pub fn serve_grpc_health(mut self, serve: bool) -> Self {
        Arc::make_mut(&mut self.config).serve_grpc = serve;
        self
    }

    /// How often a gRPC `Watch("")` stream re-runs the readiness checks;
    /// see [`GrpcHealthService::readiness_poll_interval`].
    #[cfg(feature = "grpc")]
    pub fn grpc_readiness_poll_interval(mut self, every: std::time::Duration) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.grpc = config.grpc.clone().readiness_poll_interval(every);
        self
    }

    fn set(mut self, index: usize, path: &str) -> Self {
        let config = Arc::make_mut(&mut self.config);
        let kind = config.endpoints[index].kind;
        config.endpoints[index] = Endpoint::new(path, kind);
        self
    }

    /// Serves liveness at `path` (default `/livez`) and its checks below it.
    /// A missing leading `/` is added and a trailing one removed.
    pub fn livez_path(self, path: &str) -> Self {
        self.set(LIVEZ, path)
    }

    /// Serves readiness at `path` (default `/readyz`) and its checks below it.
    pub fn readyz_path(self, path: &str) -> Self {
        self.set(READYZ, path)
    }

    /// Serves the liveness alias at `path` (default `/healthz`).
    pub fn healthz_path(self, path: &str) -> Self {
        self.set(HEALTHZ, path)
    }

    /// The registry behind the probes.
    pub fn registry(&self) -> &HealthRegistry {
        &self.config.registry
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Health::new(inner, Arc::clone(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized() {
        let layer = HealthLayer::new(HealthRegistry::new())
            .livez_path("health/live/")
            .readyz_path("/health/ready?x")
            .healthz_path("/");
        let [live, ready, healthz] = &layer.config.endpoints;
        assert_eq!(
            (live.path.as_str(), live.name.as_str()),
            ("/health/live", "live")
        );
        assert_eq!(
            (ready.path.as_str(), ready.name.as_str()),
            ("/health/ready", "ready")
        );
        assert_eq!(healthz.path, "/");
        assert_eq!(ready.kind, ProbeKind::Readiness);
    }
}
