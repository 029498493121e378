//! [`TenantService`]: the service [`TenantLayer`] wraps around yours.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::{TenantLayer, TenantRegistry};
use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::labels::RequestLabels;

/// Admits requests for known, active tenants; built by [`TenantLayer`].
///
/// Named `TenantService` rather than `Tenant` because
/// [`Tenant`](super::Tenant) is what it admits.
pub struct TenantService<S, R> {
    inner: S,
    // The layer's configuration, behind one `Arc`: cloning the service
    // (axum does, per request) is one reference-count increment.
    // `None`: switched off inside a `GovernanceLayer` without tenants.
    config: Option<Arc<TenantLayer<R>>>,
}

impl<S, R> TenantService<S, R> {
    pub(super) fn from_layer(inner: S, layer: TenantLayer<R>) -> Self {
        Self {
            inner,
            config: Some(Arc::new(layer)),
        }
    }

    /// Passes every request through unchecked: the slot of an absent
    /// tenant layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Self {
            inner,
            config: None,
        }
    }
}

crate::macros::inner_accessors!([S, R] TenantService<S, R>, inner: S);

impl<S: Clone, R> Clone for TenantService<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for TenantService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, R, ReqB, ResB> Service<Request<ReqB>> for TenantService<S, R>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    R: TenantRegistry,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let Some(config) = &self.config else {
            return ResponseFuture::inner(self.inner.call(req));
        };
        match config.resolve_request(&req) {
            Ok(tenant) => {
                if let Some(labels) = req.extensions().get::<RequestLabels>() {
                    labels.set_tenant(tenant.namespace);
                }
                req.extensions_mut().insert(tenant);
                // The decision is synchronous, so the service polled ready
                // is the one called: no clone needed.
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(rejection) => ResponseFuture::rejected(rejection.to_rejection().respond(&req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{HeaderName, HeaderValue};
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::principal::Principal;
    use crate::tenant::{
        InvalidNamespace, StaticTenants, Tenant, TenantNamespace, TenantRejection, TenantStatus,
    };

    fn ns(s: &str) -> TenantNamespace {
        TenantNamespace::parse(s).unwrap()
    }

    fn registry() -> Arc<StaticTenants> {
        Arc::new(StaticTenants::from_iter([
            Tenant::new(ns("tenant-a")).with_display_name("Tenant A"),
            Tenant::new(ns("tenant-b")),
            Tenant::new(ns("tenant-s")).with_status(TenantStatus::Suspended),
            Tenant::new(ns("a")),
            Tenant::new(ns("0")),
            Tenant::new(ns("9lives")),
            Tenant::new(ns("0-0")),
            Tenant::new(ns(&"z".repeat(63))),
        ]))
    }

    /// A handler that answers with the namespace of the `Tenant` it sees.
    async fn handler(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
        let seen = req
            .extensions()
            .get::<Tenant>()
            .map(|t| t.namespace.to_string())
            .unwrap_or_default();
        Ok(Response::new(Full::new(Bytes::from(seen))))
    }

    fn request(values: &[&[u8]], principal: Option<Principal>) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::default());
        for v in values {
            req.headers_mut().append(
                DEFAULT_HEADER_FOR_TESTS,
                HeaderValue::from_bytes(v).expect("a header value http accepts"),
            );
        }
        if let Some(p) = principal {
            req.extensions_mut().insert(p);
        }
        req
    }

    const DEFAULT_HEADER_FOR_TESTS: HeaderName = crate::tenant::DEFAULT_TENANT_HEADER;

    async fn code_of(
        layer: TenantLayer<Arc<StaticTenants>>,
        req: Request<Full<Bytes>>,
    ) -> (u16, String) {
        let res = ServiceBuilder::new()
            .layer(layer)
            .service_fn(handler)
            .oneshot(req)
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        if status == 200 {
            return (200, String::from_utf8(body.to_vec()).unwrap());
        }
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (status, problem["code"].as_str().unwrap().to_owned())
    }

    /// Every value here must be refused as `tenant.malformed`, by the
    /// parser and by the layer.
    #[tokio::test]
    async fn malformed_values_are_refused_with_400() {
        let long64 = "a".repeat(64);
        let long_many = "a".repeat(1000);
        let cases: &[(&str, &[u8])] = &[
            ("empty", b""),
            ("uppercase first", b"Tenant-a"),
            ("all uppercase", b"TENANT-A"),
            ("uppercase last", b"tenant-A"),
            ("64 characters", long64.as_bytes()),
            ("1000 characters", long_many.as_bytes()),
            ("leading hyphen", b"-tenant"),
            ("trailing hyphen", b"tenant-"),
            ("only a hyphen", b"-"),
            ("underscore", b"tenant_a"),
            ("dot", b"tenant.a"),
            ("inner space", b"tenant a"),
            ("leading space", b" tenant-a"),
            ("trailing space", b"tenant-a "),
            ("tab", b"\ttenant-a"),
            ("non-ASCII UTF-8", "ténant".as_bytes()),
            ("fullwidth letter", "ｔenant".as_bytes()),
            ("zero-width space", "tenant\u{200b}a".as_bytes()),
            ("raw obs-text byte", b"tenant\xff"),
            ("percent-encoded hyphen", b"tenant%2Da"),
            ("percent-encoded letter", b"%74enant"),
            ("comma-joined list", b"tenant-a,tenant-b"),
            ("slash", b"tenant/a"),
            ("colon", b"tenant:a"),
            ("quoted", b"\"tenant-a\""),
            ("wildcard", b"*"),
        ];
        assert!(cases.len() >= 15);
        for (why, value) in cases {
            assert!(
                TenantNamespace::from_bytes(value).is_err(),
                "{why}: parser accepted {value:?}"
            );
            let layer = TenantLayer::new(registry());
            let req = request(&[value], None);
            assert!(
                matches!(
                    layer.resolve_request(&req),
                    Err(TenantRejection::Malformed(_))
                ),
                "{why}"
            );
            assert_eq!(
                code_of(layer, req).await,
                (400, "tenant.malformed".to_owned()),
                "{why}: {value:?}"
            );
        }
    }

    #[tokio::test]
    async fn several_header_values_are_malformed_even_when_equal() {
        for values in [
            &[b"tenant-a".as_slice(), b"tenant-b"][..],
            &[b"tenant-a", b"tenant-a"],
            &[b"tenant-a", b""],
        ] {
            let layer = TenantLayer::new(registry());
            let req = request(values, None);
            assert_eq!(
                layer.resolve_request(&req),
                Err(TenantRejection::MultipleValues)
            );
            assert_eq!(
                code_of(layer, req).await,
                (400, "tenant.malformed".to_owned())
            );
        }
    }

    #[tokio::test]
    async fn valid_edge_cases_are_admitted() {
        let max = "z".repeat(63);
        for value in ["a", "0", "9lives", "0-0", max.as_str(), "tenant-a"] {
            assert_eq!(TenantNamespace::parse(value).unwrap().as_str(), value);
            let got = code_of(
                TenantLayer::new(registry()),
                request(&[value.as_bytes()], None),
            )
            .await;
            assert_eq!(got, (200, value.to_owned()), "{value}");
        }
    }

    #[tokio::test]
    async fn registry_and_principal_decisions() {
        let principal = |t: Option<&str>| {
            let p = Principal::new("alice", "https://issuer.test");
            Some(match t {
                Some(t) => p.with_tenant(ns(t)),
                None => p,
            })
        };
        type Case = (
            &'static str,
            &'static [&'static [u8]],
            Option<Principal>,
            u16,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("no header, no principal", &[], None, 400, "tenant.missing"),
            (
                "no header, principal without tenant",
                &[],
                principal(None),
                400,
                "tenant.missing",
            ),
            ("unknown", &[b"tenant-z"], None, 403, "tenant.unknown"),
            ("suspended", &[b"tenant-s"], None, 403, "tenant.suspended"),
            (
                "header and claim differ",
                &[b"tenant-a"],
                principal(Some("tenant-b")),
                403,
                "tenant.mismatch",
            ),
            // Checked before the registry: no oracle for other tenants.
            (
                "unknown header, other claim",
                &[b"tenant-z"],
                principal(Some("tenant-a")),
                403,
                "tenant.mismatch",
            ),
            (
                "suspended header, other claim",
                &[b"tenant-s"],
                principal(Some("tenant-a")),
                403,
                "tenant.mismatch",
            ),
            // The caller's own suspended tenant is refused as suspended,
            // whatever tenant the header names.
            (
                "claim suspended, header names another",
                &[b"tenant-a"],
                principal(Some("tenant-s")),
                403,
                "tenant.suspended",
            ),
            (
                "claim suspended, no header",
                &[],
                principal(Some("tenant-s")),
                403,
                "tenant.suspended",
            ),
            // A malformed header is malformed whatever the token says.
            (
                "malformed header, claim",
                &[b"Tenant-A"],
                principal(Some("tenant-a")),
                400,
                "tenant.malformed",
            ),
            (
                "header and claim agree",
                &[b"tenant-a"],
                principal(Some("tenant-a")),
                200,
                "tenant-a",
            ),
            (
                "header, principal without tenant",
                &[b"tenant-b"],
                principal(None),
                200,
                "tenant-b",
            ),
            (
                "claim only",
                &[],
                principal(Some("tenant-b")),
                200,
                "tenant-b",
            ),
            (
                "claim only, unknown",
                &[],
                principal(Some("tenant-z")),
                403,
                "tenant.unknown",
            ),
            (
                "claim only, suspended",
                &[],
                principal(Some("tenant-s")),
                403,
                "tenant.suspended",
            ),
        ];
        for (why, values, p, status, code) in cases {
            let got = code_of(TenantLayer::new(registry()), request(values, p)).await;
            assert_eq!(got, (status, code.to_owned()), "{why}");
        }
    }

    #[tokio::test]
    async fn principal_fallback_can_be_turned_off() {
        let p = Principal::new("alice", "iss").with_tenant(ns("tenant-a"));
        let layer = TenantLayer::new(registry()).principal_fallback(false);
        assert_eq!(
            code_of(layer.clone(), request(&[], Some(p.clone()))).await,
            (400, "tenant.missing".to_owned())
        );
        // The cross-check still applies.
        assert_eq!(
            code_of(layer.clone(), request(&[b"tenant-b"], Some(p.clone()))).await,
            (403, "tenant.mismatch".to_owned())
        );
        assert_eq!(
            code_of(layer, request(&[b"tenant-a"], Some(p))).await,
            (200, "tenant-a".to_owned())
        );
    }

    #[tokio::test]
    async fn header_name_is_configurable() {
        let layer = TenantLayer::new(registry()).header_name(HeaderName::from_static("x-org"));
        let mut req = Request::new(Full::default());
        req.headers_mut()
            .insert("x-org", HeaderValue::from_static("tenant-b"));
        assert_eq!(
            code_of(layer.clone(), req).await,
            (200, "tenant-b".to_owned())
        );
        // The default header is not read any more.
        assert_eq!(
            code_of(layer, request(&[b"tenant-b"], None)).await,
            (400, "tenant.missing".to_owned())
        );
    }

    #[tokio::test]
    async fn admitted_tenant_is_labelled_and_inserted_whole() {
        let labels = RequestLabels::new();
        let mut req = request(&[b"tenant-a"], None);
        req.extensions_mut().insert(labels.clone());
        let svc = ServiceBuilder::new()
            .layer(TenantLayer::new(registry()))
            .service_fn(|req: Request<Full<Bytes>>| async move {
                let tenant = req.extensions().get::<Tenant>().unwrap().clone();
                let mut res = Response::new(Full::<Bytes>::default());
                res.extensions_mut().insert(tenant);
                Ok::<_, Infallible>(res)
            });
        let res = svc.oneshot(req).await.unwrap();
        let tenant = res.extensions().get::<Tenant>().unwrap();
        assert_eq!(tenant.display_name.as_deref(), Some("Tenant A"));
        assert_eq!(labels.snapshot().tenant, Some(ns("tenant-a")));
    }

    #[tokio::test]
    async fn rejection_is_recorded_in_labels_and_tenant_is_not() {
        let labels = RequestLabels::new();
        let mut req = request(&[b"tenant-s"], None);
        req.extensions_mut().insert(labels.clone());
        let (status, _) = code_of(TenantLayer::new(registry()), req).await;
        assert_eq!(status, 403);
        let snapshot = labels.snapshot();
        assert_eq!(snapshot.tenant, None);
        assert_eq!(snapshot.rejection.unwrap().code, "tenant.suspended");
    }

    #[tokio::test]
    async fn grpc_requests_get_grpc_statuses() {
        let svc = ServiceBuilder::new()
            .layer(TenantLayer::new(registry()))
            .service(service_fn(handler));
        for (value, grpc) in [(&b"tenant-z"[..], "7"), (b"TENANT", "3")] {
            let mut req = request(&[value], None);
            req.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            let res = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["grpc-status"], grpc);
        }
    }

    #[test]
    fn details_never_echo_malformed_values_or_other_tenants() {
        let layer = TenantLayer::new(registry());
        let evil = request(&[b"<script>%0d%0a"], None);
        let detail = layer.resolve_request(&evil).unwrap_err().detail();
        assert!(!detail.contains("script"), "{detail}");
        let p = Principal::new("alice", "iss").with_tenant(ns("tenant-b"));
        let detail = layer
            .resolve_request(&request(&[b"tenant-a"], Some(p)))
            .unwrap_err()
            .detail();
        assert!(!detail.contains("tenant-b"), "{detail}");
        assert!(!detail.contains("tenant-a"), "{detail}");
        assert_eq!(
            TenantRejection::Malformed(InvalidNamespace::Empty)
                .code()
                .as_str(),
            "tenant.malformed"
        );
    }

    #[test]
    fn service_and_layer_are_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<TenantLayer<StaticTenants>>();
        check::<TenantService<tower::util::BoxCloneSyncService<(), (), ()>, StaticTenants>>();
    }
}
