//! The finmesh reference gateway: a small ledger served over HTTP/1.1 and
//! h2c gRPC on one port, behind the whole governance stack.
//!
//! ```sh
//! cargo run --example reference_gateway                 # 127.0.0.1:8080
//! TOKEN=$(cargo run -q --example reference_gateway -- token alice)
//! curl -s localhost:8080/v1/accounts -H "authorization: Bearer $TOKEN" \
//!      -H 'x-tenant-namespace: tenant-a'
//! ```
//!
//! Options: `--addr ADDR`, `--metrics-addr ADDR` (Prometheus, default
//! `127.0.0.1:9464`), `--config DIR` (tenants.yaml and rbac.yaml,
//! hot-reloaded), `--message-timeout 2s`, `--audit-log PATH`,
//! `--audit-policy FILE`, `--audit-postgres URL`, `--drain-delay 5s`; with
//! the `mtls` feature, `--tls-cert FILE --tls-key FILE` (serve TLS),
//! `--client-ca FILE` (require client certificates, SPIFFE identities),
//! `--trust-domain NAME` and the `demo-certs DIR` subcommand; with the
//! `redis` feature, `--redis URL`. Environment: `FINMESH_JWT_SECRET` (else a demo
//! secret, with a warning), `OTEL_EXPORTER_OTLP_ENDPOINT` (export traces),
//! `RUST_LOG`.

#[path = "gateway/mod.rs"]
mod gateway;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

