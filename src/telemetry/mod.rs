//! telemetry (in progress).
