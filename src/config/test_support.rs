//! Helpers shared by the config module's unit tests.

use std::path::PathBuf;

/// Writes `contents` to `name` in `dir` and returns the path.
pub(super) fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A parser for the tests' one-number files.
pub(super) fn number(bytes: &[u8]) -> Result<u32, String> {
    std::str::from_utf8(bytes)
        .map_err(|e| e.to_string())?
        .trim()
        .parse::<u32>()
        .map_err(|e| e.to_string())
}
