//! HealthLayer — HTTP probes and grpc.health.v1 from one registry — over
//! real HTTP/1.1 and gRPC clients, against real axum, tonic and hyper
//! servers on loopback.

#![cfg(all(feature = "health", feature = "grpc"))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use finmesh::health::grpc::pb::health_check_response::ServingStatus;
use finmesh::health::grpc::pb::{HealthCheckRequest, HealthListRequest, HealthListResponse};
use finmesh::health::{GrpcHealthService, HealthLayer, HealthRegistry};
use http::Method;
use http_body_util::Full;
use support::HttpAnswer;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

const T: Duration = Duration::from_secs(2);

/// The echo app behind `HealthLayer`, which alone answers the probes and
/// grpc.health.v1, with a counter of every request that reaches a route
/// (handler or fallback).
fn app(registry: &HealthRegistry) -> (axum::Router, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let grpc = tonic::service::Routes::new(support::EchoServer::new(support::EchoService));
    let router = support::http_routes()
        .merge(grpc.into_axum_router())
        // An app route on a probe path must not shadow the probe.
        .route("/readyz", axum::routing::any(|| async { "app readyz" }))
        .layer(tower::util::MapRequestLayer::new(
            move |req: axum::extract::Request| {
                counter.fetch_add(1, Ordering::SeqCst);
                req
            },
        ))
        .layer(HealthLayer::new(registry.clone()));
    (router, hits)
}

async fn serve(registry: &HealthRegistry) -> (support::TestServer, Arc<AtomicUsize>) {
    let (router, hits) = app(registry);
    (support::spawn(router).await, hits)
}

async fn request(server: &support::TestServer, method: Method, path: &str) -> HttpAnswer {
    let req = http::Request::builder()
        .method(method)
        .uri(server.url(path))
        .body(Full::<Bytes>::default())
        .unwrap();
    support::send(req).await
}

async fn get(server: &support::TestServer, path: &str) -> HttpAnswer {
    request(server, Method::GET, path).await
}

fn body(a: &HttpAnswer) -> &str {
    std::str::from_utf8(&a.body).unwrap()
}

fn assert_probe_headers(a: &HttpAnswer) {
    assert_eq!(a.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(a.header("x-content-type-options"), "nosniff");
    assert_eq!(a.header("cache-control"), "no-store");
}

fn failing(registry: &HealthRegistry, name: &str) {
    registry
        .add_readiness_check(name, T, || async {
            Err("connect to postgres://svc:hunter2@db failed".to_owned())
        })
        .unwrap();
}

fn passing(registry: &HealthRegistry, name: &str) {
    registry
        .add_readiness_check(name, T, || async { Ok(()) })
        .unwrap();
}

async fn grpc_client(server: &support::TestServer) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connect");
    HealthClient::new(channel)
}

fn check_request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn healthy_probes_answer_ok_with_the_kubernetes_headers() {
    let registry = HealthRegistry::new();
    passing(&registry, "db");
    let (server, _) = serve(&registry).await;
    for path in ["/livez", "/readyz", "/healthz"] {
        let a = get(&server, path).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(body(&a), "ok", "{path}");
        assert_probe_headers(&a);
    }
}

#[tokio::test]
async fn verbose_lists_each_check_and_ends_with_the_verdict() {
    let registry = HealthRegistry::new();
    passing(&registry, "db");
    registry
        .add_liveness_check("event-loop", T, || async { Ok(()) })
        .unwrap();
    let (server, _) = serve(&registry).await;

    let a = get(&server, "/readyz?verbose").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        body(&a),
        "[+]ping ok\n[+]db ok\n[+]shutdown ok\nreadyz check passed\n"
    );
    let a = get(&server, "/livez?verbose=true").await;
    assert_eq!(
        body(&a),
        "[+]ping ok\n[+]event-loop ok\nlivez check passed\n"
    );
    let a = get(&server, "/healthz?verbose").await;
    assert_eq!(
        body(&a),
        "[+]ping ok\n[+]event-loop ok\nhealthz check passed\n"
    );
}

