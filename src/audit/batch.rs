//! How the writer batches: at most [`BATCH`] records at once, and the
//! batch window ([`Linger`]) it may wait after a small batch.

use std::time::Duration;

/// Most records the writer takes off the queue at once.
pub(super) const BATCH: usize = 256;

/// Longest accepted batch window.
pub(super) const MAX_BATCH_WINDOW: Duration = Duration::from_millis(100);

/// When the writer waits after a batch: see
/// [`AuditorBuilder::batch_window`](super::AuditorBuilder::batch_window).
#[derive(Clone, Copy, Debug)]
pub(super) struct Linger {
    pub(super) window: Duration,
}

impl Linger {
    /// The batch window `window` within its bounds: at most
    /// [`MAX_BATCH_WINDOW`] and a quarter of the `wait_timeout`.
    pub(super) fn new(window: Duration, wait_timeout: Duration) -> Self {
        Self {
            window: window.min(MAX_BATCH_WINDOW).min(wait_timeout / 4),
        }
    }

    /// Whether to wait after a batch of `taken` messages, `flushed` if it
    /// held a flush, with `free` of `max` queue slots unreserved now.
    pub(super) fn waits(self, taken: usize, flushed: bool, free: usize, max: usize) -> bool {
        !self.window.is_zero() && taken < BATCH && !flushed && free * 2 > max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_waits_only_after_a_small_batch_with_a_roomy_queue() {
        let on = Linger {
            window: Duration::from_millis(1),
        };
        let off = Linger {
            window: Duration::ZERO,
        };
        // A trickle into an empty queue: wait.
        assert!(on.waits(1, false, 8192, 8192));
        // Zero window, a full batch, or a flush: never.
        assert!(!off.waits(1, false, 8192, 8192));
        assert!(!on.waits(BATCH, false, 8192, 8192));
        assert!(!on.waits(1, true, 8192, 8192));
        // Slots held by requests in flight count: 60 of 64 reserved, so
        // the batches are small but the queue is nearly full: no wait.
        assert!(!on.waits(2, false, 4, 64));
        assert!(!on.waits(1, false, 32, 64));
        assert!(on.waits(1, false, 33, 64));
        // A one-slot queue that is free.
        assert!(on.waits(1, false, 1, 1));
        assert!(!on.waits(1, false, 0, 1));
    }
}
