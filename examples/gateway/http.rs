//! The gateway's HTTP routes. Every one of them runs behind the whole
//! stack: by the time a handler runs, the caller is authenticated, its
//! tenant admitted and the action authorized.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use bytes::Bytes;
use finmesh::audit::AuditHandle;
use finmesh::{Protocol, Rejection, RejectionKind, RequestLabels, Tenant};
use http::StatusCode;
use serde_json::json;

use super::amount::Amount;
use super::ledger::{Ledger, check_account_id};

/// `/v1/accounts`, `/v1/accounts/{id}`, `/v1/transfer`.
pub fn routes(ledger: Arc<Ledger>) -> Router {
    Router::new()
        .route("/v1/accounts", get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account).put(update_account))
        .route("/v1/transfer", post(transfer))
        .with_state(ledger)
}

type Labels = Option<Extension<RequestLabels>>;

/// A refusal by the application itself, rendered like the layers' own.
fn refuse(labels: &Labels, kind: RejectionKind, code: &'static str, detail: String) -> Response {
    let rejection = Rejection::new(kind, code, detail);
    let trace_id = labels.as_ref().and_then(|Extension(l)| {
        l.record_rejection(&rejection);
        l.trace_id()
    });
    rejection
        .render(Protocol::Http, trace_id.as_deref())
        .into_response()
}

fn not_found(labels: &Labels, id: &str) -> Response {
    refuse(
        labels,
        RejectionKind::NotFound,
        "ledger.account_not_found",
        no_account(id),
    )
}

/// "no account \"acc-9\"", naming the id only when it is a well-formed
/// one. Security: a refusal never echoes caller input at length.
pub(crate) fn no_account(id: &str) -> String {
    if check_account_id(id).is_ok() {
        format!("no account {id:?}")
    } else {
        "no such account".to_owned()
    }
}

/// A parser's message, cut short: serde quotes the offending input.
fn bounded(mut message: String) -> String {
    const MAX: usize = 200;
    if message.len() > MAX {
        let mut end = MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

async fn list_accounts(
    State(ledger): State<Arc<Ledger>>,
    Extension(tenant): Extension<Tenant>,
) -> Response {
    Json(json!({ "accounts": ledger.list(tenant.namespace.as_str()) })).into_response()
}

async fn get_account(
    State(ledger): State<Arc<Ledger>>,
    Extension(tenant): Extension<Tenant>,
    labels: Labels,
    Path(id): Path<String>,
) -> Response {
    match ledger.get(tenant.namespace.as_str(), &id) {
        Some(account) => Json(account).into_response(),
        None => not_found(&labels, &id),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountUpdate {
    name: String,
}

async fn update_account(
    State(ledger): State<Arc<Ledger>>,
    Extension(tenant): Extension<Tenant>,
    labels: Labels,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let update: AccountUpdate = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            return refuse(
                &labels,
                RejectionKind::InvalidArgument,
                "ledger.invalid_body",
                bounded(format!("expected {{\"name\": string}}: {e}")),
            );
        }
    };
    if update.name.is_empty() || update.name.len() > 100 {
        return refuse(
            &labels,
            RejectionKind::InvalidArgument,
            "ledger.invalid_body",
            "name must be 1 to 100 bytes".into(),
        );
    }
    match ledger.rename(tenant.namespace.as_str(), &id, &update.name) {
        Some(account) => Json(account).into_response(),
        None => not_found(&labels, &id),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    from: String,
    to: String,
    amount: Box<serde_json::value::RawValue>,
}

async fn transfer(
    State(ledger): State<Arc<Ledger>>,
    Extension(tenant): Extension<Tenant>,
    labels: Labels,
    audit: Option<Extension<AuditHandle>>,
    body: Bytes,
) -> Response {
    let req: TransferBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                &labels,
                RejectionKind::InvalidArgument,
                "transfer.invalid_body",
                bounded(format!("expected {{\"from\", \"to\", \"amount\"}}: {e}")),
            );
        }
    };
    // Before anything is audited or echoed.
    if let Err(e) = check_account_id(&req.from).and_then(|()| check_account_id(&req.to)) {
        return refuse(
            &labels,
            RejectionKind::Unprocessable,
            "transfer.invalid_account",
            e.to_string(),
        );
    }
    let amount = match Amount::from_json(&req.amount) {
        Ok(a) => a,
        Err(e) => {
            return refuse(
                &labels,
                RejectionKind::InvalidArgument,
                "transfer.invalid_amount",
                e.to_string(),
            );
        }
    };
    let order_id = labels
        .as_ref()
        .and_then(|Extension(l)| l.snapshot().order_id)
        .map(|o| o.to_string())
        .unwrap_or_default();
    let outcome = execute(
        &ledger,
        tenant.namespace.as_str(),
        &order_id,
        &req.from,
        &req.to,
        amount,
        audit.as_ref().map(|Extension(a)| a),
    )
    .await;
    match outcome {
        Ok(transfer_id) => {
            if let Some(Extension(l)) = &labels {
                l.set_consistency_status("committed");
            }
            (
                StatusCode::CREATED,
                Json(json!({
                    "transfer_id": transfer_id,
                    "state": "COMMITTED",
                    "order_id": order_id,
                    "from": req.from,
                    "to": req.to,
                    "amount": amount.to_string(),
                })),
            )
                .into_response()
        }
        Err(why) => refuse(
            &labels,
            RejectionKind::Unprocessable,
            "transfer.rejected",
            why,
        ),
    }
}

