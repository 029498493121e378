//! The rate-limit layer's rejection codes.

crate::codes::rejection_codes! {
    /// The stable codes of the rate-limit layer's refusals.
    pub enum RateLimitCode {
        /// A rate limit of the request's tenant, subject or route is used
        /// up (or the tenant holds its whole share of limiter keys).
        Exceeded = ("ratelimit.exceeded", ResourceExhausted),
        /// The in-flight limit is reached and the queue is full, or the
        /// request waited in the queue past its timeout.
        ConcurrencyExceeded = ("ratelimit.concurrency_exceeded", ResourceExhausted),
        /// The shared (Redis) limiter cannot be reached and the rule says
        /// `failClosed`.
        StoreUnavailable = ("ratelimit.store_unavailable", Unavailable),
    }
}
