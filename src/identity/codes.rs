//! [`IdentityCode`]: the stable codes of the identity layer's refusals.

use crate::codes::rejection_codes;

rejection_codes! {
    /// The stable codes of the refusals of a mutual-TLS connection.
    pub enum IdentityCode {
        /// The connection presented no client certificate, and client
        /// certificates are required (probe paths excepted).
        Missing = ("identity.missing", Unauthenticated),
        /// The client certificate's chain verified, but it is not a valid
        /// X.509-SVID (no or several URI SANs, a malformed SPIFFE ID, a CA
        /// or signing-incapable leaf) or its trust domain is not allowed.
        Invalid = ("identity.invalid", Unauthenticated),
        /// The client certificate expired (`notAfter` passed) while the
        /// connection stayed open.
        Expired = ("identity.expired", Unauthenticated),
        /// The route admits only certain peers, and this one is not among
        /// them.
        PeerDenied = ("identity.peer_denied", PermissionDenied),
    }
}
