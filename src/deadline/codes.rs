//! The stream-deadline layer's rejection codes.

crate::codes::rejection_codes! {
    /// The stable codes of the stream-deadline layer's refusals.
    pub enum DeadlineCode {
        /// A message, idle or whole-call deadline passed (gRPC: in the
        /// trailers, `DEADLINE_EXCEEDED`).
        Exceeded = ("deadline.exceeded", DeadlineExceeded),
        /// The client stalled while sending the request body.
        RequestTimeout = ("deadline.request_timeout", RequestTimeout),
        /// A gRPC message is larger than the configured limit.
        MessageTooLarge = ("deadline.message_too_large", ResourceExhausted),
        /// The `grpc-timeout` header is not valid.
        InvalidGrpcTimeout = ("deadline.invalid_grpc_timeout", InvalidArgument),
    }
}
