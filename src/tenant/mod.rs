//! Tenants: the namespace every governed request names, and what is known
//! of it.
//!
//! [`TenantNamespace`] and [`Tenant`] are shared vocabulary, available
//! whatever features are on: the JWT layer reads a tenant claim into a
//! namespace, RBAC scopes its decision to the tenant's namespace, audit
//! records it.

mod model;
mod namespace;

pub use model::{Tenant, TenantStatus};
pub use namespace::{InvalidNamespace, MAX_LEN as MAX_NAMESPACE_LEN, TenantNamespace};
