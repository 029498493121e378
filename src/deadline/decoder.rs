//! An incremental follower of gRPC's length-prefixed message framing.
//!
//! On the wire every gRPC message is a 5-byte prefix — a 1-byte flag
//! (bit 0: compressed) and a 4-byte big-endian length — followed by that
//! many bytes. HTTP/2 DATA frames know nothing of these boundaries: one
//! frame may hold several messages, and one message may span many frames.
//! [`GrpcFrameDecoder`] is a pure state machine fed byte chunks split
//! anywhere; it reports each completed prefix (with its declared length, as
//! soon as the fifth byte arrives, so a size limit can refuse a message
//! before its bytes are read) and each completed message. It never buffers
//! or copies payload bytes, allocates nothing and cannot panic on any input.

/// What [`GrpcFrameDecoder::next_event`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEvent {
    /// A 5-byte prefix is complete: a message of `len` bytes follows.
    Prefix {
        /// Whether the compressed flag is set.
        compressed: bool,
        /// The declared length of the message.
        len: u32,
    },
    /// A whole message (prefix and payload) has passed.
    Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the prefix; `have` of its 5 bytes are in `bytes`.
    Prefix { have: u8, bytes: [u8; 5] },
    /// Inside a payload; `remaining` bytes still to come.
    Payload { remaining: u32 },
}

/// Follows gRPC message framing across arbitrarily split byte chunks.
///
/// ```
/// use finmesh::deadline::{FrameEvent, GrpcFrameDecoder};
///
/// let mut decoder = GrpcFrameDecoder::new();
/// // One message of 3 bytes, split after the second byte of its prefix.
/// let mut first: &[u8] = &[0, 0];
/// assert_eq!(decoder.next_event(&mut first), None);
/// assert!(decoder.is_mid_message());
/// let mut rest: &[u8] = &[0, 0, 3, b'a', b'b', b'c'];
/// assert_eq!(
///     decoder.next_event(&mut rest),
///     Some(FrameEvent::Prefix { compressed: false, len: 3 })
/// );
/// assert_eq!(decoder.next_event(&mut rest), Some(FrameEvent::Message));
/// assert_eq!(decoder.next_event(&mut rest), None);
/// assert!(!decoder.is_mid_message());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcFrameDecoder {
    state: State,
}

impl Default for GrpcFrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

const EMPTY: State = State::Prefix {
    have: 0,
    bytes: [0; 5],
};

impl GrpcFrameDecoder {
    /// A decoder at a message boundary.
    pub const fn new() -> Self {
        Self { state: EMPTY }
    }

    /// Consumes bytes from the front of `buf` up to and including the next
    /// event and returns it, or consumes all of `buf` and returns `None`.
    ///
    /// Call it in a loop until it returns `None` to see every event in a
    /// chunk. A zero-length message yields its `Prefix` and its `Message`
    /// without consuming further bytes.
    pub fn next_event(&mut self, buf: &mut &[u8]) -> Option<FrameEvent> {
        match &mut self.state {
            State::Payload { remaining } => {
                if *remaining > 0 {
                    let take = buf.len().min(*remaining as usize);
                    *buf = &buf[take..];
                    // `take <= remaining`, which is a u32.
                    *remaining -= take as u32;
                    if *remaining > 0 {
                        return None;
                    }
                }
                self.state = EMPTY;
                Some(FrameEvent::Message)
            }
            State::Prefix { have, bytes } => {
                let have_n = usize::from(*have);
                let take = buf.len().min(5 - have_n);
                bytes[have_n..have_n + take].copy_from_slice(&buf[..take]);
                *buf = &buf[take..];
                *have += take as u8;
                if *have < 5 {
                    return None;
                }
                let compressed = bytes[0] & 1 == 1;
                let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                self.state = State::Payload { remaining: len };
                Some(FrameEvent::Prefix { compressed, len })
            }
        }
    }

    /// Whether part of a message (prefix or payload) has been seen but not
    /// all of it. A zero-length message whose prefix was just reported is
    /// mid-message until [`next_event`](Self::next_event) reports it whole.
    pub fn is_mid_message(&self) -> bool {
        self.state != EMPTY
    }

    /// Feeds a whole chunk: the number of messages it completed, and the
    /// largest length declared by a prefix it completed. A convenience for
    /// callers that need no per-event decisions.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Fed {
        let mut fed = Fed::default();
        while let Some(event) = self.next_event(&mut chunk) {
            match event {
                FrameEvent::Prefix { len, .. } => {
                    fed.max_declared = Some(fed.max_declared.map_or(len, |m: u32| m.max(len)));
                }
                FrameEvent::Message => fed.messages += 1,
            }
        }
        fed
    }
}

