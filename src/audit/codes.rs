//! The audit layer's rejection codes.

crate::codes::rejection_codes! {
    /// The stable codes of the audit layer's refusals.
    pub enum AuditCode {
        /// The audit log cannot take a record now (queue full past the
        /// wait timeout, or the writer has failed); the request is refused
        /// rather than served unaudited.
        Unavailable = ("audit.unavailable", Unavailable),
    }
}
