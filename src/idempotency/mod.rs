//! idempotency (in progress).
