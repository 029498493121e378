//! Counts of calls ended by a deadline, readable from the layer.
//!
//! Every expiry is counted here, by direction, kind and method, with plain
//! atomics (and, for the per-method breakdown, a small map touched only
//! when a call expires — never on the hot path). With the `telemetry`
//! feature the same event also increments the OpenTelemetry counter
//! `finmesh.stream.deadline_exceeded` on `global::meter("finmesh")`, with
//! the attributes `direction`, `kind` and `method`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Which side of the call missed its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The client was too slow sending (request messages).
    Request,
    /// The service was too slow answering (response messages).
    Response,
    /// The call as a whole (idle in both directions, or the whole-call
    /// deadline).
    Call,
}

impl Direction {
    /// The metric attribute value: `request`, `response` or `call`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::Call => "call",
        }
    }
}

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// A per-message deadline (`request_message_timeout`,
    /// `response_message_timeout`).
    Message,
    /// `idle_timeout`: no bytes in either direction.
    Idle,
    /// The whole-call deadline: `max_duration` or `grpc-timeout`.
    Total,
}

impl TimeoutKind {
    /// The metric attribute value: `message`, `idle` or `total`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Idle => "idle",
            Self::Total => "total",
        }
    }
}

/// The per-method breakdown holds at most this many methods; later ones
/// are counted under [`OTHER_METHOD`], so a client inventing paths cannot
/// grow the map or the metric's cardinality.
const MAX_METHODS: usize = 256;
/// Longer method names are counted under [`OTHER_METHOD`].
const MAX_METHOD_LEN: usize = 200;
/// The method label used past the bounds above.
pub const OTHER_METHOD: &str = "other";

type MethodKey = (Arc<str>, Direction, TimeoutKind);

/// Counters of expired calls, shared by a layer and every service it made.
///
/// ```
/// use finmesh::deadline::{Direction, StreamDeadlineLayer, TimeoutKind};
///
/// let layer = StreamDeadlineLayer::new();
/// let stats = layer.stats();
/// assert_eq!(stats.exceeded(Direction::Request, TimeoutKind::Message), 0);
/// assert_eq!(stats.exceeded_total(), 0);
/// ```
#[derive(Clone, Default)]
pub struct DeadlineStats {
    inner: Arc<StatsInner>,
}

#[derive(Default)]
struct StatsInner {
    exceeded: [AtomicU64; 9],
    too_large: AtomicU64,
    by_method: Mutex<HashMap<MethodKey, u64>>,
    #[cfg(feature = "telemetry")]
    counter: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>>,
}

fn slot(direction: Direction, kind: TimeoutKind) -> usize {
    direction as usize * 3 + kind as usize
}

impl DeadlineStats {
    /// Calls that ended because `kind` expired on `direction`.
    pub fn exceeded(&self, direction: Direction, kind: TimeoutKind) -> u64 {
        self.inner.exceeded[slot(direction, kind)].load(Ordering::Relaxed)
    }

    /// All calls ended by any deadline.
    pub fn exceeded_total(&self) -> u64 {
        self.inner
            .exceeded
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Calls of `method` (`/package.Service/Method`, or the route label of
    /// an HTTP request) ended because `kind` expired on `direction`.
    pub fn exceeded_for(&self, method: &str, direction: Direction, kind: TimeoutKind) -> u64 {
        let map = self
            .inner
            .by_method
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|((m, d, k), _)| &**m == method && *d == direction && *k == kind)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Calls refused because a message declared more than
    /// `max_message_bytes`.
    pub fn message_too_large(&self) -> u64 {
        self.inner.too_large.load(Ordering::Relaxed)
    }

    pub(crate) fn record_too_large(&self) {
        self.inner.too_large.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, method: &str, direction: Direction, kind: TimeoutKind) {
        self.inner.exceeded[slot(direction, kind)].fetch_add(1, Ordering::Relaxed);
        let method: Arc<str> = {
            let mut map = self
                .inner
                .by_method
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let known = map
                .keys()
                .find(|(m, _, _)| &**m == method)
                .map(|k| k.0.clone());
            let distinct = || {
                map.keys()
                    .map(|k| &k.0)
                    .collect::<std::collections::HashSet<_>>()
                    .len()
            };
            let label: Arc<str> = match known {
                Some(m) => m,
                None if method.len() <= MAX_METHOD_LEN && distinct() < MAX_METHODS => {
                    Arc::from(method)
                }
                None => Arc::from(OTHER_METHOD),
            };
            *map.entry((label.clone(), direction, kind)).or_default() += 1;
            label
        };
        #[cfg(feature = "telemetry")]
        {
            use opentelemetry::KeyValue;
            let counter = self.inner.counter.get_or_init(|| {
                opentelemetry::global::meter("finmesh")
                    .u64_counter("finmesh.stream.deadline_exceeded")
                    .with_description("gRPC streams and HTTP bodies ended by a finmesh deadline")
                    .build()
            });
            counter.add(
                1,
                &[
                    KeyValue::new("direction", direction.as_str()),
                    KeyValue::new("kind", kind.as_str()),
                    KeyValue::new("method", method),
                ],
            );
        }
        #[cfg(not(feature = "telemetry"))]
        let _ = method;
    }
}

impl fmt::Debug for DeadlineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineStats")
            .field("exceeded", &self.exceeded_total())
            .field("message_too_large", &self.message_too_large())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_direction_kind_and_method() {
        let stats = DeadlineStats::default();
        stats.record("/a.B/C", Direction::Request, TimeoutKind::Message);
        stats.record("/a.B/C", Direction::Request, TimeoutKind::Message);
        stats.record("/a.B/D", Direction::Call, TimeoutKind::Idle);
        assert_eq!(stats.exceeded(Direction::Request, TimeoutKind::Message), 2);
        assert_eq!(stats.exceeded(Direction::Call, TimeoutKind::Idle), 1);
        assert_eq!(stats.exceeded(Direction::Response, TimeoutKind::Total), 0);
        assert_eq!(stats.exceeded_total(), 3);
        assert_eq!(
            stats.exceeded_for("/a.B/C", Direction::Request, TimeoutKind::Message),
            2
        );
        assert_eq!(
            stats.exceeded_for("/a.B/D", Direction::Request, TimeoutKind::Message),
            0
        );
    }

    #[test]
    fn method_cardinality_is_bounded() {
        let stats = DeadlineStats::default();
        for i in 0..(MAX_METHODS + 50) {
            stats.record(&format!("/x.Y/M{i}"), Direction::Call, TimeoutKind::Total);
        }
        stats.record(&"x".repeat(500), Direction::Call, TimeoutKind::Total);
        assert_eq!(
            stats.exceeded_for(OTHER_METHOD, Direction::Call, TimeoutKind::Total),
            51
        );
        assert_eq!(
            stats.exceeded(Direction::Call, TimeoutKind::Total),
            MAX_METHODS as u64 + 51
        );
    }
}
