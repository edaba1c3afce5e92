//! Feeds arbitrary datagrams to the MoldUDP64 packet parser.
//!
//! Whatever the bytes, parsing must not panic. Then:
//!
//! - the header accessors read exactly the bytes at their offsets (zero when missing),
//!   on checked and unchecked views alike;
//! - an unchecked view's messages are at most its message count and lie inside the
//!   buffer, one after another from byte 20;
//! - a datagram is accepted exactly when it is one well-formed packet, checked here
//!   independently of the parser, and a rejection names a reason that holds for it;
//! - an accepted packet yields exactly its declared messages, filling it exactly, with
//!   sequence numbers that cannot overflow; `messages` and `into_messages` agree;
//! - an accepted packet round-trips: through `PacketRepr` (parse, emit), and rebuilt
//!   from its messages by `PacketBuilder`, `pack_all`, or the heartbeat and
//!   end-of-session writers, it comes out as the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multipoint_dataplane::wire::{
    pack_all, write_end_of_session, write_heartbeat, Packet, PacketBuilder, PacketKind, PacketRepr,
    Session, WireError, BLOCK_HEADER_LEN, END_OF_SESSION_COUNT, HEADER_LEN, HEARTBEAT_COUNT,
    SESSION_LEN,
};

fuzz_target!(|data: &[u8]| {
    check_header_fields(data);
    check_unchecked_messages(data);
    let verdict = Packet::new_checked(data);
    assert_eq!(
        verdict.is_ok(),
        well_formed(data),
        "acceptance of {data:02x?}"
    );
    match verdict {
        Ok(packet) => check_packet(&packet, data),
        Err(err) => check_rejection(&err, data),
    }
});

/// Reads `N` bytes at `at`, or zeros if the datagram is too short (what the views promise).
fn field<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    data.get(at..at + N)
        .map(|b| b.try_into().unwrap_or([0; N]))
        .unwrap_or([0; N])
}

fn check_header_fields(data: &[u8]) {
    let view = Packet::new_unchecked(data);
    assert_eq!(view.session().as_bytes(), &field::<SESSION_LEN>(data, 0));
    assert_eq!(view.sequence(), u64::from_be_bytes(field(data, 10)));
    assert_eq!(view.count(), u16::from_be_bytes(field(data, 18)));
    assert_eq!(view.kind(), PacketKind::from_count(view.count()));
    let data_kind = view.kind() == PacketKind::Data;
    assert_eq!(
        view.message_count(),
        if data_kind { view.count() } else { 0 }
    );
    assert_eq!(
        view.next_sequence(),
        view.sequence()
            .saturating_add(u64::from(view.message_count()))
    );
    assert_eq!(view.as_bytes(), data);
}

/// Messages of an unchecked view: no more than declared, each the bytes right after its
/// length, one after the other from the end of the header.
fn check_unchecked_messages(data: &[u8]) {
    let view = Packet::new_unchecked(data);
    let mut offset = HEADER_LEN;
    let mut seen = 0usize;
    for message in view.messages() {
        let len = usize::from(u16::from_be_bytes(field(data, offset)));
        assert_eq!(message.len(), len);
        let body = offset + BLOCK_HEADER_LEN;
        assert_eq!(Some(message), data.get(body..body + len));
        offset = body + len;
        seen += 1;
    }
    assert!(seen <= usize::from(view.message_count()));
    assert!(offset <= data.len().max(HEADER_LEN));
}

/// Whether `data` is exactly one well-formed packet, from the MoldUDP64 layout alone.
fn well_formed(data: &[u8]) -> bool {
    if data.len() < HEADER_LEN {
        return false;
    }
    let count = u16::from_be_bytes(field(data, 18));
    if count == HEARTBEAT_COUNT || count == END_OF_SESSION_COUNT {
        return data.len() == HEADER_LEN;
    }
    let sequence = u64::from_be_bytes(field(data, 10));
    if sequence.checked_add(u64::from(count)).is_none() {
        return false;
    }
    let mut offset = HEADER_LEN;
    for _ in 0..count {
        if offset + BLOCK_HEADER_LEN > data.len() {
            return false;
        }
        offset += BLOCK_HEADER_LEN + usize::from(u16::from_be_bytes(field(data, offset)));
        if offset > data.len() {
            return false;
        }
    }
    offset == data.len()
}

