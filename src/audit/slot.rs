//! A queue slot reserved for one request's record.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc::OwnedPermit;

use super::entry::{Entry, Msg};
use super::stats::Shared;

/// Room in the queue for one record, taken before the request runs, so the
/// record written when its response is known never waits and is never
/// dropped while the writer runs.
pub(super) struct Slot {
    permit: OwnedPermit<Msg>,
    shared: Arc<Shared>,
}

/// What [`Auditor::try_reserve`](super::Auditor::try_reserve) found.
pub(super) enum Reservation {
    /// A slot was free.
    Reserved(Slot),
    /// The queue is full: this resolves to a slot once one frees up, or to
    /// `None` (a refusal, counted) when the wait timeout passes first or the
    /// writer stops.
    Wait(WaitForSlot),
    /// The writer has stopped: refused (and counted) at once.
    Closed,
}

/// The wait for a slot of a full queue, bounded by the wait timeout.
pub(super) type WaitForSlot = Pin<Box<dyn Future<Output = Option<Slot>> + Send>>;

impl Slot {
    pub(super) fn new(permit: OwnedPermit<Msg>, shared: Arc<Shared>) -> Self {
        Self { permit, shared }
    }

    /// Queues `entry` in this slot. `false` when the writer had already
    /// stopped after a sink error: the record is lost, and counted so.
    pub(super) fn send(self, entry: Entry) -> bool {
        let lost = self.shared.failed();
        if lost {
            self.shared.count_lost(1);
        }
        // The slot was reserved when the request came in: this never
        // waits and never fails while the writer runs.
        self.permit.send(Msg::Entry(Box::new(entry)));
        !lost
    }
}
