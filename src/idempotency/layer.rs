//! [`IdempotencyLayer`] and its configuration.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method};
use tower_layer::Layer;

use super::service::Idempotency;
use super::store::IdempotencyStore;

/// Decides which plain-HTTP requests the layer governs.
///
/// Implemented for closures `Fn(&http::request::Parts) -> bool`; the
/// default, [`PostAndPatch`], governs `POST` and `PATCH`. It is asked about
/// every request whose path is not in one of the layer's gRPC services
/// ([`grpc_method`](IdempotencyLayer::grpc_method),
/// [`grpc_service`](IdempotencyLayer::grpc_service)), whatever its
/// `content-type`: a client cannot leave these rules by claiming gRPC.
pub trait Governs: Send + Sync + 'static {
    /// Whether the request with this head must carry an idempotency key.
    fn governs(&self, parts: &Parts) -> bool;
}

impl<F> Governs for F
where
    F: Fn(&Parts) -> bool + Send + Sync + 'static,
{
    fn governs(&self, parts: &Parts) -> bool {
        self(parts)
    }
}

/// The default [`Governs`]: `POST` and `PATCH`, the methods that are not
/// idempotent by themselves (RFC 9110 §9.2.2).
#[derive(Clone, Copy, Debug, Default)]
pub struct PostAndPatch;

impl Governs for PostAndPatch {
    fn governs(&self, parts: &Parts) -> bool {
        parts.method == Method::POST || parts.method == Method::PATCH
    }
}

#[derive(Clone)]
pub(super) struct Config {
    pub(super) store: Arc<dyn IdempotencyStore>,
    pub(super) governs: Arc<dyn Governs>,
    pub(super) grpc_methods: HashSet<Box<str>>,
    /// The gRPC services the path decides for: their listed methods are
    /// governed, their other methods are not.
    pub(super) grpc_services: HashSet<Box<str>>,
    pub(super) require_key: bool,
    pub(super) max_request_body: usize,
    pub(super) max_response_body: usize,
    pub(super) claim_ttl: Duration,
    pub(super) retention: Duration,
    pub(super) stored_headers: Vec<HeaderName>,
    /// Completions running detached from their requests (bounded by
    /// `guard::MAX_DETACHED_COMPLETIONS`).
    pub(super) detached_completions: Arc<AtomicUsize>,
}

/// The headers stored and replayed by default, besides the ones added with
/// [`IdempotencyLayer::store_header`].
pub const DEFAULT_STORED_HEADERS: [HeaderName; 6] = [
    http::header::CONTENT_TYPE,
    http::header::CONTENT_ENCODING,
    HeaderName::from_static("grpc-encoding"),
    HeaderName::from_static("grpc-status"),
    HeaderName::from_static("grpc-message"),
    HeaderName::from_static("grpc-status-details-bin"),
];

/// Applies [`Idempotency`] to a service: see the [module docs](super).
#[derive(Clone)]
pub struct IdempotencyLayer {
    pub(super) config: Arc<Config>,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("IdempotencyLayer")
            .field("grpc_methods", &c.grpc_methods)
            .field("grpc_services", &c.grpc_services)
            .field("require_key", &c.require_key)
            .field("max_request_body", &c.max_request_body)
            .field("max_response_body", &c.max_response_body)
            .field("claim_ttl", &c.claim_ttl)
            .field("retention", &c.retention)
            .field("stored_headers", &c.stored_headers)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A layer keeping its records in `store`, with the defaults: governs
    /// `POST` and `PATCH` (and no gRPC method), requires a key on them,
    /// buffers request and response bodies up to 1 MiB, claims expire after
    /// 60 s, completed responses are kept for 24 h.
    pub fn new(store: impl IdempotencyStore) -> Self {
        Self::from_shared_store(Arc::new(store))
    }

