//! [`RbacLayer`] and [`Rbac`]: the authorizer in front of a service.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::attributes::{Action, Attributes};
use super::authorizer::Authorizer;
use super::decision::Decision;
use super::mapper::{GrpcMethods, HttpRoutes, RequestMapper};

/// The usual mapper: [`HttpRoutes`], then [`GrpcMethods`].
pub type DefaultMapper = (HttpRoutes, GrpcMethods);
use super::RbacCode;
use crate::body::ResponseBody;
use crate::codes::RejectionCode;
use crate::future::ResponseFuture;
use crate::labels::{Authorization, RequestLabels};
use crate::principal::Principal;
use crate::reject::Rejection;
use crate::tenant::Tenant;

/// Applies RBAC to every request: maps it to an [`Action`] with a
/// [`RequestMapper`], decides it with an [`Authorizer`] for the
/// [`Principal`] and [`Tenant`] in the extensions, and refuses what is not
/// allowed.
///
/// | situation | enforcing | shadow |
/// |---|---|---|
/// | no `Principal` | 401 / UNAUTHENTICATED `auth.missing` | passes |
/// | unmapped request | 403 / PERMISSION_DENIED `rbac.unmapped` | passes |
/// | denied | 403 / PERMISSION_DENIED `rbac.denied` | passes, logged |
/// | allowed | passes | passes |
///
/// A decided request carries its [`Decision`] and [`Action`] in the
/// extensions, and, when a [`RequestLabels`] handle is present, an
/// [`Authorization`] label. [`stats`](Self::stats) counts the outcomes.
///
/// The mapper type defaults to [`DefaultMapper`] (HTTP routes, then gRPC
/// methods), so `RbacLayer` without parameters names the usual layer (as
/// the `GovernanceLayer` stack does).
pub struct RbacLayer<M = DefaultMapper> {
    authorizer: Authorizer,
    mapper: Arc<M>,
    shadow: bool,
    unmapped_as_non_resource: bool,
    stats: RbacStats,
}

impl<M> Clone for RbacLayer<M> {
    fn clone(&self) -> Self {
        Self {
            authorizer: self.authorizer.clone(),
            mapper: Arc::clone(&self.mapper),
            shadow: self.shadow,
            unmapped_as_non_resource: self.unmapped_as_non_resource,
            stats: self.stats.clone(),
        }
    }
}

impl<M> fmt::Debug for RbacLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbacLayer")
            .field("authorizer", &self.authorizer)
            .field("shadow", &self.shadow)
            .field("unmapped_as_non_resource", &self.unmapped_as_non_resource)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<M> RbacLayer<M> {
    /// Enforces `authorizer`'s decisions on requests mapped by `mapper`.
    pub fn new(authorizer: Authorizer, mapper: M) -> Self {
        Self {
            authorizer,
            mapper: Arc::new(mapper),
            shadow: false,
            unmapped_as_non_resource: false,
            stats: RbacStats::default(),
        }
    }

    /// Shadow mode: decide, log and count every request, but let all of
    /// them through — for rolling out a new policy and watching
    /// [`RbacStats::denied`] before enforcing it.
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Decide requests the mapper does not know as non-resource requests
    /// (the lowercase method on the path, as Kubernetes does for
    /// `/healthz`), instead of refusing them with `rbac.unmapped`.
    pub fn unmapped_as_non_resource(mut self, enabled: bool) -> Self {
        self.unmapped_as_non_resource = enabled;
        self
    }

    /// The outcome counters, shared by every service this layer builds.
    pub fn stats(&self) -> RbacStats {
        self.stats.clone()
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }
}

impl<S, M> Layer<S> for RbacLayer<M> {
    type Service = Rbac<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Rbac {
            inner,
            shared: Some(Arc::new(Shared {
                authorizer: self.authorizer.clone(),
                mapper: Arc::clone(&self.mapper),
                shadow: self.shadow,
                unmapped_as_non_resource: self.unmapped_as_non_resource,
                stats: self.stats.clone(),
            })),
        }
    }
}

struct Shared<M> {
    authorizer: Authorizer,
    mapper: Arc<M>,
    shadow: bool,
    unmapped_as_non_resource: bool,
    stats: RbacStats,
}

/// The service [`RbacLayer`] builds.
pub struct Rbac<S, M = DefaultMapper> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without RBAC.
    shared: Option<Arc<Shared<M>>>,
}

