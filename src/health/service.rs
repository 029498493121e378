//! [`Health<S>`]: answers probes itself, passes everything else through.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use http::{Method, Request, Response};
use tower_service::Service;

use super::body::{Answer, HealthBody};
use super::future::ResponseFuture;
use super::layer::ProbeConfig;
use super::probe::{ProbeQuery, render_report, render_single, text_response};
use crate::macros::inner_accessors;

/// The service built by [`HealthLayer`](super::HealthLayer).
///
/// `GET` and `HEAD` on a probe path are answered here and never reach the
/// inner service; with feature `grpc`, so is every call under
/// `/grpc.health.v1.Health/`. Every other request (other paths, other
/// methods) goes to the inner service untouched.
///
/// With feature `grpc` the request body must be an
/// `http_body::Body<Data = Bytes>` (the gRPC answer decodes it); without
/// it, any request body will do.
#[derive(Clone, Debug)]
pub struct Health<S> {
    inner: S,
    // `None`: switched off inside a `GovernanceLayer` without health.
    config: Option<Arc<ProbeConfig>>,
}

impl<S> Health<S> {
    pub(crate) fn new(inner: S, config: Arc<ProbeConfig>) -> Self {
        Health {
            inner,
            config: Some(config),
        }
    }

    /// Passes every request through, probes included: the slot of an
    /// absent health layer in a `GovernanceLayer`.
    pub(crate) fn pass_through(inner: S) -> Self {
        Health {
            inner,
            config: None,
        }
    }

    /// The probe answer for `req`, or `None` when it is not a probe.
    fn probe<ReqB>(&self, req: &Request<ReqB>) -> Option<BoxFuture<'static, Response<Answer>>> {
        let config = self.config.as_ref()?;
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return None,
        };
        let (index, check) = route(config, req.uri().path())?;
        let check = check.map(str::to_owned);
        let query = ProbeQuery::parse(req.uri().query());
        let config = Arc::clone(config);
        Some(
            async move {
                let endpoint = &config.endpoints[index];
                let registry = &config.registry;
                let (status, body) = match check {
                    Some(check) => {
                        let status = registry.check(endpoint.kind, &check).await;
                        render_single(&check, status.as_ref())
                    }
                    None => {
                        let exclude: Vec<&str> = query.exclude.iter().map(String::as_str).collect();
                        let report = registry.evaluate(endpoint.kind, &exclude).await;
                        render_report(&report, &endpoint.name, query.verbose)
                    }
                };
                text_response(status, body, head).map(Answer::text)
            }
            .boxed(),
        )
    }
}

inner_accessors!([S] Health<S>, inner: S);

/// Which endpoint a path names, and the check for `/<endpoint>/<check>`.
fn route<'a>(config: &ProbeConfig, path: &'a str) -> Option<(usize, Option<&'a str>)> {
    config.endpoints.iter().enumerate().find_map(|(i, ep)| {
        let rest = path.strip_prefix(ep.path.as_str())?;
        if rest.is_empty() {
            Some((i, None))
        } else {
            rest.strip_prefix('/').map(|check| (i, Some(check)))
        }
    })
}

// The same bounds as with `grpc`, so that turning the feature on
// anywhere in a dependency graph cannot break a `HealthLayer` that built
// without it (cargo features are additive).
#[cfg(not(feature = "grpc"))]
impl<S, ReqB, ResB> Service<Request<ReqB>> for Health<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ReqB::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = Response<HealthBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.probe(&req) {
            Some(answer) => ResponseFuture::answer(answer),
            None => ResponseFuture::inner(self.inner.call(req)),
        }
    }
}

// The same service, plus `grpc.health.v1`: the gRPC answer decodes the
// request body, hence the bounds on it.
#[cfg(feature = "grpc")]
impl<S, ReqB, ResB> Service<Request<ReqB>> for Health<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ReqB::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = Response<HealthBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if let Some(config) = &self.config
            && config.serve_grpc
            && req.uri().path().starts_with(super::grpc::PATH_PREFIX)
        {
            // Security: answered before any authenticating layer, like the
            // HTTP probes: kubelet and load-balancer gRPC probes carry no token.
            let answer = config
                .grpc
                .answer(req)
                .map(|res| res.map(|body| Answer::Grpc(Some(body))));
            return ResponseFuture::answer(answer.boxed());
        }
        match self.probe(&req) {
            Some(answer) => ResponseFuture::answer(answer),
            None => ResponseFuture::inner(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::super::{HealthLayer, HealthRegistry};
    use super::*;

    async fn call<S>(svc: S, method: Method, uri: &str) -> (u16, String)
    where
        S: Service<
                Request<Full<Bytes>>,
                Response = Response<HealthBody<Full<Bytes>>>,
                Error = Infallible,
            >,
    {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::default())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn probes_are_answered_and_the_rest_passes_through() {
        let registry = HealthRegistry::new();
        registry
            .add_readiness_check("db", Duration::from_secs(1), || async {
                Err("down".into())
            })
            .unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        let svc = ServiceBuilder::new()
            .layer(HealthLayer::new(registry).livez_path("/live"))
            .service(service_fn(move |req: Request<Full<Bytes>>| {
                h.fetch_add(1, Ordering::SeqCst);
                let body = format!("inner {}", req.uri().path());
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
            }));

        let table: &[(Method, &str, u16, &str)] = &[
            (Method::GET, "/live", 200, "ok"),
            (Method::GET, "/live/ping", 200, "ok"),
            (Method::GET, "/live/nope", 404, "404 page not found\n"),
            (
                Method::GET,
                "/readyz/db",
                503,
                "[-]db failed: reason withheld\n",
            ),
            (Method::GET, "/readyz?exclude=db", 200, "ok"),
            (Method::HEAD, "/healthz", 200, ""),
            // Not probes: the inner service answers.
            (Method::GET, "/livez", 200, "inner /livez"),
            (Method::GET, "/lively", 200, "inner /lively"),
            (Method::POST, "/readyz", 200, "inner /readyz"),
            (Method::GET, "/orders", 200, "inner /orders"),
        ];
        for (method, uri, status, body) in table {
            let got = call(svc.clone(), method.clone(), uri).await;
            assert_eq!(got, (*status, (*body).to_owned()), "{method} {uri}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }
}
