//! The RBAC layer's rejection codes.

crate::codes::rejection_codes! {
    /// The stable codes of the RBAC layer's refusals. (A request that
    /// reaches RBAC without a principal is refused with
    /// [`AuthCode::Missing`](crate::principal::AuthCode::Missing).)
    pub enum RbacCode {
        /// No role bound to the caller grants the verb on the resource.
        Denied = ("rbac.denied", PermissionDenied),
        /// The request maps to no verb and resource (never a 404, which
        /// would confirm what exists).
        Unmapped = ("rbac.unmapped", PermissionDenied),
    }
}