impl<S, M> Rbac<S, M> {
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
    M: RequestMapper<ReqB>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let Some(shared) = &self.shared else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        match shared.check(&mut req) {
            Err(rejection) if !shared.shadow => ResponseFuture::rejected(rejection.respond(&req)),
            _ => {
                // The polled-ready service handles this request; the clone
                // waits for the next poll_ready.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::inner(inner.call(req))
            }
        }
    }
}

impl<M> Shared<M> {
    /// Decides `req`, records the decision, and returns the rejection that
    /// enforcing mode answers with.
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), Rejection>
    where
        M: RequestMapper<B>,
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
            labels.set_authorization(authorization_label(&decision, &action, shadow));
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

/// Outcome counters of an [`RbacLayer`]: cheap to clone, shared.
///
/// In shadow mode `denied`, `unmapped` and `unauthenticated` count what
/// *would* have been refused.
#[derive(Clone, Default)]
pub struct RbacStats {
    inner: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    unmapped: AtomicU64,
    unauthenticated: AtomicU64,
}

impl RbacStats {
    /// Requests the policy allowed.
    pub fn allowed(&self) -> u64 {
        self.inner.allowed.load(Ordering::Relaxed)
    }

    /// Requests the policy denied (`rbac.denied`).
    pub fn denied(&self) -> u64 {
        self.inner.denied.load(Ordering::Relaxed)
    }

    /// Requests no mapper knew (`rbac.unmapped`).
    pub fn unmapped(&self) -> u64 {
        self.inner.unmapped.load(Ordering::Relaxed)
    }

    /// Requests without a principal (`auth.missing`).
    pub fn unauthenticated(&self) -> u64 {
        self.inner.unauthenticated.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for RbacStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RbacStats")
            .field("allowed", &self.allowed())
            .field("denied", &self.denied())
            .field("unmapped", &self.unmapped())
            .field("unauthenticated", &self.unauthenticated())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Method, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::rbac::{
        ClusterRole, HttpRoutes, Policy, PolicyRule, Role, RoleBinding, RoleRef, Subject,
    };
    use crate::tenant::TenantNamespace;

    fn policy() -> Policy {
        Policy::new()
            .with_role(Role::new(
                "tenant-a",
                "account-admin",
                vec![PolicyRule::resources(["*"], [""], ["accounts"])],
            ))
            .with_role_binding(RoleBinding::new(
                "tenant-a",
                "alice-admin",
                RoleRef::role("account-admin"),
                vec![Subject::user("alice")],
            ))
            .with_cluster_role(ClusterRole::new(
                "probes",
                vec![PolicyRule::non_resource_urls(["get"], ["/healthz/*"])],
            ))
            .with_cluster_role_binding(crate::rbac::ClusterRoleBinding::new(
                "probes",
                "probes",
                vec![Subject::group("monitoring")],
            ))
    }

    fn routes() -> HttpRoutes {
        HttpRoutes::new()
            .route("/v1/accounts", "accounts")
            .route("/v1/accounts/{name}", "accounts")
    }

    fn request(
        method: Method,
        uri: &str,
        user: Option<(&str, &[&str])>,
        grpc: bool,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::builder().method(method).uri(uri);
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        let mut req = req.body(Full::default()).unwrap();
        if let Some((user, groups)) = user {
            req.extensions_mut()
                .insert(Principal::new(user, "test").with_groups(groups.iter().copied()));
        }
        req.extensions_mut()
            .insert(Tenant::new(TenantNamespace::parse("tenant-a").unwrap()));
        req
    }

    async fn run(
        layer: RbacLayer<HttpRoutes>,
        req: Request<Full<Bytes>>,
    ) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let svc =
            ServiceBuilder::new()
                .layer(layer)
                .service_fn(|req: Request<Full<Bytes>>| async move {
                    let d = req.extensions().get::<Decision>().cloned();
                    let a = req.extensions().get::<Action>().cloned();
                    let body = serde_json::json!({
                        "allowed": d.as_ref().map(Decision::is_allowed),
                        "binding": d.as_ref().and_then(|d| d.binding()).map(|b| b.to_string()),
                        "action": a.map(|a| a.to_string()),
                    });
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
                });
        let res = svc.oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (parts.status, parts.headers, json)
    }

    fn layer() -> RbacLayer<HttpRoutes> {
        RbacLayer::new(Authorizer::new(&policy()), routes())
    }

