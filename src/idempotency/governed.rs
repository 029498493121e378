//! The flow of a governed request: buffer and fingerprint the request,
//! claim its key, run the handler, buffer and store the response.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::IdempotencyCode;
use super::body::{IdempotencyBody, IdempotencyRequestBody};
use super::buffer::{Buffered, buffer};
use super::guard::ClaimGuard;
use super::layer::Config;
use super::respond::{reject, replay, too_large};
use super::store::{Claim, ClaimToken, Completed, Fingerprint, StoreKey, StoredResponse};
use crate::labels::RequestLabels;

/// Runs one governed request: answers from the store when its key is
/// known, else runs `inner` under a claim and stores what it answered.
pub(super) async fn governed_call<S, ReqB, ResB>(
    mut inner: S,
    config: Arc<Config>,
    parts: Parts,
    body: ReqB,
    scope: StoreKey,
) -> Result<Response<IdempotencyBody<ResB>>, S::Error>
where
    S: Service<Request<IdempotencyRequestBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes>,
    ResB: Body<Data = Bytes>,
{
    let (data, trailers) = match buffer(std::pin::pin!(body), config.max_request_body).await {
        Ok(Buffered::Whole(data, trailers)) => (data, trailers),
        Ok(Buffered::OverLimit(_)) => return Ok(too_large(parts, config.max_request_body)),
        Err(_) => {
            return Ok(reject(
                parts,
                IdempotencyCode::BodyUnreadable,
                "the request body could not be read",
            ));
        }
    };
    let fingerprint = fingerprint(&parts, &data);
    let token = match claim(&config, &scope, fingerprint).await {
        Ok(token) => token,
        Err(Answered::Completed(record)) => return Ok(replay_or_refuse(parts, &scope, &record)),
        Err(Answered::Refused(code, detail)) => return Ok(reject(parts, code, detail)),
    };
    let mut guard = ClaimGuard::new(config.store.clone(), scope, token);
    let req = Request::from_parts(parts, IdempotencyRequestBody::buffered(data, trailers));
    // An `Err` from the handler, or the client going away while it runs,
    // drops the guard, which frees the key.
    let res = inner.call(req).await?;
    // The handler answered: from here on the claim is kept whatever
    // happens to this request, and completed.
    guard.answered();
    Ok(store_response(&config, guard, fingerprint, res).await)
}

/// SHA-256 over the method, the path with its query, and the body.
fn fingerprint(parts: &Parts, body: &[u8]) -> Fingerprint {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    Fingerprint::of(&parts.method, target, body)
}

/// Why the handler does not run: the store already answered.
enum Answered {
    /// The same request completed.
    Completed(Arc<Completed>),
    /// A refusal.
    Refused(IdempotencyCode, &'static str),
}

/// Claims the key for this request, or says why not (see the table in the
/// module docs).
async fn claim(
    config: &Config,
    scope: &StoreKey,
    fingerprint: Fingerprint,
) -> Result<ClaimToken, Answered> {
    const KEY_REUSED: Answered = Answered::Refused(
        IdempotencyCode::KeyReused,
        "this Idempotency-Key was used with a different request",
    );
    match config
        .store
        .claim(scope, fingerprint, config.claim_ttl)
        .await
    {
        Ok(Claim::Acquired(token)) => Ok(token),
        Ok(Claim::InFlight { fingerprint: other }) if other != fingerprint => Err(KEY_REUSED),
        Ok(Claim::InFlight { .. }) => Err(Answered::Refused(
            IdempotencyCode::InFlight,
            "a request with this Idempotency-Key is still being processed",
        )),
        Ok(Claim::Completed(record)) if record.fingerprint != fingerprint => Err(KEY_REUSED),
        Ok(Claim::Completed(record)) => Err(Answered::Completed(record)),
        Ok(Claim::QuotaExceeded) => Err(Answered::Refused(
            IdempotencyCode::QuotaExceeded,
            "the idempotency store holds as much as this tenant may keep; retry later",
        )),
        Err(e) => {
            tracing::warn!(error = %e, "idempotency store unavailable; refusing the request");
            Err(Answered::Refused(
                IdempotencyCode::StoreUnavailable,
                "the idempotency store cannot be reached; the request was not processed",
            ))
        }
    }
}

/// The answer to a request that completed before: its stored response,
/// or a refusal if it was too large to store.
fn replay_or_refuse<B: Body>(
    parts: Parts,
    scope: &StoreKey,
    record: &Completed,
) -> Response<IdempotencyBody<B>> {
    let Some(stored) = &record.response else {
        return reject(
            parts,
            IdempotencyCode::NotReplayable,
            "the request with this Idempotency-Key completed, but its response was too large to store",
        );
    };
    if let Some(labels) = parts.extensions.get::<RequestLabels>() {
        labels.set_idempotency(scope.key.as_arc().clone(), true);
    }
    replay(stored)
}

/// Buffers the handler's response so it can be stored, stores it, and
/// hands it on.
async fn store_response<B>(
    config: &Config,
    guard: ClaimGuard,
    fingerprint: Fingerprint,
    res: Response<B>,
) -> Response<IdempotencyBody<B>>
where
    B: Body<Data = Bytes>,
{
    let (head, body) = res.into_parts();
    // Boxed so that a response over the limit can still be handed on after
    // being partly read.
    let mut body = Box::pin(body);
    let (response, stored) = match buffer(body.as_mut(), config.max_response_body).await {
        Err(e) => {
            // The response was never whole, so a retry must be able to run
            // again.
            guard.release();
            return Response::from_parts(head, IdempotencyBody::failed(e));
        }
        Ok(Buffered::Whole(data, trailers)) => {
            let stored = StoredResponse {
                status: head.status,
                headers: select(&head.headers, &config.stored_headers),
                body: data.clone(),
                trailers: trailers.as_ref().map(|t| select(t, &config.stored_headers)),
            };
            let full = IdempotencyBody::full(data, trailers);
            (Response::from_parts(head, full), Some(stored))
        }
        Ok(Buffered::OverLimit(read)) => {
            // The handler ran, so the key must not run again; but there is
            // nothing to replay. The rest streams to this caller unbuffered.
            tracing::warn!(
                limit = config.max_response_body,
                "idempotency: response too large to store; retries get idempotency.not_replayable"
            );
            let rest = IdempotencyBody::with_prefix(read.into_bytes(), body);
            (Response::from_parts(head, rest), None)
        }
    };
    let record = Completed {
        fingerprint,
        response: stored,
    };
    guard
        .complete(
            record,
            config.retention,
            config.claim_ttl,
            &config.detached_completions,
        )
        .await;
    response
}

/// The headers named in `names`, all their values.
fn select(headers: &HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in names {
        for value in headers.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}
