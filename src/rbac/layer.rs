//! [`RbacLayer`]: the authorizer in front of a service, and its options.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::authorizer::Authorizer;
use super::grpc_methods::GrpcMethods;
use super::http_routes::HttpRoutes;
use super::mapper::{RequestMapper, SharedMapper};
use super::service::{Rbac, Shared};
use super::stats::RbacStats;
#[cfg(doc)]
use super::{Action, Decision};
#[cfg(doc)]
use crate::labels::{Authorization, RequestLabels};
#[cfg(doc)]
use crate::{Principal, Tenant};

/// The usual mapper: [`HttpRoutes`], then [`GrpcMethods`].
pub type DefaultMapper = (HttpRoutes, GrpcMethods);

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
/// methods), so `RbacLayer` without parameters names the usual layer.
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

impl<M: RequestMapper> RbacLayer<M> {
    /// The same layer with its mapper type-erased, so that stacks built
    /// with different mappers have one type (see
    /// [`GovernanceLayer`](crate::GovernanceLayer)). The counters stay
    /// shared with `self`.
    pub(crate) fn into_shared(self) -> RbacLayer<SharedMapper> {
        RbacLayer {
            authorizer: self.authorizer,
            mapper: Arc::new(SharedMapper::from_arc(self.mapper)),
            shadow: self.shadow,
            unmapped_as_non_resource: self.unmapped_as_non_resource,
            stats: self.stats,
        }
    }
}

impl<S, M> Layer<S> for RbacLayer<M> {
    type Service = Rbac<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Rbac::new(
            inner,
            Shared {
                authorizer: self.authorizer.clone(),
                mapper: Arc::clone(&self.mapper),
                shadow: self.shadow,
                unmapped_as_non_resource: self.unmapped_as_non_resource,
                stats: self.stats.clone(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Method, Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::GovernanceLayer;
    use crate::labels::RequestLabels;
    use crate::principal::Principal;
    use crate::rbac::service::Rbac;
    use crate::rbac::{
        Action, ClusterRole, Decision, Policy, PolicyRule, Role, RoleBinding, RoleRef, Subject,
    };
    use crate::tenant::{Tenant, TenantNamespace};

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

    /// The status a `GovernanceLayer` holding only `layer` answers for
    /// `method uri` from `user` in tenant-a, over a real axum router.
    async fn through_the_stack<M: RequestMapper>(
        layer: RbacLayer<M>,
        method: Method,
        uri: &str,
        user: &str,
    ) -> StatusCode {
        let app = axum::Router::new()
            .route("/v1/accounts", axum::routing::get(|| async { "[]" }))
            .route(
                "/ledger.v1.Ledger/List",
                axum::routing::post(|| async { "" }),
            )
            .route("/admin/accounts", axum::routing::get(|| async { "[]" }))
            .layer(GovernanceLayer::builder().rbac(layer).build());
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut().insert(Principal::new(user, "test"));
        req.extensions_mut()
            .insert(Tenant::new(TenantNamespace::parse("tenant-a").unwrap()));
        app.oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_stack_takes_bare_http_routes() {
        let l = RbacLayer::new(Authorizer::new(&policy()), routes());
        let stats = l.stats();
        let call = |user| through_the_stack(l.clone(), Method::GET, "/v1/accounts", user);
        assert_eq!(call("alice").await, StatusCode::OK);
        assert_eq!(call("bob").await, StatusCode::FORBIDDEN);
        // The stack keeps the layer's counters.
        assert_eq!((stats.allowed(), stats.denied()), (1, 1));
    }

    #[tokio::test]
    async fn the_stack_takes_bare_grpc_methods() {
        let methods = GrpcMethods::new().method("/ledger.v1.Ledger/List", "list", "accounts");
        let l = RbacLayer::new(Authorizer::new(&policy()), methods);
        let call = |method, uri, user| through_the_stack(l.clone(), method, uri, user);
        assert_eq!(
            call(Method::POST, "/ledger.v1.Ledger/List", "alice").await,
            StatusCode::OK
        );
        assert_eq!(
            call(Method::POST, "/ledger.v1.Ledger/List", "bob").await,
            StatusCode::FORBIDDEN
        );
        // No HTTP routes: an HTTP request is unmapped.
        assert_eq!(
            call(Method::GET, "/v1/accounts", "alice").await,
            StatusCode::FORBIDDEN
        );
    }

    #[tokio::test]
    async fn the_stack_takes_a_closure_over_the_request_head() {
        let admin = |req: &Request<()>| {
            req.uri()
                .path()
                .starts_with("/admin/")
                .then(|| Action::resource("list", "accounts"))
        };
        let l = RbacLayer::new(Authorizer::new(&policy()), admin);
        let stats = l.stats();
        let call = |uri, user| through_the_stack(l.clone(), Method::GET, uri, user);
        assert_eq!(call("/admin/accounts", "alice").await, StatusCode::OK);
        assert_eq!(call("/admin/accounts", "bob").await, StatusCode::FORBIDDEN);
        assert_eq!(call("/v1/accounts", "alice").await, StatusCode::FORBIDDEN);
        assert_eq!(
            (stats.allowed(), stats.denied(), stats.unmapped()),
            (1, 1, 1)
        );
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
        check::<RbacLayer<SharedMapper>>();
    }
}
