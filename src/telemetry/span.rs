//! One request's server span and metrics, ended exactly once: when the
//! response body ends, or when whatever holds it is dropped.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context, KeyValue, StringValue};

use super::layer::Config;
use crate::labels::{LabelValues, RequestLabels};

/// What kind of call the span describes.
pub(crate) enum CallKind {
    Http {
        method: http::Method,
        /// The route template, made a shareable attribute value once.
        route: Option<StringValue>,
    },
    Grpc {
        /// `/package.Service/Method`.
        path: Arc<str>,
    },
}

/// How the response ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum End {
    /// The body ended (or the response had none).
    Complete,
    /// The body failed.
    BodyError,
    /// The inner service failed.
    ServiceError,
    /// Dropped before the end: the client went away or the server shut down.
    Dropped,
}

pub(crate) struct RequestSpan {
    state: Option<State>,
}

struct State {
    config: Arc<Config>,
    cx: Context,
    labels: RequestLabels,
    kind: CallKind,
    start: Instant,
    http_status: Option<u16>,
    grpc_status: Option<i64>,
}

impl RequestSpan {
    pub(crate) fn new(
        config: Arc<Config>,
        cx: Context,
        labels: RequestLabels,
        kind: CallKind,
    ) -> Self {
        Self {
            state: Some(State {
                config,
                cx,
                labels,
                kind,
                start: Instant::now(),
                http_status: None,
                grpc_status: None,
            }),
        }
    }

    /// The context the inner service runs in (the server span is current).
    pub(crate) fn context(&self) -> Option<&Context> {
        self.state.as_ref().map(|s| &s.cx)
    }

    /// Records the response status, and for a trailers-only gRPC response
    /// its `grpc-status`.
    pub(crate) fn response_head(&mut self, status: http::StatusCode, headers: &HeaderMap) {
        if let Some(state) = &mut self.state {
            state.http_status = Some(status.as_u16());
            if let Some(code) = grpc_status(headers) {
                state.grpc_status = Some(code);
            }
        }
    }

    /// Records `grpc-status` from the trailers of a streamed body.
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(state) = &mut self.state
            && let Some(code) = grpc_status(trailers)
        {
            state.grpc_status = Some(code);
        }
    }

    /// Ends the span and records the metrics; later calls do nothing.
    pub(crate) fn end(&mut self, how: End) {
        if let Some(state) = self.state.take() {
            state.end(how);
        }
    }
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        self.end(End::Dropped);
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<i64> {
    let v = headers.get(&crate::reject::GRPC_STATUS)?.to_str().ok()?;
    // Codes are 0..=16; bound the parse so a hostile peer cannot make us
    // record an arbitrary number.
    v.parse::<u8>().ok().filter(|c| *c <= 16).map(i64::from)
}

/// gRPC codes that are a server error (OpenTelemetry gRPC semantic
/// conventions): UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS.
fn grpc_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// The HTTP method as a bounded metric value.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "_OTHER",
    }
}

