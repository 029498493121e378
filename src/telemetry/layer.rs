//! [`TelemetryLayer`] and its builder.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{Extensions, HeaderName, Method, Uri};
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanBuilder, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, StringValue};
use opentelemetry_sdk::trace::SdkTracer;
use tower_layer::Layer;

use super::metrics::{Instruments, OTHER_TENANT};
use super::service::Telemetry;
use crate::labels::RequestLabels;
use crate::tenant::TenantNamespace;

/// The scope name of finmesh's tracer and meter.
pub const INSTRUMENTATION_SCOPE: &str = "finmesh";

/// The default header that carries the business order id.
pub const ORDER_ID_HEADER: &str = "x-order-id";

/// The default header that echoes the trace id, when enabled.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// The health probe paths (and their subpaths) that are not traced by
/// default.
pub const DEFAULT_SKIP_PATHS: [&str; 3] = ["/livez", "/readyz", "/healthz"];

/// Finds the route template of a request (`/v1/accounts/{id}`), a bounded
/// value safe as a metric attribute.
///
/// Implemented for closures `Fn(&Method, &Uri, &Extensions) ->
/// Option<Cow<'static, str>>`. With axum, read `axum::extract::MatchedPath`
/// from the extensions (axum inserts it before a `Router::layer` layer
/// runs):
///
/// ```
/// # use std::borrow::Cow;
/// use finmesh::telemetry::TelemetryLayer;
///
/// let layer = TelemetryLayer::builder()
///     .route_template(|_: &http::Method, _: &http::Uri, ext: &http::Extensions| {
///         ext.get::<axum::extract::MatchedPath>()
///             .map(|p| Cow::Owned(p.as_str().to_owned()))
///     })
///     .build();
/// ```
pub trait RouteTemplate: Send + Sync + 'static {
    /// The template for this request, when known.
    fn route_template(
        &self,
        method: &Method,
        uri: &Uri,
        extensions: &Extensions,
    ) -> Option<Cow<'static, str>>;
}

impl<F> RouteTemplate for F
where
    F: Fn(&Method, &Uri, &Extensions) -> Option<Cow<'static, str>> + Send + Sync + 'static,
{
    fn route_template(
        &self,
        method: &Method,
        uri: &Uri,
        extensions: &Extensions,
    ) -> Option<Cow<'static, str>> {
        self(method, uri, extensions)
    }
}

/// Where the propagator comes from.
#[derive(Clone)]
pub(crate) enum PropagatorSource {
    Global,
    Given(Arc<dyn TextMapPropagator + Send + Sync>),
}

impl PropagatorSource {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&dyn TextMapPropagator) -> T) -> T {
        match self {
            Self::Given(p) => f(&**p),
            Self::Global => {
                let mut f = Some(f);
                opentelemetry::global::get_text_map_propagator(|p| {
                    (f.take().expect("get_text_map_propagator calls once"))(p)
                })
            }
        }
    }
}

/// The tracer spans are opened with. The SDK's own tracer is called
/// directly: its span goes into the context's box as it is, where a
/// `BoxedTracer` would box it once more and put a second dynamic call
/// in front of every attribute. Any other tracer is boxed.
pub(crate) enum SpanTracer {
    Sdk(SdkTracer),
    Boxed(BoxedTracer),
}

impl SpanTracer {
    pub(crate) fn new<T>(tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        match (&tracer as &dyn Any).downcast_ref::<SdkTracer>() {
            Some(sdk) => Self::Sdk(sdk.clone()),
            None => Self::Boxed(BoxedTracer::new(Box::new(tracer))),
        }
    }

    /// `parent` with a new span built from `builder` as its current span.
    pub(crate) fn start(&self, builder: SpanBuilder, parent: &Context) -> Context {
        match self {
            Self::Sdk(tracer) => parent.with_span(tracer.build_with_context(builder, parent)),
            Self::Boxed(tracer) => parent.with_span(tracer.build_with_context(builder, parent)),
        }
    }
}

/// A tracer that is not the SDK's own (it wraps one): spans go the boxed
/// way, for tests of that path.
#[cfg(test)]
pub(crate) struct WrappedTracer(pub(crate) SdkTracer);

#[cfg(test)]
impl Tracer for WrappedTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent: &Context) -> Self::Span {
        self.0.build_with_context(builder, parent)
    }
}

/// What the [`TelemetryLayer`] serving a request keeps in the request's
/// OpenTelemetry context, as one value (each value costs the context a
/// copy of its map): the request's labels, and the tracer
/// [`PropagateLayer`](super::PropagateLayer) opens each outgoing call's
/// client span with unless given its own.
pub(crate) struct ServerScope {
    pub(crate) labels: RequestLabels,
    /// Always set by the layer; `None` lets a test give labels alone.
    pub(crate) tracer: Option<Arc<SpanTracer>>,
}

