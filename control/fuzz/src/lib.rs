//! What the control crate's fuzz targets share: a reader that cuts typed values out of
//! the fuzz input (the test-support crate's, with what control frames carry on top:
//! [`ControlInput`]), and the checks every framed codec of the rooted control protocol must
//! pass. A target for a new set of frames builds them from [`Input`] and calls
//! [`check_encoded`], [`check_body`] and [`check_stream`]; see `scripts/fuzz.sh`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use multipoint_control::rooted::proto::{decode, Frame, ProtoError, MAX_FRAME, MAX_TEXT, VERSION};
pub use multipoint_test_support::input::Input;

/// Bytes of the length prefix of a frame.
pub const PREFIX_LEN: usize = 4;

/// What the control protocol's frames carry, read off an [`Input`] on top of its plain
/// numbers and bytes.
pub trait ControlInput {
    /// A string of a length read from the input (at most a little over [`MAX_TEXT`]
    /// bytes, so that the limit itself is tried), from input bytes made valid UTF-8.
    fn text(&mut self) -> String;
    /// An IPv4 or IPv6 socket address, flow label and scope included.
    fn socket_addr(&mut self) -> SocketAddr;
    /// An optional socket address.
    fn opt_socket_addr(&mut self) -> Option<SocketAddr>;
    /// An IPv4 or IPv6 address.
    fn ip(&mut self) -> IpAddr;
}

impl ControlInput for Input<'_> {
    fn text(&mut self) -> String {
        let len = usize::from(self.u16()) % (MAX_TEXT + 8);
        String::from_utf8_lossy(self.bytes(len)).into_owned()
    }

    fn socket_addr(&mut self) -> SocketAddr {
        if self.u8() & 1 == 0 {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(self.u32()), self.u16()))
        } else {
            let ip = Ipv6Addr::from(self.array::<16>());
            SocketAddr::V6(SocketAddrV6::new(ip, self.u16(), self.u32(), self.u32()))
        }
    }

    fn opt_socket_addr(&mut self) -> Option<SocketAddr> {
        (self.u8() & 1 == 1).then(|| self.socket_addr())
    }

    fn ip(&mut self) -> IpAddr {
        if self.u8() & 1 == 0 {
            IpAddr::V4(Ipv4Addr::from(self.u32()))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()))
        }
    }
}

/// The address as the wire carries it: an IPv6 flow label is not sent, and reads as 0.
pub fn on_the_wire(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), 0, a.scope_id())),
        v4 => v4,
    }
}

/// Decodes frames off the front of `data` as off a TCP stream, until the decoder needs
/// more bytes or fails. Each frame accepted must have used a whole frame's bytes, re-encode
/// to exactly them, decode again to itself, decode the same with any bytes after it, and
/// its strict prefixes must only ask for more. Returns the frames decoded.
pub fn check_stream(data: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut rest = data;
    loop {
        let decoded = decode(rest);
        let (frame, used) = match decoded {
            Ok(Some(decoded)) => decoded,
            Ok(None) => {
                // Only a frame still incomplete, and nothing wrong in it so far.
                let declared = rest
                    .first_chunk::<PREFIX_LEN>()
                    .map(|p| u32::from_be_bytes(*p) as usize);
                assert!(declared.is_none_or(
                    |len| (1..=MAX_FRAME).contains(&len) && rest.len() < PREFIX_LEN + len
                ));
                break;
            }
            Err(err) => {
                check_decode_error(&err, rest);
                break;
            }
        };
        assert!((PREFIX_LEN + 2..=PREFIX_LEN + MAX_FRAME).contains(&used) && used <= rest.len());
        let (bytes, tail) = rest.split_at(used);
        assert_eq!(
            u32::from_be_bytes(*bytes.first_chunk().unwrap_or(&[0; 4])) as usize,
            used - PREFIX_LEN
        );
        assert_eq!(bytes[PREFIX_LEN], VERSION);

        let mut again = Vec::new();
        frame.encode(&mut again).expect("a decoded frame encodes");
        assert_eq!(again, bytes, "re-encoding {frame:?}");
        assert_eq!(decode(&again), Ok(Some((frame.clone(), used))));
        for cut in [0, 1, PREFIX_LEN, PREFIX_LEN + 1, used / 2, used - 1] {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "prefix of {cut} bytes");
        }
        frames.push(frame);
        rest = tail;
    }
    frames
}

