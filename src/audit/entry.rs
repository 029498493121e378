//! What the queue carries to the writer ([`Msg`]), and how an [`Entry`]
//! becomes an [`AuditRecord`].

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::bound;
use super::capture::Captured;
use super::record::{AuditRecord, Outcome, RecordKind, Verdict, rfc3339_into};
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

    /// Makes `record` the record numbered `seq`, its bodies and event
    /// data redacted by `redactor`; not yet sealed. Every member but
    /// `prev` and `hash` is set, reusing the strings `record` holds: the
    /// writer fills one record over and over, so a steady stream of
    /// requests allocates nothing here.
    pub(super) fn fill(self, seq: u64, redactor: &Redactor, record: &mut AuditRecord) {
        let Entry { at, labels, detail } = self;
        let r = record;
        let mut truncated = std::mem::take(&mut r.truncated);
        truncated.clear();
        let mut text = |slot: &mut Option<String>, v: Option<&str>, field| {
            bound::set_text(slot, v, field, &mut truncated);
        };
        let authz = labels.authorization.as_ref();
        text(&mut r.verb, authz.map(|a| &*a.verb), "verb");
        text(&mut r.resource, authz.map(|a| &*a.resource), "resource");
        text(&mut r.name, authz.and_then(|a| a.name.as_deref()), "name");
        text(
            &mut r.binding,
            authz.and_then(|a| a.binding.as_deref()),
            "binding",
        );
        r.shadow = authz.is_some_and(|a| a.shadow);
        text(&mut r.trace_id, labels.trace_id.as_deref(), "trace_id");
        text(&mut r.order_id, labels.order_id.as_deref(), "order_id");
        text(&mut r.subject, labels.subject.as_deref(), "subject");
        text(&mut r.peer, labels.peer.as_deref(), "peer");
        text(&mut r.route, labels.route.as_deref(), "route");
        let key = labels.idempotency_key.as_deref();
        text(&mut r.idempotency_key, key, "idempotency_key");
        let code = labels.rejection.as_ref().map(|c| &*c.code);
        text(&mut r.code, code, "code");
        // A DNS-1123 label: 63 bytes at most, never cut.
        bound::set(&mut r.tenant, labels.tenant.as_ref().map(|t| t.as_str()));
        r.seq = seq;
        rfc3339_into(at, &mut r.time);
        r.risk = labels.risk;
        r.replayed = labels.replayed;
        r.kind = RecordKind::Event;
        r.event = None;
        r.decision = None;
        r.http_status = None;
        r.grpc_status = None;
        r.latency_us = None;
        r.outcome = None;
        r.data = None;
        r.request_body = None;
        r.response_body = None;
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
                let denied = r.code.is_some() || authz.is_some_and(|a| !a.allowed && !a.shadow);
                r.kind = RecordKind::Request;
                // Set in both arms, never reset first: the string is reused.
                text(&mut r.method, Some(method.as_str()), "method");
                if r.route.is_none() {
                    text(&mut r.route, path.as_deref(), "route");
                }
                r.decision = Some(if denied {
                    Verdict::Deny
                } else {
                    Verdict::Allow
                });
                r.http_status = http_status;
                r.grpc_status = grpc_status;
                r.latency_us = Some(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                r.outcome = Some(outcome);
                if let Some(body) = request_body {
                    let (value, cut) = redactor.body(body);
                    r.request_body = Some(value);
                    if cut {
                        truncated.push("request_body".to_owned());
                    }
                }
                if let Some(body) = response_body {
                    let (value, cut) = redactor.body(body);
                    r.response_body = Some(value);
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
                // Events carry no rejection code (a cut one is still
                // named in `truncated`, as it always was).
                r.code = None;
                r.method = None;
                text(&mut r.event, Some(&name), "event");
                redactor.redact(&mut data);
                r.data = Some(data);
                if cut {
                    truncated.push("data".to_owned());
                }
            }
        }
        r.truncated = truncated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Authorization;

    fn request() -> Entry {
        let labels = LabelValues {
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            order_id: Some("o".repeat(2000).into()),
            subject: Some("alice".into()),
            peer: Some("spiffe://d/ns/a/sa/b".into()),
            route: Some("/v1/accounts/{id}".into()),
            idempotency_key: Some("k-1".into()),
            replayed: true,
            tenant: Some(crate::tenant::TenantNamespace::parse("tenant-a").unwrap()),
            risk: Some(crate::principal::RiskLevel::High),
            rejection: Some(crate::labels::RejectionLabel {
                kind: crate::reject::RejectionKind::PermissionDenied,
                code: "c".repeat(2000).into(),
            }),
            authorization: Some(Authorization {
                allowed: false,
                shadow: true,
                verb: "get".into(),
                resource: "accounts".into(),
                name: Some("a-1".into()),
                binding: Some("RoleBinding/tenant-a/r".into()),
                role: None,
            }),
            ..LabelValues::default()
        };
        Entry {
            at: SystemTime::now(),
            labels,
            detail: Detail::Request {
                method: http::Method::POST,
                path: Some("/v1/accounts/a-1".into()),
                http_status: Some(200),
                grpc_status: Some(0),
                latency: Duration::from_micros(7),
                outcome: Outcome::Complete,
                request_body: Some(Captured {
                    bytes: br#"{"amount":"1.00"}"#.to_vec(),
                    seen: 17,
                }),
                response_body: Some(Captured {
                    bytes: b"ok".to_vec(),
                    seen: 900,
                }),
            },
        }
    }

    fn filled(entry: Entry, record: &mut AuditRecord) -> AuditRecord {
        entry.fill(9, &Redactor::default(), record);
        record.clone()
    }

    #[test]
    fn a_reused_record_keeps_nothing_of_the_one_before() {
        let mut reused = AuditRecord::blank(GENESIS_PREV.into());
        let first = filled(request(), &mut reused);
        assert_eq!(first.truncated, ["order_id", "code", "response_body"]);
        assert_eq!(first.verb.as_deref(), Some("get"));
        assert_eq!(first.tenant.as_deref(), Some("tenant-a"));
        assert!(first.risk.is_some() && first.code.is_some());
        assert!(first.request_body.is_some() && first.response_body.is_some());
        // An event after a full request: what a fresh record would hold.
        let event = filled(Entry::dropped(3, 4), &mut reused);
        let fresh = filled(
            Entry::dropped(3, 4),
            &mut AuditRecord::blank(GENESIS_PREV.into()),
        );
        assert_eq!(
            AuditRecord {
                time: String::new(),
                ..event.clone()
            },
            AuditRecord {
                time: String::new(),
                ..fresh
            }
        );
        assert_eq!(event.trace_id, None);
        assert_eq!((event.tenant, event.risk, event.code), (None, None, None));
        assert_eq!((event.request_body, event.response_body), (None, None));
        assert!(event.truncated.is_empty());
        // And a request after the event: what a fresh record would hold.
        let again = filled(request(), &mut reused);
        let fresh = filled(request(), &mut AuditRecord::blank(GENESIS_PREV.into()));
        assert_eq!(
            AuditRecord {
                time: String::new(),
                latency_us: None,
                ..again
            },
            AuditRecord {
                time: String::new(),
                latency_us: None,
                ..fresh
            }
        );
    }

    const GENESIS_PREV: &str = super::super::record::GENESIS;
}
