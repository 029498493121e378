//! The fuzz targets' bodies (see `harness/`), as a library.
#[path = "../harness/mod.rs"]
mod harness;
pub use harness::*;
