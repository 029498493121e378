//! The gateway's gRPC service, `finmesh.gateway.v1.Ledger`.

use std::pin::Pin;
use std::sync::Arc;

use finmesh::Tenant;
use finmesh::audit::AuditHandle;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::amount::Amount;
use super::ledger::Ledger;
use super::pb::ledger_server::{Ledger as LedgerApi, LedgerServer};
use super::pb::{Account, GetAccountRequest, TransferRequest, TransferResult};

/// The Ledger service as axum routes, to merge with the HTTP ones.
pub fn routes(ledger: Arc<Ledger>) -> axum::Router {
    tonic::service::Routes::new(Server::new(LedgerService { ledger })).into_axum_router()
}

/// The tonic server type of the Ledger, named by grpc.health.v1.
pub type Server = LedgerServer<LedgerService>;

/// The Ledger's implementation.
pub struct LedgerService {
    ledger: Arc<Ledger>,
}

fn tenant_of<T>(req: &Request<T>) -> Result<Tenant, Status> {
    // The tenant layer admitted the call; without it the service refuses.
    req.extensions()
        .get::<Tenant>()
        .cloned()
        .ok_or_else(|| Status::permission_denied("no tenant"))
}

type ResultStream = Pin<Box<dyn Stream<Item = Result<TransferResult, Status>> + Send>>;

#[tonic::async_trait]
impl LedgerApi for LedgerService {
    async fn get_account(
        &self,
        req: Request<GetAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        let tenant = tenant_of(&req)?;
        let id = req.into_inner().id;
        let account = self
            .ledger
            .get(tenant.namespace.as_str(), &id)
            .ok_or_else(|| Status::not_found(super::http::no_account(&id)))?;
        Ok(Response::new(Account {
            id: account.id,
            tenant: account.tenant,
            balance: account.balance,
        }))
    }

    type StreamTransfersStream = ResultStream;

    async fn stream_transfers(
        &self,
        req: Request<Streaming<TransferRequest>>,
    ) -> Result<Response<Self::StreamTransfersStream>, Status> {
        let tenant = tenant_of(&req)?;
        let audit = req.extensions().get::<AuditHandle>().cloned();
        let ledger = self.ledger.clone();
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(next) = inbound.next().await {
                let result = match next {
                    // A deadline (or any stream error) ends the call with it.
                    Err(status) => Err(status),
                    Ok(t) => Ok(match Amount::parse(&t.amount) {
                        Err(_) => rejected(t.order_id),
                        Ok(amount) => {
                            let ns = tenant.namespace.as_str();
                            match super::http::execute(
                                &ledger,
                                ns,
                                &t.order_id,
                                &t.from_account,
                                &t.to_account,
                                amount,
                                audit.as_ref(),
                            )
                            .await
                            {
                                Ok(transfer_id) => TransferResult {
                                    order_id: t.order_id,
                                    transfer_id,
                                    state: "COMMITTED".into(),
                                },
                                Err(_) => rejected(t.order_id),
                            }
                        }
                    }),
                };
                let failed = result.is_err();
                if tx.send(result).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn rejected(mut order_id: String) -> TransferResult {
    // Security: an over-long order id is not echoed back.
    if order_id.len() > super::ledger::MAX_ORDER_ID_LEN {
        order_id.clear();
    }
    TransferResult {
        order_id,
        transfer_id: String::new(),
        state: "REJECTED".into(),
    }
}