    /// A layer using a store shared with other layers or code.
    pub fn from_shared_store(store: Arc<dyn IdempotencyStore>) -> Self {
        Self {
            config: Arc::new(Config {
                store,
                governs: Arc::new(PostAndPatch),
                grpc_methods: HashSet::new(),
                grpc_services: HashSet::new(),
                require_key: true,
                max_request_body: 1024 * 1024,
                max_response_body: 1024 * 1024,
                claim_ttl: Duration::from_secs(60),
                retention: Duration::from_secs(24 * 60 * 60),
                stored_headers: DEFAULT_STORED_HEADERS.to_vec(),
                detached_completions: Arc::default(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        // Builders normally run before the layer is cloned; if it was, the
        // configuration is copied, and the clones keep theirs.
        Arc::make_mut(&mut self.config)
    }

    /// Governs the plain-HTTP requests `governs` selects (instead of
    /// `POST` and `PATCH`).
    pub fn governs(mut self, governs: impl Governs) -> Self {
        self.config_mut().governs = Arc::new(governs);
        self
    }

    /// Governs the unary gRPC method `path` (`/pkg.Service/Method`); its
    /// key travels in the `idempotency-key` metadata. Streaming methods
    /// are out of scope: do not list them (the layer buffers the whole
    /// request and response).
    ///
    /// Its service (`pkg.Service`) becomes one of the layer's
    /// [`grpc_service`](Self::grpc_service)s: its other methods are not
    /// governed.
    ///
    /// # Panics
    ///
    /// If `path` is not of the form `/pkg.Service/Method`.
    pub fn grpc_method(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        let service = crate::reject::grpc_service_of(&path)
            .filter(|_| path.matches('/').count() == 2 && !path.ends_with('/'))
            .unwrap_or_else(|| panic!("finmesh::idempotency: invalid gRPC method path {path:?}"))
            .into();
        let config = self.config_mut();
        config.grpc_services.insert(service);
        config.grpc_methods.insert(path.into_boxed_str());
        self
    }

    /// Declares that the service serves the gRPC service `name`
    /// (`pkg.Service`) at `/pkg.Service/…`: calls of its methods not
    /// listed with [`grpc_method`](Self::grpc_method) are not governed.
    ///
    /// Every path outside the declared services gets the plain-HTTP rules
    /// ([`Governs`]) whatever its `content-type`, so with the default
    /// [`PostAndPatch`] a gRPC service the layer does not know of needs a
    /// key on every call: declare it here.
    ///
    /// # Panics
    ///
    /// If `name` is empty or contains a `/` between its ends.
    pub fn grpc_service(mut self, name: &str) -> Self {
        let name = crate::reject::grpc_service_name(name);
        self.config_mut().grpc_services.insert(name);
        self
    }

    /// Whether a governed request without a key is refused (400
    /// `idempotency.key_missing`, the default) or passed through
    /// unprotected.
    pub fn require_key(mut self, require: bool) -> Self {
        self.config_mut().require_key = require;
        self
    }

    /// The largest request body buffered for the fingerprint; larger ones
    /// are refused with 413 `idempotency.payload_too_large`.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.config_mut().max_request_body = bytes;
        self
    }

    /// The largest response body stored for replay. A larger response is
    /// streamed to the first caller; the key stays taken (the handler
    /// ran), and retries get 422 `idempotency.not_replayable`.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.config_mut().max_response_body = bytes;
        self
    }

    /// How long an in-flight claim holds its key. A request still running
    /// after this may be run a second time by a retry: set it above the
    /// longest a governed handler takes.
    pub fn claim_ttl(mut self, ttl: Duration) -> Self {
        self.config_mut().claim_ttl = ttl;
        self
    }

    /// How long a completed response is kept for replay.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config_mut().retention = retention;
        self
    }

    /// Stores and replays response header (and trailer) `name` too, besides
    /// [`DEFAULT_STORED_HEADERS`] — e.g. `location` for a created resource.
    pub fn store_header(mut self, name: HeaderName) -> Self {
        let config = self.config_mut();
        if !config.stored_headers.contains(&name) {
            config.stored_headers.push(name);
        }
        self
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(inner, self.config.clone())
    }
}
