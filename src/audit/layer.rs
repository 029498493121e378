//! [`AuditLayer`].

use std::sync::Arc;

use tower_layer::Layer;

use super::auditor::Auditor;
use super::capture::{PolicySource, Settings};
use super::policy::AuditPolicy;
use super::service::Audit;
use crate::config::Watched;

/// Writes one audit record per request; see the [module docs](super).
#[derive(Clone, Debug)]
pub struct AuditLayer {
    auditor: Auditor,
    settings: Arc<Settings>,
}

impl AuditLayer {
    /// Audits every request through `auditor`, each at level `Metadata`
    /// until a [policy](Self::policy) says otherwise.
    pub fn new(auditor: Auditor) -> Self {
        Self {
            auditor,
            settings: Arc::default(),
        }
    }

    /// Chooses each request's level with `policy` (requests no rule
    /// matches are not recorded, as in the apiserver).
    pub fn policy(mut self, policy: AuditPolicy) -> Self {
        Arc::make_mut(&mut self.settings).policy = Some(PolicySource::Fixed(policy));
        self
    }

    /// Chooses each request's level with a hot-reloaded policy file (see
    /// [`AuditPolicy::watch`]); each request uses the version current
    /// when it came in.
    pub fn watched_policy(mut self, policy: Watched<AuditPolicy>) -> Self {
        Arc::make_mut(&mut self.settings).policy = Some(PolicySource::Watched(policy));
        self
    }

    /// The most bytes of a request or response body kept in a record
    /// (default 8 KiB). A longer body is cut there and named in the
    /// record's `truncated` list. The request's bytes are held in memory
    /// until its record is written, so this bounds what one request in
    /// flight can hold: twice this, at most.
    pub fn body_cap(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.settings).body_cap = bytes;
        self
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit::with_settings(inner, self.auditor.clone(), self.settings.clone())
    }
}
