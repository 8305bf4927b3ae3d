//! A message body's framing as a cursor over the bytes buffered so far, the
//! one rule both sides share: the client connection reading a request body
//! ([`super::conn::Exchange`]) and the relay reading a response body
//! ([`super::upstream::BodyReader`]).
//!
//! It owns no socket: it looks at an [`InputBuffer`], consumes framing
//! (chunk-size lines, trailers), and says where the next piece of data is,
//! in place, or that more input is needed. The caller reads and hands out.

use super::buffer::InputBuffer;
use super::parse::{ChunkedDecoder, Error};

/// Where a body stands.
#[derive(Debug)]
pub struct BodyFraming {
    kind: Kind,
    /// Bytes of the last piece handed out, dropped on the next step.
    handed_out: usize,
}

#[derive(Debug)]
enum Kind {
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    UntilClose,
}

/// What [`BodyFraming::next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next piece is the first `n` bytes of the buffer (valid until the
    /// next step).
    Data(usize),
    /// Read more input, then ask again.
    NeedMore,
    /// The body is complete.
    End,
}

impl BodyFraming {
    /// No body.
    pub fn empty() -> BodyFraming {
        BodyFraming::of(Kind::Done)
    }

    /// Exactly `n` bytes.
    pub fn length(n: u64) -> BodyFraming {
        BodyFraming::of(if n == 0 { Kind::Done } else { Kind::Length(n) })
    }

    /// `Transfer-Encoding: chunked`, refused past `max_body_bytes`.
    pub fn chunked(max_body_bytes: u64) -> BodyFraming {
        BodyFraming::of(Kind::Chunked(Box::new(ChunkedDecoder::with_limit(
            max_body_bytes,
        ))))
    }

    /// Whatever comes until the sender closes (responses only).
    pub fn until_close() -> BodyFraming {
        BodyFraming::of(Kind::UntilClose)
    }

    fn of(kind: Kind) -> BodyFraming {
        BodyFraming {
            kind,
            handed_out: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Done)
    }

    /// Whether only the sender's close can end the body.
    pub fn ends_at_close(&self) -> bool {
        matches!(self.kind, Kind::UntilClose)
    }

    /// Drops the last piece from `input`, consumes framing, and says where
    /// the next piece is.
    pub fn next(&mut self, input: &mut InputBuffer) -> Result<Step, Error> {
        self.release(input);
        loop {
            match &mut self.kind {
                Kind::Done => return Ok(Step::End),
                Kind::Length(remaining) => {
                    if input.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = (input.len() as u64).min(*remaining) as usize;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.kind = Kind::Done;
                    }
                    return Ok(self.hand_out(take));
                }
                Kind::Chunked(decoder) => {
                    let step = decoder.decode(input.data())?;
                    if !step.data.is_empty() {
                        input.consume(step.data.start);
                        return Ok(self.hand_out(step.data.len()));
                    }
                    input.consume(step.used);
                    if decoder.is_done() {
                        self.kind = Kind::Done;
                    } else {
                        return Ok(Step::NeedMore);
                    }
                }
                Kind::UntilClose if input.is_empty() => return Ok(Step::NeedMore),
                Kind::UntilClose => return Ok(self.hand_out(input.len())),
            }
        }
    }

    /// Drops the last piece handed out from `input` (when the caller stops
    /// reading the body, e.g. to tunnel what follows).
    pub fn release(&mut self, input: &mut InputBuffer) {
        input.consume(std::mem::take(&mut self.handed_out));
    }

    /// The sender closed: true if that ends the body (rather than cutting it).
    pub fn end_of_input(&mut self) -> bool {
        match self.kind {
            Kind::UntilClose | Kind::Done => {
                self.kind = Kind::Done;
                true
            }
            _ => false,
        }
    }

    fn hand_out(&mut self, n: usize) -> Step {
        self.handed_out = n;
        Step::Data(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `arrivals` one by one, collecting every piece handed out.
    fn pieces(mut framing: BodyFraming, arrivals: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
        let mut input = InputBuffer::new();
        let mut out = Vec::new();
        let mut arrivals = arrivals.iter();
        loop {
            match framing.next(&mut input).expect("valid") {
                Step::Data(n) => out.push(input.data()[..n].to_vec()),
                Step::End => return (out, true),
                Step::NeedMore => match arrivals.next() {
                    Some(bytes) => {
                        input.read_from(&mut &bytes[..]).expect("read");
                    }
                    None => return (out, framing.end_of_input()),
                },
            }
        }
    }

    #[test]
    fn a_length_body_ends_at_its_length_and_leaves_what_follows() {
        let mut input = InputBuffer::new();
        input.read_from(&mut &b"helloNEXT"[..]).expect("read");
        let mut framing = BodyFraming::length(5);
        assert_eq!(framing.next(&mut input), Ok(Step::Data(5)));
        assert_eq!(framing.next(&mut input), Ok(Step::End));
        assert_eq!(input.data(), b"NEXT");
    }

    #[test]
    fn pieces_are_handed_out_as_they_arrive() {
        let (got, complete) = pieces(BodyFraming::length(6), &[b"ab", b"cd", b"ef"]);
        assert_eq!(
            (got.concat(), got.len(), complete),
            (b"abcdef".to_vec(), 3, true)
        );
        let (got, complete) = pieces(
            BodyFraming::chunked(u64::MAX),
            &[b"3\r\nab", b"c\r\n", b"2\r\nde\r\n0\r\n\r\n"],
        );
        assert_eq!(got, [b"ab".to_vec(), b"c".to_vec(), b"de".to_vec()]);
        assert!(complete);
    }

    #[test]
    fn only_an_until_close_body_is_ended_by_the_close() {
        let (got, complete) = pieces(BodyFraming::until_close(), &[b"any", b"thing"]);
        assert_eq!((got.concat(), complete), (b"anything".to_vec(), true));
        let (_, complete) = pieces(BodyFraming::length(10), &[b"short"]);
        assert!(!complete, "a cut length body is not complete");
    }

    #[test]
    fn a_chunked_body_over_its_limit_is_refused() {
        let mut input = InputBuffer::new();
        input.read_from(&mut &b"5\r\nhello\r\n"[..]).expect("read");
        assert_eq!(
            BodyFraming::chunked(4).next(&mut input),
            Err(Error::BodyTooLarge { limit: 4 })
        );
    }
}