const USAGE: &str = "\
usage: reference_gateway [--addr ADDR] [--metrics-addr ADDR] [--config DIR]
                         [--message-timeout DUR] [--audit-log PATH] [--audit-policy FILE]
                         [--audit-postgres URL] [--drain-delay DUR]
                         [--tls-cert FILE --tls-key FILE [--client-ca FILE] [--trust-domain NAME]]
                         [--redis URL]
       reference_gateway token <alice|bob|carol|dave>
       reference_gateway demo-certs DIR

  --addr ADDR            listen address, HTTP/1.1 and h2c gRPC (default 127.0.0.1:8080)
  --metrics-addr ADDR    separate listener for GET /metrics, Prometheus text, no token
                         (default 127.0.0.1:9464; keep it off the public network)
  --config DIR           load DIR/tenants.yaml, DIR/rbac.yaml and DIR/ratelimits.yaml,
                         hot-reloaded
                         (default: the embedded demo policy, examples/gateway/config/)
  --message-timeout DUR  per-message deadline on gRPC streams (default 2s)
  --audit-log PATH       hash-chained audit log (default finmesh-audit.log); 64 MiB
                         files, the 32 newest rotated files kept; readiness fails
                         below 256 MiB free
  --audit-policy FILE    audit.k8s.io/v1 Policy choosing each request's level,
                         hot-reloaded (default: embedded, examples/gateway/config/
                         audit-policy.yaml: None for probes and metrics,
                         RequestResponse for creating transfers, Metadata otherwise)
  --audit-postgres URL   also ship the audit chain to PostgreSQL, exactly once, the
                         audit log being the spool; blocking mode (build with
                         --features audit-postgres)
  --drain-delay DUR      on SIGTERM / Ctrl-C, how long readiness fails while
                         requests are still served (default 5s)
  --tls-cert FILE        serve TLS (HTTP/1.1 and gRPC over h2, ALPN) with this
                         certificate chain (PEM), reloaded when the file changes
  --tls-key FILE         its private key (PEM)
  --client-ca FILE       require client certificates (X.509-SVIDs) that chain to
                         this bundle (PEM, reloaded); a caller without a token is
                         the ServiceAccount its SPIFFE ID names; probes need none
  --trust-domain NAME    the SPIFFE trust domain accepted (default finmesh.demo)
  --redis URL            keep idempotency records and rate-limit counters in this
                         Redis (redis://127.0.0.1:6379/0), shared by every gateway
                         on it (needs a build with --features redis)
  token USER             print a demo JWT for USER, valid one hour
  demo-certs DIR         write a demo CA, a server certificate for localhost and
                         127.0.0.1, and client SVIDs for ledger-reader and intruder
                         (the --tls-* flags and demo-certs need --features mtls)

DUR is a number with a unit: 500ms, 2s, 1m.

Environment:
  FINMESH_JWT_SECRET           HS256 secret, at least 32 bytes (default: a public demo secret)
  OTEL_EXPORTER_OTLP_ENDPOINT  export traces over OTLP/gRPC to this endpoint
  RUST_LOG                     log filter (default info, SDK internals at warn)

Routes: GET /v1/accounts, GET|PUT /v1/accounts/{id}, POST /v1/transfer,
gRPC finmesh.gateway.v1.Ledger and grpc.health.v1.Health; /livez, /readyz
and /healthz need no token. /metrics is served only on --metrics-addr.";

/// How long in-flight requests may run on after the listener closes.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(10);

struct Cli {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    config_dir: Option<PathBuf>,
    message_timeout: Duration,
    audit_log: PathBuf,
    audit_policy: Option<PathBuf>,
    audit_postgres: Option<String>,
    drain_delay: Duration,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    trust_domain: String,
    redis_url: Option<String>,
}

enum Command {
    Serve(Box<Cli>),
    Token(String),
    DemoCerts(PathBuf),
    Help,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (try 500ms, 2s or 1m)");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut cli = Cli {
        addr: "127.0.0.1:8080".parse().expect("valid default"),
        metrics_addr: "127.0.0.1:9464".parse().expect("valid default"),
        config_dir: None,
        message_timeout: Duration::from_secs(2),
        audit_log: PathBuf::from("finmesh-audit.log"),
        audit_policy: None,
        audit_postgres: None,
        drain_delay: Duration::from_secs(5),
        tls_cert: None,
        tls_key: None,
        client_ca: None,
        trust_domain: "finmesh.demo".into(),
        redis_url: None,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "token" => {
                let user = value("token")?;
                return Ok(Command::Token(user));
            }
            "demo-certs" => return Ok(Command::DemoCerts(value("demo-certs")?.into())),
            "--tls-cert" => cli.tls_cert = Some(value("--tls-cert")?.into()),
            "--tls-key" => cli.tls_key = Some(value("--tls-key")?.into()),
            "--client-ca" => cli.client_ca = Some(value("--client-ca")?.into()),
            "--trust-domain" => cli.trust_domain = value("--trust-domain")?,
            "--addr" => {
                let v = value("--addr")?;
                cli.addr = v.parse().map_err(|e| format!("--addr {v:?}: {e}"))?;
            }
            "--metrics-addr" => {
                let v = value("--metrics-addr")?;
                cli.metrics_addr = v
                    .parse()
                    .map_err(|e| format!("--metrics-addr {v:?}: {e}"))?;
            }
            "--config" => cli.config_dir = Some(value("--config")?.into()),
            "--message-timeout" => {
                cli.message_timeout = parse_duration(&value("--message-timeout")?)?
            }
            "--audit-log" => cli.audit_log = value("--audit-log")?.into(),
            "--audit-policy" => cli.audit_policy = Some(value("--audit-policy")?.into()),
            "--audit-postgres" => cli.audit_postgres = Some(value("--audit-postgres")?),
            "--drain-delay" => cli.drain_delay = parse_duration(&value("--drain-delay")?)?,
            "--redis" => cli.redis_url = Some(value("--redis")?),
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if cli.tls_cert.is_some() != cli.tls_key.is_some() {
        return Err("--tls-cert and --tls-key go together".into());
    }
    if cli.client_ca.is_some() && cli.tls_cert.is_none() {
        return Err("--client-ca needs --tls-cert and --tls-key".into());
    }
    Ok(Command::Serve(Box::new(cli)))
}

fn secret() -> (Vec<u8>, bool) {
    match std::env::var("FINMESH_JWT_SECRET") {
        Ok(s) if !s.is_empty() => (s.into_bytes(), false),
        _ => (gateway::DEMO_SECRET.as_bytes().to_vec(), true),
    }
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (secret, demo_secret) = secret();
    if secret.len() < finmesh::auth::MIN_HMAC_SECRET_LEN && !matches!(command, Command::Help) {
        // The server would refuse it; a token signed with it is useless.
        eprintln!(
            "error: FINMESH_JWT_SECRET is {} bytes; at least {} are required",
            secret.len(),
            finmesh::auth::MIN_HMAC_SECRET_LEN
        );
        return ExitCode::from(2);
    }
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Token(user) => match gateway::mint_token(&user, &secret, SystemTime::now()) {
            // Only the token on stdout, so `TOKEN=$(… token alice)` works.
            Some(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("error: unknown user {user:?}: one of alice, bob, carol, dave");
                ExitCode::from(2)
            }
        },
        Command::DemoCerts(dir) => demo_certs(&dir),
        Command::Serve(cli) => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(serve(*cli, secret, demo_secret)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[cfg(feature = "mtls")]
fn demo_certs(dir: &std::path::Path) -> ExitCode {
    match gateway::certs::write_demo_certs(dir) {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the demo certificates to {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "mtls"))]
fn demo_certs(_dir: &std::path::Path) -> ExitCode {
    eprintln!(
        "error: demo-certs needs the mtls feature: cargo run --features mtls --example reference_gateway -- demo-certs DIR"
    );
    ExitCode::from(2)
}

/// The TLS acceptor the `--tls-*` flags ask for, if they ask for one.
#[cfg(feature = "mtls")]
fn tls_acceptor(cli: &Cli) -> Result<Option<finmesh::identity::MtlsAcceptor>, gateway::BoxError> {
    let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) else {
        return Ok(None);
    };
    let mut builder = finmesh::identity::MtlsAcceptor::builder()
        .cert_files(cert, key)
        .trust_domain(&cli.trust_domain)
        // The gateway's app is governed: its identity refusals are audited.
        .refuse_in_stack(true);
    if let Some(ca) = &cli.client_ca {
        builder = builder.client_ca_file(ca);
    }
    Ok(Some(builder.build()?))
}

#[cfg(not(feature = "mtls"))]
fn tls_acceptor(cli: &Cli) -> Result<Option<std::convert::Infallible>, gateway::BoxError> {
    if cli.tls_cert.is_some() {
        return Err("--tls-cert needs the mtls feature: cargo run --features mtls --example reference_gateway -- …".into());
    }
    Ok(None)
}

async fn serve(cli: Cli, secret: Vec<u8>, demo_secret: bool) -> Result<(), gateway::BoxError> {
    // Logs on stderr; stdout carries only the banner (and `token` output).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The SDK announces itself at info; that is noise here.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,opentelemetry=warn")),
        )
        .init();
    if demo_secret {
        tracing::warn!(
            "!!! FINMESH_JWT_SECRET is not set: signing and verifying tokens with the PUBLIC DEMO SECRET. \
             Anyone can mint tokens for this gateway. Never run it like this outside a laptop. !!!"
        );
    }
    let options = gateway::Options {
        config_dir: cli.config_dir.clone(),
        message_timeout: cli.message_timeout,
        audit_log: cli.audit_log.clone(),
        audit_policy: cli.audit_policy.clone(),
        audit_postgres: cli.audit_postgres.clone(),
        jwt_secret: secret,
        redis_url: cli.redis_url.clone(),
        otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty()),
        trust_domain: cli.trust_domain.clone(),
    };
    let gw = gateway::build(&options)?;
    let tls = tls_acceptor(&cli)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let transport = match (&tls, &cli.client_ca) {
        (None, _) => "HTTP/1.1 and h2c gRPC".to_owned(),
        (Some(_), None) => "TLS: HTTP/1.1 and gRPC over h2".to_owned(),
        (Some(_), Some(_)) => format!(
            "mutual TLS, client SVIDs of trust domain {} required (probes excepted): HTTP/1.1 and gRPC over h2",
            cli.trust_domain
        ),
    };
    let listener = tokio::net::TcpListener::bind(cli.addr).await.map_err(|e| {
        format!(
            "cannot listen on {}: {e} (choose another with --addr)",
            cli.addr
        )
    })?;
    let addr = listener.local_addr()?;
    let metrics_listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} for metrics: {e} (choose another with --metrics-addr)",
                cli.metrics_addr
            )
        })?;
    let metrics_addr = metrics_listener.local_addr()?;
    // Ctrl-C / SIGTERM: readiness fails at once, requests are still served
    // for the drain delay, then the listener closes and in-flight requests
    // finish. The handlers are installed here, before the banner says the
    // gateway is up, so an early SIGTERM drains instead of killing.
    let drain = gw.health.graceful_shutdown(cli.drain_delay);
    let policy = match &cli.config_dir {
        Some(dir) => format!("policy from {} (hot-reloaded)", dir.display()),
        None => "embedded demo policy (examples/gateway/config/)".into(),
    };
    // The URLs a user can paste: the server certificate names localhost,
    // and under mutual TLS curl must present a client SVID too.
    let base = if tls.is_some() {
        format!("https://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    // demo-certs writes ledger-reader.pem/.key beside the CA.
    let curl = match &cli.client_ca {
        Some(ca) if tls.is_some() => {
            let dir = ca.parent().unwrap_or(std::path::Path::new("."));
            let svid = |ext| {
                dir.join(format!("ledger-reader.{ext}"))
                    .display()
                    .to_string()
            };
            println!(
                "With a client SVID, no token:\n\
                 \x20 curl -s --cacert {} --cert {} --key {} {base}/v1/accounts\n",
                ca.display(),
                svid("pem"),
                svid("key"),
            );
            format!(
                "curl -s --cacert {} --cert {} --key {}",
                ca.display(),
                svid("pem"),
                svid("key")
            )
        }
        _ => "curl -s".to_owned(),
    };
    let probe_curl = match &cli.client_ca {
        Some(ca) if tls.is_some() => format!("curl -s --cacert {}", ca.display()),
        _ => "curl -s".to_owned(),
    };
    println!(
        "finmesh reference gateway on {scheme}://{addr} — {transport}; metrics on http://{metrics_addr}/metrics\n\
         {policy}; audit log {}; per-message stream deadline {:?}\n\n\
         Get a token (alice, bob, carol or dave):\n\
         \x20 TOKEN=$(cargo run -q --example reference_gateway -- token alice)\n\
         Then:\n\
         \x20 {curl} {base}/v1/accounts -H \"authorization: Bearer $TOKEN\" -H 'x-tenant-namespace: tenant-a'\n\
         Probes (no token, no client certificate): {probe_curl} {base}/readyz?verbose, /livez\n\
         Prometheus metrics (no token, this listener only): http://{metrics_addr}/metrics\n\
         gRPC: finmesh.gateway.v1.Ledger (examples/gateway/proto/ledger.proto), grpc.health.v1.Health\n\
         SIGTERM or Ctrl-C drains for {:?}, then exits.\n",
        cli.audit_log.display(),
        cli.message_timeout,
        cli.drain_delay,
    );

    let drain_delay = cli.drain_delay;
    let closing = std::sync::Arc::new(tokio::sync::Notify::new());
    let shutdown = {
        let closing = closing.clone();
        async move {
            drain.await;
            tracing::info!("drained for {drain_delay:?}; closing the listener");
            closing.notify_one();
        }
    };
    // Scraped until the process stops (a scraper's keep-alive connection
    // must not hold up the exit, so it is not drained).
    let metrics = tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, gw.metrics).await {
            tracing::error!("metrics listener failed: {e}");
        }
    });
    let serve = async move {
        match tls {
            #[cfg(feature = "mtls")]
            Some(acceptor) => finmesh::identity::serve(listener, acceptor, gw.app, shutdown).await,
            #[cfg(not(feature = "mtls"))]
            Some(never) => match never {},
            None => {
                axum::serve(listener, gw.app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    };
    // In-flight requests get a bounded time to finish once the listener
    // closes: a stream that never ends (a grpc.health.v1 Watch, say) must
    // not keep the process — and its unflushed audit records — alive.
    tokio::select! {
        served = serve => served?,
        () = async {
            closing.notified().await;
            tokio::time::sleep(IN_FLIGHT_GRACE).await;
        } => tracing::warn!("in-flight requests still open after {IN_FLIGHT_GRACE:?}; stopping anyway"),
    }
    metrics.abort();
    gw.auditor.flush().await?;
    gw.observability.shutdown();
    tracing::info!("stopped");
    Ok(())
}