pub(crate) struct Config {
    pub(crate) tracer: Arc<SpanTracer>,
    pub(crate) propagator: PropagatorSource,
    pub(crate) instruments: Instruments,
    pub(crate) order_id_header: HeaderName,
    pub(crate) trace_id_header: Option<HeaderName>,
    pub(crate) skip_paths: Vec<Cow<'static, str>>,
    pub(crate) require_order_id: Vec<(Option<Method>, Cow<'static, str>)>,
    pub(crate) route_template: Option<Box<dyn RouteTemplate>>,
    pub(crate) metric_tenants: Option<Box<MetricTenants>>,
}

/// Whether a tenant may be a metric attribute value.
pub(crate) type MetricTenants = dyn Fn(&TenantNamespace) -> bool + Send + Sync;

impl Config {
    /// The `tenant` metric attribute: the tenant itself (`value`, the
    /// tenant as the span already records it, shared rather than copied)
    /// when [`metric_tenants`](TelemetryLayerBuilder::metric_tenants)
    /// admits it, else `_other`.
    pub(crate) fn tenant_metric_label(
        &self,
        tenant: &TenantNamespace,
        value: &StringValue,
    ) -> StringValue {
        match &self.metric_tenants {
            Some(known) if !known(tenant) => StringValue::from(OTHER_TENANT),
            _ => value.clone(),
        }
    }

    pub(crate) fn skips(&self, path: &str) -> bool {
        self.skip_paths.iter().any(|p| {
            path.strip_prefix(&**p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    pub(crate) fn requires_order_id(
        &self,
        method: &Method,
        path: &str,
        route: Option<&str>,
    ) -> bool {
        self.require_order_id.iter().any(|(m, p)| {
            m.as_ref().is_none_or(|m| m == method) && (p == path || route.is_some_and(|r| r == p))
        })
    }
}

/// Server-side W3C trace context, baggage, business labels and metrics.
///
/// See the [module docs](crate::telemetry). Cheap to clone: the
/// configuration sits behind one `Arc`.
#[derive(Clone)]
pub struct TelemetryLayer {
    config: Arc<Config>,
}

impl fmt::Debug for TelemetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryLayer")
            .field("order_id_header", &self.config.order_id_header)
            .field("trace_id_header", &self.config.trace_id_header)
            .field("skip_paths", &self.config.skip_paths)
            .field("require_order_id", &self.config.require_order_id)
            .finish_non_exhaustive()
    }
}

impl TelemetryLayer {
    /// A layer with the global tracer, meter and propagator and the
    /// defaults of [`TelemetryLayerBuilder`].
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder.
    pub fn builder() -> TelemetryLayerBuilder {
        TelemetryLayerBuilder::default()
    }
}

impl Default for TelemetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry::new(inner, self.config.clone())
    }
}

/// Builds a [`TelemetryLayer`].
///
/// Defaults: the global tracer provider, meter provider and text-map
/// propagator (set them with `opentelemetry::global`; the global
/// propagator is a no-op until set — see
/// [`w3c_propagator`](super::w3c_propagator)); order id from `x-order-id`;
/// no trace id echo; `/livez`, `/readyz`, `/healthz` not traced; no route
/// requires an order id.
pub struct TelemetryLayerBuilder {
    tracer: Option<SpanTracer>,
    meter: Option<Meter>,
    propagator: PropagatorSource,
    order_id_header: HeaderName,
    trace_id_header: Option<HeaderName>,
    skip_paths: Vec<Cow<'static, str>>,
    require_order_id: Vec<(Option<Method>, Cow<'static, str>)>,
    route_template: Option<Box<dyn RouteTemplate>>,
    metric_tenants: Option<Box<MetricTenants>>,
}

impl fmt::Debug for TelemetryLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryLayerBuilder")
            .field("order_id_header", &self.order_id_header)
            .finish_non_exhaustive()
    }
}

impl Default for TelemetryLayerBuilder {
    fn default() -> Self {
        Self {
            tracer: None,
            meter: None,
            propagator: PropagatorSource::Global,
            order_id_header: HeaderName::from_static(ORDER_ID_HEADER),
            trace_id_header: None,
            skip_paths: DEFAULT_SKIP_PATHS
                .iter()
                .map(|p| Cow::Borrowed(*p))
                .collect(),
            require_order_id: Vec::new(),
            route_template: None,
            metric_tenants: None,
        }
    }
}

