//! [`AuditError`]: the one error type of the audit writer and its handles.

use std::io;
use std::sync::Arc;

/// Why the audit log could not take a record, start, or sync.
///
/// Cloneable, so the error that stopped the writer can be handed to every
/// caller that asks ([`Auditor::last_error`](super::Auditor::last_error));
/// the I/O cause is shared, not copied, and is the error's
/// [`source`](std::error::Error::source).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AuditError {
    /// The queue stayed full for the whole wait timeout.
    Full,
    /// The writer stopped (its sink failed, or it was shut down).
    Closed,
    /// The sink failed (`write`, `fsync`, rotation) and the writer
    /// stopped: fail closed.
    Sink(Arc<io::Error>),
    /// The writer thread or its runtime could not be started.
    Spawn(Arc<io::Error>),
}

impl AuditError {
    pub(super) fn spawn(e: io::Error) -> Self {
        Self::Spawn(Arc::new(e))
    }

    /// The I/O error behind a [`Sink`](Self::Sink) or
    /// [`Spawn`](Self::Spawn) error.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::Sink(e) | Self::Spawn(e) => Some(e),
            Self::Full | Self::Closed => None,
        }
    }
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => f.write_str("audit queue full"),
            Self::Closed => f.write_str("audit writer stopped"),
            Self::Sink(e) => write!(f, "audit sink failed: {e}"),
            Self::Spawn(e) => write!(f, "starting the audit writer: {e}"),
        }
    }
}

impl std::error::Error for AuditError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io_error().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn io_causes_are_the_source() {
        let e = AuditError::Sink(Arc::new(io::Error::other("no space left on device")));
        assert_eq!(e.to_string(), "audit sink failed: no space left on device");
        let source = e.source().expect("a sink error has its cause");
        assert_eq!(source.to_string(), "no space left on device");
        assert!(source.downcast_ref::<io::Error>().is_some());
        let clone = e.clone();
        assert!(matches!(
            (&e, &clone),
            (AuditError::Sink(a), AuditError::Sink(b)) if Arc::ptr_eq(a, b)
        ));
        assert!(AuditError::Full.source().is_none());
        assert!(AuditError::Closed.io_error().is_none());
        let e = AuditError::spawn(io::Error::from(io::ErrorKind::OutOfMemory));
        assert_eq!(e.io_error().unwrap().kind(), io::ErrorKind::OutOfMemory);
    }
}
