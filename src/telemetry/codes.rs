//! The telemetry layer's rejection codes.

crate::codes::rejection_codes! {
    /// The stable codes of the telemetry layer's refusals.
    pub enum TelemetryCode {
        /// A route that requires an order id was called without one.
        OrderIdMissing = ("telemetry.order_id_missing", InvalidArgument),
        /// The order id is not 1 to 128 visible ASCII characters.
        OrderIdInvalid = ("telemetry.order_id_invalid", InvalidArgument),
    }
}
