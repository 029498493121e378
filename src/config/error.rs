//! [`ConfigError`]: a watched file could not be loaded or reloaded.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong loading a watched file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be opened or read (missing, unreadable, a directory).
    Io,
    /// The file is larger than the configured limit.
    TooLarge,
    /// The parse-and-validate function refused the contents (or panicked).
    Parse,
    /// The file-system watcher or the reload thread could not be started.
    Watch,
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Io => "cannot read",
            Self::TooLarge => "too large",
            Self::Parse => "invalid",
            Self::Watch => "cannot watch",
        })
    }
}

/// A watched file could not be loaded or reloaded.
///
/// Names the file and the cause; cheap to clone so that [`Watched::last_error`](super::Watched::last_error)
/// can hand it out, for example to a readiness check.
///
/// Equality compares the path, the kind and the message, not the source.
#[derive(Clone, Debug)]
pub struct ConfigError {
    path: PathBuf,
    kind: ConfigErrorKind,
    message: String,
    // The underlying error, for `Error::source`: the I/O or watcher error.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl PartialEq for ConfigError {
    fn eq(&self, other: &Self) -> bool {
        (&self.path, self.kind, &self.message) == (&other.path, other.kind, &other.message)
    }
}

impl Eq for ConfigError {}

impl ConfigError {
    pub(crate) fn new(path: &Path, kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`, whose text becomes the message.
    pub(crate) fn caused_by<E>(path: &Path, kind: ConfigErrorKind, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let message = source.to_string();
        Self {
            source: Some(Arc::new(source)),
            ..Self::new(path, kind, message)
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The class of failure.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The cause, as reported by the operating system or the parser.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "config file {}: {}: {}",
            self.path.display(),
            self.kind,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn io_and_watch_errors_keep_their_source_and_compare_without_it() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err = ConfigError::caused_by(Path::new("/p.yaml"), ConfigErrorKind::Io, io);
        assert_eq!(err.message(), "gone");
        let source = err.source().expect("an I/O error has a source");
        let io = source.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(err.to_string(), "config file /p.yaml: cannot read: gone");
        assert_eq!(
            err,
            ConfigError::new(Path::new("/p.yaml"), ConfigErrorKind::Io, "gone")
        );
        assert!(
            ConfigError::new(Path::new("/p.yaml"), ConfigErrorKind::Parse, "bad")
                .source()
                .is_none()
        );
    }
}
