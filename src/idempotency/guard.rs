//! [`ClaimGuard`]: the claim a governed request holds while its handler
//! runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::store::{ClaimToken, Completed, IdempotencyStore, StoreKey};

/// How many completions may run detached from their requests at once, per
/// layer. Past this a completion runs inline: the claim is still kept if
/// the client goes away, but the retry then waits for the claim TTL
/// (409 `idempotency.in_flight`) instead of getting the replay.
pub(super) const MAX_DETACHED_COMPLETIONS: usize = 4096;

/// Frees the claim if the request ends before the handler has answered:
/// the handler failed, or the client went away while it ran (the future was
/// dropped). Without it a key would stay locked until the claim TTL.
///
/// Once the handler has answered ([`answered`](Self::answered)), dropping
/// the guard no longer frees the claim: the money may have moved.
pub(super) struct ClaimGuard {
    store: Arc<dyn IdempotencyStore>,
    key: StoreKey,
    token: ClaimToken,
    armed: bool,
}

impl ClaimGuard {
    pub(super) fn new(store: Arc<dyn IdempotencyStore>, key: StoreKey, token: ClaimToken) -> Self {
        Self {
            store,
            key,
            token,
            armed: true,
        }
    }

    /// The handler has answered: from now on the claim is never freed by
    /// the request going away, only completed (or freed explicitly with
    /// [`release`](Self::release)).
    pub(super) fn answered(&mut self) {
        // Security: a client that resets the stream or closes the
        // connection after the handler ran must not free the key, or its
        // retry would run the handler — pay — a second time.
        self.armed = false;
    }

    /// Frees the claim now (the response was never whole: a retry must be
    /// able to run again).
    pub(super) fn release(mut self) {
        self.armed = true;
        drop(self);
    }

    /// Stores the completed record; the claim is then no longer ours to
    /// free, whatever the store answers.
    ///
    /// A store that finishes on the first poll (the in-memory one) is
    /// written inline. Otherwise the store write runs in a task of its own,
    /// so that it finishes even
    /// if this future is dropped (the client went away): the retry then
    /// finds the response and replays it. That task is bounded: it gives
    /// up after `bound` (the claim TTL: past it the claim may belong to
    /// another request anyway), and at most [`MAX_DETACHED_COMPLETIONS`]
    /// run at once per layer (`detached` counts them); past that, or
    /// outside a tokio runtime, the write runs inline.
    pub(super) async fn complete(
        mut self,
        record: Completed,
        retention: Duration,
        bound: Duration,
        detached: &Arc<AtomicUsize>,
    ) {
        self.answered();
        let store = self.store.clone();
        let key = self.key.clone();
        let token = self.token;
        let write = async move {
            match tokio::time::timeout(bound, store.complete(&key, token, record, retention)).await
            {
                Ok(stored) => report(stored),
                Err(_) => tracing::warn!(
                    "idempotency: storing the response took longer than the claim TTL; gave up (the claim is kept and expires by TTL)"
                ),
            }
        };
        // A store in this process (the in-memory one) finishes on the first
        // poll: then there is nothing to protect from cancellation, and no
        // task to spawn. Polling with a no-op waker first is sound: a store
        // that is not ready registers the real waker on the next poll.
        let mut write = Box::pin(write);
        let ready = write
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            .is_ready();
        if ready {
            return;
        }
        let handle = tokio::runtime::Handle::try_current().ok();
        match handle.and_then(|h| DetachedSlot::take(detached).map(|slot| (h, slot))) {
            Some((handle, slot)) => {
                let task = handle.spawn(async move {
                    write.await;
                    drop(slot);
                });
                // If this future is dropped here, the task runs on.
                let _ = task.await;
            }
            None => write.await,
        }
    }
}

fn report(stored: Result<bool, super::store::StoreError>) {
    match stored {
        Ok(true) => {}
        Ok(false) => {
            // Our claim expired and another request took the key: it
            // owns the record now. The caller still gets this response.
            tracing::warn!(
                "idempotency: claim expired before the response was stored; raise claim_ttl"
            );
        }
        Err(e) => {
            // The response exists but cannot be stored. Keep the claim:
            // freeing the key would let a retry pay twice; it frees
            // itself after the claim TTL.
            tracing::warn!(error = %e, "idempotency: could not store the response");
        }
    }
}

/// One of the [`MAX_DETACHED_COMPLETIONS`] slots, given back on drop.
struct DetachedSlot(Arc<AtomicUsize>);

impl DetachedSlot {
    fn take(count: &Arc<AtomicUsize>) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_DETACHED_COMPLETIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for DetachedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            // No runtime (it is shutting down): the claim expires by TTL.
            return;
        };
        let store = self.store.clone();
        let key = self.key.clone();
        let token = self.token;
        handle.spawn(async move {
            if let Err(e) = store.release(&key, token).await {
                tracing::warn!(error = %e, "idempotency: could not release a claim; it expires by TTL");
            }
        });
    }
}
