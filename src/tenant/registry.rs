//! [`TenantRegistry`]: where the tenant layer looks tenants up, and
//! [`StaticTenants`], a registry built in code.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use dashmap::DashMap;

use super::{Tenant, TenantNamespace, TenantStatus};

/// Answers "what is known of this tenant?" on the request path.
///
/// A lookup is synchronous and must not block on I/O: it runs inside
/// [`TenantService::call`](super::TenantService), once per request. Keep the
/// tenants in memory and refresh them from the outside (a file watcher, a
/// background task) — as [`StaticTenants`] and
/// [`FileTenants`](super::FileTenants) do.
///
/// A lookup returns an owned [`Tenant`]: it is cheap to clone (the
/// namespace is stored inline, the display name and labels are shared
/// `Arc`s, so a clone is two reference-count increments and no
/// allocation), and the layer needs an owned value to put into the
/// request extensions anyway. A registry may therefore hand out a clone of
/// what it holds without the caller keeping any lock or guard alive.
///
/// `Arc<R>` and `Box<R>` are registries when `R` is, so one registry can be
/// shared by several layers and kept by the application for run-time
/// changes:
///
/// ```
/// use std::sync::Arc;
/// use finmesh::tenant::{StaticTenants, Tenant, TenantLayer, TenantNamespace, TenantRegistry};
///
/// let tenants = Arc::new(StaticTenants::new());
/// let layer = TenantLayer::new(Arc::clone(&tenants));
///
/// let acme = TenantNamespace::parse("acme").unwrap();
/// tenants.insert(Tenant::new(acme));
/// assert!(tenants.lookup(&acme).is_some());
/// # let _ = layer;
/// ```
pub trait TenantRegistry: Send + Sync + 'static {
    /// The tenant registered under `namespace`, if any, whatever its status.
    fn lookup(&self, namespace: &TenantNamespace) -> Option<Tenant>;

    /// The tenant registered under `namespace`, if `namespace` is a valid
    /// DNS-1123 label and is registered.
    fn lookup_str(&self, namespace: &str) -> Option<Tenant> {
        TenantNamespace::parse(namespace)
            .ok()
            .and_then(|ns| self.lookup(&ns))
    }
}

impl<R: TenantRegistry + ?Sized> TenantRegistry for Arc<R> {
    fn lookup(&self, namespace: &TenantNamespace) -> Option<Tenant> {
        (**self).lookup(namespace)
    }
}

impl<R: TenantRegistry + ?Sized> TenantRegistry for Box<R> {
    fn lookup(&self, namespace: &TenantNamespace) -> Option<Tenant> {
        (**self).lookup(namespace)
    }
}

/// Tenants held in memory, changed at run time from any thread.
///
/// Backed by a sharded concurrent map ([`dashmap`]): lookups from many
/// request threads and inserts, removals and status changes from others
/// proceed side by side; a lookup only ever waits for a write to the same
/// shard, which holds its lock for the few nanoseconds of a map update.
/// Lookups are a hash of the namespace and one probe, whatever the number
/// of tenants.
///
/// Not `Clone` (a clone of the map would silently diverge from the
/// original): share one with `Arc<StaticTenants>`, which is itself a
/// [`TenantRegistry`].
///
/// ```
/// use finmesh::tenant::{StaticTenants, Tenant, TenantNamespace, TenantRegistry, TenantStatus};
///
/// let ns = |s| TenantNamespace::parse(s).unwrap();
/// let tenants: StaticTenants = [
///     Tenant::new(ns("tenant-a")).with_display_name("Tenant A"),
///     Tenant::new(ns("tenant-b")).with_labels([("region", "eu-west-1")]),
/// ]
/// .into_iter()
/// .collect();
///
/// assert!(tenants.set_status("tenant-a", TenantStatus::Suspended));
/// assert!(!tenants.lookup(&ns("tenant-a")).unwrap().is_active());
/// assert_eq!(tenants.remove("tenant-b").unwrap().labels["region"], "eu-west-1");
/// assert_eq!(tenants.len(), 1);
/// ```
pub struct StaticTenants {
    map: DashMap<TenantNamespace, Tenant>,
}

