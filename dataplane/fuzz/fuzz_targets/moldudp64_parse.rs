//! Feeds arbitrary datagrams to the MoldUDP64 parsers.
//!
//! Whatever the bytes, parsing must not panic; a datagram accepted as a packet must
//! yield exactly its declared messages, filling it exactly, and re-emit to the same
//! bytes; and the same holds for re-requests.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multipoint_dataplane::wire::{
    Packet, PacketRepr, ReRequest, ReRequestRepr, BLOCK_HEADER_LEN, HEADER_LEN, REREQUEST_LEN,
};

fuzz_target!(|data: &[u8]| {
    check_packet(data);
    check_rerequest(data);
});

fn check_packet(data: &[u8]) {
    // Unchecked views must not panic either.
    let unchecked = Packet::new_unchecked(data);
    let _ = (
        unchecked.session(),
        unchecked.sequence(),
        unchecked.next_sequence(),
    );
    assert!(unchecked.messages().count() <= usize::from(unchecked.message_count()));

    let Ok(packet) = Packet::new_checked(data) else {
        return;
    };
    let mut seen = 0usize;
    let mut len = HEADER_LEN;
    for message in packet.messages() {
        seen += 1;
        len += BLOCK_HEADER_LEN + message.len();
    }
    assert_eq!(seen, usize::from(packet.message_count()));
    assert_eq!(len, data.len());

    let repr = PacketRepr::parse(&packet).expect("a checked packet parses");
    assert_eq!(repr.buffer_len(), data.len());
    let mut out = vec![0u8; repr.buffer_len()];
    let written = repr.emit(&mut out).expect("a parsed packet emits");
    assert_eq!(&out[..written], data);
}

fn check_rerequest(data: &[u8]) {
    let Ok(request) = ReRequest::new_checked(data) else {
        return;
    };
    assert_eq!(data.len(), REREQUEST_LEN);
    let repr = ReRequestRepr::parse(&request).expect("a checked re-request parses");
    let mut out = [0u8; REREQUEST_LEN];
    let written = repr.emit(&mut out).expect("a parsed re-request emits");
    assert_eq!(&out[..written], data);
}