#[tokio::test]
async fn failure_is_503_always_verbose_and_withholds_the_reason() {
    let registry = HealthRegistry::new();
    passing(&registry, "cache");
    failing(&registry, "db");
    let (server, _) = serve(&registry).await;

    let a = get(&server, "/readyz").await;
    assert_eq!(a.status, 503);
    assert_probe_headers(&a);
    assert_eq!(
        body(&a),
        "[+]ping ok\n[+]cache ok\n[-]db failed: reason withheld\n[+]shutdown ok\nreadyz check failed\n"
    );
    assert!(!body(&a).contains("hunter2"));
    // Liveness does not include readiness checks.
    assert_eq!(get(&server, "/livez").await.status, 200);
}

#[tokio::test]
async fn exclude_skips_checks_and_an_unknown_name_only_warns() {
    let registry = HealthRegistry::new();
    passing(&registry, "cache");
    failing(&registry, "db");
    let (server, _) = serve(&registry).await;

    let a = get(&server, "/readyz?exclude=db").await;
    assert_eq!((a.status.as_u16(), body(&a)), (200, "ok"));

    let a = get(&server, "/readyz?verbose&exclude=db&exclude=cache").await;
    assert_eq!(a.status, 200);
    assert_eq!(
        body(&a),
        "[+]ping ok\n[+]cache excluded: ok\n[+]db excluded: ok\n[+]shutdown ok\nreadyz check passed\n"
    );

    // An unknown name does not fail the probe and is reported in the listing.
    let a = get(&server, "/readyz?exclude=db&exclude=nope").await;
    assert_eq!((a.status.as_u16(), body(&a)), (200, "ok"));
    let a = get(&server, "/readyz?verbose&exclude=db&exclude=nope").await;
    assert_eq!(
        body(&a),
        "[+]ping ok\n[+]cache ok\n[+]db excluded: ok\n[+]shutdown ok\n\
         warn: some health checks cannot be excluded: no matches for \"nope\"\n\
         readyz check passed\n"
    );
    // Failing and excluding an unknown name: verbose, warning, still 503.
    let a = get(&server, "/readyz?exclude=nope").await;
    assert_eq!(a.status, 503);
    assert!(body(&a).contains("[-]db failed: reason withheld\n"));
    assert!(body(&a).contains("no matches for \"nope\"\n"));
}

#[tokio::test]
async fn per_check_paths_answer_one_check_and_404_an_unknown_one() {
    let registry = HealthRegistry::new();
    passing(&registry, "cache");
    failing(&registry, "db");
    let (server, _) = serve(&registry).await;

    let cases = [
        ("/readyz/cache", 200, "ok"),
        ("/readyz/db", 503, "[-]db failed: reason withheld\n"),
        ("/readyz/shutdown", 200, "ok"),
        ("/livez/ping", 200, "ok"),
        ("/healthz/ping", 200, "ok"),
        ("/livez/db", 404, "404 page not found\n"),
        ("/readyz/nope", 404, "404 page not found\n"),
    ];
    for (path, status, text) in cases {
        let a = get(&server, path).await;
        assert_eq!((a.status.as_u16(), body(&a)), (status, text), "{path}");
        assert_probe_headers(&a);
    }
}

#[tokio::test]
async fn head_answers_with_status_and_headers_but_no_body() {
    let registry = HealthRegistry::new();
    failing(&registry, "db");
    let (server, _) = serve(&registry).await;

    let a = request(&server, Method::HEAD, "/livez").await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    assert_eq!(a.header("content-length"), "2");
    assert_probe_headers(&a);

    let a = request(&server, Method::HEAD, "/readyz").await;
    assert_eq!(a.status, 503);
    assert!(a.body.is_empty());
    assert_probe_headers(&a);
}

