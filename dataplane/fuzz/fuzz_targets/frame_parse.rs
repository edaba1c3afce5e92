//! Feeds arbitrary bytes to the Ethernet/IP/UDP frame parser, as raw frames and as the
//! recipe of a valid frame that is then damaged.
//!
//! Whatever the bytes, parsing must not panic. Then, for every frame parsed:
//!
//! - a rejection is one counted reason with a name;
//! - an accepted frame's payload lies inside the input, and the bytes in front of it are
//!   what the parser says: the UDP length (payload + 8) and destination port, the
//!   EtherType of the family (behind a tag if there is a VLAN ID), the MACs;
//! - an accepted frame, rebuilt by `FrameTemplate` from its MACs, addresses, hop limit and
//!   payload, parses back to the same.
//!
//! The same input is also read as a recipe (front to back, missing bytes zero):
//!
//! ```text
//! flags u8 (bit 0 IPv6, bit 1 a VLAN tag, bit 2 padded to 60 bytes), dst MAC [6],
//! src MAC [6], src address [16], dst address [16] (IPv4: the first 4 bytes),
//! src port u16, dst port u16, hop limit u8, TOS u8, payload length u16 (mod 1501),
//! payload, then a damage: offset u16, xor u8
//! ```
//!
//! The frame built from it parses to exactly the recipe (or is refused for a multicast
//! source, and only then); the damaged copy goes through the checks above.

#![no_main]

use libfuzzer_sys::fuzz_target;
use multipoint_dataplane::wire::frame::{
    parse, Discard, FrameDiscards, FrameTemplate, UdpFrame, ETHERNET_HEADER_LEN, VLAN_TAG_LEN,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use multipoint_test_support::input::Input;

fuzz_target!(|data: &[u8]| {
    check_frame(data);
    check_recipe(data);
});

/// Parses `frame` and checks what must hold of the verdict.
fn check_frame(frame: &[u8]) -> Option<UdpFrame<'_>> {
    match parse(frame) {
        Ok(udp) => {
            check_accepted(frame, &udp);
            Some(udp)
        }
        Err(reason) => {
            let mut counts = FrameDiscards::new();
            counts.count(reason);
            assert_eq!(counts.total(), 1);
            assert_eq!(counts.get(reason), 1);
            assert!(Discard::ALL.contains(&reason));
            assert!(!reason.name().is_empty());
            None
        }
    }
}

