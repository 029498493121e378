//! The idempotency layer's rejection codes.

crate::codes::rejection_codes! {
    /// The stable codes of the idempotency layer's refusals.
    pub enum IdempotencyCode {
        /// A governed request without an `Idempotency-Key`.
        KeyMissing = ("idempotency.key_missing", InvalidArgument),
        /// The key is not 1 to 255 visible ASCII characters, or is sent
        /// more than once.
        KeyInvalid = ("idempotency.key_invalid", InvalidArgument),
        /// The request body could not be read.
        BodyUnreadable = ("idempotency.body_unreadable", InvalidArgument),
        /// The first request with this key is still running.
        InFlight = ("idempotency.in_flight", Conflict),
        /// The key was used before with another payload.
        KeyReused = ("idempotency.key_reused", Unprocessable),
        /// The first response with this key could not be stored (too large
        /// or unreadable), so it cannot be replayed.
        NotReplayable = ("idempotency.not_replayable", Unprocessable),
        /// The request body is over the configured limit.
        PayloadTooLarge = ("idempotency.payload_too_large", PayloadTooLarge),
        /// The tenant of the request has used up its share of the
        /// idempotency store (or the store its budget): nothing ran.
        QuotaExceeded = ("idempotency.quota_exceeded", ResourceExhausted),
        /// The store cannot be reached.
        StoreUnavailable = ("idempotency.store_unavailable", Unavailable),
    }
}