#[tokio::test]
async fn probes_never_reach_the_inner_service_and_other_requests_pass_untouched() {
    let registry = HealthRegistry::new();
    failing(&registry, "db");
    let (server, hits) = serve(&registry).await;

    for path in [
        "/livez",
        "/readyz",
        "/healthz",
        "/readyz?verbose",
        "/readyz/db",
        "/livez/nope",
    ] {
        get(&server, path).await;
        request(&server, Method::HEAD, path).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a probe reached the app");

    let a = get(&server, "/echo").await;
    assert_eq!(a.json()["path"], "/echo");
    // Only GET and HEAD are probes: the app's own /readyz route answers POST.
    let a = request(&server, Method::POST, "/readyz").await;
    assert_eq!((a.status.as_u16(), body(&a)), (200, "app readyz"));
    // A path that merely starts like a probe is the app's (tonic's fallback).
    let a = get(&server, "/livezzz").await;
    assert_ne!(a.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn custom_paths_replace_the_defaults() {
    let registry = HealthRegistry::new();
    let router = support::echo_app().layer(
        HealthLayer::new(registry.clone())
            .livez_path("/health/live")
            .readyz_path("/health/ready"),
    );
    let server = support::spawn(router).await;
    let a = get(&server, "/health/ready?verbose").await;
    assert_eq!(body(&a), "[+]ping ok\n[+]shutdown ok\nready check passed\n");
    assert_eq!(body(&get(&server, "/health/live/ping").await), "ok");
    // The default path is now the app's (here: tonic's fallback).
    let a = get(&server, "/livez").await;
    assert_ne!(a.header("content-type"), "text/plain; charset=utf-8");
    assert_ne!(body(&a), "ok");
}

#[tokio::test]
async fn hanging_check_fails_within_its_timeout_while_liveness_stays_200() {
    let registry = HealthRegistry::new();
    registry
        .add_readiness_check("stuck", Duration::from_millis(300), || {
            std::future::pending::<Result<(), String>>()
        })
        .unwrap();
    registry
        .add_readiness_check("slow-but-fine", Duration::from_secs(5), || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        })
        .unwrap();
    let (server, _) = serve(&registry).await;

    let started = Instant::now();
    let a = get(&server, "/readyz").await;
    let took = started.elapsed();
    assert_eq!(a.status, 503);
    assert!(body(&a).contains("[-]stuck failed: reason withheld\n"));
    assert!(body(&a).contains("[+]slow-but-fine ok\n"));
    assert!(
        took >= Duration::from_millis(300),
        "answered before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "probe hung: {took:?}");

    let a = get(&server, "/livez").await;
    assert_eq!((a.status.as_u16(), body(&a)), (200, "ok"));
}

fn counted_slow_check(registry: &HealthRegistry, runs: &Arc<AtomicUsize>) {
    let runs = Arc::clone(runs);
    registry
        .add_readiness_check("db", Duration::from_secs(5), move || {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Long enough for every concurrent probe to arrive mid-run.
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(())
            }
        })
        .unwrap();
}

#[tokio::test]
async fn concurrent_probes_share_one_run_of_each_check() {
    // No cache: only the single flight can make the probes share a run.
    let registry = HealthRegistry::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let (open, gate) = tokio::sync::watch::channel(false);
    let r = Arc::clone(&runs);
    registry
        .add_readiness_check("db", Duration::from_secs(30), move || {
            let runs = Arc::clone(&r);
            let mut gate = gate.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // The run stays in flight until every probe has arrived.
                let _ = gate.wait_for(|open| *open).await;
                Ok(())
            }
        })
        .unwrap();
    // Count the probes entering the server, outside the health layer.
    let entered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&entered);
    let (router, _) = app(&registry);
    let router = router.layer(tower::util::MapRequestLayer::new(
        move |req: axum::extract::Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            req
        },
    ));
    let server = support::spawn(router).await;

    const PROBES: usize = 16;
    let probes: Vec<_> = (0..PROBES)
        .map(|_| {
            let url = server.url("/readyz");
            tokio::spawn(async move { support::get(&url, &[]).await })
        })
        .collect();
    while entered.load(Ordering::SeqCst) < PROBES {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the last probe's future join the run before releasing it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    open.send(true).unwrap();
    for probe in probes {
        let a = probe.await.unwrap();
        assert_eq!((a.status.as_u16(), body(&a)), (200, "ok"));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "{PROBES} concurrent probes, one run"
    );

    // Without a cache interval, the next probe runs the check again.
    assert_eq!(get(&server, "/readyz").await.status, 200);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn cached_results_are_shared_by_later_probes() {
    let registry = HealthRegistry::with_cache_interval(Duration::from_secs(60));
    let runs = Arc::new(AtomicUsize::new(0));
    counted_slow_check(&registry, &runs);
    let (server, _) = serve(&registry).await;
    let url = server.url("/readyz");

    let probes: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { support::get(&url, &[]).await })
        })
        .collect();
    for probe in probes {
        assert_eq!(probe.await.unwrap().status, 200);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for _ in 0..5 {
        assert_eq!(get(&server, "/readyz").await.status, 200);
        assert_eq!(get(&server, "/readyz/db").await.status, 200);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the cached result was not reused"
    );
}

