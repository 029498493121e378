//! [`TenantLayer`] and its builder options.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Request};
use tower_layer::Layer;

use super::{Tenant, TenantNamespace, TenantRegistry, TenantRejection, TenantService};
use crate::principal::Principal;

/// The header the tenant namespace is read from unless told otherwise:
/// `x-tenant-namespace`.
pub const DEFAULT_TENANT_HEADER: HeaderName = HeaderName::from_static("x-tenant-namespace");

/// A [`TenantLayer`] over a type-erased registry.
pub type SharedTenantLayer = TenantLayer<SharedTenants>;

/// Any [`TenantRegistry`], type-erased behind an `Arc`.
///
/// A named type rather than `Arc<dyn TenantRegistry>`: inside an `async`
/// block (a hyper connection task, say) the compiler cannot prove that a
/// bare trait object's erased lifetime is `'static`, and the stack's
/// futures would fail to be `Send`. This newtype has no lifetime to prove.
#[derive(Clone)]
pub struct SharedTenants(Arc<dyn TenantRegistry>);

impl SharedTenants {
    /// Shares `registry`.
    pub fn new(registry: impl TenantRegistry) -> Self {
        Self(Arc::new(registry))
    }
}

impl fmt::Debug for SharedTenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedTenants")
    }
}

impl TenantRegistry for SharedTenants {
    fn lookup(&self, namespace: &TenantNamespace) -> Option<Tenant> {
        self.0.lookup(namespace)
    }

    fn lookup_str(&self, namespace: &str) -> Option<Tenant> {
        self.0.lookup_str(namespace)
    }
}

/// Admits a request only for a known, active tenant — the caller's own —
/// and puts that [`Tenant`] into the request extensions.
///
/// See the [module docs](super) for where it sits in the stack and what it
/// answers.
pub struct TenantLayer<R> {
    registry: Arc<R>,
    header: HeaderName,
    principal_fallback: bool,
}

impl<R> Clone for TenantLayer<R> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            header: self.header.clone(),
            principal_fallback: self.principal_fallback,
        }
    }
}

impl<R> fmt::Debug for TenantLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantLayer")
            .field("header", &self.header)
            .field("principal_fallback", &self.principal_fallback)
            .finish_non_exhaustive()
    }
}

impl<R: TenantRegistry> TenantLayer<R> {
    /// Checks tenants against `registry`, reading the namespace from the
    /// [`DEFAULT_TENANT_HEADER`] and, when the header is absent, from the
    /// verified [`Principal`]'s tenant claim.
    pub fn new(registry: R) -> Self {
        Self {
            registry: Arc::new(registry),
            header: DEFAULT_TENANT_HEADER,
            principal_fallback: true,
        }
    }

    /// Reads the namespace from `name` instead of `x-tenant-namespace`.
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.header = name;
        self
    }

    /// Whether a request without the header may take its tenant from the
    /// verified principal's tenant claim (on by default).
    ///
    /// Off, every request must send the header, even with a token that
    /// names a tenant. Either way a header that contradicts the claim is
    /// refused with `tenant.mismatch`: the signed claim outranks what the
    /// caller says.
    pub fn principal_fallback(mut self, enabled: bool) -> Self {
        self.principal_fallback = enabled;
        self
    }

    /// The same layer over a type-erased registry, so that stacks built
    /// with different registries have one type (see
    /// [`GovernanceLayer`](crate::GovernanceLayer)).
    pub fn into_shared(self) -> SharedTenantLayer {
        let registry: Arc<dyn TenantRegistry> = self.registry;
        TenantLayer {
            registry: Arc::new(SharedTenants(registry)),
            header: self.header,
            principal_fallback: self.principal_fallback,
        }
    }

    /// The registry tenants are looked up in.
    pub fn registry(&self) -> &R {
        &self.registry
    }

    /// Decides for a request's headers and verified principal, without
    /// touching the request: the admitted tenant, or why not.
    ///
    /// This is exactly what the layer does per request; it is public for
    /// protocols the layer does not wrap (a WebSocket upgrade, a message
    /// consumer).
    ///
    /// The order matters: the header is validated first; then compared
    /// with the principal's claim *before* the registry is asked, so a
    /// caller holding a token for one tenant cannot learn, from
    /// `tenant.unknown` versus `tenant.mismatch`, whether another tenant
    /// exists.
    pub fn resolve(
        &self,
        headers: &HeaderMap,
        principal: Option<&Principal>,
    ) -> Result<Tenant, TenantRejection> {
        let mut values = headers.get_all(&self.header).iter();
        let from_header = match (values.next(), values.next()) {
            (None, _) => None,
            // Security: two values are ambiguous — a proxy may
            // forward the first while we would read another — so neither
            // is trusted.
            (Some(_), Some(_)) => return Err(TenantRejection::MultipleValues),
            // The raw bytes, as sent: no trimming, no percent-decoding, no
            // case folding; anything but a DNS-1123 label is refused.
            (Some(value), None) => Some(
                TenantNamespace::from_bytes(value.as_bytes())
                    .map_err(TenantRejection::Malformed)?,
            ),
        };
        let claimed = principal.and_then(|p| p.tenant);
        // Security: a caller whose own tenant is suspended is
        // refused as such whatever header it sends — suspension must not
        // be sidestepped, or turned into a `tenant.mismatch`, by naming
        // another tenant. Telling the caller its own tenant's status
        // reveals nothing about other tenants.
        let own = claimed.and_then(|claim| self.registry.lookup(&claim));
        if let (Some(claim), Some(own)) = (claimed, &own)
            && !own.is_active()
        {
            return Err(TenantRejection::Suspended(claim));
        }
        let namespace = match (from_header, claimed) {
            // Security: a verified claim outranks a header.
            (Some(header), Some(claim)) if header != claim => {
                return Err(TenantRejection::Mismatch);
            }
            (Some(header), _) => header,
            (None, Some(claim)) if self.principal_fallback => claim,
            (None, _) => return Err(TenantRejection::Missing),
        };
        // The caller's own tenant, looked up above, is the one asked for
        // (the usual case): one registry lookup, not two.
        let tenant = match own {
            Some(own) if claimed == Some(namespace) => Some(own),
            _ => self.registry.lookup(&namespace),
        }
        .ok_or(TenantRejection::Unknown(namespace))?;
        if !tenant.is_active() {
            return Err(TenantRejection::Suspended(namespace));
        }
        Ok(tenant)
    }

    /// [`resolve`](Self::resolve) for a request: its headers and the
    /// [`Principal`] in its extensions, if any.
    pub fn resolve_request<B>(&self, req: &Request<B>) -> Result<Tenant, TenantRejection> {
        self.resolve(req.headers(), req.extensions().get::<Principal>())
    }
}

impl<S, R> Layer<S> for TenantLayer<R> {
    type Service = TenantService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService::from_layer(inner, self.clone())
    }
}
