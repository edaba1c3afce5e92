//! Property tests of the rooted control protocol codec: every frame comes back as it
//! went, however TCP splits the stream, and no bytes a peer can send make the decoder
//! panic or accept something it would not encode the same way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use multipoint_control::rooted::proto::{decode, DataPlan, Frame, ProtoError, MAX_FRAME};
use multipoint_control::{Direction, Transport};
use proptest::prelude::*;
use proptest::sample::Index;

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        Just(Transport::RootedUnicast),
        Just(Transport::AdmittedMulticast)
    ]
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        Just(Direction::SenderOnly),
        Just(Direction::ReceiverOnly),
        Just(Direction::Both)
    ]
}

/// Any address the wire carries: the IPv6 flow label is not carried, so it stays 0.
fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (any::<[u8; 16]>(), any::<u16>(), any::<u32>()).prop_map(|(ip, port, scope)| {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope))
        }),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|ip| IpAddr::V4(Ipv4Addr::from(ip))),
        any::<[u8; 16]>().prop_map(|ip| IpAddr::V6(Ipv6Addr::from(ip))),
    ]
}

/// Up to 256 chars of any width: at most 1024 bytes, the MAX_TEXT limit.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..=8).prop_map(String::from_iter),
        prop::collection::vec(any::<char>(), 0..=256).prop_map(String::from_iter),
    ]
}

fn plan() -> impl Strategy<Value = DataPlan> {
    prop_oneof![
        (addr(), prop::option::of(addr()))
            .prop_map(|(root, uplink)| DataPlan::Unicast { root, uplink }),
        (addr(), ip()).prop_map(|(group, source)| DataPlan::Multicast { group, source }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (transport(), direction(), prop::option::of(addr()), text()).prop_map(
            |(transport, direction, data, name)| Frame::Join {
                transport,
                direction,
                data,
                name
            }
        ),
        (any::<[u8; 10]>(), any::<u32>(), any::<u64>(), plan()).prop_map(
            |(session, timeout_ms, next_sequence, plan)| Frame::Admit {
                session,
                timeout_ms,
                next_sequence,
                plan,
            }
        ),
        text().prop_map(|reason| Frame::Refuse { reason }),
        (transport(), direction()).prop_map(|(transport, direction)| Frame::Invite {
            transport,
            direction
        }),
        text().prop_map(|reason| Frame::Leave { reason }),
        Just(Frame::Heartbeat),
        text().prop_map(|reason| Frame::End { reason }),
        any::<[u8; 32]>().prop_map(|nonce| Frame::Challenge { nonce }),
        (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(nonce, mac)| Frame::Proof { nonce, mac }),
        any::<[u8; 32]>().prop_map(|mac| Frame::RootProof { mac }),
    ]
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode(&mut out).unwrap();
    out
}

/// Decodes frames off the front of `bytes` until it needs more or fails, checking each
/// accepted frame: it encodes back to exactly the bytes it came from, and every strict
/// prefix of those bytes asks for more. Returns the frames and what stopped the walk.
fn walk(mut bytes: &[u8]) -> Result<(Vec<Frame>, Option<ProtoError>), TestCaseError> {
    let mut frames = Vec::new();
    loop {
        match decode(bytes) {
            Ok(None) => return Ok((frames, None)),
            Err(err) => return Ok((frames, Some(err))),
            Ok(Some((frame, used))) => {
                prop_assert!((6..=4 + MAX_FRAME).contains(&used) && used <= bytes.len());
                prop_assert_eq!(&encoded(&frame), &bytes[..used]);
                for cut in [0, 4, 5, used / 2, used - 1] {
                    prop_assert_eq!(decode(&bytes[..cut]), Ok(None));
                }
                frames.push(frame);
                bytes = &bytes[used..];
            }
        }
    }
}

/// Frames with their fields laid out right but random, and nearly right: a correct
/// prefix, version and type, then arbitrary body bytes.
fn plausible_frame() -> impl Strategy<Value = Vec<u8>> {
    (0u8..=11, prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(ty, body)| {
        let mut out = u32::try_from(body.len() + 2)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(&[1, ty]);
        out.extend_from_slice(&body);
        out
    })
}

/// A valid frame with a few bytes overwritten and its end cut or extended.
fn damaged_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        frame(),
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        -4i32..=4,
        any::<u8>(),
    )
        .prop_map(|(frame, edits, tail, fill)| {
            let mut bytes = encoded(&frame);
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if tail < 0 {
                bytes.truncate(bytes.len().saturating_sub(tail.unsigned_abs() as usize));
            } else {
                bytes.resize(bytes.len() + tail as usize, fill);
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_frame_decodes_to_itself(frame in frame()) {
        let wire = encoded(&frame);
        prop_assert!(wire.len() <= 4 + MAX_FRAME);
        prop_assert_eq!(decode(&wire), Ok(Some((frame.clone(), wire.len()))));
        for cut in 0..wire.len() {
            prop_assert_eq!(decode(&wire[..cut]), Ok(None));
        }
        // Encoding appends: what was in the buffer stays.
        let mut out = vec![0xAA; 3];
        frame.encode(&mut out).unwrap();
        prop_assert_eq!(&out[..3], &[0xAA; 3]);
        prop_assert_eq!(&out[3..], &wire[..]);
    }

    #[test]
    fn a_stream_of_frames_decodes_however_it_is_split(
        frames in prop::collection::vec(frame(), 1..8),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let mut wire = Vec::new();
        for frame in &frames {
            frame.encode(&mut wire).unwrap();
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();

        let mut pending = Vec::new();
        let mut got = Vec::new();
        let mut from = 0;
        for to in cuts {
            pending.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some((frame, used)) = decode(&pending).unwrap() {
                got.push(frame);
                pending.drain(..used);
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        walk(&bytes)?;
    }

    #[test]
    fn plausible_frames_never_panic_and_decode_canonically(
        parts in prop::collection::vec(plausible_frame(), 1..4),
    ) {
        walk(&parts.concat())?;
    }

    #[test]
    fn damaged_frames_never_panic_and_decode_canonically(bytes in damaged_frame()) {
        walk(&bytes)?;
    }

    #[test]
    fn a_length_over_max_frame_fails_at_once(len in (MAX_FRAME as u32 + 1)..=u32::MAX) {
        prop_assert_eq!(
            decode(&len.to_be_bytes()),
            Err(ProtoError::TooLong { len: len as usize, max: MAX_FRAME })
        );
    }
}
