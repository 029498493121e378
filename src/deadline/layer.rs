//! [`StreamDeadlineLayer`] and the deadlines it applies ([`Deadlines`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::service::StreamDeadline;
use super::stats::DeadlineStats;

/// The deadlines applied to one call. Every one of them may be off (the
/// default); a call with none of them, no `grpc-timeout` header and no
/// `max_message_bytes` is passed through untouched.
///
/// ```
/// use std::time::Duration;
/// use finmesh::deadline::Deadlines;
///
/// let payments = Deadlines::new()
///     .request_message_timeout(Duration::from_millis(12))
///     .response_message_timeout(Duration::from_millis(12))
///     .max_duration(Duration::from_secs(30));
/// assert_eq!(payments.get_request_message_timeout(), Some(Duration::from_millis(12)));
/// assert_eq!(payments.get_idle_timeout(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    pub(crate) request_message: Option<Duration>,
    pub(crate) response_message: Option<Duration>,
    pub(crate) idle: Option<Duration>,
    pub(crate) max_duration: Option<Duration>,
    pub(crate) max_grpc_timeout: Option<Duration>,
    pub(crate) max_message_bytes: Option<u32>,
}

impl Deadlines {
    /// No deadline at all.
    pub const fn new() -> Self {
        Self {
            request_message: None,
            response_message: None,
            idle: None,
            max_duration: None,
            max_grpc_timeout: None,
            max_message_bytes: None,
        }
    }

    /// After the stream opens and after each complete inbound message, the
    /// next complete inbound message must arrive within `timeout`. A
    /// message split over many DATA frames is one message: frames that do
    /// not complete it do not restart the clock. The client's half-close
    /// stops this clock. On HTTP routes every data frame counts as a
    /// message.
    ///
    /// The clock is judged where the service reads the body: bytes already
    /// buffered when a slow reader comes back count as on time. A service
    /// that stops reading altogether is bounded by the response, idle and
    /// whole-call deadlines instead.
    pub const fn request_message_timeout(mut self, timeout: Duration) -> Self {
        self.request_message = Some(timeout);
        self
    }

    /// After the response starts and after each complete outbound message,
    /// the service must produce its next complete message, or end the
    /// stream, within `timeout`. The clock runs while the service waits for
    /// input too: on a stream that answers each request, make it at least
    /// the request clock plus the time to answer.
    pub const fn response_message_timeout(mut self, timeout: Duration) -> Self {
        self.response_message = Some(timeout);
        self
    }

    /// The call fails when no byte moves in either direction for
    /// `timeout`. The clock does not run while the client has half-closed
    /// and the response has not started (a unary handler at work): only
    /// the whole-call deadline bounds that.
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle = Some(timeout);
        self
    }

    /// The whole call must finish within `duration`.
    pub const fn max_duration(mut self, duration: Duration) -> Self {
        self.max_duration = Some(duration);
        self
    }

    /// Caps the whole-call deadline a client may ask for with the
    /// `grpc-timeout` header. The header is always honoured (capped by this
    /// when set, and by `max_duration`).
    pub const fn max_grpc_timeout(mut self, cap: Duration) -> Self {
        self.max_grpc_timeout = Some(cap);
        self
    }

    /// A request message whose length prefix declares more than `bytes` is
    /// refused with `RESOURCE_EXHAUSTED` (`deadline.message_too_large`)
    /// before its bytes are read.
    pub const fn max_message_bytes(mut self, bytes: u32) -> Self {
        self.max_message_bytes = Some(bytes);
        self
    }

    /// The request message timeout, if on.
    pub const fn get_request_message_timeout(&self) -> Option<Duration> {
        self.request_message
    }

    /// The response message timeout, if on.
    pub const fn get_response_message_timeout(&self) -> Option<Duration> {
        self.response_message
    }

    /// The idle timeout, if on.
    pub const fn get_idle_timeout(&self) -> Option<Duration> {
        self.idle
    }

    /// The whole-call limit, if on.
    pub const fn get_max_duration(&self) -> Option<Duration> {
        self.max_duration
    }

    /// The cap on `grpc-timeout`, if set.
    pub const fn get_max_grpc_timeout(&self) -> Option<Duration> {
        self.max_grpc_timeout
    }

    /// The message size limit, if on.
    pub const fn get_max_message_bytes(&self) -> Option<u32> {
        self.max_message_bytes
    }

    /// Whether any clock runs given this whole-call deadline.
    pub(crate) fn any_clock(&self, total: Option<Duration>) -> bool {
        self.request_message.is_some()
            || self.response_message.is_some()
            || self.idle.is_some()
            || total.is_some()
            || self.max_message_bytes.is_some()
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    pub(crate) defaults: Deadlines,
    pub(crate) methods: HashMap<Box<str>, Deadlines>,
    /// The gRPC services the path decides for (those of `methods` and the
    /// declared ones).
    pub(crate) grpc_services: HashSet<Box<str>>,
    pub(crate) http: bool,
}