#[tokio::test]
async fn drain_fails_readiness_at_once_keeps_liveness_and_tells_watchers() {
    let registry = HealthRegistry::new();
    registry.set_serving("finmesh.test.v1.Echo", true);
    let (router, _) = app(&registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sigterm, trigger) = tokio::sync::oneshot::channel::<()>();
    let drain = Duration::from_secs(3);
    let shutdown = registry.graceful_shutdown_on(trigger, drain);
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .unwrap();
    });
    let url = |p: &str| format!("http://{addr}{p}");

    assert_eq!(support::get(&url("/readyz"), &[]).await.status, 200);
    let channel = Channel::from_shared(url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let mut whole = client.watch(check_request("")).await.unwrap().into_inner();
    let mut echo = client
        .watch(check_request("finmesh.test.v1.Echo"))
        .await
        .unwrap()
        .into_inner();
    let status = |m: Option<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>| {
        m.expect("stream ended").expect("stream failed").status()
    };
    assert_eq!(status(whole.next().await), ServingStatus::Serving);
    assert_eq!(status(echo.next().await), ServingStatus::Serving);

    let draining = Instant::now();
    sigterm.send(()).unwrap();
    // Watchers are told as soon as the shutdown begins…
    assert_eq!(status(whole.next().await), ServingStatus::NotServing);
    assert_eq!(status(echo.next().await), ServingStatus::NotServing);
    // …readiness fails at once, liveness passes, and the server still serves
    // through the drain delay.
    let a = support::get(&url("/readyz?verbose"), &[]).await;
    assert_eq!(a.status, 503);
    assert!(
        std::str::from_utf8(&a.body)
            .unwrap()
            .contains("[-]shutdown failed: reason withheld\n")
    );
    assert_eq!(support::get(&url("/livez"), &[]).await.status, 200);
    assert_eq!(support::get(&url("/echo"), &[]).await.status, 200);
    let check = client.check(check_request("")).await.unwrap().into_inner();
    assert_eq!(check.status(), ServingStatus::NotServing);
    // Setting a service serving again cannot undo the drain.
    registry.set_serving("finmesh.test.v1.Echo", true);
    let check = client
        .check(check_request("finmesh.test.v1.Echo"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.status(), ServingStatus::NotServing);
    assert!(
        draining.elapsed() < drain,
        "drain checks took longer than the drain delay"
    );

    // The server stops once the drain delay is over and clients let go.
    drop((whole, echo, client));
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server did not stop after the drain delay")
        .unwrap();
    assert!(draining.elapsed() >= drain);
}

#[tokio::test]
async fn grpc_check_answers_serving_not_serving_and_not_found() {
    let registry = HealthRegistry::new();
    registry.set_serving("finmesh.test.v1.Echo", true);
    registry.set_serving("finmesh.test.v1.Ledger", false);
    let (server, hits) = serve(&registry).await;
    let mut client = grpc_client(&server).await;

    let status =
        |r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status();
    assert_eq!(
        status(client.check(check_request("")).await.unwrap()),
        ServingStatus::Serving
    );
    assert_eq!(
        status(
            client
                .check(check_request("finmesh.test.v1.Echo"))
                .await
                .unwrap()
        ),
        ServingStatus::Serving
    );
    assert_eq!(
        status(
            client
                .check(check_request("finmesh.test.v1.Ledger"))
                .await
                .unwrap()
        ),
        ServingStatus::NotServing
    );
    let err = client
        .check(check_request("nope.v1.Nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The whole server follows readiness.
    let ready = Arc::new(AtomicBool::new(true));
    let r = Arc::clone(&ready);
    registry
        .add_readiness_check("db", T, move || {
            let ok = r.load(Ordering::SeqCst);
            async move { if ok { Ok(()) } else { Err("down".to_owned()) } }
        })
        .unwrap();
    ready.store(false, Ordering::SeqCst);
    assert_eq!(
        status(client.check(check_request("")).await.unwrap()),
        ServingStatus::NotServing
    );
    // HealthLayer answered every call; none reached the app's routes.
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn grpc_watch_sends_the_current_status_then_a_change() {
    let registry = HealthRegistry::new();
    registry.set_serving("finmesh.test.v1.Echo", true);
    let (server, _) = serve(&registry).await;
    let mut client = grpc_client(&server).await;

    let mut stream = client
        .watch(check_request("finmesh.test.v1.Echo"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    registry.set_serving("finmesh.test.v1.Echo", false);
    let change = stream.next().await.unwrap().unwrap();
    assert_eq!(change.status(), ServingStatus::NotServing);
    registry.set_serving("finmesh.test.v1.Echo", true);
    let change = stream.next().await.unwrap().unwrap();
    assert_eq!(change.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn grpc_watch_on_an_unknown_service_streams_service_unknown_and_stays_open() {
    let registry = HealthRegistry::new();
    let (server, _) = serve(&registry).await;
    let mut client = grpc_client(&server).await;

    let mut stream = client
        .watch(check_request("finmesh.test.v1.Later"))
        .await
        .expect("Watch on an unknown service must not fail")
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::ServiceUnknown);
    // The stream is still open: when the service becomes known, it follows.
    registry.set_serving("finmesh.test.v1.Later", true);
    let next = stream.next().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::Serving);
    registry.remove_service("finmesh.test.v1.Later");
    let next = stream.next().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::ServiceUnknown);
}

async fn list(server: &support::TestServer) -> Result<HealthListResponse, tonic::Status> {
    list_at(server.addr).await
}

async fn list_at(addr: std::net::SocketAddr) -> Result<HealthListResponse, tonic::Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(HealthListRequest {}),
        http::uri::PathAndQuery::from_static(finmesh::health::grpc::LIST_PATH),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grpc_list_returns_every_service_and_refuses_past_100() {
    let registry = HealthRegistry::new();
    registry.set_serving("finmesh.test.v1.Echo", true);
    registry.set_serving("finmesh.test.v1.Ledger", false);
    let (server, _) = serve(&registry).await;

    let listed = list(&server).await.unwrap().statuses;
    let mut names: Vec<_> = listed.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        ["", "finmesh.test.v1.Echo", "finmesh.test.v1.Ledger"]
    );
    assert_eq!(listed[""].status(), ServingStatus::Serving);
    assert_eq!(
        listed["finmesh.test.v1.Echo"].status(),
        ServingStatus::Serving
    );
    assert_eq!(
        listed["finmesh.test.v1.Ledger"].status(),
        ServingStatus::NotServing
    );

    for i in 0..97 {
        registry.set_serving(&format!("svc.v1.S{i}"), true);
    }
    assert_eq!(list(&server).await.unwrap().statuses.len(), 100);
    registry.set_serving("svc.v1.OneTooMany", true);
    let err = list(&server).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn grpc_watch_of_the_whole_server_follows_readiness() {
    let registry = HealthRegistry::new();
    let ready = Arc::new(AtomicBool::new(true));
    let r = Arc::clone(&ready);
    registry
        .add_readiness_check("db", T, move || {
            let ok = r.load(Ordering::SeqCst);
            async move { if ok { Ok(()) } else { Err("down".to_owned()) } }
        })
        .unwrap();
    let (server, _) = serve(&registry).await;
    let mut client = grpc_client(&server).await;
    let mut stream = client.watch(check_request("")).await.unwrap().into_inner();
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // The database goes away; the next readiness probe (here the kubelet's
    // HTTP one) sees it and the watcher hears at once, without waiting for
    // its own poll.
    ready.store(false, Ordering::SeqCst);
    assert_eq!(get(&server, "/readyz").await.status, 503);
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    ready.store(true, Ordering::SeqCst);
    assert_eq!(get(&server, "/readyz").await.status, 200);
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    // Forcing the whole server off overrides passing checks.
    registry.set_serving("", false);
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
}

/// A tonic service added by its type is named by Check, Watch and List,
/// follows readiness, can be taken out alone, and drains.
#[tokio::test]
async fn grpc_service_added_by_type_follows_readiness_and_drains() {
    type Echo = support::EchoServer<support::EchoService>;
    const ECHO: &str = "finmesh.test.v1.Echo";
    let registry = HealthRegistry::new();
    let ready = Arc::new(AtomicBool::new(true));
    let r = Arc::clone(&ready);
    registry
        .add_readiness_check("db", T, move || {
            let ok = r.load(Ordering::SeqCst);
            async move { if ok { Ok(()) } else { Err("down".to_owned()) } }
        })
        .unwrap();
    registry.add_grpc_service::<Echo>();
    // Adding it again changes nothing.
    registry.add_grpc_service::<Echo>();
    assert_eq!(registry.services(), ["", ECHO]);
    let (server, _) = serve(&registry).await;
    let mut client = grpc_client(&server).await;

    let check = |client: &mut HealthClient<Channel>| {
        let mut client = client.clone();
        async move {
            client
                .check(check_request(ECHO))
                .await
                .unwrap()
                .into_inner()
                .status()
        }
    };
    assert_eq!(check(&mut client).await, ServingStatus::Serving);
    let listed = list(&server).await.unwrap().statuses;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[ECHO].status(), ServingStatus::Serving);
    let mut stream = client
        .watch(check_request(ECHO))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // Not ready: the service is NOT_SERVING with the whole server, and its
    // watcher hears as soon as a probe sees it.
    ready.store(false, Ordering::SeqCst);
    assert_eq!(check(&mut client).await, ServingStatus::NotServing);
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    assert_eq!(
        list(&server).await.unwrap().statuses[ECHO].status(),
        ServingStatus::NotServing
    );
    ready.store(true, Ordering::SeqCst);
    assert_eq!(get(&server, "/readyz").await.status, 200);
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // Taken out alone, then back to following readiness.
    registry.set_serving(ECHO, false);
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    assert_eq!(check(&mut client).await, ServingStatus::NotServing);
    assert_eq!(
        client
            .check(check_request(""))
            .await
            .unwrap()
            .into_inner()
            .status(),
        ServingStatus::Serving
    );
    registry.set_serving(ECHO, true);
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // Drain: NOT_SERVING at once, for Check, Watch and List.
    registry.begin_shutdown();
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    assert_eq!(check(&mut client).await, ServingStatus::NotServing);
    assert_eq!(
        list(&server).await.unwrap().statuses[ECHO].status(),
        ServingStatus::NotServing
    );
}

/// `HealthLayer` over a plain hyper service that knows nothing of gRPC:
/// the layer alone answers Check, Watch and List; nothing reaches the
/// service but what is not health.
#[tokio::test]
async fn health_layer_alone_answers_grpc_check_watch_and_list_in_front_of_any_service() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceBuilder;

    let registry = HealthRegistry::new();
    registry.set_serving("finmesh.test.v1.Echo", true);
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let svc = ServiceBuilder::new()
        .layer(HealthLayer::new(registry.clone()))
        .service_fn(move |_req: http::Request<hyper::body::Incoming>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                let res = http::Response::builder()
                    .status(404)
                    .body(Full::new(Bytes::from("inner")))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(res)
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connect");
    let mut client = HealthClient::new(channel.clone());
    let check = |r: tonic::Response<tonic_health::pb::HealthCheckResponse>| r.into_inner().status();
    assert_eq!(
        check(client.check(check_request("")).await.unwrap()),
        ServingStatus::Serving
    );
    assert_eq!(
        check(
            client
                .check(check_request("finmesh.test.v1.Echo"))
                .await
                .unwrap()
        ),
        ServingStatus::Serving
    );
    let err = client
        .check(check_request("nope.v1.Nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let listed = list_at(addr).await.unwrap().statuses;
    let mut names: Vec<_> = listed.keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["", "finmesh.test.v1.Echo"]);
    assert_eq!(
        listed["finmesh.test.v1.Echo"].status(),
        ServingStatus::Serving
    );

    let mut stream = client
        .watch(check_request("finmesh.test.v1.Echo"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    registry.begin_shutdown();
    assert_eq!(
        stream.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    assert_eq!(
        check(client.check(check_request("")).await.unwrap()),
        ServingStatus::NotServing
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a health call reached the service"
    );

    // An unknown method of the health service is still the layer's.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<HealthListRequest, HealthListResponse, _>(
            tonic::Request::new(HealthListRequest {}),
            http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Everything else is the service's, HTTP probes aside.
    let req = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    assert_eq!(support::send(req("/readyz")).await.status, 503);
    let other = support::send(req("/orders")).await;
    assert_eq!(
        (other.status.as_u16(), &other.body[..]),
        (404, &b"inner"[..])
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    server.abort();
}

/// `serve_grpc_health(false)` hands grpc.health.v1 to the inner service
/// (here a `GrpcHealthService` of another registry); HTTP probes stay.
#[tokio::test]
async fn serve_grpc_health_false_passes_grpc_health_calls_through() {
    let outer = HealthRegistry::new();
    outer.set_serving("outer.v1.Only", true);
    let inner = HealthRegistry::new();
    inner.set_serving("inner.v1.Only", true);
    let app = |serve: bool| {
        tonic::service::Routes::new(GrpcHealthService::new(inner.clone()))
            .into_axum_router()
            .layer(HealthLayer::new(outer.clone()).serve_grpc_health(serve))
    };
    for (serve, known, unknown) in [
        (true, "outer.v1.Only", "inner.v1.Only"),
        (false, "inner.v1.Only", "outer.v1.Only"),
    ] {
        let server = support::spawn(app(serve)).await;
        let mut client = grpc_client(&server).await;
        let res = client.check(check_request(known)).await.unwrap();
        assert_eq!(res.into_inner().status(), ServingStatus::Serving, "{serve}");
        let err = client.check(check_request(unknown)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{serve}");
        assert_eq!(get(&server, "/readyz").await.status, 200, "{serve}");
        server.shutdown().await;
    }
}
