//! Rate-limit benches.
fn main() {}