fn be16(frame: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

fn check_accepted(frame: &[u8], udp: &UdpFrame<'_>) {
    let start = (udp.payload.as_ptr() as usize)
        .checked_sub(frame.as_ptr() as usize)
        .expect("payload starts inside the frame");
    let end = start + udp.payload.len();
    assert!(end <= frame.len(), "payload ends inside the frame");
    assert_eq!(&frame[start..end], udp.payload);

    // The UDP header just in front of the payload.
    assert!(start >= 8);
    assert_eq!(usize::from(be16(frame, start - 4)), udp.payload.len() + 8);
    assert_eq!(be16(frame, start - 6), udp.dst.port());
    assert_eq!(be16(frame, start - 8), udp.src.port());

    // The Ethernet header.
    assert_eq!(frame[..6], udp.dst_mac);
    assert_eq!(frame[6..12], udp.src_mac);
    let ethertype_at = match udp.vlan {
        Some(vid) => {
            assert!(matches!(be16(frame, 12), 0x8100 | 0x88a8));
            assert_eq!(be16(frame, 14) & 0x0fff, vid);
            ETHERNET_HEADER_LEN - 2 + VLAN_TAG_LEN
        }
        None => ETHERNET_HEADER_LEN - 2,
    };
    let ip = ethertype_at + 2;
    match (udp.src, udp.dst) {
        (SocketAddr::V4(src), SocketAddr::V4(dst)) => {
            assert_eq!(be16(frame, ethertype_at), 0x0800);
            assert_eq!(frame[ip] >> 4, 4);
            assert_eq!(frame[ip + 8], udp.hop_limit);
            assert_eq!(frame[ip + 12..ip + 16], src.ip().octets());
            assert_eq!(frame[ip + 16..ip + 20], dst.ip().octets());
            assert!(!src.ip().is_multicast() && !src.ip().is_broadcast());
        }
        (SocketAddr::V6(src), SocketAddr::V6(dst)) => {
            assert_eq!(be16(frame, ethertype_at), 0x86dd);
            assert_eq!(frame[ip] >> 4, 6);
            assert_eq!(frame[ip + 7], udp.hop_limit);
            assert_eq!(frame[ip + 8..ip + 24], src.ip().octets());
            assert_eq!(frame[ip + 24..ip + 40], dst.ip().octets());
            assert_eq!((src.scope_id(), src.flowinfo()), (0, 0));
            assert!(!src.ip().is_multicast());
        }
        _ => panic!("mixed families: {udp:?}"),
    }

    // Rebuilt from what was parsed, it parses back to the same.
    let template =
        FrameTemplate::with_dst_mac(udp.src_mac, udp.dst_mac, udp.src, udp.dst, udp.hop_limit, 0)
            .expect("a parsed frame's addresses make a template");
    let mut buf = vec![0u8; template.header_len() + udp.payload.len()];
    let len = template
        .write_with_payload(&mut buf, udp.payload)
        .expect("a parsed payload fits a frame");
    assert_eq!(len, buf.len());
    let again = parse(&buf).expect("a rebuilt frame parses");
    assert_eq!(
        UdpFrame {
            vlan: udp.vlan,
            ..again
        },
        *udp
    );
}

fn check_recipe(data: &[u8]) {
    let mut input = Input { rest: data };
    let flags = input.u8();
    let dst_mac: [u8; 6] = input.array();
    let src_mac: [u8; 6] = input.array();
    let a: [u8; 16] = input.array();
    let b: [u8; 16] = input.array();
    let (sport, dport) = (input.u16(), input.u16());
    let (hop_limit, tos) = (input.u8(), input.u8());
    let payload_len = usize::from(input.u16()) % 1501;
    let mut payload = input.bytes(payload_len).to_vec();
    payload.resize(payload_len, 0);
    let (damage_at, damage) = (input.u16(), input.u8());

    let (src, dst): (IpAddr, IpAddr) = if flags & 1 == 1 {
        (Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into())
    } else {
        (
            Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(),
            Ipv4Addr::new(b[0], b[1], b[2], b[3]).into(),
        )
    };
    let (src, dst) = (SocketAddr::new(src, sport), SocketAddr::new(dst, dport));
    let template = FrameTemplate::with_dst_mac(src_mac, dst_mac, src, dst, hop_limit, tos)
        .expect("same families");
    let mut frame = vec![0u8; template.header_len() + payload.len()];
    template
        .write_with_payload(&mut frame, &payload)
        .expect("payload fits");
    let vlan = (flags & 2 != 0).then(|| {
        let vid = u16::from_be_bytes([a[14], a[15]]) & 0x0fff;
        let tag = [0x81, 0x00, (vid >> 8) as u8, vid as u8];
        frame.splice(12..12, tag);
        vid
    });
    if flags & 4 != 0 && frame.len() < 60 {
        frame.resize(60, 0);
    }

    let martian = match src.ip() {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    match parse(&frame) {
        Ok(udp) => {
            assert!(!martian, "multicast source {src} accepted");
            assert_eq!(
                udp,
                UdpFrame {
                    src,
                    dst,
                    payload: &payload,
                    src_mac,
                    dst_mac,
                    hop_limit,
                    vlan
                }
            );
            check_accepted(&frame, &udp);
        }
        Err(reason) => assert!(
            martian && reason == Discard::SourceAddress,
            "built frame refused: {reason:?} ({src} -> {dst})"
        ),
    }

    if !frame.is_empty() {
        let at = usize::from(damage_at) % frame.len();
        frame[at] ^= damage;
        check_frame(&frame);
    }
}
