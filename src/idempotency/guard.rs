//! [`ClaimGuard`]: the claim a governed request holds while its handler
//! runs.

use std::sync::Arc;
use std::time::Duration;

use super::store::{ClaimToken, Completed, IdempotencyStore, StoreKey};

/// Frees the claim if the request ends before its response is stored: the
/// handler failed, its body failed, or the client went away (the future was
/// dropped). Without it a key would stay locked until the claim TTL.
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

    /// Stores the completed record; the claim is then no longer ours to
    /// free, whatever the store answers.
    pub(super) async fn complete(mut self, record: Completed, retention: Duration) {
        let stored = self
            .store
            .complete(&self.key, self.token, record, retention)
            .await;
        self.armed = false;
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
