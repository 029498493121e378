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
/// default, [`PostAndPatch`], governs `POST` and `PATCH`. gRPC requests are
/// not asked: they are governed when their method is one of the layer's
/// [`grpc_method`](IdempotencyLayer::grpc_method)s.
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
    config: Arc<Config>,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("IdempotencyLayer")
            .field("grpc_methods", &c.grpc_methods)
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
    pub fn grpc_method(mut self, path: impl Into<String>) -> Self {
        self.config_mut()
            .grpc_methods
            .insert(path.into().into_boxed_str());
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
