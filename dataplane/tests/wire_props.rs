//! Property tests of MoldUDP64 framing: what is packed comes back, and nothing a
//! network can send makes the parser panic or accept a damaged packet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use multipoint_dataplane::wire::{
    pack_all, Packet, PacketKind, PacketRepr, ReRequest, ReRequestRepr, Session, WireError,
    HEADER_LEN, REREQUEST_LEN, SESSION_LEN,
};
use proptest::prelude::*;

fn any_session() -> impl Strategy<Value = Session> {
    prop::array::uniform10(any::<u8>()).prop_map(Session::from_bytes)
}

fn messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=1024), 0..200)
}

/// Nearly valid packets: well-formed blocks under a count that may be off by one,
/// with a few bytes added or cut at the end. These reach every branch of the block
/// walk, and about one in nine is left exactly right (the flag says which).
fn nearly_valid_packet() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (
        any_session(),
        any::<u64>(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..8), 0..6),
        -1i32..=1,
        -3i32..=3,
        prop::collection::vec(any::<u8>(), 3),
    )
        .prop_map(|(session, sequence, blocks, count_delta, tail, junk)| {
            let count = (blocks.len() as i32 + count_delta).clamp(0, 0xFFFF) as u16;
            let mut buf = Vec::new();
            buf.extend_from_slice(session.as_bytes());
            buf.extend_from_slice(&sequence.to_be_bytes());
            buf.extend_from_slice(&count.to_be_bytes());
            for block in &blocks {
                buf.extend_from_slice(&(block.len() as u16).to_be_bytes());
                buf.extend_from_slice(block);
            }
            if tail < 0 {
                buf.truncate(buf.len().saturating_sub(tail.unsigned_abs() as usize));
            } else {
                buf.extend_from_slice(&junk[..tail as usize]);
            }
            let exact = count_delta == 0
                && tail == 0
                && sequence.checked_add(blocks.len() as u64).is_some();
            (buf, exact)
        })
}

/// Checks what must hold for any input the parser accepts: the messages exactly
/// fill the packet, and re-emitting the parsed form gives the same bytes.
fn check_accepted(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let Ok(packet) = Packet::new_checked(bytes) else {
        return Ok(false);
    };
    let messages: Vec<&[u8]> = packet.messages().collect();
    prop_assert_eq!(messages.len(), usize::from(packet.message_count()));
    let blocks: usize = messages.iter().map(|m| 2 + m.len()).sum();
    prop_assert_eq!(HEADER_LEN + blocks, bytes.len());
    prop_assert_eq!(
        packet.next_sequence(),
        packet.sequence() + u64::from(packet.message_count())
    );
    let repr = PacketRepr::parse(&packet).unwrap();
    let mut out = vec![0; repr.buffer_len()];
    let len = repr.emit(&mut out).unwrap();
    prop_assert_eq!(&out[..len], bytes);
    Ok(true)
}

