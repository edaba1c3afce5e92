//! Feeds arbitrary bytes to the rooted control protocol decoder, as a TCP stream.
//!
//! Whatever the bytes, decoding must not panic. Frames are decoded off the front until
//! the decoder needs more or fails; each accepted frame must re-encode to exactly the
//! bytes it came from and decode again to itself, and shorter prefixes of it must only
//! ask for more bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multipoint_control::rooted::proto::{decode, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = decode(rest) {
        assert!((6..=4 + MAX_FRAME).contains(&used) && used <= rest.len());
        let (bytes, tail) = rest.split_at(used);

        let mut again = Vec::new();
        frame.encode(&mut again).expect("a decoded frame encodes");
        assert_eq!(again, bytes, "re-encoding {frame:?}");
        assert_eq!(decode(&again), Ok(Some((frame, used))));
        for cut in [0, 4, 5, used - 1] {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        rest = tail;
    }
});
