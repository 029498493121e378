//! [`RequestLabels`]: where the layers of one request meet.
//!
//! Layers never reach into each other. The outermost governing layer
//! (telemetry, or audit when telemetry is absent) puts a `RequestLabels`
//! handle into the request extensions; inner layers and handlers fill it
//! (the JWT layer sets the subject and risk level, the tenant layer the
//! tenant, RBAC its decision, the idempotency layer the key); the outer
//! layer reads it when the response completes to label its span, metrics
//! and audit record. A rendered [`Rejection`] records itself here.
//!
//! The handle is an `Arc` around a small mutex that is only held for the
//! few nanoseconds of a field update, never across an `.await`.
//!
//! ```
//! use finmesh::{RequestLabels, RiskLevel};
//!
//! let mut req = http::Request::new(());
//! let labels = RequestLabels::get_or_insert(req.extensions_mut());
//! // …an inner layer, holding only the request:
//! req.extensions().get::<RequestLabels>().unwrap().set_risk(RiskLevel::High);
//! // …the outer layer, when the response is known:
//! assert_eq!(labels.snapshot().risk, Some(RiskLevel::High));
//! ```

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

use http::Extensions;

use crate::principal::RiskLevel;
use crate::reject::{Rejection, RejectionKind};
use crate::tenant::TenantNamespace;

/// A cheap, shared, mutable set of labels for one request.
#[derive(Clone, Default, Debug)]
pub struct RequestLabels {
    inner: Arc<Mutex<LabelValues>>,
}

/// The values a [`RequestLabels`] handle holds; read with
/// [`RequestLabels::snapshot`].
#[derive(Clone, Default, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LabelValues {
    /// W3C trace id (32 lowercase hex digits), set by the telemetry layer.
    pub trace_id: Option<Arc<str>>,
    /// Business order id (`x-order-id` or baggage), validated.
    pub order_id: Option<Arc<str>>,
    /// Route template (`/v1/accounts/{id}`) or gRPC method
    /// (`/pkg.Service/Method`): a bounded set, safe as a metric attribute.
    pub route: Option<Cow<'static, str>>,
    /// The tenant namespace the tenant layer admitted.
    pub tenant: Option<TenantNamespace>,
    /// The verified subject (JWT `sub`).
    pub subject: Option<Arc<str>>,
    /// The SPIFFE ID of the mutually authenticated peer, when there is one.
    pub peer: Option<Arc<str>>,
    /// The verified risk level (from the token, never from baggage).
    pub risk: Option<RiskLevel>,
    /// The verified subject's groups (from the token), set by the
    /// authentication layer; audit policies match `userGroups` on them.
    pub groups: Option<Arc<[Arc<str>]>>,
    /// The authorization decision, when RBAC ran.
    pub authorization: Option<Authorization>,
    /// The API group of the request's resource when RBAC mapped it to a
    /// resource (`""` is the core group); `None` for a non-resource
    /// request. Audit policies match `resources[].group` on it.
    pub api_group: Option<Arc<str>>,
    /// The first rejection rendered for this request.
    pub rejection: Option<RejectionLabel>,
    /// The idempotency key, when the request carried one.
    pub idempotency_key: Option<Arc<str>>,
    /// Whether the response was replayed from the idempotency store.
    pub replayed: bool,
    /// How many times the handler retried internally (set by handlers).
    pub retry_count: u32,
    /// Consistency outcome reported by the handler (e.g. `committed`,
    /// `compensated`): a bounded set chosen by the application.
    pub consistency_status: Option<Cow<'static, str>>,
}

/// What the authorizer decided, in label form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// Whether the request was allowed (in shadow mode: would have been).
    pub allowed: bool,
    /// Whether the decision was only recorded (shadow mode).
    pub shadow: bool,
    /// The verb (`get`, `create`, …).
    pub verb: Arc<str>,
    /// The resource, with its subresource (`accounts/balance`), or the
    /// non-resource path.
    pub resource: Arc<str>,
    /// The resource name, when the request names one.
    pub name: Option<Arc<str>>,
    /// The binding that allowed it (`RoleBinding/ns/name` or
    /// `ClusterRoleBinding/name`).
    pub binding: Option<Arc<str>>,
    /// The role that binding refers to.
    pub role: Option<Arc<str>>,
}

