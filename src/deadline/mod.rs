//! deadline (in progress).