/// PREPARE → COMMIT → POST_COMMIT_HOOK, each step in the audit chain.
/// Shared by the HTTP route and the gRPC stream.
///
/// Security: before the commit, a refused audit write stops the
/// transfer — no money moves without its trail. After the commit the money
/// has moved: the transfer is reported as done whatever the audit queue
/// says (the failure is logged and the writer's stats count it), because
/// answering "rejected" for a committed transfer invites a second payment.
pub(crate) async fn execute(
    ledger: &Ledger,
    tenant: &str,
    order_id: &str,
    from: &str,
    to: &str,
    amount: Amount,
    audit: Option<&AuditHandle>,
) -> Result<String, String> {
    let step = |name: &'static str, data: serde_json::Value| async move {
        match audit {
            Some(audit) => audit
                .event(name, data)
                .await
                .map_err(|e| format!("audit unavailable: {e}")),
            None => Ok(()),
        }
    };
    // Ids are checked before they reach the audit chain (the HTTP route
    // refuses them earlier, with its own code).
    check_account_id(from)
        .and_then(|()| check_account_id(to))
        .map_err(|e| e.to_string())?;
    let known = match ledger.committed(tenant, order_id, from, to, amount) {
        // The order was paid before: answer with its transfer, move nothing.
        Ok(Some(done)) => return Ok(done.transfer_id),
        Ok(None) => Ok(()),
        // An order id reused for another payment: refused below, after
        // PREPARE, so the attempt is in the audit chain.
        Err(e) => Err(e),
    };
    let facts =
        json!({ "order_id": order_id, "from": from, "to": to, "amount": amount.to_string() });
    step("PREPARE", facts).await?;
    let aborted = |reason: String| async move {
        // Best effort: the transfer failed whether or not this is written.
        let _ = step("ABORT", json!({ "order_id": order_id, "reason": reason })).await;
        Err::<String, String>(reason)
    };
    // (A missing or malformed order id is refused by `commit`, below.)
    if let Err(e) = known {
        return aborted(e.to_string()).await;
    }
    if let Err(e) = ledger.prepare(tenant, from, to, amount) {
        return aborted(e.to_string()).await;
    }
    let committed = match ledger.commit(tenant, order_id, from, to, amount) {
        Ok(t) => t,
        Err(e) => return aborted(e.to_string()).await,
    };
    for (name, data) in [
        (
            "COMMIT",
            json!({ "order_id": order_id, "transfer_id": committed.transfer_id }),
        ),
        (
            "POST_COMMIT_HOOK",
            json!({ "order_id": order_id, "transfer_id": committed.transfer_id, "notified": true }),
        ),
    ] {
        if let Err(e) = step(name, data).await {
            tracing::error!(order_id, transfer_id = %committed.transfer_id, "{name} not audited: {e}");
        }
    }
    Ok(committed.transfer_id)
}
