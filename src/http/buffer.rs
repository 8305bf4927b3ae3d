//! Bytes read from a socket and not yet parsed, shared by client connections
//! and the relay's connections to nodes.

use std::io::{self, Read};

/// How much we try to read per `read` call. One call usually brings a whole
/// message; larger bodies grow the buffer as needed.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// An empty buffer larger than this is freed by [`InputBuffer::shrink`].
const SHRINK_ABOVE_BYTES: usize = 2 * READ_CHUNK_BYTES;

/// Bytes read from the socket and not yet parsed. Reads go into spare capacity
/// at the end; consumed bytes at the front are dropped by moving the rest down
/// only when room is needed, so pipelined requests are not copied per request.
#[derive(Debug, Default)]
pub struct InputBuffer {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
}

impl InputBuffer {
    pub fn new() -> InputBuffer {
        InputBuffer {
            bytes: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes held, used or not: what this buffer costs in memory.
    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Gives memory back once a large message has passed: an idle pooled
    /// connection should cost a few KiB, not the largest body it ever carried.
    pub fn shrink(&mut self) {
        if self.is_empty() && self.bytes.len() > SHRINK_ABOVE_BYTES {
            *self = InputBuffer::new();
        }
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// One `read` into the spare room at the end (at least 8 KiB of it).
    pub fn read_from(&mut self, source: &mut impl Read) -> io::Result<usize> {
        self.read_with_room(source, READ_CHUNK_BYTES)
    }

    /// One `read` with at least `room` bytes of spare room: a body streamed
    /// through in large pieces needs fewer system calls per byte.
    pub fn read_with_room(&mut self, source: &mut impl Read, room: usize) -> io::Result<usize> {
        if self.bytes.len() - self.end < room {
            if self.start > 0 {
                self.bytes.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.bytes.len() - self.end < room {
                let grown = (self.end + room).max(self.bytes.len() * 2);
                self.bytes.resize(grown, 0);
            }
        }
        let n = source.read(&mut self.bytes[self.end..])?;
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_buffer_keeps_unconsumed_bytes_across_reads() {
        let mut buffer = InputBuffer::new();
        let mut source: &[u8] = b"hello world";
        assert_eq!(buffer.read_from(&mut source).expect("read"), 11);
        buffer.consume(6);
        assert_eq!(buffer.data(), b"world");
        let mut more: &[u8] = b"!";
        buffer.read_from(&mut more).expect("read");
        assert_eq!(buffer.data(), b"world!");
        buffer.consume(6);
        assert!(buffer.is_empty());
    }

    #[test]
    fn input_buffer_grows_for_large_bodies() {
        let mut buffer = InputBuffer::new();
        let big = vec![7u8; 100_000];
        let mut source: &[u8] = &big;
        while buffer.len() < big.len() {
            assert!(buffer.read_from(&mut source).expect("read") > 0);
        }
        assert_eq!(buffer.data(), big.as_slice());
        buffer.shrink();
        assert!(buffer.capacity() > 100_000, "not shrunk while holding data");
        buffer.consume(big.len());
        buffer.shrink();
        assert_eq!(buffer.capacity(), 0, "an empty large buffer is freed");
    }
}