    #[tokio::test]
    async fn allowed_request_carries_its_decision_and_action() {
        let (status, _, body) = run(
            layer(),
            request(
                Method::DELETE,
                "/v1/accounts/acc-1",
                Some(("alice", &[])),
                false,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["allowed"], true);
        assert_eq!(body["binding"], "RoleBinding/tenant-a/alice-admin");
        assert_eq!(body["action"], "delete accounts \"acc-1\"");
    }

    #[tokio::test]
    async fn denial_is_403_with_a_kubernetes_style_detail() {
        let l = layer();
        let stats = l.stats();
        let (status, _, body) = run(
            l,
            request(
                Method::DELETE,
                "/v1/accounts/acc-1",
                Some(("bob", &[])),
                false,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["code"], "rbac.denied");
        assert_eq!(
            body["detail"],
            "\"bob\" cannot delete resource \"accounts\" in namespace \"tenant-a\""
        );
        assert_eq!((stats.allowed(), stats.denied()), (0, 1));
    }

    #[tokio::test]
    async fn denial_over_grpc_is_permission_denied() {
        let (status, headers, _) = run(
            layer(),
            request(Method::GET, "/v1/accounts", Some(("bob", &[])), true),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["grpc-status"], "7");
        assert_eq!(
            headers["grpc-message"],
            "\"bob\" cannot list resource \"accounts\" in namespace \"tenant-a\""
        );
    }

    #[tokio::test]
    async fn no_principal_is_401_auth_missing() {
        let (status, headers, body) =
            run(layer(), request(Method::GET, "/v1/accounts", None, false)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "auth.missing");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }

    #[tokio::test]
    async fn unmapped_is_403_unless_treated_as_a_non_resource_url() {
        let (status, _, body) = run(
            layer(),
            request(
                Method::GET,
                "/healthz/live",
                Some(("mon", &["monitoring"])),
                false,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["code"], "rbac.unmapped");

        let l = layer().unmapped_as_non_resource(true);
        let (status, _, body) = run(
            l.clone(),
            request(
                Method::GET,
                "/healthz/live",
                Some(("mon", &["monitoring"])),
                false,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["action"], "get path /healthz/live");
        let (status, _, body) = run(
            l,
            request(
                Method::POST,
                "/healthz/live",
                Some(("mon", &["monitoring"])),
                false,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["detail"], "\"mon\" cannot post path \"/healthz/live\"");
    }

    #[tokio::test]
    async fn no_tenant_decides_at_cluster_scope() {
        let mut req = request(Method::GET, "/v1/accounts", Some(("alice", &[])), false);
        req.extensions_mut().remove::<Tenant>();
        let (status, _, body) = run(layer(), req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body["detail"],
            "\"alice\" cannot list resource \"accounts\" at the cluster scope"
        );
    }

    #[tokio::test]
    async fn shadow_mode_lets_everything_through_and_counts() {
        let l = layer().shadow(true);
        let stats = l.stats();
        let (status, _, body) = run(
            l.clone(),
            request(
                Method::DELETE,
                "/v1/accounts/acc-1",
                Some(("bob", &[])),
                false,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["allowed"], false);
        let (status, _, _) = run(
            l.clone(),
            request(Method::GET, "/v1/accounts", Some(("alice", &[])), false),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = run(
            l.clone(),
            request(Method::GET, "/nowhere", Some(("alice", &[])), false),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = run(l, request(Method::GET, "/v1/accounts", None, false)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (
                stats.allowed(),
                stats.denied(),
                stats.unmapped(),
                stats.unauthenticated()
            ),
            (1, 1, 1, 1)
        );
    }

    #[tokio::test]
    async fn authorization_is_recorded_on_request_labels() {
        for (user, allowed, shadow) in [
            ("alice", true, false),
            ("bob", false, false),
            ("bob", false, true),
        ] {
            let mut req = request(Method::GET, "/v1/accounts/acc-9", Some((user, &[])), false);
            let labels = RequestLabels::get_or_insert(req.extensions_mut());
            let _ = run(layer().shadow(shadow), req).await;
            let auth = labels
                .snapshot()
                .authorization
                .expect("authorization label");
            assert_eq!((auth.allowed, auth.shadow), (allowed, shadow));
            assert_eq!((&*auth.verb, &*auth.resource), ("get", "accounts"));
            assert_eq!(auth.name.as_deref(), Some("acc-9"));
            assert_eq!(auth.binding.is_some(), allowed);
            let rejection = labels.snapshot().rejection;
            assert_eq!(
                rejection.map(|r| r.code.to_string()),
                (!allowed && !shadow).then(|| "rbac.denied".to_owned())
            );
        }
    }

    #[test]
    fn layer_and_service_are_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<RbacLayer<HttpRoutes>>();
        check::<
            Rbac<
                tower::util::BoxCloneSyncService<Request<()>, Response<()>, Infallible>,
                HttpRoutes,
            >,
        >();
    }
}
