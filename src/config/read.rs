//! Reading one version of a file and parsing it, bounded and panic-safe.

use std::any::Any;
use std::fs::File;
use std::io::Read;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrorKind};
use super::reload::ParseFn;

/// Runs the caller's parser, turning a panic into an error: a parser bug
/// triggered by one bad file must not end hot reload for the process.
pub(crate) fn guarded_parse<T>(parse: &ParseFn<T>, bytes: &[u8]) -> Result<T, String> {
    match panic::catch_unwind(AssertUnwindSafe(|| parse(bytes))) {
        Ok(result) => result,
        Err(payload) => Err(format!("parser panicked: {}", panic_message(&*payload))),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// Reads the file the path points to now (following symlinks), refusing more
/// than `max_bytes` even if the file grows while being read.
pub(crate) fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ConfigError> {
    let io_err = |e: std::io::Error| ConfigError::caused_by(path, ConfigErrorKind::Io, e);
    let too_large = |len: u64| {
        ConfigError::new(
            path,
            ConfigErrorKind::TooLarge,
            format!("file is {len} bytes or more, over the {max_bytes}-byte limit"),
        )
    };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    if len > max_bytes {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

// The path is made absolute (so a later chdir does not matter) but
// deliberately not canonicalized: resolving the symlinks once would pin the
// ConfigMap's old `..2024_…` directory and miss every update after it.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_path_is_made_absolute_without_resolving_symlinks() {
        let p = absolute(Path::new("some/dir/..data/file.yaml"));
        assert!(p.is_absolute());
        assert!(p.ends_with("some/dir/..data/file.yaml"));
    }

    #[test]
    fn a_missing_file_is_an_io_error_with_its_cause() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let err = read_bounded(&dir.path().join("absent.yaml"), 10).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Io);
        let io = err
            .source()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}