impl State {
    fn end(self, how: End) {
        let grpc = matches!(self.kind, CallKind::Grpc { .. });
        let span = self.cx.span();
        // A span the sampler left out records nothing: its attributes are
        // not built (the metrics are recorded all the same).
        let recording = span.is_recording();
        // Read the labels in place (no snapshot copy): the lock is held
        // only while the two attribute vectors are built.
        let (attrs, m, error_type, rejection) = self.labels.update(|values| {
            // Span: the labels the inner layers left, then status.
            let mut attrs = Vec::with_capacity(if recording { 16 } else { 0 });
            // Each string value is made once and shared (an `Arc`)
            // between the span and the metrics.
            let tenant = values
                .tenant
                .map(|t| StringValue::from(Arc::<str>::from(t.as_str())));
            let rejection = values.rejection.as_ref().map(|r| {
                (
                    StringValue::from(Arc::<str>::from(r.layer())),
                    StringValue::from(Arc::<str>::from(&*r.code)),
                )
            });
            if recording {
                business_attributes(values, tenant.as_ref(), rejection.as_ref(), &mut attrs);
                if let Some(status) = self.http_status {
                    attrs.push(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status),
                    ));
                }
                if grpc && let Some(code) = self.grpc_status {
                    attrs.push(KeyValue::new("rpc.grpc.status_code", code));
                }
                if let CallKind::Http { route: None, .. } = &self.kind
                    && let Some(route) = &values.route
                {
                    attrs.push(KeyValue::new("http.route", route.clone()));
                }
            }
            let error_type: Option<StringValue> = match (&rejection, how) {
                (Some((_, code)), _) => Some(code.clone()),
                (None, End::ServiceError) => Some("service_error".into()),
                (None, End::BodyError) => Some("body_error".into()),
                (None, End::Dropped) => Some("cancelled".into()),
                (None, End::Complete) => None,
            };
            if recording && let Some(e) = &error_type {
                attrs.push(KeyValue::new("error.type", e.clone()));
            }
            let (m, tenant_at) = self.metric_attributes(values);
            let tenant = values.tenant.zip(tenant).map(|t| (tenant_at, t));
            (attrs, (m, tenant), error_type, rejection)
        });
        // The tenant's metric label runs the application's callback: not
        // under the labels' lock.
        let (mut m, tenant) = m;
        if let Some((at, (namespace, value))) = tenant {
            let label = self.config.tenant_metric_label(&namespace, &value);
            m.insert(at, KeyValue::new("tenant", label));
        }

        if recording {
            span.set_attributes(attrs);
        }

        let server_error = match how {
            End::ServiceError | End::BodyError => true,
            End::Dropped | End::Complete => {
                if grpc {
                    self.grpc_status.is_some_and(grpc_server_error)
                } else {
                    self.http_status.is_some_and(|s| s >= 500)
                }
            }
        };
        // Success and client errors (4xx, a refused request) leave the
        // server span's status unset, as the HTTP and gRPC conventions say
        // (instrumentation does not set `Ok`); `error.type` names a
        // refusal.
        if server_error {
            span.set_status(Status::error(
                error_type.map_or(Cow::Borrowed("error"), |e| Cow::Owned(e.into())),
            ));
        }
        span.end();

        // Metrics: bounded attributes only.
        let elapsed_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let instruments = &self.config.instruments;
        instruments.record_duration(elapsed_ms, &m);
        if let Some((layer, code)) = rejection {
            m.retain(|kv| kv.key.as_str() != "consistency_status");
            m.push(KeyValue::new("finmesh.layer", layer));
            m.push(KeyValue::new("finmesh.code", code));
            instruments.count_rejection(&m);
        }
    }

    /// The duration metric's attributes: bounded values only; the tenant
    /// is left for the caller to insert at the index returned.
    fn metric_attributes(&self, values: &LabelValues) -> (Vec<KeyValue>, usize) {
        let mut m = Vec::with_capacity(8);
        match &self.kind {
            CallKind::Http { method, route } => {
                m.push(KeyValue::new("http.request.method", method_label(method)));
                if let Some(route) = route {
                    m.push(KeyValue::new("http.route", route.clone()));
                } else if let Some(route) = &values.route {
                    m.push(KeyValue::new("http.route", route.clone()));
                }
                if let Some(status) = self.http_status {
                    m.push(KeyValue::new(
                        "http.response.status_class",
                        status_class(status),
                    ));
                }
            }
            CallKind::Grpc { path } => {
                m.push(KeyValue::new("rpc.system", "grpc"));
                // The path is whatever the caller typed until a service
                // has answered it: a refusal before routing, a 404 or
                // UNIMPLEMENTED counts under `_OTHER`, so junk paths cannot
                // grow the series set.
                let known = values.rejection.is_none()
                    && self.http_status == Some(200)
                    && self.grpc_status.is_some_and(|c| c != 12);
                m.push(KeyValue::new(
                    "rpc.method",
                    if known {
                        StringValue::from(path.clone())
                    } else {
                        StringValue::from("_OTHER")
                    },
                ));
                if let Some(code) = self.grpc_status {
                    m.push(KeyValue::new("rpc.grpc.status_code", code));
                }
            }
        }
        let tenant_at = m.len();
        if let Some(risk) = values.risk {
            m.push(KeyValue::new("user_risk_level", risk.as_str()));
        }
        if let Some(status) = &values.consistency_status {
            m.push(KeyValue::new("consistency_status", status.clone()));
        }
        (m, tenant_at)
    }
}

/// The business labels inner layers recorded, as span attributes.
/// `tenant` and `rejection` (layer, code) are those of `values`, already
/// made into attribute values.
fn business_attributes(
    values: &LabelValues,
    tenant: Option<&StringValue>,
    rejection: Option<&(StringValue, StringValue)>,
    attrs: &mut Vec<KeyValue>,
) {
    // Security: `risk` is only ever set from a verified principal;
    // a risk level from baggage is recorded apart as
    // `baggage.user_risk_level` when the span starts.
    if let Some(risk) = values.risk {
        attrs.push(KeyValue::new("user_risk_level", risk.as_str()));
    }
    if let Some(tenant) = tenant {
        attrs.push(KeyValue::new("tenant", tenant.clone()));
    }
    if let Some(subject) = &values.subject {
        attrs.push(KeyValue::new("enduser.id", subject.clone()));
    }
    if let Some(peer) = &values.peer {
        // Istio's name for the calling workload's identity.
        attrs.push(KeyValue::new("source.principal", peer.clone()));
    }
    if let Some(authz) = &values.authorization {
        attrs.push(KeyValue::new("authz.allowed", authz.allowed));
        if authz.shadow {
            attrs.push(KeyValue::new("authz.shadow", true));
        }
        attrs.push(KeyValue::new("authz.verb", authz.verb.clone()));
        attrs.push(KeyValue::new("authz.resource", authz.resource.clone()));
        if let Some(binding) = &authz.binding {
            attrs.push(KeyValue::new("authz.binding", binding.clone()));
        }
        if let Some(role) = &authz.role {
            attrs.push(KeyValue::new("authz.role", role.clone()));
        }
    }
    if let Some((layer, code)) = rejection {
        attrs.push(KeyValue::new("finmesh.rejection.layer", layer.clone()));
        attrs.push(KeyValue::new("finmesh.rejection.code", code.clone()));
    }
    if values.idempotency_key.is_some() {
        attrs.push(KeyValue::new("idempotency.replayed", values.replayed));
    }
    attrs.push(KeyValue::new("retry_count", i64::from(values.retry_count)));
    if let Some(status) = &values.consistency_status {
        attrs.push(KeyValue::new("consistency_status", status.clone()));
    }
}