fn check_rejection(err: &WireError, data: &[u8]) {
    let len = data.len();
    let count = u16::from_be_bytes(field(data, 18));
    match *err {
        WireError::Truncated { len: l } => assert!(l == len && len < HEADER_LEN),
        WireError::ControlWithPayload { kind, extra } => {
            assert_eq!(kind, PacketKind::from_count(count));
            assert_ne!(kind, PacketKind::Data);
            assert_eq!(extra, len - HEADER_LEN);
            assert!(extra > 0);
        }
        WireError::SequenceOverflow { sequence, count: c } => {
            assert_eq!((sequence, c), (u64::from_be_bytes(field(data, 10)), count));
            assert!(sequence.checked_add(u64::from(c)).is_none());
        }
        WireError::BlockHeaderTruncated {
            index,
            count: c,
            offset,
            len: l,
        } => {
            assert_eq!((c, l), (count, len));
            assert!(index < c && offset >= HEADER_LEN && offset + BLOCK_HEADER_LEN > len);
        }
        WireError::BlockTruncated {
            index,
            count: c,
            declared,
            available,
        } => {
            assert_eq!(c, count);
            assert!(index < c && declared > available && available <= len - HEADER_LEN);
        }
        WireError::TrailingBytes { count: c, extra } => {
            assert_eq!(c, count);
            assert!(extra > 0 && extra <= len - HEADER_LEN);
        }
        ref other => panic!("a packet parse cannot fail with {other:?}"),
    }
    // The owned parse refuses the same bytes for the same reason.
    assert_eq!(
        PacketRepr::parse(&Packet::new_unchecked(data)).as_ref(),
        Err(err)
    );
}

fn check_packet(packet: &Packet<&[u8]>, data: &[u8]) {
    assert!(data.len() >= HEADER_LEN);
    let count = usize::from(packet.message_count());
    let messages: Vec<&[u8]> = packet.messages().collect();
    assert_eq!(messages.len(), count);
    assert_eq!(packet.into_messages().collect::<Vec<_>>(), messages);
    let filled = messages
        .iter()
        .fold(HEADER_LEN, |len, m| len + BLOCK_HEADER_LEN + m.len());
    assert_eq!(filled, data.len());
    // The last message's sequence number exists, and the next one too.
    assert_eq!(
        packet.sequence().checked_add(count as u64),
        Some(packet.next_sequence())
    );

    let repr = PacketRepr::parse(packet).expect("a checked packet parses");
    assert_eq!(repr.kind, packet.kind());
    assert_eq!(repr.sequence, packet.sequence());
    assert_eq!(repr.session, packet.session());
    assert_eq!(repr.messages, messages);
    assert_eq!(repr.buffer_len(), data.len());
    let mut out = vec![0u8; repr.buffer_len() + 3];
    let written = repr.emit(&mut out).expect("a parsed packet emits");
    assert_eq!(&out[..written], data);
    assert_eq!(
        repr.emit(&mut out[..data.len() - 1]),
        Err(WireError::BufferTooSmall {
            len: data.len() - 1,
            needed: data.len()
        })
    );

    let session = packet.session();
    match packet.kind() {
        PacketKind::Data => {
            rebuild_with_builder(&session, packet.sequence(), &messages, data);
            let packets = pack_all(&session, packet.sequence(), data.len(), messages)
                .expect("the messages of a packet pack into a datagram of its size");
            assert_eq!(packets, [data]);
        }
        PacketKind::Heartbeat => {
            let mut buf = [0u8; HEADER_LEN];
            let len = write_heartbeat(&mut buf, &session, packet.sequence()).expect("fits");
            assert_eq!(&buf[..len], data);
        }
        PacketKind::EndOfSession => {
            let mut buf = [0u8; HEADER_LEN];
            let len = write_end_of_session(&mut buf, &session, packet.sequence()).expect("fits");
            assert_eq!(&buf[..len], data);
        }
    }
}

/// A data packet built again from its messages, in a buffer of exactly its size, is the
/// same packet; the builder then has no room left for even an empty message.
fn rebuild_with_builder(session: &Session, sequence: u64, messages: &[&[u8]], data: &[u8]) {
    let mut buf = vec![0xA5u8; data.len()];
    let mut builder = PacketBuilder::start(&mut buf, session, sequence).expect("header fits");
    for (i, message) in messages.iter().enumerate() {
        assert!(builder.fits(message.len()), "message {i} fits");
        builder
            .push(&mut buf, message)
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
    }
    assert_eq!(builder.remaining(), 0);
    assert!(!builder.fits(0));
    assert_eq!(usize::from(builder.count()), messages.len());
    assert_eq!(
        builder.next_sequence(),
        sequence + messages.len() as u64,
        "no saturation on a checked packet"
    );
    let len = builder.finish(&mut buf);
    assert_eq!(&buf[..len], data);
}
