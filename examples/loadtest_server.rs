//! The loopback load-test server: one small app served bare or behind the
//! whole `GovernanceLayer`, with any layer left out, for
//! `benches/loadtest/run.py` (see BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example loadtest_server --features full -- --addr 127.0.0.1:18081 --governed
//! cargo run --release --example loadtest_server --features full -- token      # a bearer token for alice
//! ```
//!
//! The app, the same in both modes:
//! - `GET /v1/accounts` answers a small JSON document;
//! - `POST /v1/transfer` reads the body and answers 201 with a small JSON
//!   document (governed: RBAC `create transfers`, `x-order-id` required,
//!   `Idempotency-Key` required, in-memory store);
//! - gRPC `finmesh.gateway.v1.Ledger`: `GetAccount` (unary) and
//!   `StreamTransfers` (bidi; one small result per message).
//!
//! Governed, the stack is the reference gateway's: health, telemetry (an
//! SDK tracer provider sampling every span into a batch processor whose
//! exporter drops them, and a Prometheus meter provider), audit, stream
//! deadlines, HS256 JWT, static tenants, RBAC, rate limits (per tenant on
//! transfers and per subject everywhere, set far above the load) and
//! in-memory idempotency. Audit records go to a sink that discards them
//! unless `--audit file:PATH` names a file; the writer thread encodes and
//! hashes every record either way. `--without a,b` leaves layers out
//! (`health telemetry audit deadlines jwt tenants rbac ratelimit
//! idempotency`); leaving out `jwt` also leaves out what needs a principal
//! (`tenants`, `rbac`, `ratelimit`, `idempotency`).

#[path = "gateway/certs.rs"]
mod certs;

#[path = "gateway/observability.rs"]
#[allow(dead_code)]
mod observability;

/// The reference gateway's generated gRPC code.
mod pb {
    #![allow(clippy::all, missing_docs, dead_code)]
    include!("gateway/pb/finmesh.gateway.v1.rs");
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::{get, post};
use finmesh::GovernanceLayer;
use finmesh::audit::{
    AuditLayer, AuditRecord, AuditSink, Auditor, ChainHead, FileSink, FileSinkOptions,
};
use finmesh::auth::{Algorithm, JwtAuthLayer, JwtKey};
use finmesh::deadline::StreamDeadlineLayer;
use finmesh::health::{HealthLayer, HealthRegistry};
use finmesh::idempotency::{IdempotencyLayer, InMemoryStore};
use finmesh::ratelimit::{RateLimitLayer, RateLimits};
use finmesh::rbac::{Authorizer, GrpcMethods, HttpRoutes, RbacLayer};
use finmesh::telemetry::{TelemetryLayer, w3c_propagator};
use finmesh::tenant::{StaticTenants, TenantLayer};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use pb::ledger_server::{Ledger, LedgerServer};
use pb::{Account, GetAccountRequest, TransferRequest, TransferResult};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SECRET: &[u8] = b"finmesh-loadtest-secret-not-for-production-use";
const ISSUER: &str = "finmesh-loadtest";
const AUDIENCE: &str = "finmesh-loadtest";
const LEDGER: &str = "finmesh.gateway.v1.Ledger";

const TENANTS: &str = "tenants:\n  - namespace: tenant-a\n";

const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {namespace: tenant-a, name: teller}
rules:
- apiGroups: [""]
  resources: ["accounts"]
  verbs: ["get", "list"]
- apiGroups: [""]
  resources: ["transfers"]
  verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {namespace: tenant-a, name: alice-teller}
subjects: [{kind: User, name: alice}]
roleRef: {kind: Role, name: teller}
"#;

/// Limits far above any load the harness makes: every request pays for
/// its decisions (per tenant on transfers, per subject everywhere), and
/// none is refused.
const RATELIMITS: &str = r#"
apiVersion: finmesh.io/v1
kind: RateLimitPolicy
metadata: {name: loadtest}
spec:
  rules:
    - name: tenant-transfers
      match: {verbs: [create], resources: [transfers]}
      key: tenant
      limit: {requests: 10000000, period: 1s}
    - name: per-subject
      key: subject
      limit: {requests: 10000000, period: 1s}
"#;

const USAGE: &str = "\
usage: loadtest_server [--addr ADDR] [--bare | --governed] [--without LAYER,...] [--tls]
                       [--audit file:PATH | --audit discard] [--tracer sdk | --tracer noop]
                       [--sample-ratio R]
       loadtest_server token

