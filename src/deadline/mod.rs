//! deadline
mod body;
mod decoder;
mod future;
mod grpc_timeout;
mod layer;
mod service;
mod state;
mod stats;
#[cfg(test)]
mod tests;

pub use body::{RequestBody, ResponseBody};
pub use decoder::{Fed, FrameEvent, GrpcFrameDecoder};
pub use future::ResponseFuture;
pub use grpc_timeout::{InvalidGrpcTimeout, parse_grpc_timeout};
pub use layer::{Deadlines, StreamDeadlineLayer};
pub use service::StreamDeadline;
pub use state::StreamDeadlineError;
pub use stats::{DeadlineStats, Direction, OTHER_METHOD, TimeoutKind};