impl TelemetryLayerBuilder {
    /// Opens spans with a tracer from `provider` (scope `finmesh`).
    pub fn tracer_provider<P>(self, provider: &P) -> Self
    where
        P: TracerProvider,
        P::Tracer: Tracer + Send + Sync + 'static,
        <P::Tracer as Tracer>::Span: Send + Sync + 'static,
    {
        self.tracer(provider.tracer(INSTRUMENTATION_SCOPE))
    }

    /// Opens spans with `tracer`.
    pub fn tracer<T>(mut self, tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        self.tracer = Some(SpanTracer::new(tracer));
        self
    }

    /// Records metrics with a meter from `provider` (scope `finmesh`).
    pub fn meter_provider<P: MeterProvider>(mut self, provider: &P) -> Self {
        self.meter = Some(provider.meter(INSTRUMENTATION_SCOPE));
        self
    }

    /// Extracts the parent context with `propagator` instead of the global
    /// one.
    pub fn propagator<P>(mut self, propagator: P) -> Self
    where
        P: TextMapPropagator + Send + Sync + 'static,
    {
        self.propagator = PropagatorSource::Given(Arc::new(propagator));
        self
    }

    /// Reads the order id from `header` instead of `x-order-id`.
    pub fn order_id_header(mut self, header: HeaderName) -> Self {
        self.order_id_header = header;
        self
    }

    /// Whether to echo the trace id to the caller in `x-trace-id`
    /// (default: no). `false` also undoes a
    /// [`trace_id_header`](Self::trace_id_header).
    pub fn echo_trace_id(mut self, echo: bool) -> Self {
        self.trace_id_header = echo.then(|| HeaderName::from_static(TRACE_ID_HEADER));
        self
    }

    /// Echoes the trace id to the caller in `header`.
    pub fn trace_id_header(mut self, header: HeaderName) -> Self {
        self.trace_id_header = Some(header);
        self
    }

    /// Replaces the paths that are not traced (each with its subpaths);
    /// pass an empty list to trace everything.
    pub fn skip_paths<I, P>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<Cow<'static, str>>,
    {
        self.skip_paths = paths.into_iter().map(Into::into).collect();
        self
    }

    /// Requires an order id on `method` requests to `path` (the request
    /// path, or the route template when one is known): without one the
    /// request is refused with `telemetry.order_id_missing`.
    pub fn require_order_id_on(
        mut self,
        method: Method,
        path: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.require_order_id.push((Some(method), path.into()));
        self
    }

    /// Requires an order id on calls of the gRPC method
    /// `/package.Service/Method`.
    pub fn require_order_id_on_grpc(mut self, method: impl Into<Cow<'static, str>>) -> Self {
        self.require_order_id
            .push((Some(Method::POST), method.into()));
        self
    }

    /// Finds route templates with `strategy` (see [`RouteTemplate`]).
    pub fn route_template(mut self, strategy: impl RouteTemplate) -> Self {
        self.route_template = Some(Box::new(strategy));
        self
    }

    /// Which tenants may appear as the metric attribute `tenant`; any
    /// other tenant is counted as `_other` (spans keep the real name).
    ///
    /// Pass the registry the tenant layer admits from, e.g.
    /// `move |ns| registry.lookup(ns).is_some()`. Without it, the attribute
    /// is whatever tenant the inner layers recorded: the tenant layer only
    /// records tenants its registry admitted, so the set is as large as the
    /// registry.
    ///
    /// Security: every value of an attribute is a series the metrics
    /// backend keeps and anyone who can read `/metrics` sees; names a
    /// caller invents must never become one.
    pub fn metric_tenants<F>(mut self, known: F) -> Self
    where
        F: Fn(&TenantNamespace) -> bool + Send + Sync + 'static,
    {
        self.metric_tenants = Some(Box::new(known));
        self
    }

    /// The layer.
    pub fn build(self) -> TelemetryLayer {
        let tracer = self.tracer.unwrap_or_else(|| {
            SpanTracer::Boxed(opentelemetry::global::tracer(INSTRUMENTATION_SCOPE))
        });
        let meter = self
            .meter
            .unwrap_or_else(|| opentelemetry::global::meter(INSTRUMENTATION_SCOPE));
        TelemetryLayer {
            config: Arc::new(Config {
                tracer: Arc::new(tracer),
                propagator: self.propagator,
                instruments: Instruments::new(&meter),
                order_id_header: self.order_id_header,
                trace_id_header: self.trace_id_header,
                skip_paths: self.skip_paths,
                require_order_id: self.require_order_id,
                route_template: self.route_template,
                metric_tenants: self.metric_tenants,
            }),
        }
    }
}
