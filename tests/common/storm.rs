//! Malformed HTTP requests from the crate's own PRNG, by class, for the
//! storm tests (a few thousand over sockets) and the long parser run
//! (millions, `cargo test -- --ignored`).

use bookrelay::rand::Rng;

/// The kinds of bad input a hostile client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    RandomBytes,
    TruncatedHead,
    OverlongLine,
    BogusChunkSize,
    InvalidUtf8Header,
    NulBytes,
    Mutated,
}

pub const CLASSES: [Class; 7] = [
    Class::RandomBytes,
    Class::TruncatedHead,
    Class::OverlongLine,
    Class::BogusChunkSize,
    Class::InvalidUtf8Header,
    Class::NulBytes,
    Class::Mutated,
];

/// A valid request to start mutations from.
pub fn valid_request(rng: &mut Rng) -> Vec<u8> {
    let samples: [&[u8]; 4] = [
        b"GET /bookings?limit=1 HTTP/1.1\r\nHost: storm\r\n\r\n",
        b"GET /health HTTP/1.1\nHost: storm\nAccept: */*\n\n",
        b"POST /bookings HTTP/1.1\r\nHost: storm\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /bookings HTTP/1.1\r\nHost: storm\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    ];
    let sample = rng.pick(&samples);
    sample.to_vec()
}

/// One bad input of `class`.
pub fn generate(class: Class, rng: &mut Rng) -> Vec<u8> {
    match class {
        Class::RandomBytes => (0..rng.range(1, 300))
            .map(|_| rng.next_u64() as u8)
            .collect(),
        Class::TruncatedHead => {
            let mut request = valid_request(rng);
            let end = rng.below(request.iter().position(|&b| b == b'\n').unwrap_or(1) as u64 + 8)
                as usize;
            request.truncate(end.min(request.len().saturating_sub(1)).max(1));
            request
        }
        Class::OverlongLine => {
            let mut request = b"GET /".to_vec();
            request.extend(std::iter::repeat_n(
                b'a',
                rng.range(16 * 1024, 20 * 1024) as usize,
            ));
            request.extend_from_slice(b" HTTP/1.1\r\n\r\n");
            request
        }
        Class::BogusChunkSize => {
            let sizes: [&[u8]; 6] = [b"zz", b"-1", b"ffffffffffffffffff", b"", b"4 4", b"0x10"];
            let mut request = b"POST /bookings HTTP/1.1\r\nHost: storm\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let size = rng.pick(&sizes);
            request.extend_from_slice(size);
            request.extend_from_slice(b"\r\nabcd\r\n0\r\n\r\n");
            request
        }
        Class::InvalidUtf8Header => {
            let mut request = b"GET /health HTTP/1.1\r\nX-Bad: ".to_vec();
            let invalid: [&[u8]; 4] = [b"\xff\xfe", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80"];
            let bytes = rng.pick(&invalid);
            request.extend_from_slice(bytes);
            request.extend_from_slice(b"\r\n\r\n");
            request
        }
        Class::NulBytes => {
            let mut request = valid_request(rng);
            let at =
                rng.below(request.iter().position(|&b| b == b'\n').unwrap_or(1) as u64) as usize;
            request.insert(at.max(1), 0);
            request
        }
        Class::Mutated => {
            let mut request = valid_request(rng);
            for _ in 0..rng.range(1, 6) {
                let at = rng.below(request.len() as u64) as usize;
                match rng.below(3) {
                    0 => request[at] = rng.next_u64() as u8,
                    1 => request.insert(at, rng.next_u64() as u8),
                    _ => {
                        request.remove(at);
                        if request.is_empty() {
                            request.push(b'X');
                        }
                    }
                }
            }
            request
        }
    }
}
