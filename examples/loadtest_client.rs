//! The gRPC load generator for `benches/loadtest/run.py`: a tonic client in
//! its own process, driving `examples/loadtest_server.rs` with unary
//! `GetAccount` calls or `StreamTransfers` bidi streams, closed loop, and
//! printing one JSON line of results.
//!
//! ```text
//! cargo run --release --example loadtest_client --features full -- \
//!     --addr 127.0.0.1:18081 --mode unary --conns 4 --concurrency 16 --duration 5 --token "$TOKEN"
//! ```
//!
//! - `unary`: `conns` HTTP/2 connections, `concurrency` calls in flight on
//!   each; every call is timed.
//! - `bidi`: `conns` connections, `concurrency` streams on each; each
//!   stream sends a message of `--message-bytes` and waits for its result
//!   before sending the next (each round trip is timed). One stream lasts
//!   the whole run, so the figures are messages, not calls.
//!
//! Output: `{"mode":…,"requests":…,"errors":…,"seconds":…,"rps":…,"p50_us":…,"p99_us":…}`.

/// The reference gateway's generated gRPC code.
mod pb {
    #![allow(clippy::all, missing_docs, dead_code)]
    include!("gateway/pb/finmesh.gateway.v1.rs");
}

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pb::ledger_client::LedgerClient;
use pb::{GetAccountRequest, TransferRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "\
usage: loadtest_client --addr ADDR [--mode unary|bidi] [--conns N] [--concurrency N]
                       [--duration SECS] [--warmup SECS] [--message-bytes N] [--token TOKEN]";

#[derive(Clone)]
struct Args {
    addr: String,
    bidi: bool,
    conns: usize,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    message_bytes: usize,
    token: Option<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        addr: String::new(),
        bidi: false,
        conns: 4,
        concurrency: 16,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        message_bytes: 1024,
        token: None,
    };
    let secs = |v: String, name: &str| -> Result<Duration, String> {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("{name} {v:?}: seconds, 0–3600"))
    };
    let count = |v: String, name: &str| -> Result<usize, String> {
        v.parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| format!("{name} {v:?}: a count, 1–100000"))
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--addr" => a.addr = value("--addr")?,
            "--mode" => {
                a.bidi = match value("--mode")?.as_str() {
                    "unary" => false,
                    "bidi" => true,
                    m => return Err(format!("--mode {m:?}: unary or bidi")),
                }
            }
            "--conns" => a.conns = count(value("--conns")?, "--conns")?,
            "--concurrency" => a.concurrency = count(value("--concurrency")?, "--concurrency")?,
            "--duration" => a.duration = secs(value("--duration")?, "--duration")?,
            "--warmup" => a.warmup = secs(value("--warmup")?, "--warmup")?,
            "--message-bytes" => {
                a.message_bytes = count(value("--message-bytes")?, "--message-bytes")?
            }
            "--token" => a.token = Some(value("--token")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.addr.is_empty() {
        return Err("--addr is required".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one worker measured after the warm-up.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
}

async fn run(args: Args) -> Result<(), BoxError> {
    let mut channels = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        channels.push(
            Endpoint::from_shared(format!("http://{}", args.addr))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for channel in &channels {
        for _ in 0..args.concurrency {
            let (channel, args) = (channel.clone(), args.clone());
            let (measuring, stop) = (measuring.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                if args.bidi {
                    bidi(channel, &args, &measuring, &stop).await
                } else {
                    unary(channel, &args, &measuring, &stop).await
                }
            }));
        }
    }
    tokio::time::sleep(args.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut all = Tally::default();
    for w in workers {
        let t = w.await?;
        all.latencies_us.extend(t.latencies_us);
        all.errors += t.errors;
    }
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        let v = &all.latencies_us;
        if v.is_empty() {
            return 0;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let n = all.latencies_us.len();
    println!(
        "{}",
        serde_json::json!({
            "mode": if args.bidi { "bidi" } else { "unary" },
            "requests": n,
            "errors": all.errors,
            "seconds": seconds,
            "rps": n as f64 / seconds,
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
        })
    );
    Ok(())
}

fn with_headers<T>(msg: T, args: &Args, n: u64) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let md = req.metadata_mut();
    md.insert("x-tenant-namespace", MetadataValue::from_static("tenant-a"));
    if let Some(token) = &args.token
        && let Ok(v) = format!("Bearer {token}").parse()
    {
        md.insert("authorization", v);
    }
    if let Ok(v) = format!("lt-{}-{n}", std::process::id()).parse() {
        md.insert("x-order-id", v);
    }
    req
}

async fn unary(channel: Channel, args: &Args, measuring: &AtomicBool, stop: &AtomicBool) -> Tally {
    let mut client = LedgerClient::new(channel);
    let mut tally = Tally::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let req = with_headers(GetAccountRequest { id: "acc-1".into() }, args, n);
        let t = Instant::now();
        let ok = client.get_account(req).await.is_ok();
        if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            record(&mut tally, ok, t);
        }
    }
    tally
}

async fn bidi(channel: Channel, args: &Args, measuring: &AtomicBool, stop: &AtomicBool) -> Tally {
    let mut client = LedgerClient::new(channel);
    let mut tally = Tally::default();
    let (tx, rx) = tokio::sync::mpsc::channel::<TransferRequest>(1);
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let pad = "x".repeat(args.message_bytes.saturating_sub(32));
    let message = |n: u64| TransferRequest {
        order_id: format!("ord-{n}"),
        from_account: pad.clone(),
        to_account: "acc-2".into(),
        amount: "1.00".into(),
    };
    let mut n = 0u64;
    // The first message goes with the call, so the stream opens at once.
    if tx.send(message(n)).await.is_err() {
        tally.errors += 1;
        return tally;
    }
    let mut inbound = match client
        .stream_transfers(with_headers(outbound, args, n))
        .await
    {
        Ok(res) => res.into_inner(),
        Err(_) => {
            tally.errors += 1;
            return tally;
        }
    };
    let mut t = Instant::now();
    loop {
        let ok = matches!(inbound.message().await, Ok(Some(_)));
        if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            record(&mut tally, ok, t);
        }
        if !ok || stop.load(Ordering::Relaxed) {
            break;
        }
        n += 1;
        t = Instant::now();
        if tx.send(message(n)).await.is_err() {
            tally.errors += 1;
            break;
        }
    }
    tally
}

fn record(tally: &mut Tally, ok: bool, started: Instant) {
    if ok {
        let us = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        tally.latencies_us.push(us);
    } else {
        tally.errors += 1;
    }
}
