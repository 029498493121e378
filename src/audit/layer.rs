//! [`AuditLayer`].

use tower_layer::Layer;

use super::auditor::Auditor;
use super::service::Audit;

/// Writes one audit record per request; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct AuditLayer {
    auditor: Auditor,
}

impl AuditLayer {
    /// Audits every request through `auditor`.
    pub fn new(auditor: Auditor) -> Self {
        Self { auditor }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit::new(inner, self.auditor.clone())
    }
}