  --addr ADDR      listen address (default 127.0.0.1:18081); HTTP/1.1 and h2c
  --bare           the app alone
  --governed       the app behind the whole GovernanceLayer (default)
  --without L,...  leave layers out: health telemetry audit deadlines jwt tenants rbac ratelimit idempotency
  --audit SINK     file:PATH or discard (default: discard; the writer still encodes and hashes)
  --tracer T       sdk (default: spans batched and dropped) or noop
  --sample-ratio R
                   the sdk tracer samples a new trace with probability R, 0 to
                   1 (default 1: every span), and follows the caller's
                   decision otherwise (parent-based)
  --tls            serve TLS (finmesh::identity, HTTP/1.1 and h2 by ALPN) with a
                   certificate for localhost from a fresh CA; client
                   certificates optional
  token            print a bearer token for alice (tenant-a), valid one hour";

const LAYERS: [&str; 9] = [
    "health",
    "telemetry",
    "audit",
    "deadlines",
    "jwt",
    "tenants",
    "rbac",
    "ratelimit",
    "idempotency",
];

struct Cli {
    addr: SocketAddr,
    governed: bool,
    without: Vec<String>,
    audit: Option<PathBuf>,
    sdk_tracer: bool,
    sample_ratio: f64,
    tls: bool,
}

impl Cli {
    fn has(&self, layer: &str) -> bool {
        let needs_jwt = matches!(layer, "tenants" | "rbac" | "ratelimit" | "idempotency");
        self.governed
            && !self.without.iter().any(|w| w == layer)
            && !(needs_jwt && self.without.iter().any(|w| w == "jwt"))
    }
}

enum Command {
    Serve(Cli),
    Token,
    Help,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut cli = Cli {
        addr: "127.0.0.1:18081".parse().expect("static address"),
        governed: true,
        without: Vec::new(),
        audit: None,
        sdk_tracer: true,
        sample_ratio: 1.0,
        tls: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "token" => return Ok(Command::Token),
            "-h" | "--help" => return Ok(Command::Help),
            "--addr" => {
                let v = value("--addr")?;
                cli.addr = v.parse().map_err(|e| format!("--addr {v:?}: {e}"))?;
            }
            "--bare" => cli.governed = false,
            "--tls" => cli.tls = true,
            "--governed" => cli.governed = true,
            "--without" => {
                for layer in value("--without")?.split(',').filter(|l| !l.is_empty()) {
                    if !LAYERS.contains(&layer) {
                        return Err(format!("--without: unknown layer {layer:?}"));
                    }
                    cli.without.push(layer.to_owned());
                }
            }
            "--audit" => match value("--audit")?.as_str() {
                "discard" => cli.audit = None,
                v => match v.strip_prefix("file:") {
                    Some(path) if !path.is_empty() => cli.audit = Some(path.into()),
                    _ => return Err(format!("--audit {v:?}: file:PATH or discard")),
                },
            },
            "--tracer" => match value("--tracer")?.as_str() {
                "sdk" => cli.sdk_tracer = true,
                "noop" => cli.sdk_tracer = false,
                v => return Err(format!("--tracer {v:?}: sdk or noop")),
            },
            "--sample-ratio" => {
                let v = value("--sample-ratio")?;
                cli.sample_ratio = match v.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => r,
                    _ => return Err(format!("--sample-ratio {v:?}: a number from 0 to 1")),
                };
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if cli.sample_ratio < 1.0 && !(cli.governed && cli.sdk_tracer && cli.has("telemetry")) {
        return Err(
            "--sample-ratio needs the sdk tracer of a governed server with telemetry".into(),
        );
    }
    Ok(Command::Serve(cli))
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            ExitCode::from(2)
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Token) => match token() {
            Ok(t) => {
                println!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(Command::Serve(cli)) => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(serve(cli)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn token() -> Result<String, BoxError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "tenant": "tenant-a",
        "risk_level": "low", "iat": now, "exp": now + 3600,
    });
    finmesh::auth::install_default_crypto_provider();
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
}

async fn serve(cli: Cli) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(cli.addr).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/accounts", get(accounts))
        .route("/v1/transfer", post(transfer))
        .merge(tonic::service::Routes::new(LedgerServer::new(Service)).into_axum_router());
    let mut observability = None;
    let mut auditor = None;
    let app = if cli.governed {
        let obs = observability::Observability::init(None)?;
        let a = match &cli.audit {
            // Rotated at 64 MiB, four files kept: a long run stays bounded.
            Some(path) => Auditor::spawn(FileSink::open_with(
                path,
                FileSinkOptions {
                    max_rotated_files: Some(4),
                    ..FileSinkOptions::default()
                },
            )?)?,
            None => Auditor::spawn(Discard)?,
        };
        let layer = governance(&cli, &obs, &a)?;
        observability = Some(obs);
        auditor = Some(a);
        app.layer(layer)
    } else {
        app
    };
    println!(
        "loadtest_server on {}://{addr} — {}{}",
        if cli.tls { "https" } else { "http" },
        if cli.governed { "governed" } else { "bare" },
        if cli.governed && !cli.without.is_empty() {
            format!(" without {}", cli.without.join(","))
        } else {
            String::new()
        }
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    if cli.tls {
        let dir = tls_dir()?;
        let acceptor = finmesh::identity::MtlsAcceptor::builder()
            .cert_files(dir.join("server.pem"), dir.join("server.key"))
            .client_ca_file(dir.join("ca.pem"))
            .trust_domain("finmesh.demo")
            .require_client_cert(false)
            .build()?;
        let served = finmesh::identity::serve(listener, acceptor, app, shutdown).await;
        let _ = std::fs::remove_dir_all(&dir);
        served?;
    } else {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
    }
    if let Some(a) = auditor {
        a.flush().await?;
    }
    if let Some(o) = observability {
        o.shutdown();
    }
    Ok(())
}

/// A fresh CA and a server certificate for `localhost` and `127.0.0.1`,
/// written to a directory of this process.
fn tls_dir() -> Result<PathBuf, BoxError> {
    let dir = std::env::temp_dir().join(format!("finmesh-loadtest-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca = certs::DemoCa::new("finmesh loadtest CA")?;
    std::fs::write(dir.join("ca.pem"), &ca.pem)?;
    ca.leaf(&certs::LeafSpec::server(&["localhost", "127.0.0.1"]))?
        .write(&dir, "server")?;
    Ok(dir)
}

fn governance(
    cli: &Cli,
    obs: &observability::Observability,
    auditor: &Auditor,
) -> Result<GovernanceLayer, BoxError> {
    let mut stack = GovernanceLayer::builder();
    if cli.has("health") {
        stack = stack.health(HealthLayer::new(HealthRegistry::new()));
    }
    if cli.has("telemetry") {
        let mut telemetry = TelemetryLayer::builder()
            .meter_provider(&obs.meter_provider)
            .propagator(w3c_propagator())
            .require_order_id_on(http::Method::POST, "/v1/transfer")
            .route_template(|_: &http::Method, _: &http::Uri, ext: &http::Extensions| {
                ext.get::<axum::extract::MatchedPath>()
                    .map(|p| std::borrow::Cow::Owned(p.as_str().to_owned()))
            });
        if cli.sdk_tracer {
            telemetry = telemetry.tracer_provider(&sdk_tracer(cli.sample_ratio));
        }
        stack = stack.telemetry(telemetry.build());
    }
    if cli.has("audit") {
        stack = stack.audit(AuditLayer::new(auditor.clone()));
    }
    if cli.has("deadlines") {
        stack = stack.deadlines(
            StreamDeadlineLayer::new()
                .grpc_service(LEDGER)
                .request_message_timeout(Duration::from_secs(10))
                .response_message_timeout(Duration::from_secs(10)),
        );
    }
    if cli.has("jwt") {
        stack = stack.jwt(
            JwtAuthLayer::builder()
                .issuer(ISSUER)
                .audience(AUDIENCE)
                .algorithms([Algorithm::HS256])
                .key(JwtKey::hmac(SECRET)?)
                .build()?,
        );
    }
    if cli.has("tenants") {
        stack = stack.tenants(TenantLayer::new(StaticTenants::from_yaml(TENANTS)?));
    }
    if cli.has("rbac") {
        let mapper = (
            HttpRoutes::new()
                .route("/v1/accounts", "accounts")
                .route("/v1/transfer", "transfers"),
            GrpcMethods::new()
                .method("/finmesh.gateway.v1.Ledger/GetAccount", "get", "accounts")
                .method(
                    "/finmesh.gateway.v1.Ledger/StreamTransfers",
                    "create",
                    "transfers",
                ),
        );
        stack = stack.rbac(RbacLayer::new(Authorizer::from_yaml(RBAC)?, mapper));
    }
    if cli.has("ratelimit") {
        stack = stack.rate_limits(RateLimitLayer::new(RateLimits::from_yaml(RATELIMITS)?));
    }
    if cli.has("idempotency") {
        // Room for every key of a long run from the one tenant: a refusal
        // for quota would measure the wrong path.
        let store = InMemoryStore::new()
            .max_bytes(2 << 30)
            .max_entries(8_000_000)
            .tenant_share(1.0);
        stack = stack.idempotency(IdempotencyLayer::new(store).grpc_service(LEDGER));
    }
    Ok(stack.build())
}

/// Spans sampled (every one unless `ratio` says otherwise) and batched to
/// an exporter that drops them: the cost of recording and exporting,
/// without a collector.
fn sdk_tracer(ratio: f64) -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry_sdk::trace::Sampler;
    let builder = opentelemetry_sdk::trace::SdkTracerProvider::builder();
    let builder = if ratio < 1.0 {
        builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
    } else {
        builder
    };
    builder.with_batch_exporter(DropSpans).build()
}

#[derive(Debug)]
struct DropSpans;

impl opentelemetry_sdk::trace::SpanExporter for DropSpans {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        std::hint::black_box(batch);
        Ok(())
    }
}

/// Seals records and throws them away (the writer still encodes and
/// hashes each one).
struct Discard;

impl AuditSink for Discard {
    fn head(&self) -> Option<ChainHead> {
        None
    }
    fn append(&mut self, record: &AuditRecord, line: &[u8]) -> std::io::Result<()> {
        std::hint::black_box((record, line));
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn accounts() -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        r#"{"items":[{"id":"acc-1","balance":"1250.00"},{"id":"acc-2","balance":"80.00"}]}"#,
    )
}

async fn transfer(body: axum::body::Bytes) -> impl axum::response::IntoResponse {
    std::hint::black_box(&body);
    (
        http::StatusCode::CREATED,
        [(http::header::CONTENT_TYPE, "application/json")],
        r#"{"state":"committed"}"#,
    )
}

struct Service;

type Results = Pin<Box<dyn Stream<Item = Result<TransferResult, Status>> + Send>>;

#[tonic::async_trait]
impl Ledger for Service {
    async fn get_account(
        &self,
        req: Request<GetAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        Ok(Response::new(Account {
            id: req.into_inner().id,
            tenant: "tenant-a".into(),
            balance: "1250.00".into(),
        }))
    }

    type StreamTransfersStream = Results;

    async fn stream_transfers(
        &self,
        req: Request<Streaming<TransferRequest>>,
    ) -> Result<Response<Results>, Status> {
        let out = req.into_inner().map(|m| {
            m.map(|t| TransferResult {
                order_id: String::new(),
                transfer_id: t.from_account,
                state: "committed".into(),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}