impl Config {
    /// Whether the service serves gRPC at `path`, by its configuration.
    pub(crate) fn serves_grpc(&self, path: &str) -> bool {
        self.methods.contains_key(path)
            || crate::reject::grpc_service_of(path).is_some_and(|s| self.grpc_services.contains(s))
    }

    pub(crate) fn for_path(&self, path: &str) -> &Deadlines {
        if self.methods.is_empty() {
            return &self.defaults;
        }
        self.methods.get(path).unwrap_or(&self.defaults)
    }
}

/// Applies per-message, idle and whole-call deadlines to gRPC streams
/// (and, when asked, to HTTP bodies). See the [module docs](super).
///
/// Builder methods set the defaults for every method;
/// [`method`](Self::method) replaces them for one gRPC method.
#[derive(Debug, Clone, Default)]
pub struct StreamDeadlineLayer {
    pub(crate) config: Arc<Config>,
    pub(crate) stats: DeadlineStats,
}

impl StreamDeadlineLayer {
    /// A layer with every deadline off; add the ones you want.
    pub fn new() -> Self {
        Self::default()
    }

    fn defaults_mut(&mut self) -> &mut Deadlines {
        &mut Arc::make_mut(&mut self.config).defaults
    }

    /// Sets every default at once.
    pub fn defaults(mut self, deadlines: Deadlines) -> Self {
        *self.defaults_mut() = deadlines;
        self
    }

    /// The deadlines applied to methods without an override.
    pub fn get_defaults(&self) -> Deadlines {
        self.config.defaults
    }

    /// Default [`Deadlines::request_message_timeout`].
    pub fn request_message_timeout(mut self, timeout: Duration) -> Self {
        self.defaults_mut().request_message = Some(timeout);
        self
    }

    /// Default [`Deadlines::response_message_timeout`].
    pub fn response_message_timeout(mut self, timeout: Duration) -> Self {
        self.defaults_mut().response_message = Some(timeout);
        self
    }

    /// Default [`Deadlines::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.defaults_mut().idle = Some(timeout);
        self
    }

    /// Default [`Deadlines::max_duration`].
    pub fn max_duration(mut self, duration: Duration) -> Self {
        self.defaults_mut().max_duration = Some(duration);
        self
    }

    /// Default [`Deadlines::max_grpc_timeout`].
    pub fn max_grpc_timeout(mut self, cap: Duration) -> Self {
        self.defaults_mut().max_grpc_timeout = Some(cap);
        self
    }

    /// Default [`Deadlines::max_message_bytes`].
    pub fn max_message_bytes(mut self, bytes: u32) -> Self {
        self.defaults_mut().max_message_bytes = Some(bytes);
        self
    }

    /// Replaces the defaults for one gRPC method, named by its path
    /// (`/package.Service/Method`). The override is complete: a deadline it
    /// leaves off is off for that method. Start from
    /// [`get_defaults`](Self::get_defaults) to change only some.
    ///
    /// Its service (`package.Service`) becomes one of the layer's
    /// [`grpc_service`](Self::grpc_service)s.
    pub fn method(mut self, path: impl Into<Box<str>>, deadlines: Deadlines) -> Self {
        let path = path.into();
        let config = Arc::make_mut(&mut self.config);
        if let Some(service) = crate::reject::grpc_service_of(&path) {
            config.grpc_services.insert(service.into());
        }
        config.methods.insert(path, deadlines);
        self
    }

    /// Declares that the service serves the gRPC service `name`
    /// (`package.Service`) at `/package.Service/…`: calls of its methods get
    /// the gRPC deadlines whatever `content-type` the client claims.
    ///
    /// A request elsewhere gets the gRPC deadlines when it claims a gRPC
    /// content-type (which can only add deadlines), and the HTTP ones
    /// ([`apply_to_http`](Self::apply_to_http)) otherwise.
    ///
    /// # Panics
    ///
    /// If `name` is empty or contains a `/` between its ends.
    pub fn grpc_service(mut self, name: &str) -> Self {
        let name = crate::reject::grpc_service_name(name);
        Arc::make_mut(&mut self.config).grpc_services.insert(name);
        self
    }

    /// Also applies the defaults to non-gRPC requests (off by default): a
    /// stalled request body is answered `408` while the response has not
    /// started, a stalled response body is aborted. On HTTP bodies every
    /// data frame counts as a message.
    pub fn apply_to_http(mut self, apply: bool) -> Self {
        Arc::make_mut(&mut self.config).http = apply;
        self
    }

    /// Counters of the calls this layer ended, shared with every service
    /// it made.
    pub fn stats(&self) -> DeadlineStats {
        self.stats.clone()
    }
}

impl<S> Layer<S> for StreamDeadlineLayer {
    type Service = StreamDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamDeadline {
            inner,
            config: Some(self.config.clone()),
            stats: self.stats.clone(),
        }
    }
}