/// A rejection, in label form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectionLabel {
    /// The kind.
    pub kind: RejectionKind,
    /// The stable machine code (`tenant.suspended`).
    pub code: Cow<'static, str>,
}

impl RejectionLabel {
    /// The layer that rejected: the part of the code before the first dot.
    pub fn layer(&self) -> &str {
        self.code.split('.').next().unwrap_or_default()
    }
}

impl RequestLabels {
    /// A new, empty handle.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle already in `extensions`, or a new one inserted there.
    pub fn get_or_insert(extensions: &mut Extensions) -> Self {
        if let Some(labels) = extensions.get::<Self>() {
            return labels.clone();
        }
        let labels = Self::new();
        extensions.insert(labels.clone());
        labels
    }

    fn lock(&self) -> MutexGuard<'_, LabelValues> {
        // A panic while holding this lock cannot leave a label half-written
        // in a way that matters; keep serving rather than poison every request.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Updates several values at once.
    pub fn update<R>(&self, f: impl FnOnce(&mut LabelValues) -> R) -> R {
        f(&mut self.lock())
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> LabelValues {
        self.lock().clone()
    }

    /// The trace id, if the telemetry layer set one.
    pub fn trace_id(&self) -> Option<Arc<str>> {
        self.lock().trace_id.clone()
    }

    /// Sets the trace id.
    pub fn set_trace_id(&self, trace_id: impl Into<Arc<str>>) {
        self.lock().trace_id = Some(trace_id.into());
    }

    /// Sets the order id.
    pub fn set_order_id(&self, order_id: impl Into<Arc<str>>) {
        self.lock().order_id = Some(order_id.into());
    }

    /// Sets the route template or gRPC method.
    pub fn set_route(&self, route: impl Into<Cow<'static, str>>) {
        self.lock().route = Some(route.into());
    }

    /// Sets the tenant.
    pub fn set_tenant(&self, tenant: TenantNamespace) {
        self.lock().tenant = Some(tenant);
    }

    /// Sets the verified subject.
    pub fn set_subject(&self, subject: impl Into<Arc<str>>) {
        self.lock().subject = Some(subject.into());
    }

    /// Sets the verified risk level.
    pub fn set_risk(&self, risk: RiskLevel) {
        self.lock().risk = Some(risk);
    }

    /// Sets the authorization decision.
    pub fn set_authorization(&self, authorization: Authorization) {
        self.lock().authorization = Some(authorization);
    }

    /// Records a rejection; the first one recorded wins, since an outer
    /// layer may re-render what an inner one refused.
    pub fn record_rejection(&self, rejection: &Rejection) {
        let mut values = self.lock();
        if values.rejection.is_none() {
            values.rejection = Some(RejectionLabel {
                kind: rejection.kind(),
                code: Cow::Owned(rejection.code().to_owned()),
            });
        }
    }

    /// Sets the idempotency key and whether the response was replayed.
    pub fn set_idempotency(&self, key: impl Into<Arc<str>>, replayed: bool) {
        let mut values = self.lock();
        values.idempotency_key = Some(key.into());
        values.replayed = replayed;
    }

    /// Sets the handler's retry count.
    pub fn set_retry_count(&self, retry_count: u32) {
        self.lock().retry_count = retry_count;
    }

    /// Sets the handler's consistency status.
    pub fn set_consistency_status(&self, status: impl Into<Cow<'static, str>>) {
        self.lock().consistency_status = Some(status.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_or_insert_returns_the_same_handle() {
        let mut ext = Extensions::new();
        let a = RequestLabels::get_or_insert(&mut ext);
        let b = RequestLabels::get_or_insert(&mut ext);
        a.set_subject("alice");
        assert_eq!(b.snapshot().subject.as_deref(), Some("alice"));
    }

    #[test]
    fn first_rejection_wins() {
        let labels = RequestLabels::new();
        labels.record_rejection(&Rejection::new(
            RejectionKind::PermissionDenied,
            "rbac.denied",
            "",
        ));
        labels.record_rejection(&Rejection::new(RejectionKind::Internal, "x.y", ""));
        let r = labels.snapshot().rejection.unwrap();
        assert_eq!(r.code, "rbac.denied");
        assert_eq!(r.layer(), "rbac");
    }
}