/// What [`GrpcFrameDecoder::feed`] saw in one chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fed {
    /// Messages completed by the chunk.
    pub messages: usize,
    /// The largest length declared by a prefix completed in the chunk.
    pub max_declared: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic PRNG (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn frame(payload_len: usize, flag: u8) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(payload_len as u32).to_be_bytes());
        v.extend((0..payload_len).map(|i| i as u8));
        v
    }

    /// Feeds `wire` split at `cuts` and returns the events with the byte
    /// offset after which each one was reported.
    fn run(wire: &[u8], cuts: &[usize]) -> Vec<(usize, FrameEvent)> {
        let mut d = GrpcFrameDecoder::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&wire.len())) {
            let mut chunk = &wire[start..end];
            while let Some(e) = d.next_event(&mut chunk) {
                let offset = end - chunk.len();
                events.push((offset, e));
            }
            start = end;
        }
        assert!(!d.is_mid_message(), "ends at a boundary");
        events
    }

    #[test]
    fn several_messages_in_one_chunk_are_several() {
        let mut wire = frame(3, 0);
        wire.extend(frame(0, 0));
        wire.extend(frame(7, 1));
        let mut d = GrpcFrameDecoder::new();
        let fed = d.feed(&wire);
        assert_eq!(fed.messages, 3);
        assert_eq!(fed.max_declared, Some(7));
        assert!(!d.is_mid_message());
    }

    #[test]
    fn prefix_is_reported_before_the_payload_arrives() {
        let mut d = GrpcFrameDecoder::new();
        let mut buf: &[u8] = &[1, 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(
            d.next_event(&mut buf),
            Some(FrameEvent::Prefix {
                compressed: true,
                len: 0x7fff_ffff
            })
        );
        assert!(d.is_mid_message());
        assert_eq!(d.next_event(&mut buf), None);
    }

    #[test]
    fn zero_length_message_completes_without_more_bytes() {
        let mut d = GrpcFrameDecoder::new();
        let mut buf: &[u8] = &[0, 0, 0, 0, 0];
        assert!(matches!(
            d.next_event(&mut buf),
            Some(FrameEvent::Prefix { len: 0, .. })
        ));
        assert!(d.is_mid_message());
        assert_eq!(d.next_event(&mut buf), Some(FrameEvent::Message));
        assert!(!d.is_mid_message());
        assert_eq!(d.next_event(&mut buf), None);
    }

    #[test]
    fn empty_chunks_change_nothing() {
        let mut d = GrpcFrameDecoder::new();
        assert_eq!(d.next_event(&mut &[][..]), None);
        assert!(!d.is_mid_message());
        d.next_event(&mut &[0u8, 0][..]);
        let before = d;
        assert_eq!(d.next_event(&mut &[][..]), None);
        assert_eq!(d, before);
    }

    #[test]
    fn random_split_points_give_the_same_events_at_the_same_offsets() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..500 {
            let count = 1 + rng.below(8);
            let mut wire = Vec::new();
            let mut want = Vec::new();
            for _ in 0..count {
                let len = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(5),
                    _ => rng.below(300),
                };
                let flag = rng.below(2) as u8;
                want.push((
                    wire.len() + 5,
                    FrameEvent::Prefix {
                        compressed: flag == 1,
                        len: len as u32,
                    },
                ));
                wire.extend(frame(len, flag));
                want.push((wire.len(), FrameEvent::Message));
            }
            let mut cuts: Vec<usize> = (0..rng.below(wire.len() + 1))
                .map(|_| rng.below(wire.len() + 1))
                .collect();
            cuts.sort_unstable();
            assert_eq!(run(&wire, &cuts), want, "round {round}, cuts {cuts:?}");
            // One byte at a time, the worst drip feed.
            let every: Vec<usize> = (1..wire.len()).collect();
            assert_eq!(run(&wire, &every), want, "round {round}, byte by byte");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = Rng(42);
        let mut d = GrpcFrameDecoder::new();
        for _ in 0..10_000 {
            let n = rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let mut chunk = &bytes[..];
            while d.next_event(&mut chunk).is_some() {}
            assert!(chunk.is_empty());
        }
    }
}
