//! [`Rbac`]: the service [`RbacLayer`](super::RbacLayer) builds — map,
//! decide, record, refuse.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::RbacCode;
use super::attributes::{Action, Attributes};
use super::authorizer::Authorizer;
use super::decision::Decision;
use super::layer::DefaultMapper;
use super::mapper::RequestMapper;
use super::stats::RbacStats;
use crate::body::ResponseBody;
use crate::codes::RejectionCode;
use crate::future::ResponseFuture;
use crate::labels::{Authorization, RequestLabels};
use crate::principal::Principal;
use crate::reject::Rejection;
use crate::tenant::Tenant;

/// What every service of one layer shares.
pub(super) struct Shared<M> {
    pub(super) authorizer: Authorizer,
    pub(super) mapper: Arc<M>,
    pub(super) shadow: bool,
    pub(super) unmapped_as_non_resource: bool,
    pub(super) stats: RbacStats,
}

/// The service [`RbacLayer`](super::RbacLayer) builds.
pub struct Rbac<S, M = DefaultMapper> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without RBAC.
    shared: Option<Arc<Shared<M>>>,
}

crate::macros::inner_accessors!([S, M] Rbac<S, M>, inner: S);

impl<S, M> Rbac<S, M> {
    pub(super) fn new(inner: S, shared: Shared<M>) -> Self {
        Self {
            inner,
            shared: Some(Arc::new(shared)),
        }
    }

    /// Passes every request through unauthorized: the slot of an absent
    /// RBAC layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            shared: None,
        }
    }
}

impl<S: Clone, M> Clone for Rbac<S, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Rbac<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rbac")
            .field("inner", &self.inner)
            .field("shadow", &self.shared.as_ref().map(|s| s.shadow))
            .finish_non_exhaustive()
    }
}

impl<S, M, ReqB, ResB> Service<Request<ReqB>> for Rbac<S, M>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    M: RequestMapper,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let Some(shared) = &self.shared else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        // The mapper and the decision read the head only: the body waits
        // aside meanwhile. Moves, nothing allocated.
        let (parts, body) = req.into_parts();
        let mut head = Request::from_parts(parts, ());
        let verdict = shared.check(&mut head);
        match verdict {
            Err(rejection) if !shared.shadow => ResponseFuture::rejected(rejection.respond(&head)),
            _ => {
                let (parts, ()) = head.into_parts();
                // Called now, in this `call`: the service polled ready
                // takes the request, and nothing waits for a clone.
                ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body)))
            }
        }
    }
}

impl<M> Shared<M> {
    /// Decides `req`, records the decision, and returns the rejection that
    /// enforcing mode answers with.
    fn check(&self, req: &mut Request<()>) -> Result<(), Rejection>
    where
        M: RequestMapper,
    {
        let shadow = self.shadow;
        let Some(principal) = req.extensions().get::<Principal>() else {
            self.stats
                .inner
                .unauthenticated
                .fetch_add(1, Ordering::Relaxed);
            if shadow {
                tracing::info!(target: "finmesh::rbac", shadow, path = req.uri().path(), "no principal: would refuse with auth.missing");
            }
            return Err(crate::principal::AuthCode::Missing.reject("authentication required"));
        };

        let action = self.mapper.map(req).or_else(|| {
            self.unmapped_as_non_resource.then(|| {
                Action::non_resource(req.method().as_str().to_ascii_lowercase(), req.uri().path())
            })
        });
        let Some(action) = action else {
            self.stats.inner.unmapped.fetch_add(1, Ordering::Relaxed);
            let detail = format!(
                "{} {} is not mapped to an RBAC verb and resource",
                req.method(),
                req.uri().path()
            );
            if shadow {
                tracing::info!(target: "finmesh::rbac", shadow, user = %principal.subject, %detail, "would refuse with rbac.unmapped");
            }
            return Err(RbacCode::Unmapped.reject(detail));
        };

        let namespace = req.extensions().get::<Tenant>().map(|t| t.namespace);
        let ns = namespace.as_ref().map(|n| n.as_str());
        let decision = self
            .authorizer
            .authorize(&Attributes::for_principal(principal, ns, &action));

        let allowed = decision.is_allowed();
        let counter = if allowed {
            &self.stats.inner.allowed
        } else {
            &self.stats.inner.denied
        };
        counter.fetch_add(1, Ordering::Relaxed);

        let rejection = (!allowed)
            .then(|| RbacCode::Denied.reject(denial_detail(&principal.subject, &action, ns)));
        match &rejection {
            Some(r) if shadow => tracing::info!(
                target: "finmesh::rbac", shadow, user = %principal.subject, namespace = ns, action = %action,
                "would deny: {}", r.detail()
            ),
            Some(r) => {
                tracing::debug!(target: "finmesh::rbac", user = %principal.subject, "{}", r.detail())
            }
            None => tracing::debug!(
                target: "finmesh::rbac", shadow, user = %principal.subject, namespace = ns, action = %action,
                "{decision}"
            ),
        }

        if let Some(labels) = req.extensions().get::<RequestLabels>() {
            labels.update(|l| {
                l.authorization = Some(authorization_label(&decision, &action, shadow));
                l.api_group = match &action {
                    Action::Resource(r) => Some(Arc::clone(r.api_group_arc())),
                    Action::NonResource(_) => None,
                };
            });
        }
        req.extensions_mut().insert(decision);
        req.extensions_mut().insert(action);
        rejection.map_or(Ok(()), Err)
    }
}

fn authorization_label(decision: &Decision, action: &Action, shadow: bool) -> Authorization {
    let (verb, resource, name) = match action {
        Action::Resource(r) => (
            Arc::clone(r.verb_arc()),
            Arc::clone(r.combined_arc()),
            r.name_arc().cloned(),
        ),
        Action::NonResource(n) => (Arc::from(n.verb()), Arc::from(n.path()), None),
    };
    Authorization {
        allowed: decision.is_allowed(),
        shadow,
        verb,
        resource,
        name,
        binding: decision.binding().cloned(),
        role: decision.role().cloned(),
    }
}

/// The Kubernetes-style reason: `"alice" cannot delete resource "accounts"
/// in namespace "tenant-a"`.
fn denial_detail(user: &str, action: &Action, namespace: Option<&str>) -> String {
    match action {
        Action::Resource(r) => {
            let mut detail = format!(
                "{user:?} cannot {} resource {:?}",
                r.verb(),
                r.combined_resource()
            );
            if !r.api_group().is_empty() {
                detail.push_str(&format!(" in API group {:?}", r.api_group()));
            }
            match namespace {
                Some(ns) => detail.push_str(&format!(" in namespace {ns:?}")),
                None => detail.push_str(" at the cluster scope"),
            }
            detail
        }
        Action::NonResource(n) => format!("{user:?} cannot {} path {:?}", n.verb(), n.path()),
    }
}
