//! [`GrpcMethods`]: the default gRPC mapper — a table of
//! `/package.Service/Method`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::Request;

use super::attributes::{Action, ResourceAction};
use super::mapper::RequestMapper;

/// The default gRPC mapper: a table from `/package.Service/Method` to a
/// verb on a resource.
///
/// ```
/// use finmesh::rbac::{Action, GrpcMethods, RequestMapper};
///
/// let methods = GrpcMethods::new()
///     .method("/ledger.v1.Ledger/GetBalance", "get", "accounts/balance")
///     .method("/ledger.v1.Ledger/Transfer", "create", "transfers");
/// let req = http::Request::post("/ledger.v1.Ledger/Transfer").body(()).unwrap();
/// assert_eq!(methods.map(&req), Some(Action::resource("create", "transfers")));
/// let other = http::Request::post("/ledger.v1.Ledger/Delete").body(()).unwrap();
/// assert_eq!(methods.map(&other), None);
/// ```
#[derive(Clone, Default)]
pub struct GrpcMethods {
    methods: HashMap<Box<str>, ResourceAction>,
    api_group: Arc<str>,
}

impl GrpcMethods {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The API group of the methods added after this call (`""` until set).
    pub fn api_group(mut self, group: impl Into<Arc<str>>) -> Self {
        self.api_group = group.into();
        self
    }

    /// Maps the gRPC method `path` (`/package.Service/Method`) to `verb`
    /// on `resource`.
    ///
    /// # Panics
    ///
    /// If `path` is not of the form `/package.Service/Method`, or `verb`
    /// or `resource` is empty.
    pub fn method(mut self, path: &str, verb: &str, resource: &str) -> Self {
        let valid = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .is_some_and(|(service, method)| {
                !service.is_empty() && !method.is_empty() && !method.contains('/')
            });
        assert!(valid, "finmesh::rbac: invalid gRPC method path {path:?}");
        assert!(
            !verb.is_empty() && !resource.is_empty(),
            "finmesh::rbac: empty verb or resource for {path:?}"
        );
        self.methods.insert(
            path.into(),
            ResourceAction::new(verb, Arc::clone(&self.api_group), resource),
        );
        self
    }
}

impl fmt::Debug for GrpcMethods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcMethods")
            .field("methods", &self.methods.len())
            .finish_non_exhaustive()
    }
}

impl RequestMapper for GrpcMethods {
    fn map(&self, req: &Request<()>) -> Option<Action> {
        self.methods
            .get(req.uri().path())
            .map(|a| Action::Resource(a.clone()))
    }
}