proptest! {
    #[test]
    fn packed_messages_come_back_in_order_with_consecutive_sequence_numbers(
        session in any_session(),
        first in 1u64..1 << 40,
        max_datagram in 64usize..=9000,
        msgs in messages(),
    ) {
        // A message can be at most max_datagram - 22 bytes.
        let msgs: Vec<Vec<u8>> = msgs
            .into_iter()
            .map(|mut m| { m.truncate(max_datagram - HEADER_LEN - 2); m })
            .collect();
        let packets = pack_all(&session, first, max_datagram, msgs.iter().map(Vec::as_slice))
            .unwrap();
        prop_assert_eq!(packets.is_empty(), msgs.is_empty());
        let mut next = first;
        let mut back: Vec<&[u8]> = Vec::new();
        for bytes in &packets {
            prop_assert!(bytes.len() <= max_datagram);
            let packet = Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(packet.kind(), PacketKind::Data);
            prop_assert_eq!(packet.session(), session);
            prop_assert_eq!(packet.sequence(), next);
            next = packet.next_sequence();
            back.extend(packet.into_messages());
        }
        prop_assert_eq!(next, first + msgs.len() as u64);
        prop_assert_eq!(back, msgs.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn a_message_too_large_for_the_datagram_is_refused_not_split(
        session in any_session(),
        max_datagram in 64usize..=2000,
        extra in 1usize..100,
    ) {
        let msg = vec![7u8; max_datagram - HEADER_LEN - 2 + extra];
        prop_assert!(pack_all(&session, 1, max_datagram, [msg.as_slice()]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_accepted(&bytes)?;
        // An unchecked view must not panic either.
        let unchecked = Packet::new_unchecked(&bytes[..]);
        prop_assert!(unchecked.messages().count() <= usize::from(unchecked.message_count()));
        let _ = (unchecked.session(), unchecked.sequence(), unchecked.next_sequence());
    }

    #[test]
    fn nearly_valid_packets_are_accepted_when_exactly_right_and_never_panic(
        (bytes, exact) in nearly_valid_packet(),
    ) {
        let accepted = check_accepted(&bytes)?;
        // Damaged ones may still be valid by coincidence (a cut that removes a
        // whole block along with the count), so only one direction is certain.
        if exact {
            prop_assert!(accepted, "rejected a well-formed packet: {:?}", Packet::new_checked(&bytes[..]));
        }
    }

    #[test]
    fn any_truncation_of_a_data_packet_is_rejected(
        session in any_session(),
        first in 1u64..1 << 40,
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..20),
        cut in any::<prop::sample::Index>(),
    ) {
        let packets = pack_all(&session, first, 9000, msgs.iter().map(Vec::as_slice)).unwrap();
        prop_assert_eq!(packets.len(), 1);
        let bytes = &packets[0];
        let prefix = &bytes[..cut.index(bytes.len())];
        prop_assert!(Packet::new_checked(prefix).is_err());
    }

    #[test]
    fn a_data_packet_with_a_changed_count_is_rejected(
        session in any_session(),
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..20),
        delta in 1u16..5,
    ) {
        let mut bytes = pack_all(&session, 1, 9000, msgs.iter().map(Vec::as_slice))
            .unwrap()
            .remove(0);
        let count = u16::from_be_bytes([bytes[18], bytes[19]]);
        bytes[18..20].copy_from_slice(&(count + delta).to_be_bytes());
        prop_assert!(Packet::new_checked(&bytes[..]).is_err());
        bytes[18..20].copy_from_slice(&(count - 1).to_be_bytes());
        prop_assert!(Packet::new_checked(&bytes[..]).is_err());
    }

    #[test]
    fn a_rerequest_round_trips(
        session in any_session(),
        sequence in any::<u64>(),
        count in any::<u16>(),
    ) {
        let repr = ReRequestRepr { session, sequence, count };
        let mut buf = [0u8; REREQUEST_LEN];
        match repr.emit(&mut buf) {
            Ok(len) => {
                prop_assert_eq!(len, REREQUEST_LEN);
                let request = ReRequest::new_checked(&buf[..]).unwrap();
                prop_assert_eq!(ReRequestRepr::parse(&request).unwrap(), repr);
            }
            Err(err) => {
                prop_assert!(sequence.checked_add(u64::from(count)).is_none());
                let is_overflow = matches!(err, WireError::SequenceOverflow { .. });
                prop_assert!(is_overflow);
            }
        }
    }

    #[test]
    fn a_rerequest_of_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(request) = ReRequest::new_checked(&bytes[..]) {
            prop_assert_eq!(bytes.len(), REREQUEST_LEN);
            let repr = ReRequestRepr::parse(&request).unwrap();
            prop_assert_eq!(&repr.session.as_bytes()[..], &bytes[..SESSION_LEN]);
            let mut out = [0u8; REREQUEST_LEN];
            repr.emit(&mut out).unwrap();
            prop_assert_eq!(&out[..], &bytes[..]);
        }
    }
}
