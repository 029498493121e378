//! Reading a body whole, up to a limit: the request, to fingerprint it;
//! the response, to store it.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;

/// What [`buffer`] read.
pub(super) enum Buffered {
    /// The whole body and its trailers.
    Whole(Bytes, Option<HeaderMap>),
    /// The body is over the limit; reading stopped at the chunk that
    /// crossed it.
    OverLimit(Overflow),
}

/// What was read of a body over the limit. Joined only if asked for: a
/// refused request drops it, a response too large to store sends it first.
pub(super) struct Overflow {
    read: Chunks,
    crossing: Bytes,
}

impl Overflow {
    /// Every byte read, the chunk that crossed the limit included.
    pub(super) fn into_bytes(mut self) -> Bytes {
        self.read.push(self.crossing);
        self.read.into_bytes()
    }
}

/// Data chunks joined as they come; one chunk (the common case) is kept
/// without a copy.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    joined: BytesMut,
}

impl Chunks {
    fn len(&self) -> usize {
        self.first.as_ref().map_or(self.joined.len(), Bytes::len)
    }

    fn push(&mut self, chunk: Bytes) {
        match self.first.take() {
            None if self.joined.is_empty() => self.first = Some(chunk),
            Some(first) => {
                self.joined.reserve(first.len() + chunk.len());
                self.joined.extend_from_slice(&first);
                self.joined.extend_from_slice(&chunk);
            }
            None => self.joined.extend_from_slice(&chunk),
        }
    }

    fn into_bytes(self) -> Bytes {
        self.first.unwrap_or_else(|| self.joined.freeze())
    }
}

/// Reads `body` whole, up to `limit` data bytes; trailer frames are merged.
/// Over the limit it stops reading, so the rest of `body` can still be
/// handed on.
pub(super) async fn buffer<B>(mut body: Pin<&mut B>, limit: usize) -> Result<Buffered, B::Error>
where
    B: Body<Data = Bytes>,
{
    let mut data = Chunks::default();
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(chunk) if data.len() + chunk.len() > limit => {
                return Ok(Buffered::OverLimit(Overflow {
                    read: data,
                    crossing: chunk,
                }));
            }
            Ok(chunk) => data.push(chunk),
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    match &mut trailers {
                        None => trailers = Some(t),
                        Some(all) => all.extend(t),
                    }
                }
            }
        }
    }
    Ok(Buffered::Whole(data.into_bytes(), trailers))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = Infallible> {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn whole_bodies_up_to_the_limit_and_the_prefix_past_it() {
        let body = std::pin::pin!(chunks(&["ab", "cd"]));
        let Ok(Buffered::Whole(data, None)) = buffer(body, 4).await else {
            panic!("four bytes fit a limit of four");
        };
        assert_eq!(data, "abcd");

        let mut body = Box::pin(chunks(&["ab", "cd", "ef"]));
        let Ok(Buffered::OverLimit(read)) = buffer(body.as_mut(), 3).await else {
            panic!("over the limit");
        };
        assert_eq!(read.into_bytes(), "abcd");
        // The rest is still there to hand on.
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ef");
    }

    #[tokio::test]
    async fn one_chunk_is_kept_without_a_copy() {
        let chunk = Bytes::from(vec![7u8; 64]);
        let frames = vec![Ok::<_, Infallible>(Frame::data(chunk.clone()))];
        let body = std::pin::pin!(StreamBody::new(futures_util::stream::iter(frames)));
        let Ok(Buffered::Whole(data, None)) = buffer(body, 64).await else {
            panic!("fits");
        };
        assert_eq!(data.as_ptr(), chunk.as_ptr());
    }
}
