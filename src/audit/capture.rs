//! What the audit policy needs per request: the level, decided once when
//! the inner layers have labelled the request, and the request and
//! response bodies captured up to the cap when the level asks for them.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Uri};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::policy::{AuditAttributes, AuditPolicy, Level, PolicyDecision, method_verb};
use crate::config::Watched;
use crate::labels::RequestLabels;

/// Default body cap: see [`AuditLayer::body_cap`](super::AuditLayer::body_cap).
pub(super) const DEFAULT_BODY_CAP: usize = 8 * 1024;

/// Where the layer's policy comes from.
#[derive(Clone, Debug)]
pub(super) enum PolicySource {
    Fixed(AuditPolicy),
    Watched(Watched<AuditPolicy>),
}

impl PolicySource {
    pub(super) fn current(&self) -> AuditPolicy {
        match self {
            Self::Fixed(p) => p.clone(),
            Self::Watched(w) => AuditPolicy::clone(&w.borrow()),
        }
    }
}

/// The layer's settings, shared by its services.
#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) policy: Option<PolicySource>,
    pub(super) body_cap: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            policy: None,
            body_cap: DEFAULT_BODY_CAP,
        }
    }
}

/// A body as captured: at most the cap of its first bytes, and how many
/// bytes it had in all.
#[derive(Debug, Default)]
pub(super) struct Captured {
    pub(super) bytes: Vec<u8>,
    pub(super) seen: u64,
}

impl Captured {
    fn feed(&mut self, data: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        self.seen = self.seen.saturating_add(data.len() as u64);
    }

    /// Whether bytes past the cap were left out.
    pub(super) fn cut(&self) -> bool {
        self.seen > self.bytes.len() as u64
    }
}

#[derive(Default)]
struct State {
    decision: Option<PolicyDecision>,
    request: Captured,
    response: Captured,
}

/// One request's view of the audit policy.
pub(super) struct Capture {
    policy: AuditPolicy,
    cap: usize,
    labels: RequestLabels,
    method: Method,
    /// The request's URI: cloning it shares its bytes, so no allocation.
    uri: Uri,
    /// The decided level (`UNDECIDED` until then), read without the lock
    /// so the frames of a request below `Request` never take it.
    level: AtomicU8,
    state: Mutex<State>,
}

const UNDECIDED: u8 = u8::MAX;

fn level_code(level: Level) -> u8 {
    level as u8
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

impl Capture {
    pub(super) fn new(
        policy: AuditPolicy,
        cap: usize,
        labels: RequestLabels,
        method: Method,
        uri: Uri,
    ) -> Self {
        Self {
            policy,
            cap,
            labels,
            method,
            uri,
            level: AtomicU8::new(UNDECIDED),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's level, decided the first time it is asked for: by
    /// then the inner layers have labelled the request (the body is read,
    /// the response or an event has come, or the request is over).
    pub(super) fn decision(&self) -> PolicyDecision {
        let mut state = self.lock();
        self.decide(&mut state).clone()
    }

    fn decide<'s>(&self, state: &'s mut State) -> &'s PolicyDecision {
        let decision = state.decision.get_or_insert_with(|| {
            let l = self.labels.snapshot();
            let empty: &[Arc<str>] = &[];
            let (verb, resource, subresource, name) = match &l.authorization {
                Some(a) if l.api_group.is_some() => {
                    let (res, sub) = match a.resource.split_once('/') {
                        Some((r, s)) => (r, Some(s)),
                        None => (&*a.resource, None),
                    };
                    (&*a.verb, res, sub, a.name.as_deref())
                }
                Some(a) => (&*a.verb, "", None, None),
                None => (method_verb(&self.method), "", None, None),
            };
            let namespace = l.tenant.as_ref().map(|t| t.as_str()).unwrap_or("");
            self.policy.decide(&AuditAttributes {
                user: l.subject.as_deref(),
                groups: l.groups.as_deref().unwrap_or(empty),
                verb,
                api_group: l.api_group.as_deref(),
                resource,
                subresource,
                name,
                namespace,
                // The path is only matched against nonResourceURLs: a
                // bound keeps a hostile one from costing more than a
                // prefix compare needs.
                path: super::bound::cut(self.uri.path(), 4096).0,
            })
        });
        self.level
            .store(level_code(decision.level), Ordering::Relaxed);
        decision
    }

    /// Whether the decided level is below `level` (false while undecided).
    fn below(&self, level: Level) -> bool {
        let decided = self.level.load(Ordering::Relaxed);
        decided != UNDECIDED && decided < level_code(level)
    }

    pub(super) fn feed_request(&self, data: &[u8]) {
        if self.below(Level::Request) {
            return;
        }
        let mut state = self.lock();
        if self.decide(&mut state).level >= Level::Request {
            state.request.feed(data, self.cap);
        }
    }

    pub(super) fn feed_response(&self, data: &[u8]) {
        if self.below(Level::RequestResponse) {
            return;
        }
        let mut state = self.lock();
        if self.decide(&mut state).level >= Level::RequestResponse {
            state.response.feed(data, self.cap);
        }
    }

    /// The decision and the bodies its level asks for, taken out.
    pub(super) fn finish(&self) -> (PolicyDecision, Option<Captured>, Option<Captured>) {
        let mut state = self.lock();
        let decision = self.decide(&mut state).clone();
        let request =
            (decision.level >= Level::Request).then(|| std::mem::take(&mut state.request));
        let response =
            (decision.level >= Level::RequestResponse).then(|| std::mem::take(&mut state.response));
        (decision, request, response)
    }
}

pin_project! {
    /// The request body the audit layer hands to the inner service: yours,
    /// with its first bytes (up to the cap) kept for a `Request` or
    /// `RequestResponse` record.
    pub struct AuditRequestBody<B> {
        #[pin]
        inner: B,
        capture: Option<Arc<Capture>>,
    }
}

impl<B> AuditRequestBody<B> {
    pub(super) fn new(inner: B, capture: Option<Arc<Capture>>) -> Self {
        Self { inner, capture }
    }
}

impl<B> std::fmt::Debug for AuditRequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditRequestBody")
            .field("capturing", &self.capture.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> Body for AuditRequestBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let (Some(capture), Some(Ok(frame))) = (this.capture.as_ref(), &frame)
            && let Some(data) = frame.data_ref()
        {
            capture.feed_request(data);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
