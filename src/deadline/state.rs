//! The state one call shares between its request and response wrappers.
//!
//! Whichever side notices an expiry first records the outcome here (the
//! first outcome wins), counts it, and wakes the other side: the handler's
//! pending read fails at once, and the response wrapper ends the stream
//! even when the handler is stuck and would never wake it. Only atomics:
//! nothing here is ever locked, let alone across an `.await`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http::{HeaderMap, HeaderValue, Uri};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

use super::DeadlineCode;
use super::layer::Deadlines;
use super::stats::{DeadlineStats, Direction, TimeoutKind};
use crate::codes::RejectionCode;
use crate::labels::RequestLabels;
use crate::reject::Rejection;

/// How a call ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Exceeded(Direction, TimeoutKind),
    /// A request message declared more than `max_message_bytes`.
    TooLarge,
}

impl Outcome {
    fn encode(self) -> u8 {
        match self {
            Self::Exceeded(d, k) => 1 + d as u8 * 3 + k as u8,
            Self::TooLarge => 10,
        }
    }

    fn decode(v: u8) -> Option<Self> {
        const D: [Direction; 3] = [Direction::Request, Direction::Response, Direction::Call];
        const K: [TimeoutKind; 3] = [TimeoutKind::Message, TimeoutKind::Idle, TimeoutKind::Total];
        match v {
            1..=9 => Some(Self::Exceeded(
                D[usize::from((v - 1) / 3)],
                K[usize::from((v - 1) % 3)],
            )),
            10 => Some(Self::TooLarge),
            _ => None,
        }
    }

    /// The human text, also sent as `grpc-message` (plain ASCII, so it
    /// needs no percent-encoding).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Exceeded(Direction::Request, TimeoutKind::Message) => {
                "request message deadline exceeded"
            }
            Self::Exceeded(Direction::Response, TimeoutKind::Message) => {
                "response message deadline exceeded"
            }
            Self::Exceeded(_, TimeoutKind::Idle) => "stream idle timeout exceeded",
            Self::Exceeded(_, _) => "call deadline exceeded",
            Self::TooLarge => "message larger than max_message_bytes",
        }
    }

    /// The stable code, as [`rejection`](Self::rejection) gives it on a
    /// gRPC call (where a stalled request is DEADLINE_EXCEEDED, not 408).
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::Exceeded(..) => "deadline.exceeded",
            Self::TooLarge => "deadline.message_too_large",
        }
    }

    pub(crate) fn grpc_status(self) -> &'static str {
        match self {
            Self::Exceeded(..) => "4",
            Self::TooLarge => "8",
        }
    }

    /// The rejection rendered (or recorded) for this outcome. `stalled`
    /// says the request body was still open when it happened, which makes
    /// an HTTP expiry a 408 rather than a 504.
    pub(crate) fn rejection(self, stalled: bool) -> Rejection {
        match self {
            Self::TooLarge => DeadlineCode::MessageTooLarge.reject(self.message()),
            Self::Exceeded(Direction::Request, _) | Self::Exceeded(_, TimeoutKind::Idle)
                if stalled =>
            {
                DeadlineCode::RequestTimeout.reject(self.message())
            }
            Self::Exceeded(..) => DeadlineCode::Exceeded.reject(self.message()),
        }
    }

    /// The trailers that end a gRPC stream with this outcome.
    pub(crate) fn trailers(self) -> HeaderMap {
        let mut trailers = HeaderMap::with_capacity(3);
        trailers.insert("grpc-status", HeaderValue::from_static(self.grpc_status()));
        trailers.insert("grpc-message", HeaderValue::from_static(self.message()));
        trailers.insert(
            crate::reject::CODE_METADATA,
            HeaderValue::from_static(self.code()),
        );
        trailers
    }
}

/// The error a wrapped body fails with once its call has expired.
///
/// On gRPC calls the handler's read fails with a boxed [`tonic::Status`]
/// instead (`DEADLINE_EXCEEDED`, or `RESOURCE_EXHAUSTED` for an oversized
/// message), which tonic hands to the handler as it is. This type is what
/// HTTP handlers see, and what a response body fails with when a deadline
/// hits in the middle of a message (the stream is reset rather than
/// sending a truncated message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDeadlineError {
    outcome: Outcome,
}

impl StreamDeadlineError {
    /// Which side missed its deadline, or `None` when a message was too
    /// large.
    pub fn direction(&self) -> Option<Direction> {
        match self.outcome {
            Outcome::Exceeded(d, _) => Some(d),
            Outcome::TooLarge => None,
        }
    }

    /// Which deadline expired, or `None` when a message was too large.
    pub fn kind(&self) -> Option<TimeoutKind> {
        match self.outcome {
            Outcome::Exceeded(_, k) => Some(k),
            Outcome::TooLarge => None,
        }
    }
}

impl std::fmt::Display for StreamDeadlineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.outcome.message())
    }
}

impl std::error::Error for StreamDeadlineError {}

/// One call's deadlines and shared state.
pub(crate) struct CallState {
    pub(crate) grpc: bool,
    pub(crate) deadlines: Deadlines,
    /// When the call started.
    pub(crate) start: Instant,
    /// The whole-call deadline (`max_duration`, `grpc-timeout`).
    pub(crate) total: Option<Instant>,
    outcome: AtomicU8,
    /// Nanoseconds from `start` to the last byte seen in either direction.
    last_activity: AtomicU64,
    request_closed: AtomicBool,
    pub(crate) request_waker: AtomicWaker,
    pub(crate) response_waker: AtomicWaker,
    uri: Uri,
    labels: Option<RequestLabels>,
    stats: DeadlineStats,
}