impl StaticTenants {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            map: DashMap::new(),
        }
    }

    /// An empty registry with room for `capacity` tenants.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            map: DashMap::with_capacity(capacity),
        }
    }

    /// Adds `tenant`, or replaces the tenant with the same namespace;
    /// returns the replaced one.
    pub fn insert(&self, tenant: Tenant) -> Option<Tenant> {
        self.map.insert(tenant.namespace, tenant)
    }

    /// Removes the tenant named `namespace` (a `&str` or a
    /// `&TenantNamespace`) and returns it.
    pub fn remove<Q>(&self, namespace: &Q) -> Option<Tenant>
    where
        TenantNamespace: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(namespace).map(|(_, tenant)| tenant)
    }

    /// Sets the status of the tenant named `namespace`; `false` if there
    /// is no such tenant.
    pub fn set_status<Q>(&self, namespace: &Q, status: TenantStatus) -> bool
    where
        TenantNamespace: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.map.get_mut(namespace) {
            Some(mut tenant) => {
                tenant.status = status;
                true
            }
            None => false,
        }
    }

    /// The tenant named `namespace` (a `&str` or a `&TenantNamespace`).
    pub fn get<Q>(&self, namespace: &Q) -> Option<Tenant>
    where
        TenantNamespace: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(namespace).map(|tenant| tenant.clone())
    }

    /// Whether a tenant named `namespace` is registered.
    pub fn contains<Q>(&self, namespace: &Q) -> bool
    where
        TenantNamespace: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.contains_key(namespace)
    }

    /// How many tenants are registered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no tenant is registered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes every tenant.
    pub fn clear(&self) {
        self.map.clear();
    }

    /// A copy of every registered tenant, in no particular order.
    pub fn tenants(&self) -> Vec<Tenant> {
        self.map.iter().map(|entry| entry.value().clone()).collect()
    }
}

impl Default for StaticTenants {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StaticTenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTenants")
            .field("len", &self.map.len())
            .finish()
    }
}

impl TenantRegistry for StaticTenants {
    fn lookup(&self, namespace: &TenantNamespace) -> Option<Tenant> {
        self.get(namespace)
    }

    fn lookup_str(&self, namespace: &str) -> Option<Tenant> {
        // Keys hash as their `str`, so no parse is needed: only valid
        // namespaces were ever inserted.
        self.get(namespace)
    }
}

impl FromIterator<Tenant> for StaticTenants {
    /// Later tenants replace earlier ones with the same namespace.
    fn from_iter<I: IntoIterator<Item = Tenant>>(iter: I) -> Self {
        let mut tenants = Self::new();
        tenants.extend(iter);
        tenants
    }
}

impl Extend<Tenant> for StaticTenants {
    fn extend<I: IntoIterator<Item = Tenant>>(&mut self, iter: I) {
        (&*self).extend(iter);
    }
}

impl Extend<Tenant> for &StaticTenants {
    fn extend<I: IntoIterator<Item = Tenant>>(&mut self, iter: I) {
        for tenant in iter {
            self.insert(tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> TenantNamespace {
        TenantNamespace::parse(s).unwrap()
    }

    #[test]
    fn lookup_by_namespace_and_by_str_agree() {
        let tenants: StaticTenants = [Tenant::new(ns("tenant-a"))].into_iter().collect();
        assert_eq!(
            tenants.lookup(&ns("tenant-a")).unwrap().namespace,
            "tenant-a"
        );
        assert_eq!(
            tenants.lookup_str("tenant-a").unwrap().namespace,
            "tenant-a"
        );
        assert!(tenants.lookup(&ns("tenant-b")).is_none());
        assert!(tenants.lookup_str("Tenant-A").is_none());
    }

    #[test]
    fn insert_replaces_and_reports_the_old_tenant() {
        let tenants = StaticTenants::new();
        assert!(tenants.insert(Tenant::new(ns("a"))).is_none());
        let old = tenants
            .insert(Tenant::new(ns("a")).with_status(TenantStatus::Suspended))
            .unwrap();
        assert!(old.is_active());
        assert!(!tenants.get("a").unwrap().is_active());
        assert_eq!(tenants.len(), 1);
        assert!(!tenants.set_status("b", TenantStatus::Active));
    }

    #[test]
    fn arc_and_box_are_registries() {
        fn lookup(r: &impl TenantRegistry) -> bool {
            r.lookup_str("a").is_some()
        }
        let tenants = Arc::new(StaticTenants::from_iter([Tenant::new(ns("a"))]));
        assert!(lookup(&tenants));
        let dynamic: Box<dyn TenantRegistry> = Box::new(StaticTenants::new());
        assert!(!lookup(&dynamic));
        let shared: Arc<dyn TenantRegistry> = tenants;
        assert!(lookup(&shared));
    }

    #[test]
    fn concurrent_writers_and_readers_see_consistent_tenants() {
        let tenants = Arc::new(StaticTenants::new());
        let stable = ns("stable");
        tenants.insert(Tenant::new(stable));
        std::thread::scope(|s| {
            for t in 0..2 {
                let tenants = &tenants;
                s.spawn(move || {
                    for i in 0..2_000 {
                        let name = ns(&format!("t{t}-{i}"));
                        tenants.insert(Tenant::new(name));
                        if i % 2 == 0 {
                            tenants.remove(&name);
                        }
                    }
                });
            }
            for _ in 0..2 {
                let tenants = &tenants;
                s.spawn(move || {
                    for _ in 0..2_000 {
                        assert!(tenants.lookup(&stable).unwrap().is_active());
                    }
                });
            }
        });
        assert_eq!(tenants.len(), 1 + 2 * 1_000);
    }
}
