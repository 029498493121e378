//! The audit chain shipped to a real PostgreSQL (started by the test on a
//! loopback port): nothing lost or duplicated through an outage and a
//! restart, every chain verified, tampering found, and the backpressure
//! modes.

#![cfg(feature = "audit-postgres")]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use finmesh::audit::postgres::{
    Backpressure, PostgresOptions, PostgresSink, ShipperHandle, verify_postgres,
};
use finmesh::audit::{
    AuditLayer, AuditRecord, Auditor, BreakKind, Durability, FileSinkOptions, verify,
};
use http::Request;
use http_body_util::Full;
use support::postgres_server::PostgresServer;
use support::{echo_app, spawn};
use tokio::sync::Semaphore;

const TABLE: &str = "finmesh_audit";

fn options(url: &str, prefix: &str) -> PostgresOptions {
    let file = FileSinkOptions {
        durability: Durability::Interval(Duration::from_millis(10)),
        ..FileSinkOptions::default()
    };
    PostgresOptions::new(url, prefix)
        .file_options(file)
        .retry(Duration::from_millis(10), Duration::from_millis(200))
}

/// An auditor over a PostgreSQL sink spooling at `spool`.
fn writer(spool: &Path, options: PostgresOptions) -> (Auditor, ShipperHandle) {
    let sink = PostgresSink::open(spool, options).unwrap();
    let shipper = sink.shipper();
    (Auditor::spawn(sink).unwrap(), shipper)
}

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// `(chain_id, rows, distinct seqs, max seq)` per chain.
async fn counts(url: &str) -> Vec<(String, i64, i64, i64)> {
    client(url)
        .await
        .query(
            "SELECT chain_id, count(*), count(DISTINCT seq), max(seq) FROM finmesh_audit GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Sends `n` GET /ok requests, 50 at a time; all must answer 200.
async fn requests(url: String, n: usize) {
    let client = support::http_client();
    let permits = Arc::new(Semaphore::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        let url = url.clone();
        tasks.spawn(async move {
            let req = Request::get(url)
                .header("x-order-id", format!("o-{i}"))
                .body(Full::default())
                .unwrap();
            let res = client.request(req).await.expect("request");
            let status = res.status();
            http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap();
            drop(permit);
            status
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

/// How many requests each of the two writers serves (default 1,000; the
/// acceptance run uses `FINMESH_AUDIT_PG_REQUESTS=5000` for 10,000).
fn per_writer() -> usize {
    std::env::var("FINMESH_AUDIT_PG_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_through_an_outage_and_a_restart_store_every_record_exactly_once() {
    let test = "two_writers_through_an_outage_and_a_restart_store_every_record_exactly_once";
    let Some(mut pg) = PostgresServer::start(test) else {
        return;
    };
    let n = per_writer();
    let dir = tempfile::tempdir().unwrap();
    let spools = [dir.path().join("a.log"), dir.path().join("b.log")];
    let (a, ship_a) = writer(&spools[0], options(&pg.url(), "replica-a"));
    let (b, ship_b) = writer(&spools[1], options(&pg.url(), "replica-b"));
    let server_a = spawn(echo_app().layer(AuditLayer::new(a.clone()))).await;
    let server_b = spawn(echo_app().layer(AuditLayer::new(b.clone()))).await;
    let third = n / 3;
    let both = |k: usize| {
        let (ua, ub) = (server_a.url("/ok"), server_b.url("/ok"));
        async move { tokio::join!(requests(ua, k), requests(ub, k)) }
    };

    both(third).await;
    // PostgreSQL goes away in the middle: records wait in the spools.
    pg.stop();
    both(third).await;
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    assert!(ship_a.status().delivered_seq < ship_a.status().synced_seq);
    pg.resume();
    both(n - 2 * third).await;
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    assert!(ship_a.wait_delivered(Duration::from_secs(60)).await);
    assert!(ship_b.wait_delivered(Duration::from_secs(60)).await);
    assert!(ship_a.status().errors > 0, "the outage was seen");
    assert_eq!(a.stats().written, n as u64);
    assert_eq!(b.stats().written, n as u64);

    // A restart of replica A — with its delivered marker lost, so the
    // whole spool is sent again — duplicates nothing and continues its
    // chain.
    let chain_a = ship_a.status().chain_id;
    drop(server_a);
    drop(a);
    while !ship_a.is_stopped() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut marker = spools[0].as_os_str().to_owned();
    marker.push(".delivered");
    std::fs::remove_file(&marker).unwrap();
    let (a, ship_a) = writer(&spools[0], options(&pg.url(), "replica-a"));
    assert_eq!(
        ship_a.status().chain_id,
        chain_a,
        "the spool keeps its chain"
    );
    let server_a = spawn(echo_app().layer(AuditLayer::new(a.clone()))).await;
    requests(server_a.url("/ok"), 10).await;
    a.flush().await.unwrap();
    assert!(ship_a.wait_delivered(Duration::from_secs(60)).await);

    let rows = counts(&pg.url()).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let want = [(n + 10) as i64, n as i64];
    for ((chain, count, distinct, max), want) in rows.iter().zip(want) {
        assert_eq!((*count, *distinct, *max), (want, want, want), "{chain}");
    }
    let chains = verify_postgres(&pg.url(), TABLE).await.unwrap();
    assert_eq!(chains.len(), 2);
    for (c, want) in chains.iter().zip(want) {
        let report = c
            .result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}", c.chain_id));
        assert_eq!(report.records, want as u64, "{}", c.chain_id);
        assert!(report.gaps.is_empty());
    }
    // The spools verify too, and agree with the table's heads.
    assert_eq!(
        verify(&spools[1]).unwrap().head,
        chains[1].result.as_ref().unwrap().head
    );
}

/// Reseals `line` after `edit`, as a forger with the format would.
fn reseal(line: &str, edit: impl FnOnce(&mut AuditRecord)) -> String {
    let mut r: AuditRecord = serde_json::from_str(line).unwrap();
    edit(&mut r);
    let sealed = r.seal();
    String::from_utf8(sealed[..sealed.len() - 1].to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_deleting_inserting_or_reordering_a_row_is_each_detected() {
    let Some(pg) = PostgresServer::start("editing_deleting_inserting_or_reordering_a_row") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kinds = ["delete", "edit", "insert", "intact", "reorder"];
    for kind in kinds {
        let (auditor, shipper) = writer(&dir.path().join(kind), options(&pg.url(), kind));
        for i in 0..10 {
            auditor
                .event("E", serde_json::json!({ "i": i }))
                .await
                .unwrap();
        }
        auditor.flush().await.unwrap();
        assert!(shipper.wait_delivered(Duration::from_secs(30)).await);
    }
    let db = client(&pg.url()).await;
    // The writing path cannot rewrite the table: the trigger refuses.
    let err = db
        .execute("UPDATE finmesh_audit SET line = 'x' WHERE seq = 1", &[])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
        "{err:?}"
    );
    assert!(db.execute("DELETE FROM finmesh_audit", &[]).await.is_err());
    // A superuser can: that is what verification is for.
    db.batch_execute("ALTER TABLE finmesh_audit DISABLE TRIGGER USER")
        .await
        .unwrap();
    let chain = |kind: &str| format!("{kind}-%");
    let line_of = |seq: i64, kind: &'static str| {
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT line FROM finmesh_audit WHERE chain_id LIKE $1 AND seq = $2",
                    &[&format!("{kind}-%"), &seq],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    // edit: row 2's data changed, not resealed.
    db.execute(
        "UPDATE finmesh_audit SET line = replace(line, '\"i\":1', '\"i\":9') WHERE chain_id LIKE $1 AND seq = 2",
        &[&chain("edit")],
    )
    .await
    .unwrap();
    // delete: row 6 gone.
    db.execute(
        "DELETE FROM finmesh_audit WHERE chain_id LIKE $1 AND seq = 6",
        &[&chain("delete")],
    )
    .await
    .unwrap();
    // reorder: rows 3 and 4 swap places.
    db.batch_execute(
        "UPDATE finmesh_audit SET seq = -seq WHERE chain_id LIKE 'reorder-%' AND seq IN (3, 4);
         UPDATE finmesh_audit SET seq = 7 + seq WHERE chain_id LIKE 'reorder-%' AND seq IN (-3, -4);",
    )
    .await
    .unwrap();
    // insert: rows from 5 on move up one, and a forged, well-sealed
    // record linked to row 4 takes seq 5.
    let four = line_of(4, "insert").await;
    let five = line_of(5, "insert").await;
    let prev: AuditRecord = serde_json::from_str(&four).unwrap();
    let forged = reseal(&five, |r| {
        r.data = Some(serde_json::json!({ "i": "forged" }));
        r.prev = prev.hash.clone();
    });
    db.batch_execute(
        "UPDATE finmesh_audit SET seq = seq + 1000 WHERE chain_id LIKE 'insert-%' AND seq >= 5;
         UPDATE finmesh_audit SET seq = seq - 999 WHERE chain_id LIKE 'insert-%' AND seq >= 1000;",
    )
    .await
    .unwrap();
    let insert_chain: String = db
        .query_one(
            "SELECT DISTINCT chain_id FROM finmesh_audit WHERE chain_id LIKE 'insert-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let r: AuditRecord = serde_json::from_str(&forged).unwrap();
    db.execute(
        "INSERT INTO finmesh_audit (chain_id, seq, hash, prev, line) VALUES ($1, 5, $2, $3, $4)",
        &[&insert_chain, &r.hash, &r.prev, &forged],
    )
    .await
    .unwrap();

    // The verifier binary says the same, chain by chain.
    let out = std::process::Command::new(support::example_binary("audit_verify"))
        .args(["--postgres", &pg.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("5 chain(s), 4 broken"), "{text}");
    assert!(text.contains("ok: chain intact-"), "{text}");
    assert!(
        text.contains("BROKEN: chain delete-") && text.contains("record 6 is missing"),
        "{text}"
    );

    let chains = verify_postgres(&pg.url(), TABLE).await.unwrap();
    let kinds_seen: Vec<_> = chains
        .iter()
        .map(|c| c.chain_id.split('-').next().unwrap().to_owned())
        .collect();
    assert_eq!(kinds_seen, kinds);
    for c in &chains {
        let kind = c.chain_id.split('-').next().unwrap();
        let result = c.result.as_ref();
        match kind {
            "intact" => assert_eq!(result.unwrap().records, 10),
            "edit" => {
                let link = result.unwrap_err();
                assert_eq!(link.line, 2);
                assert!(matches!(link.kind, BreakKind::Changed { .. }), "{link}");
            }
            "delete" => {
                let link = result.unwrap_err();
                assert_eq!(link.kind, BreakKind::Missing { expected: 6 }, "{link}");
            }
            "reorder" => {
                let link = result.unwrap_err();
                assert_eq!(link.line, 3);
                assert!(matches!(link.kind, BreakKind::OutOfOrder { .. }), "{link}");
            }
            "insert" => {
                let link = result.unwrap_err();
                assert_eq!(
                    link.line, 6,
                    "the forged row links; the one it pushed does not"
                );
                assert!(matches!(link.kind, BreakKind::OutOfOrder { .. }), "{link}");
            }
            other => panic!("{other}"),
        }
    }
}

/// An auditor behind a server, over a sink whose database is down.
async fn outage_stack(
    pg: &PostgresServer,
    spool: &Path,
    mode: Backpressure,
) -> (Auditor, ShipperHandle, support::TestServer) {
    let options = options(&pg.url(), "strict").mode(mode).max_backlog(5);
    let (auditor, shipper) = writer(spool, options);
    let server = spawn(echo_app().layer(AuditLayer::new(auditor.clone()))).await;
    (auditor, shipper, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_strict_refuses_with_503_while_postgres_is_down_and_the_spool_is_full() {
    let Some(mut pg) = PostgresServer::start("blocking_strict_refuses_with_503") else {
        return;
    };
    pg.stop();
    let dir = tempfile::tempdir().unwrap();
    let (auditor, shipper, server) = outage_stack(
        &pg,
        &dir.path().join("audit.log"),
        Backpressure::BlockingStrict,
    )
    .await;
    // The spool takes five; the sixth record finds it full.
    for _ in 0..6 {
        assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    }
    for _ in 0..500 {
        if auditor.readiness().is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(auditor.readiness().is_err(), "readiness fails while full");
    let refused = support::get(&server.url("/ok"), &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["code"], "audit.unavailable");
    assert!(auditor.stats().refused >= 1);

    // PostgreSQL is back: the spool drains, requests are served again,
    // and every record is in the table.
    pg.resume();
    let mut served = false;
    for _ in 0..500 {
        if support::get(&server.url("/ok"), &[]).await.status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    auditor.flush().await.unwrap();
    assert!(shipper.wait_delivered(Duration::from_secs(30)).await);
    let chains = verify_postgres(&pg.url(), TABLE).await.unwrap();
    let report = chains[0].result.as_ref().unwrap();
    assert_eq!(report.records, auditor.stats().written);
    assert_eq!(
        report.records, 7,
        "six before, one after; none for the refusals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_mode_counts_what_it_drops_and_the_gap_shows_in_verification() {
    let Some(mut pg) = PostgresServer::start("batch_mode_counts_what_it_drops") else {
        return;
    };
    pg.stop();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("audit.log");
    let (auditor, shipper, server) = outage_stack(&pg, &spool, Backpressure::Batch).await;
    for _ in 0..12 {
        assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    }
    auditor.flush().await.unwrap();
    assert_eq!(auditor.stats().dropped, 7, "{:?}", auditor.stats());
    pg.resume();
    assert!(shipper.wait_delivered(Duration::from_secs(30)).await);
    // The next record declares the gap, then is written.
    assert_eq!(support::get(&server.url("/ok"), &[]).await.status, 200);
    auditor.flush().await.unwrap();
    assert!(shipper.wait_delivered(Duration::from_secs(30)).await);

    let chains = verify_postgres(&pg.url(), TABLE).await.unwrap();
    let report = chains[0].result.as_ref().unwrap();
    assert_eq!(report.gaps, [(6, 12)]);
    assert_eq!(report.records, 7, "five, the declaration, one more");
    assert_eq!(report.last_seq, Some(14));
    let local = verify(&spool).unwrap();
    assert_eq!(local.gaps, [(6, 12)]);
    // Without its declaration the same gap is a deletion.
    let db = client(&pg.url()).await;
    db.batch_execute(
        "ALTER TABLE finmesh_audit DISABLE TRIGGER USER;
         DELETE FROM finmesh_audit WHERE seq = 13;",
    )
    .await
    .unwrap();
    let chains = verify_postgres(&pg.url(), TABLE).await.unwrap();
    let link = chains[0].result.as_ref().unwrap_err();
    assert_eq!(link.kind, BreakKind::Missing { expected: 6 });
}

/// POSTs `body` as JSON; the answer must be 200.
async fn post_json(url: String, body: String) {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    assert_eq!(support::send(req).await.status, 200);
}

#[tokio::test]
async fn records_nested_past_the_parser_limit_ship_verify_and_survive_a_restart() {
    use finmesh::audit::{AuditPolicy, Level};
    let test = "records_nested_past_the_parser_limit_ship_verify_and_survive_a_restart";
    let Some(pg) = PostgresServer::start(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("audit.log");
    let poison = format!("{}{}", "[".repeat(127), "]".repeat(127));
    // Echoes the body it reads, so both bodies are captured.
    let app = |a: &Auditor| {
        echo_app()
            .route("/pay", axum::routing::post(|b: String| async move { b }))
            .layer(AuditLayer::new(a.clone()).policy(AuditPolicy::uniform(Level::RequestResponse)))
    };
    let (a, ship) = writer(&spool, options(&pg.url(), "deep"));
    let server = spawn(app(&a)).await;
    for _ in 0..2 {
        post_json(server.url("/pay"), poison.clone()).await;
    }
    a.flush().await.unwrap();
    assert!(ship.wait_delivered(Duration::from_secs(60)).await);
    drop(server);
    drop(a);
    while !ship.is_stopped() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A sealed record 200 levels deep, as an older version wrote one, is
    // the spool's last line.
    let text = std::fs::read_to_string(&spool).unwrap();
    let last = text.lines().last().unwrap();
    let hash = last[last.len() - 66..last.len() - 2].to_owned();
    let deep = reseal(last, |r| {
        let mut v = serde_json::json!([]);
        for _ in 1..200 {
            v = serde_json::Value::Array(vec![v]);
        }
        r.seq += 1;
        r.prev = hash;
        r.request_body = Some(v);
    });
    std::fs::write(&spool, format!("{text}{deep}\n")).unwrap();

    let (a, ship) = writer(&spool, options(&pg.url(), "deep"));
    assert!(a.recovery().is_none(), "{:?}", a.recovery());
    let server = spawn(app(&a)).await;
    post_json(server.url("/pay"), "{}".into()).await;
    a.flush().await.unwrap();
    assert!(ship.wait_delivered(Duration::from_secs(60)).await);
    let rows = counts(&pg.url()).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].1, rows[0].2, rows[0].3), (4, 4, 4));
    let chains = verify_postgres(&pg.url(), TABLE).await.unwrap();
    let report = chains[0].result.as_ref().unwrap();
    assert_eq!(report.records, 4);
    assert_eq!(verify(&spool).unwrap().records, 4);
}