/// A decode error must be about the front of `buf`: the length, the version or the body
/// of a complete frame.
fn check_decode_error(err: &ProtoError, buf: &[u8]) {
    let len = u32::from_be_bytes(*buf.first_chunk().unwrap_or(&[0; 4])) as usize;
    match *err {
        ProtoError::TooLong { len: l, max } if max == MAX_FRAME => {
            assert_eq!(l, len);
            assert!(len > MAX_FRAME);
        }
        ProtoError::Version { got } => {
            assert!((1..=MAX_FRAME).contains(&len));
            assert_eq!(buf.get(PREFIX_LEN), Some(&got));
            assert_ne!(got, VERSION);
        }
        // Everything else is found in a complete frame, except a zero length.
        ProtoError::Malformed(_) if len == 0 => {}
        ProtoError::UnknownType(ty) => {
            assert!(buf.len() >= PREFIX_LEN + len);
            assert_eq!(buf.get(PREFIX_LEN + 1), Some(&ty));
        }
        ProtoError::TooLong { max, .. } => {
            assert_eq!(max, MAX_TEXT);
            assert!(buf.len() >= PREFIX_LEN + len);
        }
        ProtoError::Malformed(_) => assert!(buf.len() >= PREFIX_LEN + len && len <= MAX_FRAME),
    }
}

/// Decodes a complete frame of type `ty` around `body` (length prefix and version
/// made right): the decoder must decide, never ask for more; an accepted frame must
/// round-trip to the same bytes; and the stream checks hold for it.
pub fn check_body(ty: u8, body: &[u8]) {
    let body = &body[..body.len().min(MAX_FRAME - 2)];
    let mut wire = u32::try_from(body.len() + 2)
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    wire.extend_from_slice(&[VERSION, ty]);
    wire.extend_from_slice(body);
    match decode(&wire) {
        Ok(Some((frame, used))) => {
            assert_eq!(used, wire.len());
            let mut again = Vec::new();
            frame.encode(&mut again).expect("a decoded frame encodes");
            assert_eq!(again, wire, "re-encoding {frame:?}");
        }
        Ok(None) => panic!("a complete frame of type {ty} asked for more bytes"),
        Err(ProtoError::UnknownType(t)) => assert_eq!(t, ty),
        Err(ProtoError::Malformed(_) | ProtoError::TooLong { max: MAX_TEXT, .. }) => {}
        Err(other) => panic!("a complete version-{VERSION} frame failed with {other:?}"),
    }
    let frames = check_stream(&wire);
    assert!(frames.len() <= 1);
}

/// Encodes `frame` after some bytes already in the buffer. If it encodes, it must decode
/// back to `expected` (the frame as the wire carries it) using exactly the bytes written,
/// with or without bytes after it, and pass the stream checks; if not, the buffer must be
/// as it was and the error one the encoder may give.
pub fn check_encoded(frame: &Frame, expected: &Frame, tail: &[u8]) {
    let mut out = vec![0xC3; 3];
    match frame.encode(&mut out) {
        Ok(()) => {
            assert_eq!(out[..3], [0xC3; 3], "encoding touched what was there");
            let wire = &out[3..];
            assert_eq!(
                decode(wire),
                Ok(Some((expected.clone(), wire.len()))),
                "{frame:?}"
            );
            let mut longer = wire.to_vec();
            longer.extend_from_slice(tail);
            assert_eq!(decode(&longer), Ok(Some((expected.clone(), wire.len()))));
            let frames = check_stream(&longer);
            assert_eq!(frames.first(), Some(expected));
        }
        Err(err) => {
            assert_eq!(out, [0xC3; 3], "a failed encode left bytes behind");
            assert!(
                matches!(err, ProtoError::TooLong { max: MAX_TEXT, len } if len > MAX_TEXT)
                    || matches!(err, ProtoError::Malformed(_)),
                "{frame:?} failed to encode with {err:?}"
            );
        }
    }
}