impl CallState {
    pub(crate) fn new(
        grpc: bool,
        deadlines: Deadlines,
        total: Option<Duration>,
        uri: Uri,
        labels: Option<RequestLabels>,
        stats: DeadlineStats,
    ) -> Self {
        let start = Instant::now();
        Self {
            grpc,
            deadlines,
            start,
            total: total.and_then(|t| start.checked_add(t)),
            outcome: AtomicU8::new(0),
            last_activity: AtomicU64::new(0),
            request_closed: AtomicBool::new(false),
            request_waker: AtomicWaker::new(),
            response_waker: AtomicWaker::new(),
            uri,
            labels,
            stats,
        }
    }

    pub(crate) fn outcome(&self) -> Option<Outcome> {
        Outcome::decode(self.outcome.load(Ordering::Acquire))
    }

    /// Records `outcome` unless another one was recorded first, and
    /// returns the one that stands. The winner is counted and both sides
    /// are woken.
    pub(crate) fn expire(&self, outcome: Outcome) -> Outcome {
        match self.outcome.compare_exchange(
            0,
            outcome.encode(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                let stalled = !self.request_closed();
                match outcome {
                    Outcome::Exceeded(direction, kind) => {
                        self.stats.record(&self.method_label(), direction, kind);
                    }
                    Outcome::TooLarge => self.stats.record_too_large(),
                }
                if let Some(labels) = &self.labels {
                    labels.record_rejection(&outcome.rejection(stalled && !self.grpc));
                }
                tracing::debug!(
                    method = %self.uri.path(),
                    reason = outcome.message(),
                    "finmesh deadline: ending call"
                );
                self.request_waker.wake();
                self.response_waker.wake();
                outcome
            }
            Err(prev) => Outcome::decode(prev).unwrap_or(outcome),
        }
    }

    /// The `method` label: the gRPC path, or for HTTP the route label the
    /// telemetry layer set (request paths carry ids: unbounded).
    fn method_label(&self) -> String {
        if self.grpc {
            return self.uri.path().to_owned();
        }
        self.labels
            .as_ref()
            .and_then(|l| l.snapshot().route.map(|r| r.into_owned()))
            .unwrap_or_else(|| "http".to_owned())
    }

    /// Notes a byte in either direction, for the idle clock.
    pub(crate) fn touch(&self, now: Instant) {
        if self.deadlines.idle.is_some() {
            let nanos = now.saturating_duration_since(self.start).as_nanos();
            self.last_activity
                .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// When the call goes idle if no byte moves before then; `None` when
    /// that instant cannot be represented (`idle_timeout(Duration::MAX)`
    /// means "no idle limit").
    pub(crate) fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.deadlines.idle?;
        let last = Duration::from_nanos(self.last_activity.load(Ordering::Relaxed));
        // Security: checked, never `+`: a huge configured timeout must not
        // panic the call (found by fuzzing).
        self.start.checked_add(last.checked_add(idle)?)
    }

    pub(crate) fn close_request(&self) {
        self.request_closed.store(true, Ordering::Release);
    }

    pub(crate) fn request_closed(&self) -> bool {
        self.request_closed.load(Ordering::Acquire)
    }

    /// The error a body fails with for `outcome`: a `tonic::Status` on
    /// gRPC calls (tonic hands it to the handler as it is).
    pub(crate) fn error(&self, outcome: Outcome) -> BoxError {
        if self.grpc {
            let status = match outcome {
                Outcome::TooLarge => tonic::Status::resource_exhausted(outcome.message()),
                Outcome::Exceeded(..) => tonic::Status::deadline_exceeded(outcome.message()),
            };
            Box::new(status)
        } else {
            Box::new(StreamDeadlineError { outcome })
        }
    }

    /// The error a response body resets its stream with.
    pub(crate) fn reset_error(outcome: Outcome) -> BoxError {
        Box::new(StreamDeadlineError { outcome })
    }
}

/// The earliest of some optional instants.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

pin_project! {
    /// A `Sleep` created on first use and moved with `Sleep::reset`, so a
    /// call whose timers never need to wait allocates and registers nothing.
    #[project = TimerProj]
    pub(crate) enum Timer {
        Off,
        On { #[pin] sleep: Sleep },
    }
}

impl Timer {
    /// Polls a sleep until `deadline`, moving the existing one if needed.
    pub(crate) fn poll_until(
        mut self: Pin<&mut Self>,
        deadline: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if let TimerProj::Off = self.as_mut().project() {
            self.as_mut().set(Timer::On {
                sleep: tokio::time::sleep_until(deadline),
            });
        }
        match self.project() {
            TimerProj::On { mut sleep } => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep.poll(cx)
            }
            TimerProj::Off => Poll::Pending,
        }
    }

    /// Drops the sleep (its timer entry) when no deadline is left.
    pub(crate) fn stop(mut self: Pin<&mut Self>) {
        if let TimerProj::On { .. } = self.as_mut().project() {
            self.set(Timer::Off);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_their_encoding() {
        for d in [Direction::Request, Direction::Response, Direction::Call] {
            for k in [TimeoutKind::Message, TimeoutKind::Idle, TimeoutKind::Total] {
                let o = Outcome::Exceeded(d, k);
                assert_eq!(Outcome::decode(o.encode()), Some(o));
            }
        }
        assert_eq!(
            Outcome::decode(Outcome::TooLarge.encode()),
            Some(Outcome::TooLarge)
        );
        assert_eq!(Outcome::decode(0), None);
        assert_eq!(Outcome::decode(11), None);
    }
}
