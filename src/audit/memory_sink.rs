//! [`MemorySink`]: an [`AuditSink`] that keeps records in memory, for
//! tests and benches.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::record::AuditRecord;
use super::sink::{AuditSink, ChainHead};
use super::verify::{Verifier, VerifyError, VerifyReport};

/// Records with their encoded lines.
type Stored = Vec<(AuditRecord, Vec<u8>)>;

/// An in-memory sink for tests and benches. Clones share the same records.
#[derive(Clone, Default, Debug)]
pub struct MemorySink {
    inner: Arc<Mutex<Stored>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The records written so far, in chain order.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.lock().iter().map(|(r, _)| r.clone()).collect()
    }

    /// How many records were written.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoded lines, as a file sink would have written them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.lock().iter().flat_map(|(_, l)| l.clone()).collect()
    }

    /// Verifies the chain held in memory.
    pub fn verify(&self) -> Result<VerifyReport, VerifyError> {
        let mut v = Verifier::new();
        v.feed_file(Path::new("<memory>"), &self.to_bytes())?;
        Ok(v.finish())
    }
}

impl AuditSink for MemorySink {
    fn head(&self) -> Option<ChainHead> {
        self.lock().last().map(|(r, _)| ChainHead {
            seq: r.seq,
            hash: r.hash.clone(),
        })
    }

    fn append(&mut self, record: &AuditRecord, line: &[u8]) -> io::Result<()> {
        self.lock().push((record.clone(), line.to_vec()));
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
