//! What the queue carries to the writer ([`Msg`]), and how an [`Entry`]
//! becomes an [`AuditRecord`].

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::bound;
use super::capture::Captured;
use super::record::{AuditRecord, Outcome, RecordKind, Verdict, rfc3339};
use super::redact::Redactor;
use crate::labels::LabelValues;

pub(super) enum Msg {
    Entry(Box<Entry>),
    Flush(oneshot::Sender<Result<(), Arc<io::Error>>>),
}

/// What request and event records share, taken from
/// [`RequestLabels`](crate::RequestLabels).
pub(super) struct Entry {
    pub(super) at: SystemTime,
    pub(super) labels: LabelValues,
    pub(super) detail: Detail,
}

pub(super) enum Detail {
    Request {
        method: http::Method,
        path: Option<String>,
        http_status: Option<u16>,
        grpc_status: Option<i32>,
        latency: Duration,
        outcome: Outcome,
        /// The bodies the audit policy's level asks for.
        request_body: Option<Captured>,
        response_body: Option<Captured>,
    },
    Event {
        name: Cow<'static, str>,
        data: serde_json::Value,
        /// Whether `data` was cut to its bound.
        cut: bool,
    },
}

impl Msg {
    /// A handler or startup event, stamped now. The data is cut to its
    /// bound here, on the caller's thread, so the queue never holds more
    /// than the bound of it.
    pub(super) fn event(
        labels: LabelValues,
        name: Cow<'static, str>,
        data: serde_json::Value,
    ) -> Self {
        let (data, cut) = bound::data(data);
        Self::Entry(Box::new(Entry {
            at: SystemTime::now(),
            labels,
            detail: Detail::Event { name, data, cut },
        }))
    }
}

/// The event that declares records a sink dropped (batch mode overflow).
pub(crate) const DROPPED_EVENT: &str = "AUDIT_RECORDS_DROPPED";

impl Entry {
    /// The record declaring that `first..=last` were dropped.
    pub(super) fn dropped(first: u64, last: u64) -> Self {
        Entry {
            at: SystemTime::now(),
            labels: LabelValues::default(),
            detail: Detail::Event {
                name: Cow::Borrowed(DROPPED_EVENT),
                data: serde_json::json!({
                    "first_seq": first,
                    "last_seq": last,
                    "count": last - first + 1,
                }),
                cut: false,
            },
        }
    }

    /// The record numbered `seq` that follows the record hashed `prev`,
    /// its bodies and event data redacted by `redactor`; not yet sealed.
    pub(super) fn into_record(self, seq: u64, prev: String, redactor: &Redactor) -> AuditRecord {
        let Entry { at, labels, detail } = self;
        let mut truncated = Vec::new();
        let mut text = |v: Option<&str>, field| v.map(|v| bound::text(v, field, &mut truncated));
        let authz = labels.authorization;
        let (verb, resource, name, binding, shadow) = match &authz {
            Some(a) => (
                text(Some(&a.verb), "verb"),
                text(Some(&a.resource), "resource"),
                text(a.name.as_deref(), "name"),
                text(a.binding.as_deref(), "binding"),
                a.shadow,
            ),
            None => (None, None, None, None, false),
        };
        let trace_id = text(labels.trace_id.as_deref(), "trace_id");
        let order_id = text(labels.order_id.as_deref(), "order_id");
        let subject = text(labels.subject.as_deref(), "subject");
        let peer = text(labels.peer.as_deref(), "peer");
        let route = text(labels.route.as_deref(), "route");
        let idempotency_key = text(labels.idempotency_key.as_deref(), "idempotency_key");
        let code = labels
            .rejection
            .as_ref()
            .and_then(|r| text(Some(&r.code), "code"));
        let mut record = AuditRecord {
            seq,
            time: rfc3339(at),
            kind: RecordKind::Event,
            event: None,
            trace_id,
            order_id,
            // A DNS-1123 label: 63 bytes at most.
            tenant: labels.tenant.map(|t| t.to_string()),
            subject,
            peer,
            risk: labels.risk,
            method: None,
            route,
            verb,
            resource,
            name,
            decision: None,
            code: None,
            binding,
            shadow,
            http_status: None,
            grpc_status: None,
            latency_us: None,
            outcome: None,
            idempotency_key,
            replayed: labels.replayed,
            data: None,
            request_body: None,
            response_body: None,
            truncated: Vec::new(),
            prev,
            hash: String::new(),
        };
        match detail {
            Detail::Request {
                method,
                path,
                http_status,
                grpc_status,
                latency,
                outcome,
                request_body,
                response_body,
            } => {
                let denied =
                    code.is_some() || authz.as_ref().is_some_and(|a| !a.allowed && !a.shadow);
                record.kind = RecordKind::Request;
                record.method = text(Some(method.as_str()), "method");
                if record.route.is_none() {
                    record.route = text(path.as_deref(), "route");
                }
                record.decision = Some(if denied {
                    Verdict::Deny
                } else {
                    Verdict::Allow
                });
                record.code = code;
                record.http_status = http_status;
                record.grpc_status = grpc_status;
                record.latency_us = Some(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                record.outcome = Some(outcome);
                if let Some(body) = request_body {
                    let (value, cut) = redactor.body(body);
                    record.request_body = Some(value);
                    if cut {
                        truncated.push("request_body".to_owned());
                    }
                }
                if let Some(body) = response_body {
                    let (value, cut) = redactor.body(body);
                    record.response_body = Some(value);
                    if cut {
                        truncated.push("response_body".to_owned());
                    }
                }
            }
            Detail::Event {
                name,
                mut data,
                cut,
            } => {
                record.event = text(Some(&name), "event");
                redactor.redact(&mut data);
                record.data = Some(data);
                if cut {
                    truncated.push("data".to_owned());
                }
            }
        }
        record.truncated = truncated;
        record
    }
}
