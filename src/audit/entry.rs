//! What the queue carries to the writer ([`Msg`]), and how an [`Entry`]
//! becomes an [`AuditRecord`].

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::record::{AuditRecord, Outcome, RecordKind, Verdict, rfc3339};
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
    },
    Event {
        name: Cow<'static, str>,
        data: serde_json::Value,
    },
}

impl Msg {
    /// A handler or startup event, stamped now.
    pub(super) fn event(
        labels: LabelValues,
        name: Cow<'static, str>,
        data: serde_json::Value,
    ) -> Self {
        Self::Entry(Box::new(Entry {
            at: SystemTime::now(),
            labels,
            detail: Detail::Event { name, data },
        }))
    }
}

impl Entry {
    /// The record numbered `seq` that follows the record hashed `prev`;
    /// not yet sealed.
    pub(super) fn into_record(self, seq: u64, prev: String) -> AuditRecord {
        let Entry { at, labels, detail } = self;
        let s = |v: Option<Arc<str>>| v.map(|v| v.to_string());
        let authz = labels.authorization;
        let (verb, resource, name, binding, shadow) = match &authz {
            Some(a) => (
                Some(a.verb.to_string()),
                Some(a.resource.to_string()),
                a.name.as_ref().map(|n| n.to_string()),
                a.binding.as_ref().map(|b| b.to_string()),
                a.shadow,
            ),
            None => (None, None, None, None, false),
        };
        let code = labels.rejection.map(|r| r.code.into_owned());
        let mut record = AuditRecord {
            seq,
            time: rfc3339(at),
            kind: RecordKind::Event,
            event: None,
            trace_id: s(labels.trace_id),
            order_id: s(labels.order_id),
            tenant: labels.tenant.map(|t| t.to_string()),
            subject: s(labels.subject),
            risk: labels.risk,
            method: None,
            route: labels.route.map(Cow::into_owned),
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
            idempotency_key: s(labels.idempotency_key),
            replayed: labels.replayed,
            data: None,
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
            } => {
                let denied =
                    code.is_some() || authz.as_ref().is_some_and(|a| !a.allowed && !a.shadow);
                record.kind = RecordKind::Request;
                record.method = Some(method.as_str().to_owned());
                if record.route.is_none() {
                    record.route = path;
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
            }
            Detail::Event { name, data } => {
                record.event = Some(name.into_owned());
                record.data = Some(data);
            }
        }
        record
    }
}
