//! Ethernet II / IPv4 / IPv6 / UDP frames (sans-IO): the check every raw frame the
//! AF_XDP backend receives goes through before its UDP payload reaches the receive
//! state, and the header templates of the frames it sends.
//!
//! [`parse`] takes one received frame, untrusted, straight off the wire, and gives
//! either the UDP datagram it carries ([`UdpFrame`]: addresses, MACs, the payload
//! borrowed from the frame) or the one reason it was dropped ([`Discard`]), which a
//! [`FrameDiscards`] counts. [`FrameTemplate`] holds the headers of one flow
//! (source MAC and address, destination group) with the constant part of both
//! checksums summed once; [`FrameTemplate::write`] puts them in front of a payload
//! already in the frame, so the per-frame work is the payload's sum and a few adds.
//!
//! # Contract
//!
//! - **Nothing here panics**, whatever the bytes: every field is read through a
//!   length-checked fixed-size array, every length from the wire is compared before it
//!   is used, and every way a frame can be wrong maps to one [`Discard`].
//! - **What [`parse`] accepts**, exactly:
//!   - Ethernet II, untagged or with one 802.1Q (0x8100) or 802.1ad (0x88a8) tag; a
//!     second tag is [`Discard::VlanStack`]. An EtherType other than IPv4 or IPv6
//!     (ARP, a length of an 802.3 frame, ...) is [`Discard::NotIp`]. The MACs are
//!     reported, not checked.
//!   - IPv4: version 4, IHL at least 5 and the header inside the frame, total length
//!     from the header to the end of the frame, a correct header checksum, not a
//!     fragment (MF set or a fragment offset: [`Discard::Fragment`]), protocol UDP.
//!     Options are covered by the checksum and skipped.
//!   - IPv6: version 6, payload length inside the frame, and UDP as the next header,
//!     directly or after at most [`MAX_EXTENSION_HEADERS`] hop-by-hop (first only),
//!     routing (segments left 0 only: otherwise this host is not the destination, and
//!     the checksum would be over another address) and destination-options headers,
//!     each inside the payload. A fragment header is [`Discard::Fragment`]; any other
//!     next header (TCP, ICMPv6, ESP, AH, no next header, ...) is [`Discard::NotUdp`].
//!     Jumbograms are not supported (a payload length of 0 carries no UDP header).
//!   - The source address is not multicast (nor 255.255.255.255): the kernel drops
//!     such martians, and nothing should answer one.
//!   - UDP: the 8-byte header inside what the IP layer says is left, a UDP length
//!     from 8 to that, and a correct checksum over the pseudo-header; a zero checksum
//!     means "none" over IPv4 and is accepted, and is invalid over IPv6
//!     ([`Discard::UdpChecksum`]).
//!   - Bytes after the IP packet (Ethernet padding of a 60-byte minimum frame, a
//!     trailer) and IP payload after the UDP length are ignored, as the kernel does.
//! - **Parsing and building do not allocate.** [`UdpFrame::payload`] borrows from the
//!   frame; [`FrameTemplate::write`] writes into the caller's buffer.
//! - **No I/O, no clock, no shared state**: every type is plain data, `Send` and
//!   `Sync`. [`FrameTemplate::write`] takes `&self` (the IPv4 identification is a
//!   constant 0, see [`FrameTemplate`]), so one template can serve several threads.
//! - **What the builder leaves out**: VLAN tags, IPv4 options, IPv6 extension headers
//!   and flow labels, and padding to the 60-byte Ethernet minimum (NICs pad short
//!   frames on the wire; veth needs none).
//!
//! ```
//! use std::net::SocketAddr;
//! use multipoint_dataplane::wire::frame::{self, FrameTemplate};
//!
//! let src: SocketAddr = "192.0.2.10:40000".parse()?;
//! let group: SocketAddr = "239.255.3.232:30001".parse()?;
//! let template = FrameTemplate::new([0x02, 0, 0, 0, 0, 1], src, group, 1, 0)?;
//! assert_eq!(template.dst_mac(), [0x01, 0x00, 0x5e, 0x7f, 0x03, 0xe8]);
//!
//! let mut buf = [0u8; 2048];
//! let hl = template.header_len();
//! buf[hl..hl + 5].copy_from_slice(b"hello");
//! let len = template.write(&mut buf, 5)?;
//!
//! let udp = frame::parse(&buf[..len])?;
//! assert_eq!((udp.src, udp.dst, udp.payload), (src, group, &b"hello"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Panic-free by construction, not by review: no slice indexing outside the tests (a
// constant index into a fixed-size array is checked by the compiler and allowed).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Length of an untagged Ethernet II header: destination MAC, source MAC, EtherType.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of one 802.1Q / 802.1ad tag.
pub const VLAN_TAG_LEN: usize = 4;
/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Most IPv6 extension headers [`parse`] walks before UDP; more is
/// [`Discard::ExtensionHeaders`]. A real sender puts none or one in front of UDP.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Largest UDP payload an IPv4 frame can carry: the 16-bit total length less the IPv4
/// and UDP headers.
pub const MAX_PAYLOAD_V4: usize = u16::MAX as usize - IPV4_HEADER_LEN - UDP_HEADER_LEN;
/// Largest UDP payload an IPv6 frame can carry without a jumbogram: the 16-bit UDP
/// length less the UDP header.
pub const MAX_PAYLOAD_V6: usize = u16::MAX as usize - UDP_HEADER_LEN;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;

const PROTO_HOP_BY_HOP: u8 = 0;
const PROTO_UDP: u8 = 17;
const PROTO_ROUTING: u8 = 43;
const PROTO_FRAGMENT: u8 = 44;
const PROTO_DEST_OPTIONS: u8 = 60;

/// IPv4 flags and fragment offset: the MF bit and the 13-bit offset (DF and the
/// reserved bit do not make a fragment).
const IPV4_MF_OR_OFFSET: u16 = 0x3fff;
/// IPv4 flags and fragment offset of the frames we send: DF, offset 0.
const IPV4_DF: u16 = 0x4000;

/// Why [`parse`] dropped a frame: one variant per reason, in the order the layers are
/// checked (a frame wrong in several ways gets the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Discard {
    /// The frame is too short to hold the Ethernet header (with its tag) and the
    /// minimal IP and UDP headers of the EtherType it names.
    Short = 0,
    /// The EtherType is neither IPv4 nor IPv6 (ARP, an 802.3 length, ...).
    NotIp,
    /// More than one VLAN tag.
    VlanStack,
    /// The IP version does not match the EtherType.
    IpVersion,
    /// IPv4 IHL below 5, or the header it gives runs past the frame.
    IpHeaderLength,
    /// IPv4 total length shorter than the header or past the frame; IPv6 payload
    /// length past the frame.
    IpTotalLength,
    /// Wrong IPv4 header checksum.
    IpChecksum,
    /// An IPv4 fragment (MF set or an offset) or an IPv6 fragment header.
    Fragment,
    /// The IP packet does not carry UDP (TCP, ICMP, ESP, ...).
    NotUdp,
    /// IPv6 extension headers that run past the payload, are too many, have a
    /// hop-by-hop header that is not first, or a routing header with segments left.
    ExtensionHeaders,
    /// A multicast (or IPv4 limited broadcast) source address.
    SourceAddress,
    /// The UDP header does not fit what the IP layer says is left, or its length is
    /// below 8 or past the IP payload.
    UdpLength,
    /// Wrong UDP checksum, or a zero (absent) one over IPv6.
    UdpChecksum,
}

impl Discard {
    /// Every reason, in declaration order (the order of [`FrameDiscards::iter`]).
    pub const ALL: [Discard; 13] = [
        Discard::Short,
        Discard::NotIp,
        Discard::VlanStack,
        Discard::IpVersion,
        Discard::IpHeaderLength,
        Discard::IpTotalLength,
        Discard::IpChecksum,
        Discard::Fragment,
        Discard::NotUdp,
        Discard::ExtensionHeaders,
        Discard::SourceAddress,
        Discard::UdpLength,
        Discard::UdpChecksum,
    ];

    /// The reason's name in snake_case, as a counter's key in JSON.
    #[inline]
    pub const fn name(self) -> &'static str {
        match self {
            Discard::Short => "short",
            Discard::NotIp => "not_ip",
            Discard::VlanStack => "vlan_stack",
            Discard::IpVersion => "ip_version",
            Discard::IpHeaderLength => "ip_header_length",
            Discard::IpTotalLength => "ip_total_length",
            Discard::IpChecksum => "ip_checksum",
            Discard::Fragment => "fragment",
            Discard::NotUdp => "not_udp",
            Discard::ExtensionHeaders => "extension_headers",
            Discard::SourceAddress => "source_address",
            Discard::UdpLength => "udp_length",
            Discard::UdpChecksum => "udp_checksum",
        }
    }

    const fn description(self) -> &'static str {
        match self {
            Discard::Short => "frame too short for Ethernet, IP and UDP headers",
            Discard::NotIp => "EtherType is neither IPv4 nor IPv6",
            Discard::VlanStack => "more than one VLAN tag",
            Discard::IpVersion => "IP version does not match the EtherType",
            Discard::IpHeaderLength => "IPv4 header length below 20 bytes or past the frame",
            Discard::IpTotalLength => "IP length shorter than its header or past the frame",
            Discard::IpChecksum => "wrong IPv4 header checksum",
            Discard::Fragment => "IP fragment",
            Discard::NotUdp => "IP packet does not carry UDP",
            Discard::ExtensionHeaders => {
                "IPv6 extension headers malformed, too many, or with a route to follow"
            }
            Discard::SourceAddress => "multicast or broadcast source address",
            Discard::UdpLength => "UDP length below 8 or past the IP payload",
            Discard::UdpChecksum => "wrong or missing UDP checksum",
        }
    }
}

impl fmt::Display for Discard {
    /// A short sentence fragment for a person: "wrong IPv4 header checksum".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for Discard {}

/// Frames dropped by [`parse`], counted per [`Discard`] reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameDiscards {
    counts: [u64; Discard::ALL.len()],
}

impl FrameDiscards {
    /// No frames counted.
    #[inline]
    pub const fn new() -> FrameDiscards {
        FrameDiscards {
            counts: [0; Discard::ALL.len()],
        }
    }

    /// Counts one frame dropped for `reason`.
    #[inline]
    pub fn count(&mut self, reason: Discard) {
        if let Some(n) = self.counts.get_mut(reason as usize) {
            *n = n.wrapping_add(1);
        }
    }

    /// Frames dropped for `reason`.
    #[inline]
    pub fn get(&self, reason: Discard) -> u64 {
        self.counts.get(reason as usize).copied().unwrap_or(0)
    }

    /// Frames dropped for any reason.
    #[inline]
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |sum, n| sum.wrapping_add(*n))
    }

    /// Adds another set of counts to these (another shard's, or an interval's).
    #[inline]
    pub fn merge(&mut self, other: &FrameDiscards) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine = mine.wrapping_add(theirs);
        }
    }

    /// `(name, count)` for every reason, zeros included, in [`Discard::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Discard::ALL
            .iter()
            .zip(self.counts)
            .map(|(reason, n)| (reason.name(), n))
    }
}

/// A UDP datagram [`parse`] found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame<'a> {
    /// Source address and port: [`SocketAddr::V4`] from an IPv4 frame,
    /// [`SocketAddr::V6`] (flow info and scope 0) from an IPv6 one.
    pub src: SocketAddr,
    /// Destination address and port, of the same family as `src`.
    pub dst: SocketAddr,
    /// The UDP payload (UDP length less 8 bytes), borrowed from the frame.
    pub payload: &'a [u8],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// IPv4 TTL or IPv6 hop limit as received.
    pub hop_limit: u8,
    /// VLAN ID (the low 12 bits of the tag; 0 for a priority tag) if the frame had a
    /// tag.
    pub vlan: Option<u16>,
}

/// Parses one received Ethernet frame down to its UDP payload; see the
/// [module documentation](self) for exactly what is accepted. The frame starts at
/// the destination MAC and has no FCS (what AF_XDP and packet sockets give; an FCS
/// left on by `ethtool -K rx-fcs on` would be 4 bytes of trailer, ignored).
pub fn parse(frame: &[u8]) -> Result<UdpFrame<'_>, Discard> {
    let Some((eth, rest)) = frame.split_first_chunk::<ETHERNET_HEADER_LEN>() else {
        return Err(Discard::Short);
    };
    let [d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5, t0, t1] = *eth;
    let mut ethertype = u16::from_be_bytes([t0, t1]);
    let mut ip = rest;
    let mut vlan = None;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        let Some((&[c0, c1, t0, t1], inner)) = ip.split_first_chunk::<VLAN_TAG_LEN>() else {
            return Err(Discard::Short);
        };
        ethertype = u16::from_be_bytes([t0, t1]);
        if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
            return Err(Discard::VlanStack);
        }
        vlan = Some(u16::from_be_bytes([c0, c1]) & 0x0fff);
        ip = inner;
    }
    let datagram = match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(ip)?,
        ETHERTYPE_IPV6 => parse_ipv6(ip)?,
        _ => return Err(Discard::NotIp),
    };
    Ok(UdpFrame {
        src: datagram.src,
        dst: datagram.dst,
        payload: datagram.payload,
        src_mac: [s0, s1, s2, s3, s4, s5],
        dst_mac: [d0, d1, d2, d3, d4, d5],
        hop_limit: datagram.hop_limit,
        vlan,
    })
}

/// What the IP and UDP layers give.
struct Datagram<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    payload: &'a [u8],
    hop_limit: u8,
}

/// An IPv4 packet from the first byte of its header to the end of the frame.
fn parse_ipv4(ip: &[u8]) -> Result<Datagram<'_>, Discard> {
    if ip.len() < IPV4_HEADER_LEN + UDP_HEADER_LEN {
        return Err(Discard::Short);
    }
    let Some((fixed, _)) = ip.split_first_chunk::<IPV4_HEADER_LEN>() else {
        return Err(Discard::Short);
    };
    // Version and IHL, TOS, total length, identification, flags and fragment offset,
    // TTL, protocol, checksum, source, destination.
    let [ver_ihl, _, l0, l1, _, _, f0, f1, ttl, proto, _, _, addresses @ ..] = *fixed;
    let [a0, a1, a2, a3, b0, b1, b2, b3] = addresses;
    if ver_ihl >> 4 != 4 {
        return Err(Discard::IpVersion);
    }
    let header_len = usize::from(ver_ihl & 0x0f) * 4;
    if header_len < IPV4_HEADER_LEN {
        return Err(Discard::IpHeaderLength);
    }
    let Some(header) = ip.get(..header_len) else {
        return Err(Discard::IpHeaderLength);
    };
    let total_len = usize::from(u16::from_be_bytes([l0, l1]));
    if total_len < header_len {
        return Err(Discard::IpTotalLength);
    }
    let Some(packet) = ip.get(..total_len) else {
        return Err(Discard::IpTotalLength);
    };
    // Almost every header has no options: sum those 20 bytes without a loop.
    let header_sum = if header_len == IPV4_HEADER_LEN {
        sum_fixed(fixed)
    } else {
        sum(header)
    };
    if fold(header_sum) != 0xffff {
        return Err(Discard::IpChecksum);
    }
    if u16::from_be_bytes([f0, f1]) & IPV4_MF_OR_OFFSET != 0 {
        return Err(Discard::Fragment);
    }
    if proto != PROTO_UDP {
        return Err(Discard::NotUdp);
    }
    let src = Ipv4Addr::new(a0, a1, a2, a3);
    let dst = Ipv4Addr::new(b0, b1, b2, b3);
    if src.is_multicast() || src.is_broadcast() {
        return Err(Discard::SourceAddress);
    }
    let udp = packet.get(header_len..).unwrap_or(&[]);
    // Pseudo-header: source, destination, zero and protocol, UDP length (added by
    // `parse_udp`, which knows it).
    let pseudo = sum_fixed(&addresses) + u64::from(PROTO_UDP);
    let (sport, dport, payload) = parse_udp(udp, pseudo, false)?;
    Ok(Datagram {
        src: SocketAddr::V4(SocketAddrV4::new(src, sport)),
        dst: SocketAddr::V4(SocketAddrV4::new(dst, dport)),
        payload,
        hop_limit: ttl,
    })
}

/// An IPv6 packet from the first byte of its header to the end of the frame.
fn parse_ipv6(ip: &[u8]) -> Result<Datagram<'_>, Discard> {
    if ip.len() < IPV6_HEADER_LEN + UDP_HEADER_LEN {
        return Err(Discard::Short);
    }
    let Some((fixed, rest)) = ip.split_first_chunk::<IPV6_HEADER_LEN>() else {
        return Err(Discard::Short);
    };
    // Version, traffic class and flow label, payload length, next header, hop limit,
    // source, destination.
    let [v0, _, _, _, l0, l1, mut next, hop_limit, addresses @ ..] = *fixed;
    if v0 >> 4 != 6 {
        return Err(Discard::IpVersion);
    }
    let Some(mut payload) = rest.get(..usize::from(u16::from_be_bytes([l0, l1]))) else {
        return Err(Discard::IpTotalLength);
    };
    let mut walked = 0;
    while next != PROTO_UDP {
        match next {
            PROTO_FRAGMENT => return Err(Discard::Fragment),
            PROTO_HOP_BY_HOP | PROTO_ROUTING | PROTO_DEST_OPTIONS => {
                if walked == MAX_EXTENSION_HEADERS || (next == PROTO_HOP_BY_HOP && walked != 0) {
                    return Err(Discard::ExtensionHeaders);
                }
                let Some(&[following, units, _, segments_left]) = payload.first_chunk::<4>() else {
                    return Err(Discard::ExtensionHeaders);
                };
                if next == PROTO_ROUTING && segments_left != 0 {
                    return Err(Discard::ExtensionHeaders);
                }
                // Length in 8-byte units, not counting the first 8: at least 8 bytes,
                // so the 4 read above are inside it once this fits.
                let len = (usize::from(units) + 1) * 8;
                let Some(after) = payload.get(len..) else {
                    return Err(Discard::ExtensionHeaders);
                };
                payload = after;
                next = following;
                walked += 1;
            }
            _ => return Err(Discard::NotUdp),
        }
    }
    // Both always there: `addresses` is 32 bytes.
    let (Some(src), Some(dst)) = (
        addresses.first_chunk::<16>().copied().map(Ipv6Addr::from),
        addresses.last_chunk::<16>().copied().map(Ipv6Addr::from),
    ) else {
        return Err(Discard::Short);
    };
    if src.is_multicast() {
        return Err(Discard::SourceAddress);
    }
    // Pseudo-header: source, destination, 32-bit UDP length (added by `parse_udp`),
    // zeros and next header.
    let pseudo = sum_fixed(&addresses) + u64::from(PROTO_UDP);
    let (sport, dport, payload) = parse_udp(payload, pseudo, true)?;
    Ok(Datagram {
        src: SocketAddr::V6(SocketAddrV6::new(src, sport, 0, 0)),
        dst: SocketAddr::V6(SocketAddrV6::new(dst, dport, 0, 0)),
        payload,
        hop_limit,
    })
}

/// A UDP datagram in exactly what the IP layer says is left; `pseudo` is the sum of the
/// pseudo-header without the UDP length. Gives the ports and the payload.
#[inline]
fn parse_udp(udp: &[u8], pseudo: u64, ipv6: bool) -> Result<(u16, u16, &[u8]), Discard> {
    let Some(&[p0, p1, q0, q1, l0, l1, c0, c1]) = udp.first_chunk::<UDP_HEADER_LEN>() else {
        return Err(Discard::UdpLength);
    };
    let udp_len = u16::from_be_bytes([l0, l1]);
    if usize::from(udp_len) < UDP_HEADER_LEN {
        return Err(Discard::UdpLength);
    }
    let Some(segment) = udp.get(..usize::from(udp_len)) else {
        return Err(Discard::UdpLength);
    };
    let checksum = u16::from_be_bytes([c0, c1]);
    if checksum == 0 {
        if ipv6 {
            return Err(Discard::UdpChecksum);
        }
    } else if fold(pseudo + u64::from(udp_len) + sum(segment)) != 0xffff {
        return Err(Discard::UdpChecksum);
    }
    let payload = segment.get(UDP_HEADER_LEN..).unwrap_or(&[]);
    Ok((
        u16::from_be_bytes([p0, p1]),
        u16::from_be_bytes([q0, q1]),
        payload,
    ))
}

/// The ones'-complement sum (RFC 1071) of `data` as big-endian 16-bit words, a last odd
/// byte padded with a zero, folded to 16 bits (in a `u64`, so that sums add without
/// overflow; [`fold`] them again after adding).
///
/// Eight bytes per step: native-endian `u64` words added with their carries counted
/// (one add and one carry per 8 bytes, about 15 GB/s here against 5 for big-endian
/// 32-bit halves), then folded and byte-swapped. Both are exact in ones'-complement
/// arithmetic, where 2^16 is 1: a carry out of 64 bits is worth 1, the halves and
/// quarters of a word add up to its 16-bit words, and byte order only swaps the bytes
/// of the result (RFC 1071, 2 (B)). Every chunk starts at an even offset, so a byte
/// keeps its place in its 16-bit word.
#[inline]
fn sum(data: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut carries = 0u64;
    let mut words = data.chunks_exact(8);
    for word in &mut words {
        let (next, carry) =
            acc.overflowing_add(u64::from_ne_bytes(word.try_into().unwrap_or([0; 8])));
        acc = next;
        carries += u64::from(carry);
    }
    let mut tail = [0u8; 8];
    for (dst, src) in tail.iter_mut().zip(words.remainder()) {
        *dst = *src;
    }
    let (acc, carry) = acc.overflowing_add(u64::from_ne_bytes(tail));
    let native = fold((acc & 0xffff_ffff) + (acc >> 32) + carries + u64::from(carry));
    u64::from(if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    })
}

/// [`sum`] of a few bytes known at compile time (a multiple of 4: addresses, a
/// header), as big-endian 32-bit words, unrolled; not folded.
#[inline(always)]
fn sum_fixed<const N: usize>(bytes: &[u8; N]) -> u64 {
    bytes
        .chunks_exact(4)
        .map(|word| u64::from(u32::from_be_bytes(word.try_into().unwrap_or([0; 4]))))
        .sum()
}

/// Folds a sum to 16 bits with end-around carries.
#[inline]
fn fold(acc: u64) -> u16 {
    // Below 2^33, then 2^18, then 0x10003, then 0xffff: four steps, no branch, and a
    // sum that was not zero does not become zero.
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The Ethernet multicast MAC of a multicast group: 01:00:5e and the low 23 bits of an
/// IPv4 group (RFC 1112), 33:33 and the low 32 bits of an IPv6 group (RFC 2464).
/// `None` for an address that is not multicast.
#[inline]
pub fn multicast_mac(ip: IpAddr) -> Option<[u8; 6]> {
    match ip {
        IpAddr::V4(v4) if v4.is_multicast() => {
            let [_, b, c, d] = v4.octets();
            Some([0x01, 0x00, 0x5e, b & 0x7f, c, d])
        }
        IpAddr::V6(v6) if v6.is_multicast() => {
            let [.., a, b, c, d] = v6.octets();
            Some([0x33, 0x33, a, b, c, d])
        }
        _ => None,
    }
}

/// Why a [`FrameTemplate`] could not be made, or a frame not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// Source and destination are not of the same address family.
    AddressFamily {
        /// The source given.
        src: SocketAddr,
        /// The destination given.
        dst: SocketAddr,
    },
    /// The destination is not a multicast group, so it has no MAC of its own:
    /// give the next hop's MAC with [`FrameTemplate::with_dst_mac`].
    NotMulticast {
        /// The destination given.
        dst: IpAddr,
    },
    /// The payload is longer than a 16-bit IP or UDP length can describe.
    PayloadTooLarge {
        /// Length of the payload.
        len: usize,
        /// Largest payload of this address family.
        max: usize,
    },
    /// The frame buffer cannot hold the headers and the payload.
    BufferTooSmall {
        /// Length of the buffer.
        len: usize,
        /// Headers and payload.
        needed: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::AddressFamily { src, dst } => write!(
                f,
                "source {src} and destination {dst} are not of the same address family"
            ),
            BuildError::NotMulticast { dst } => write!(
                f,
                "destination {dst} is not a multicast group, so it has no multicast MAC: \
                 give the next hop's MAC (FrameTemplate::with_dst_mac)"
            ),
            BuildError::PayloadTooLarge { len, max } => write!(
                f,
                "a {len}-byte payload does not fit a 16-bit IP/UDP length (at most {max} bytes)"
            ),
            BuildError::BufferTooSmall { len, needed } => write!(
                f,
                "frame buffer is {len} bytes but headers and payload need {needed}"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

const V4_HEADERS: usize = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN;
const V6_HEADERS: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;

/// The headers of one flow, with every field but the lengths and checksums filled
/// in, and the constant part of both checksums summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Headers {
    V4 {
        bytes: [u8; V4_HEADERS],
        /// Sum of the IPv4 header without its total length and checksum.
        ip_sum: u64,
    },
    V6 {
        bytes: [u8; V6_HEADERS],
    },
}

/// The Ethernet, IP and UDP headers of the frames of one flow (one source, one
/// destination), to put in front of each payload with [`FrameTemplate::write`].
///
/// IPv4 frames go with DF set and identification 0. RFC 6864 lets an atomic
/// datagram (DF set, not fragmented) carry any identification, and Linux itself sends
/// 0 on unconnected UDP sockets with DF; a constant keeps the whole IPv4 header but
/// its length constant, so its checksum is one add per frame, and `write` needs no
/// `&mut self` or shared counter. With DF, a frame larger than the path MTU is dropped
/// rather than fragmented: size datagrams to the interface MTU (the publisher does).
///
/// The IPv6 flow label is 0. The UDP checksum is computed for IPv4 too (RFC 768 makes
/// it optional; the receiver verifies it when present, and it is what catches
/// corruption of the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTemplate {
    headers: Headers,
    /// Sum of the pseudo-header without the UDP length, and of the ports.
    udp_sum: u64,
    src: SocketAddr,
    dst: SocketAddr,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
}

impl FrameTemplate {
    /// Headers from `src` (the interface's MAC and address) to the multicast group
    /// `dst`, whose MAC is derived ([`multicast_mac`]). `hop_limit` is the IPv4 TTL or
    /// IPv6 hop limit; `tos` the IPv4 type-of-service byte or IPv6 traffic class, DSCP
    /// in its top six bits and ECN in the low two. Fails if `dst` is not multicast or
    /// the families differ.
    pub fn new(
        src_mac: [u8; 6],
        src: SocketAddr,
        dst: SocketAddr,
        hop_limit: u8,
        tos: u8,
    ) -> Result<FrameTemplate, BuildError> {
        let dst_mac = multicast_mac(dst.ip()).ok_or(BuildError::NotMulticast { dst: dst.ip() })?;
        FrameTemplate::with_dst_mac(src_mac, dst_mac, src, dst, hop_limit, tos)
    }

    /// Like [`FrameTemplate::new`] with the destination MAC given (a unicast
    /// destination's next hop, or anything else): `dst` may be any address of the
    /// family of `src`.
    pub fn with_dst_mac(
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        src: SocketAddr,
        dst: SocketAddr,
        hop_limit: u8,
        tos: u8,
    ) -> Result<FrameTemplate, BuildError> {
        let [p0, p1] = src.port().to_be_bytes();
        let [q0, q1] = dst.port().to_be_bytes();
        let ports = sum(&[p0, p1, q0, q1]);
        let (headers, udp_sum) = match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                let [a0, a1, a2, a3] = s.ip().octets();
                let [b0, b1, b2, b3] = d.ip().octets();
                let [s0, s1, s2, s3, s4, s5] = src_mac;
                let [d0, d1, d2, d3, d4, d5] = dst_mac;
                let [t0, t1] = ETHERTYPE_IPV4.to_be_bytes();
                let [f0, f1] = IPV4_DF.to_be_bytes();
                #[rustfmt::skip]
                let bytes = [
                    d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5, t0, t1,
                    // version 4, IHL 5; TOS; total length; identification 0; DF;
                    // TTL; UDP; checksum; source; destination.
                    0x45, tos, 0, 0, 0, 0, f0, f1,
                    hop_limit, PROTO_UDP, 0, 0,
                    a0, a1, a2, a3, b0, b1, b2, b3,
                    // ports; UDP length; checksum.
                    p0, p1, q0, q1, 0, 0, 0, 0,
                ];
                let ip_sum = bytes
                    .get(ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IPV4_HEADER_LEN)
                    .map_or(0, sum);
                let pseudo = sum(&[a0, a1, a2, a3, b0, b1, b2, b3]) + u64::from(PROTO_UDP);
                (Headers::V4 { bytes, ip_sum }, pseudo + ports)
            }
            (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                let mut bytes = [0u8; V6_HEADERS];
                put(&mut bytes, 0, dst_mac);
                put(&mut bytes, 6, src_mac);
                put(&mut bytes, 12, ETHERTYPE_IPV6.to_be_bytes());
                // Version 6, traffic class, flow label 0; payload length; next header
                // UDP; hop limit; source; destination.
                put(&mut bytes, 14, [0x60 | (tos >> 4), tos << 4, 0, 0, 0, 0]);
                put(&mut bytes, 20, [PROTO_UDP, hop_limit]);
                put(&mut bytes, 22, s.ip().octets());
                put(&mut bytes, 38, d.ip().octets());
                // Ports; UDP length and checksum stay 0.
                put(&mut bytes, 54, [p0, p1, q0, q1]);
                let pseudo = sum(&s.ip().octets()) + sum(&d.ip().octets()) + u64::from(PROTO_UDP);
                (Headers::V6 { bytes }, pseudo + ports)
            }
            _ => return Err(BuildError::AddressFamily { src, dst }),
        };
        Ok(FrameTemplate {
            headers,
            udp_sum,
            src,
            dst,
            src_mac,
            dst_mac,
        })
    }

    /// Length of the headers: 42 bytes for IPv4 (14 + 20 + 8), 62 for IPv6
    /// (14 + 40 + 8). The payload goes at `frame[header_len()..]`.
    #[inline]
    pub const fn header_len(&self) -> usize {
        match self.headers {
            Headers::V4 { .. } => V4_HEADERS,
            Headers::V6 { .. } => V6_HEADERS,
        }
    }

    /// Largest payload a frame of this family can carry ([`MAX_PAYLOAD_V4`] or
    /// [`MAX_PAYLOAD_V6`]); the link's MTU is usually the tighter limit.
    #[inline]
    pub const fn max_payload(&self) -> usize {
        match self.headers {
            Headers::V4 { .. } => MAX_PAYLOAD_V4,
            Headers::V6 { .. } => MAX_PAYLOAD_V6,
        }
    }

    /// The source address.
    #[inline]
    pub const fn src(&self) -> SocketAddr {
        self.src
    }

    /// The destination address.
    #[inline]
    pub const fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// The source MAC.
    #[inline]
    pub const fn src_mac(&self) -> [u8; 6] {
        self.src_mac
    }

    /// The destination MAC.
    #[inline]
    pub const fn dst_mac(&self) -> [u8; 6] {
        self.dst_mac
    }

    /// Writes the headers at the start of `frame`, in front of the `payload_len`-byte
    /// payload the caller has already put at `frame[header_len()..]`, with the IP and
    /// UDP lengths and both checksums (the UDP one over that payload). Returns the
    /// frame's length, `header_len() + payload_len`; bytes of `frame` after it are not
    /// touched. Fails, writing nothing, if the payload is longer than
    /// [`max_payload`](Self::max_payload) or `frame` shorter than the frame.
    pub fn write(&self, frame: &mut [u8], payload_len: usize) -> Result<usize, BuildError> {
        if payload_len > self.max_payload() {
            return Err(BuildError::PayloadTooLarge {
                len: payload_len,
                max: self.max_payload(),
            });
        }
        let needed = self.header_len() + payload_len;
        let too_small = BuildError::BufferTooSmall {
            len: frame.len(),
            needed,
        };
        let Some(frame) = frame.get_mut(..needed) else {
            return Err(too_small);
        };
        // Fits: payload_len <= max_payload keeps every length within 16 bits.
        let udp_len = (UDP_HEADER_LEN + payload_len) as u16;
        let [u0, u1] = udp_len.to_be_bytes();
        let udp_sum = self.udp_sum + 2 * u64::from(udp_len);
        // Headers as fixed-size arrays: filled by constant offsets, copied whole.
        match self.headers {
            Headers::V4 { mut bytes, ip_sum } => {
                let Some((headers, payload)) = frame.split_first_chunk_mut::<V4_HEADERS>() else {
                    return Err(too_small);
                };
                let total_len = (IPV4_HEADER_LEN + usize::from(udp_len)) as u16;
                let [l0, l1] = total_len.to_be_bytes();
                let [h0, h1] = (!fold(ip_sum + u64::from(total_len))).to_be_bytes();
                [bytes[16], bytes[17]] = [l0, l1];
                [bytes[24], bytes[25]] = [h0, h1];
                [bytes[38], bytes[39]] = [u0, u1];
                [bytes[40], bytes[41]] = udp_checksum(udp_sum + sum(payload));
                *headers = bytes;
            }
            Headers::V6 { mut bytes } => {
                let Some((headers, payload)) = frame.split_first_chunk_mut::<V6_HEADERS>() else {
                    return Err(too_small);
                };
                [bytes[18], bytes[19]] = [u0, u1];
                [bytes[58], bytes[59]] = [u0, u1];
                [bytes[60], bytes[61]] = udp_checksum(udp_sum + sum(payload));
                *headers = bytes;
            }
        }
        Ok(needed)
    }

    /// Copies `payload` into `frame` after the headers, then [`write`](Self::write)s
    /// them. For callers that do not build the payload in place.
    pub fn write_with_payload(
        &self,
        frame: &mut [u8],
        payload: &[u8],
    ) -> Result<usize, BuildError> {
        if payload.len() > self.max_payload() {
            return Err(BuildError::PayloadTooLarge {
                len: payload.len(),
                max: self.max_payload(),
            });
        }
        let start = self.header_len();
        let len = frame.len();
        let Some(dst) = frame.get_mut(start..start + payload.len()) else {
            return Err(BuildError::BufferTooSmall {
                len,
                needed: start + payload.len(),
            });
        };
        dst.copy_from_slice(payload);
        self.write(frame, payload.len())
    }
}

/// Writes `value` at `at`; only ever called with places inside the template.
fn put<const N: usize>(bytes: &mut [u8], at: usize, value: [u8; N]) {
    if let Some(dst) = bytes.get_mut(at..at + N) {
        dst.copy_from_slice(&value);
    }
}

/// The UDP checksum field for a complete sum: its complement, sent as 0xffff if it is
/// 0 (0 means "no checksum").
#[inline]
fn udp_checksum(acc: u64) -> [u8; 2] {
    match !fold(acc) {
        0 => [0xff, 0xff],
        checksum => checksum.to_be_bytes(),
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

    fn v4_src() -> SocketAddr {
        "10.0.0.1:1234".parse().unwrap()
    }
    fn v4_group() -> SocketAddr {
        "239.1.2.3:5000".parse().unwrap()
    }
    fn v6_src() -> SocketAddr {
        "[fd00::1]:1234".parse().unwrap()
    }
    fn v6_group() -> SocketAddr {
        "[ff15::1:2]:5000".parse().unwrap()
    }
    fn v4_template() -> FrameTemplate {
        FrameTemplate::new(SRC_MAC, v4_src(), v4_group(), 64, 0).unwrap()
    }
    fn v6_template() -> FrameTemplate {
        FrameTemplate::new(SRC_MAC, v6_src(), v6_group(), 64, 0).unwrap()
    }

    fn build(template: &FrameTemplate, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; template.header_len() + payload.len()];
        let len = template.write_with_payload(&mut buf, payload).unwrap();
        assert_eq!(len, buf.len());
        buf
    }

    fn payload_of(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// RFC 1071 the slow way: byte pairs one at a time, carries folded as they come.
    fn reference_checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = u32::from(data[i]) << 8;
            let lo = data.get(i + 1).map_or(0, |b| u32::from(*b));
            acc += hi | lo;
            if acc > 0xffff {
                acc = (acc & 0xffff) + 1;
            }
            i += 2;
        }
        !(acc as u16)
    }

    /// Offset of the IP header: 14, or 18 behind a tag.
    fn l2_len(frame: &[u8]) -> usize {
        match u16::from_be_bytes([frame[12], frame[13]]) {
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => 18,
            _ => 14,
        }
    }

    /// Recomputes the IPv4 header checksum with the reference, after an edit.
    fn fix_ipv4_checksum(frame: &mut [u8]) {
        let l2 = l2_len(frame);
        let ihl = usize::from(frame[l2] & 0x0f) * 4;
        frame[l2 + 10..l2 + 12].fill(0);
        let c = reference_checksum(&frame[l2..l2 + ihl]);
        frame[l2 + 10..l2 + 12].copy_from_slice(&c.to_be_bytes());
    }

    /// Recomputes the UDP checksum of an IPv4 frame (options allowed) with the
    /// reference, over the UDP length the header says.
    fn fix_udp_checksum_v4(frame: &mut [u8]) {
        let l2 = l2_len(frame);
        let ihl = usize::from(frame[l2] & 0x0f) * 4;
        let udp = l2 + ihl;
        let udp_len = usize::from(u16::from_be_bytes([frame[udp + 4], frame[udp + 5]]));
        frame[udp + 6..udp + 8].fill(0);
        let mut pseudo = frame[l2 + 12..l2 + 20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pseudo.extend_from_slice(&frame[udp..udp + udp_len]);
        let c = match reference_checksum(&pseudo) {
            0 => 0xffff,
            c => c,
        };
        frame[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
    }

    /// Recomputes the UDP checksum of an IPv6 frame whose UDP header starts at `udp`.
    fn fix_udp_checksum_v6(frame: &mut [u8], udp: usize) {
        let udp_len = usize::from(u16::from_be_bytes([frame[udp + 4], frame[udp + 5]]));
        frame[udp + 6..udp + 8].fill(0);
        let mut pseudo = frame[22..54].to_vec();
        pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        pseudo.extend_from_slice(&frame[udp..udp + udp_len]);
        let c = match reference_checksum(&pseudo) {
            0 => 0xffff,
            c => c,
        };
        frame[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
    }

    /// An IPv6 frame with `ext` (whole extension headers, the first one's type given)
    /// between the fixed header and UDP.
    fn v6_with_extensions(first: u8, ext: &[u8], payload: &[u8]) -> Vec<u8> {
        let plain = build(&v6_template(), payload);
        let mut frame = plain[..54].to_vec();
        frame[20] = first;
        frame.extend_from_slice(ext);
        frame.extend_from_slice(&plain[54..]);
        let payload_len = (frame.len() - 54) as u16;
        frame[18..20].copy_from_slice(&payload_len.to_be_bytes());
        frame
    }

    /// An 8-byte extension header (no options but padding) followed by `next`.
    fn ext8(next: u8) -> [u8; 8] {
        [next, 0, 1, 4, 0, 0, 0, 0]
    }

    /// Where `inner` starts inside `outer`, if it lies wholly inside it.
    fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
        let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
        (start + inner.len() <= outer.len()).then_some(start)
    }

    #[test]
    fn multicast_macs_follow_rfc_1112_and_rfc_2464() {
        let mac = |s: &str| multicast_mac(s.parse().unwrap());
        assert_eq!(
            mac("239.255.3.232"),
            Some([0x01, 0x00, 0x5e, 0x7f, 0x03, 0xe8])
        );
        // Only the low 23 bits: 224.128.0.1 and 224.0.0.1 share a MAC.
        assert_eq!(
            mac("224.128.0.1"),
            Some([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01])
        );
        assert_eq!(mac("224.0.0.1"), Some([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]));
        assert_eq!(
            mac("ff02::1:ff00:1"),
            Some([0x33, 0x33, 0xff, 0x00, 0x00, 0x01])
        );
        assert_eq!(mac("ff02::1"), Some([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]));
        assert_eq!(mac("10.0.0.1"), None);
        assert_eq!(mac("255.255.255.255"), None);
        assert_eq!(mac("fd00::1"), None);
        assert_eq!(
            mac("::ffff:239.1.2.3"),
            None,
            "a mapped group is not IPv6 multicast"
        );
    }

    #[test]
    fn a_built_ipv4_frame_matches_one_written_by_hand_from_rfc_791_and_768() {
        // 10.0.0.1:1234 -> 239.1.2.3:5000, TTL 64, TOS 0, payload "abcd".
        // IPv4 checksum (RFC 791, RFC 1071): 4500 + 0020 + 0000 + 4000 + 4011 + 0a00 +
        // 0001 + ef01 + 0203 = 1c036, folded c037, complemented 3fc8.
        // UDP checksum (RFC 768), pseudo-header 0a00 0001 ef01 0203 0011 000c, then
        // 04d2 1388 000c 0000 6162 6364: sum 1d84e, folded d84f, complemented 27b0.
        #[rustfmt::skip]
        let by_hand: [u8; 46] = [
            0x01, 0x00, 0x5e, 0x01, 0x02, 0x03, // destination MAC of 239.1.2.3
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source MAC
            0x08, 0x00,                         // IPv4
            0x45, 0x00, 0x00, 0x20,             // version 4, IHL 5, TOS 0, total length 32
            0x00, 0x00, 0x40, 0x00,             // identification 0, DF, offset 0
            0x40, 0x11, 0x3f, 0xc8,             // TTL 64, UDP, header checksum
            0x0a, 0x00, 0x00, 0x01,             // 10.0.0.1
            0xef, 0x01, 0x02, 0x03,             // 239.1.2.3
            0x04, 0xd2, 0x13, 0x88,             // ports 1234, 5000
            0x00, 0x0c, 0x27, 0xb0,             // UDP length 12, checksum
            b'a', b'b', b'c', b'd',
        ];
        assert_eq!(build(&v4_template(), b"abcd"), by_hand);
        let udp = parse(&by_hand).unwrap();
        assert_eq!(
            (udp.src, udp.dst, udp.payload),
            (v4_src(), v4_group(), &b"abcd"[..])
        );
        assert_eq!(udp.hop_limit, 64);
    }

    #[test]
    fn a_built_ipv6_frame_matches_one_written_by_hand_from_rfc_8200_and_768() {
        // [fd00::1]:1234 -> [ff15::1:2]:5000, hop limit 64, payload "abcd".
        // UDP checksum over the pseudo-header (RFC 8200 8.1): fd00 + 0001 (source) +
        // ff15 + 0001 + 0002 (destination) + 000c (length) + 0011 (next header), then
        // 04d2 + 1388 + 000c + 6162 + 6364: sum 2d962, folded d964, complemented 269b.
        #[rustfmt::skip]
        let by_hand: [u8; 66] = [
            0x33, 0x33, 0x00, 0x01, 0x00, 0x02, // destination MAC of ff15::1:2
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source MAC
            0x86, 0xdd,                         // IPv6
            0x60, 0x00, 0x00, 0x00,             // version 6, traffic class 0, flow 0
            0x00, 0x0c, 0x11, 0x40,             // payload length 12, UDP, hop limit 64
            0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // fd00::1
            0xff, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0x02, // ff15::1:2
            0x04, 0xd2, 0x13, 0x88,             // ports 1234, 5000
            0x00, 0x0c, 0x26, 0x9b,             // UDP length 12, checksum
            b'a', b'b', b'c', b'd',
        ];
        let template = v6_template();
        assert_eq!(build(&template, b"abcd"), by_hand);
        let udp = parse(&by_hand).unwrap();
        assert_eq!(udp.payload, b"abcd");
        assert_eq!(udp.dst, template.dst());
    }

    #[test]
    fn frames_built_from_templates_parse_back_for_every_payload_size() {
        let dst_mac = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
        let unicast = FrameTemplate::with_dst_mac(
            SRC_MAC,
            dst_mac,
            v4_src(),
            "10.0.0.2:7".parse().unwrap(),
            1,
            0xb8,
        )
        .unwrap();
        let unicast6 = FrameTemplate::with_dst_mac(
            SRC_MAC,
            dst_mac,
            v6_src(),
            "[fd00::2]:7".parse().unwrap(),
            255,
            0xb8,
        )
        .unwrap();
        for template in [v4_template(), v6_template(), unicast, unicast6] {
            for len in [
                0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1471, 1472, 9000,
            ] {
                let payload = payload_of(len);
                let frame = build(&template, &payload);
                assert_eq!(frame.len(), template.header_len() + len);
                let udp = parse(&frame).unwrap_or_else(|d| panic!("{len} bytes: {d}"));
                assert_eq!(udp.src, template.src());
                assert_eq!(udp.dst, template.dst());
                assert_eq!(udp.payload, &payload[..]);
                assert_eq!(udp.src_mac, template.src_mac());
                assert_eq!(udp.dst_mac, template.dst_mac());
                assert_eq!(udp.vlan, None);
                assert_eq!(offset_in(&frame, udp.payload), Some(template.header_len()));
            }
        }
    }

    #[test]
    fn the_largest_payloads_fit_and_one_more_byte_is_refused() {
        for (template, max) in [
            (v4_template(), MAX_PAYLOAD_V4),
            (v6_template(), MAX_PAYLOAD_V6),
        ] {
            assert_eq!(template.max_payload(), max);
            let mut buf = vec![0u8; template.header_len() + max + 1];
            let len = template.write(&mut buf, max).unwrap();
            assert_eq!(len, template.header_len() + max);
            assert_eq!(parse(&buf[..len]).unwrap().payload.len(), max);
            assert_eq!(
                template.write(&mut buf, max + 1),
                Err(BuildError::PayloadTooLarge { len: max + 1, max })
            );
        }
        assert_eq!(MAX_PAYLOAD_V4, 65507);
        assert_eq!(MAX_PAYLOAD_V6, 65527);
    }

    #[test]
    fn writing_into_a_short_buffer_fails_and_touches_nothing() {
        let template = v4_template();
        let mut buf = [0xAAu8; 50];
        assert_eq!(
            template.write(&mut buf, 9),
            Err(BuildError::BufferTooSmall {
                len: 50,
                needed: 51
            })
        );
        assert_eq!(buf, [0xAA; 50]);
        assert_eq!(
            template.write_with_payload(&mut buf, &[0; 9]),
            Err(BuildError::BufferTooSmall {
                len: 50,
                needed: 51
            })
        );
        assert_eq!(buf, [0xAA; 50]);
        // Bytes after the frame are left alone.
        assert_eq!(template.write(&mut buf, 3), Ok(45));
        assert_eq!(buf[45..], [0xAA; 5]);
    }

    #[test]
    fn templates_refuse_mixed_families_and_unicast_without_a_mac() {
        assert_eq!(
            FrameTemplate::new(SRC_MAC, v4_src(), v6_group(), 1, 0),
            Err(BuildError::AddressFamily {
                src: v4_src(),
                dst: v6_group()
            })
        );
        assert!(matches!(
            FrameTemplate::with_dst_mac(SRC_MAC, [0; 6], v6_src(), v4_group(), 1, 0),
            Err(BuildError::AddressFamily { .. })
        ));
        let unicast: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let err = FrameTemplate::new(SRC_MAC, v4_src(), unicast, 1, 0).unwrap_err();
        assert_eq!(err, BuildError::NotMulticast { dst: unicast.ip() });
        assert!(err.to_string().contains("with_dst_mac"), "{err}");
        assert_eq!(v4_template().header_len(), 42);
        assert_eq!(v6_template().header_len(), 62);
    }

    #[test]
    fn templates_carry_ttl_tos_and_traffic_class() {
        let t = FrameTemplate::new(SRC_MAC, v4_src(), v4_group(), 7, 0xb8).unwrap();
        let frame = build(&t, b"x");
        assert_eq!(frame[15], 0xb8, "TOS byte");
        assert_eq!(frame[22], 7, "TTL");
        assert_eq!(parse(&frame).unwrap().hop_limit, 7);
        let t = FrameTemplate::new(SRC_MAC, v6_src(), v6_group(), 9, 0xb8).unwrap();
        let frame = build(&t, b"x");
        assert_eq!(
            &frame[14..18],
            &[0x6b, 0x80, 0x00, 0x00],
            "version, class, flow label"
        );
        assert_eq!(frame[21], 9, "hop limit");
        assert_eq!(parse(&frame).unwrap().hop_limit, 9);
    }

    #[test]
    fn checksums_agree_with_a_slow_reference_for_every_length() {
        // The parser's word sum against the reference, over lengths that hit every
        // tail of the 8-byte loop.
        for len in 0..200 {
            let data = payload_of(len);
            assert_eq!(!fold(sum(&data)), reference_checksum(&data), "{len} bytes");
        }
        // Folding is reduction modulo 0xffff that keeps a non-zero sum non-zero.
        for acc in [
            0u64,
            1,
            0xffff,
            0x1_0000,
            0x1_fffe,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let folded = u64::from(fold(acc));
            assert_eq!(folded % 0xffff, acc % 0xffff, "{acc:#x}");
            assert_eq!(folded == 0, acc == 0, "{acc:#x}");
        }
        // The builder's checksums, each checked with the reference over the bytes it
        // covers.
        for len in [0, 1, 2, 3, 13, 64, 1001] {
            let frame = build(&v4_template(), &payload_of(len));
            assert_eq!(reference_checksum(&frame[14..34]), 0, "IPv4 header, {len}");
            let mut recomputed = frame.clone();
            fix_ipv4_checksum(&mut recomputed);
            fix_udp_checksum_v4(&mut recomputed);
            assert_eq!(recomputed, frame, "IPv4, {len}");

            let frame = build(&v6_template(), &payload_of(len));
            let mut recomputed = frame.clone();
            fix_udp_checksum_v6(&mut recomputed, 54);
            assert_eq!(recomputed, frame, "IPv6, {len}");
        }
    }

    #[test]
    fn a_udp_checksum_that_sums_to_zero_goes_as_ffff() {
        // Search for a payload whose checksum computes to 0: the sum of everything else
        // is then ffff. A 2-byte payload moves the sum through every value.
        let template = v4_template();
        let mut found = false;
        for word in 0..=u16::MAX {
            let frame = build(&template, &word.to_be_bytes());
            if frame[40..42] == [0xff, 0xff] {
                let mut recomputed = frame.clone();
                fix_udp_checksum_v4(&mut recomputed);
                assert_eq!(recomputed, frame);
                assert!(parse(&frame).is_ok());
                found = true;
            }
            assert_ne!(frame[40..42], [0, 0], "0 means no checksum");
        }
        assert!(found);
    }

    #[test]
    fn padded_minimum_frames_parse_without_their_padding() {
        for template in [v4_template(), v6_template()] {
            let mut frame = build(&template, b"hi");
            let len = frame.len();
            frame.resize(60.max(len + 4), 0xEE);
            let udp = parse(&frame).unwrap();
            assert_eq!(udp.payload, b"hi");
        }
        let frame = {
            let mut f = build(&v4_template(), b"hi");
            f.resize(60, 0);
            f
        };
        assert_eq!(frame.len(), 60);
        assert_eq!(parse(&frame).unwrap().payload, b"hi");
    }

    #[test]
    fn a_udp_length_short_of_the_ip_payload_gives_only_the_udp_length() {
        // The kernel trims the IP payload to the UDP length; so do we.
        let mut frame = build(&v4_template(), b"abcdef");
        frame[38..40].copy_from_slice(&12u16.to_be_bytes());
        fix_udp_checksum_v4(&mut frame);
        assert_eq!(parse(&frame).unwrap().payload, b"abcd");

        let mut frame = build(&v6_template(), b"abcdef");
        frame[58..60].copy_from_slice(&12u16.to_be_bytes());
        fix_udp_checksum_v6(&mut frame, 54);
        assert_eq!(parse(&frame).unwrap().payload, b"abcd");
    }

    /// Inserts a tag with `tpid` and VLAN ID `vid` (priority 5) after the MACs.
    fn tagged(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
        let mut out = frame[..12].to_vec();
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&((5 << 13) | vid).to_be_bytes());
        out.extend_from_slice(&frame[12..]);
        out
    }

    #[test]
    fn one_vlan_tag_is_stepped_over_and_two_are_refused() {
        for template in [v4_template(), v6_template()] {
            let plain = build(&template, b"payload");
            for tpid in [ETHERTYPE_VLAN, ETHERTYPE_QINQ] {
                let frame = tagged(&plain, tpid, 42);
                let udp = parse(&frame).unwrap();
                assert_eq!(udp.vlan, Some(42));
                assert_eq!(udp.payload, b"payload");
                assert_eq!(udp.dst, template.dst());
                // Short inside the tag or the headers behind it.
                for cut in 0..template.header_len() + 4 {
                    assert_eq!(parse(&frame[..cut]), Err(Discard::Short), "cut at {cut}");
                }
                let double = tagged(&frame, ETHERTYPE_QINQ, 7);
                assert_eq!(parse(&double), Err(Discard::VlanStack));
                let double = tagged(&frame, ETHERTYPE_VLAN, 7);
                assert_eq!(parse(&double), Err(Discard::VlanStack));
            }
        }
    }

    #[test]
    fn a_frame_cut_short_is_short_up_to_the_headers_then_too_short_for_its_ip_length() {
        for template in [v4_template(), v6_template()] {
            let frame = build(&template, b"0123456789");
            let hl = template.header_len();
            for cut in 0..hl {
                assert_eq!(parse(&frame[..cut]), Err(Discard::Short), "cut at {cut}");
            }
            for cut in hl..frame.len() {
                assert_eq!(
                    parse(&frame[..cut]),
                    Err(Discard::IpTotalLength),
                    "cut at {cut}"
                );
            }
            assert!(parse(&frame).is_ok());
        }
    }

    #[test]
    fn ethertypes_other_than_ip_are_not_ip() {
        // An ARP request: who has 10.0.0.2, tell 10.0.0.1.
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&SRC_MAC);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&SRC_MAC);
        arp.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        arp.resize(60, 0);
        assert_eq!(parse(&arp), Err(Discard::NotIp));
        // An 802.3 frame (a length where the EtherType goes), and a tagged ARP.
        let mut frame = build(&v4_template(), b"x");
        frame[12..14].copy_from_slice(&[0x00, 0x40]);
        assert_eq!(parse(&frame), Err(Discard::NotIp));
        assert_eq!(parse(&tagged(&arp, ETHERTYPE_VLAN, 1)), Err(Discard::NotIp));
        // Too short to say: a lone Ethernet header.
        assert_eq!(parse(&arp[..14]), Err(Discard::NotIp));
    }

    #[test]
    fn an_ip_version_that_does_not_match_the_ethertype_is_refused() {
        let mut frame = build(&v4_template(), b"x");
        frame[14] = 0x65;
        assert_eq!(parse(&frame), Err(Discard::IpVersion));
        let mut frame = build(&v6_template(), b"x");
        frame[14] = 0x45;
        assert_eq!(parse(&frame), Err(Discard::IpVersion));
        // An IPv6 packet under the IPv4 EtherType.
        frame[14] = 0x60;
        frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        assert_eq!(parse(&frame), Err(Discard::IpVersion));
    }

    #[test]
    fn an_ipv4_header_length_below_20_or_past_the_frame_is_refused() {
        for ihl in 0..5 {
            let mut frame = build(&v4_template(), b"0123456789");
            frame[14] = 0x40 | ihl;
            fix_ipv4_checksum(&mut frame);
            assert_eq!(parse(&frame), Err(Discard::IpHeaderLength), "IHL {ihl}");
        }
        // IHL 15: 60 bytes of header, in a 47-byte frame.
        let mut frame = build(&v4_template(), b"abcde");
        frame[14] = 0x4f;
        assert_eq!(parse(&frame), Err(Discard::IpHeaderLength));
    }

    #[test]
    fn ipv4_options_are_checked_by_the_checksum_and_stepped_over() {
        let plain = build(&v4_template(), b"with options");
        // IHL 6: one word of options (four no-operations).
        let mut frame = plain[..34].to_vec();
        frame.extend_from_slice(&[1, 1, 1, 1]);
        frame.extend_from_slice(&plain[34..]);
        frame[14] = 0x46;
        let total = (frame.len() - 14) as u16;
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        fix_ipv4_checksum(&mut frame);
        assert_eq!(parse(&frame).unwrap().payload, b"with options");
        frame[35] = 0;
        assert_eq!(parse(&frame), Err(Discard::IpChecksum));
    }

    #[test]
    fn an_ipv4_total_length_shorter_than_the_header_or_past_the_frame_is_refused() {
        for total in [0u16, 19, 55, 56, 1500, u16::MAX] {
            let mut frame = build(&v4_template(), b"0123456789abcdefghijklmnop");
            frame[16..18].copy_from_slice(&total.to_be_bytes());
            fix_ipv4_checksum(&mut frame);
            assert_eq!(
                parse(&frame),
                Err(Discard::IpTotalLength),
                "total length {total}"
            );
        }
    }

    #[test]
    fn a_wrong_ipv4_header_checksum_is_refused() {
        let frame = build(&v4_template(), b"x");
        for byte in 14..34 {
            let mut bad = frame.clone();
            bad[byte] ^= 0x01;
            let verdict = parse(&bad);
            // Flipping the version or the IHL is caught before the checksum.
            if byte == 14 {
                assert!(
                    matches!(verdict, Err(Discard::IpHeaderLength)),
                    "{verdict:?}"
                );
            } else if (16..18).contains(&byte) {
                assert!(
                    matches!(verdict, Err(Discard::IpTotalLength | Discard::IpChecksum)),
                    "{verdict:?}"
                );
            } else {
                assert_eq!(verdict, Err(Discard::IpChecksum), "byte {byte}");
            }
        }
    }

    #[test]
    fn ipv4_fragments_are_refused_first_middle_and_last() {
        for flags_offset in [0x2000u16, 0x2001, 0x0001, 0x1fff, 0x6000, 0x4001] {
            let mut frame = build(&v4_template(), b"0123456789");
            frame[20..22].copy_from_slice(&flags_offset.to_be_bytes());
            fix_ipv4_checksum(&mut frame);
            assert_eq!(parse(&frame), Err(Discard::Fragment), "{flags_offset:#06x}");
        }
        // DF alone (what we send), nothing, or the reserved bit: not fragments.
        for flags_offset in [0x4000u16, 0x0000, 0x8000] {
            let mut frame = build(&v4_template(), b"0123456789");
            frame[20..22].copy_from_slice(&flags_offset.to_be_bytes());
            fix_ipv4_checksum(&mut frame);
            assert!(parse(&frame).is_ok(), "{flags_offset:#06x}");
        }
    }

    #[test]
    fn ip_packets_that_do_not_carry_udp_are_not_udp() {
        for proto in [1u8, 2, 6, 41, 47, 50, 58, 132, 136, 255] {
            let mut frame = build(&v4_template(), b"0123456789");
            frame[23] = proto;
            fix_ipv4_checksum(&mut frame);
            assert_eq!(parse(&frame), Err(Discard::NotUdp), "protocol {proto}");
            let mut frame = build(&v6_template(), b"0123456789");
            frame[20] = proto;
            assert_eq!(parse(&frame), Err(Discard::NotUdp), "next header {proto}");
        }
        // The same after an extension header.
        let frame = v6_with_extensions(PROTO_DEST_OPTIONS, &ext8(6), b"x");
        assert_eq!(parse(&frame), Err(Discard::NotUdp));
    }

    #[test]
    fn an_ipv6_payload_length_past_the_frame_is_refused() {
        let mut frame = build(&v6_template(), b"0123456789");
        frame[18..20].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse(&frame), Err(Discard::IpTotalLength));
        frame[18..20].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(parse(&frame), Err(Discard::IpTotalLength));
    }

    #[test]
    fn ipv6_extension_headers_in_front_of_udp_are_stepped_over() {
        // Hop-by-hop, routing with no segments left, destination options (16 bytes).
        let mut ext = ext8(PROTO_ROUTING).to_vec();
        ext.extend_from_slice(&[PROTO_DEST_OPTIONS, 0, 0, 0, 0, 0, 0, 0]);
        ext.extend_from_slice(&[PROTO_UDP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let frame = v6_with_extensions(PROTO_HOP_BY_HOP, &ext, b"behind three");
        assert_eq!(parse(&frame).unwrap().payload, b"behind three");
        // Eight destination-options headers is the most walked.
        let mut ext = Vec::new();
        for _ in 0..MAX_EXTENSION_HEADERS - 1 {
            ext.extend_from_slice(&ext8(PROTO_DEST_OPTIONS));
        }
        ext.extend_from_slice(&ext8(PROTO_UDP));
        let frame = v6_with_extensions(PROTO_DEST_OPTIONS, &ext, b"deep");
        assert_eq!(parse(&frame).unwrap().payload, b"deep");
    }

    #[test]
    fn malformed_ipv6_extension_headers_are_refused() {
        // Nine headers.
        let mut ext = Vec::new();
        for _ in 0..MAX_EXTENSION_HEADERS {
            ext.extend_from_slice(&ext8(PROTO_DEST_OPTIONS));
        }
        ext.extend_from_slice(&ext8(PROTO_UDP));
        let frame = v6_with_extensions(PROTO_DEST_OPTIONS, &ext, b"x");
        assert_eq!(parse(&frame), Err(Discard::ExtensionHeaders));
        // Hop-by-hop second.
        let mut ext = ext8(PROTO_HOP_BY_HOP).to_vec();
        ext.extend_from_slice(&ext8(PROTO_UDP));
        let frame = v6_with_extensions(PROTO_DEST_OPTIONS, &ext, b"x");
        assert_eq!(parse(&frame), Err(Discard::ExtensionHeaders));
        // A routing header with a segment left to visit.
        let frame = v6_with_extensions(PROTO_ROUTING, &[PROTO_UDP, 0, 4, 1, 0, 0, 0, 0], b"x");
        assert_eq!(parse(&frame), Err(Discard::ExtensionHeaders));
        // A header whose length runs past the payload (255 units: 2048 bytes).
        let frame = v6_with_extensions(
            PROTO_DEST_OPTIONS,
            &[PROTO_UDP, 255, 1, 4, 0, 0, 0, 0],
            b"x",
        );
        assert_eq!(parse(&frame), Err(Discard::ExtensionHeaders));
        // A payload that ends inside the first four bytes of one.
        let mut frame = v6_with_extensions(PROTO_DEST_OPTIONS, &ext8(PROTO_UDP), b"x");
        frame[18..20].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(parse(&frame), Err(Discard::ExtensionHeaders));
        frame[18..20].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(parse(&frame), Err(Discard::ExtensionHeaders));
    }

    #[test]
    fn an_ipv6_fragment_header_is_a_fragment() {
        // First fragment (offset 0, M set) and an atomic one (offset 0, M clear).
        for m in [1u8, 0] {
            let frag = [PROTO_UDP, 0, 0, m, 0xde, 0xad, 0xbe, 0xef];
            let frame = v6_with_extensions(PROTO_FRAGMENT, &frag, b"0123456789");
            assert_eq!(parse(&frame), Err(Discard::Fragment));
        }
        // Behind a destination-options header too.
        let mut ext = ext8(PROTO_FRAGMENT).to_vec();
        ext.extend_from_slice(&[PROTO_UDP, 0, 0, 8, 0, 0, 0, 1]);
        let frame = v6_with_extensions(PROTO_DEST_OPTIONS, &ext, b"x");
        assert_eq!(parse(&frame), Err(Discard::Fragment));
    }

    #[test]
    fn multicast_and_broadcast_sources_are_refused() {
        for src in ["224.0.0.1", "239.1.2.3", "255.255.255.255"] {
            let mut frame = build(&v4_template(), b"x");
            let ip: Ipv4Addr = src.parse().unwrap();
            frame[26..30].copy_from_slice(&ip.octets());
            fix_ipv4_checksum(&mut frame);
            fix_udp_checksum_v4(&mut frame);
            assert_eq!(parse(&frame), Err(Discard::SourceAddress), "{src}");
        }
        let mut frame = build(&v6_template(), b"x");
        let ip: Ipv6Addr = "ff02::1".parse().unwrap();
        frame[22..38].copy_from_slice(&ip.octets());
        fix_udp_checksum_v6(&mut frame, 54);
        assert_eq!(parse(&frame), Err(Discard::SourceAddress));
    }

    #[test]
    fn udp_lengths_below_8_or_past_the_ip_payload_are_refused() {
        for udp_len in [0u16, 1, 7, 19, 20, 1000, u16::MAX] {
            let mut frame = build(&v4_template(), b"0123456789");
            frame[38..40].copy_from_slice(&udp_len.to_be_bytes());
            assert_eq!(
                parse(&frame),
                Err(Discard::UdpLength),
                "v4 UDP length {udp_len}"
            );
            let mut frame = build(&v6_template(), b"0123456789");
            frame[58..60].copy_from_slice(&udp_len.to_be_bytes());
            assert_eq!(
                parse(&frame),
                Err(Discard::UdpLength),
                "v6 UDP length {udp_len}"
            );
        }
        // Past the IP payload though inside the frame (padding is not UDP payload).
        let mut frame = build(&v4_template(), b"0123");
        frame.resize(60, 0);
        frame[38..40].copy_from_slice(&20u16.to_be_bytes());
        fix_udp_checksum_v4(&mut frame);
        assert_eq!(parse(&frame), Err(Discard::UdpLength));
        // An IP payload too short for the UDP header, in a padded frame.
        let mut frame = build(&v4_template(), b"");
        frame.resize(60, 0);
        frame[16..18].copy_from_slice(&24u16.to_be_bytes());
        fix_ipv4_checksum(&mut frame);
        assert_eq!(parse(&frame), Err(Discard::UdpLength));
        let mut frame = build(&v6_template(), b"");
        frame.resize(80, 0);
        frame[18..20].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(parse(&frame), Err(Discard::UdpLength));
    }

    #[test]
    fn a_wrong_udp_checksum_is_refused_over_both_families() {
        for (template, udp) in [(v4_template(), 34), (v6_template(), 54)] {
            let frame = build(&template, b"0123456789");
            for byte in udp..frame.len() {
                if byte == udp + 4 || byte == udp + 5 {
                    continue; // the UDP length: UdpLength or UdpChecksum
                }
                let mut bad = frame.clone();
                bad[byte] ^= 0x80;
                assert_eq!(parse(&bad), Err(Discard::UdpChecksum), "byte {byte}");
            }
        }
        // IPv6 addresses are covered only by the UDP checksum (the pseudo-header).
        let frame = build(&v6_template(), b"0123456789");
        for byte in 22..54 {
            let mut bad = frame.clone();
            bad[byte] ^= 0x01;
            assert!(
                matches!(
                    parse(&bad),
                    Err(Discard::UdpChecksum | Discard::SourceAddress)
                ),
                "byte {byte}"
            );
        }
    }

    #[test]
    fn a_zero_udp_checksum_is_none_over_ipv4_and_invalid_over_ipv6() {
        let mut frame = build(&v4_template(), b"no checksum");
        frame[40..42].fill(0);
        assert_eq!(parse(&frame).unwrap().payload, b"no checksum");
        // Without a checksum the payload is not checked at all.
        frame[45] ^= 0xff;
        assert!(parse(&frame).is_ok());

        let mut frame = build(&v6_template(), b"no checksum");
        frame[60..62].fill(0);
        assert_eq!(parse(&frame), Err(Discard::UdpChecksum));
    }

    #[test]
    fn every_discard_has_a_unique_snake_case_name_and_a_sentence() {
        let mut names = std::collections::HashSet::new();
        for (i, reason) in Discard::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "ALL is in declaration order");
            let name = reason.name();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            assert!(names.insert(name), "{name} twice");
            assert!(!reason.to_string().is_empty());
        }
    }

    #[test]
    fn discards_are_counted_totalled_listed_and_merged() {
        let mut a = FrameDiscards::new();
        assert_eq!(a.total(), 0);
        a.count(Discard::Short);
        a.count(Discard::Short);
        a.count(Discard::UdpChecksum);
        let mut b = FrameDiscards::default();
        b.count(Discard::Short);
        b.count(Discard::Fragment);
        a.merge(&b);
        assert_eq!(a.get(Discard::Short), 3);
        assert_eq!(a.get(Discard::Fragment), 1);
        assert_eq!(a.get(Discard::UdpChecksum), 1);
        assert_eq!(a.get(Discard::NotIp), 0);
        assert_eq!(a.total(), 5);
        let listed: Vec<(&str, u64)> = a.iter().collect();
        assert_eq!(listed.len(), Discard::ALL.len());
        assert_eq!(listed[0], ("short", 3));
        assert_eq!(listed.iter().map(|(_, n)| n).sum::<u64>(), 5);
        assert!(listed.contains(&("fragment", 1)));
    }

    /// Checks what must hold of anything `parse` accepts: the payload lies inside the
    /// input, and a frame rebuilt from what was parsed parses back to the same.
    fn check_accepted(input: &[u8]) -> Result<(), TestCaseError> {
        let Ok(udp) = parse(input) else {
            return Ok(());
        };
        prop_assert!(offset_in(input, udp.payload).is_some());
        prop_assert_eq!(udp.src.is_ipv4(), udp.dst.is_ipv4());
        let template = FrameTemplate::with_dst_mac(
            udp.src_mac,
            udp.dst_mac,
            udp.src,
            udp.dst,
            udp.hop_limit,
            0,
        )
        .unwrap();
        let rebuilt = build(&template, udp.payload);
        let again = parse(&rebuilt).unwrap();
        prop_assert_eq!(
            UdpFrame {
                vlan: udp.vlan,
                ..again
            },
            udp
        );
        Ok(())
    }

    fn any_template() -> impl Strategy<Value = FrameTemplate> {
        (
            any::<[u8; 6]>(),
            any::<[u8; 6]>(),
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<(u16, u16, u8, u8)>(),
        )
            .prop_map(|(src_mac, dst_mac, v6, a, b, (sport, dport, hops, tos))| {
                let (src, dst) = if v6 {
                    let mut a = a;
                    a[0] &= 0xfe; // not multicast
                    (
                        SocketAddr::from((Ipv6Addr::from(a), sport)),
                        SocketAddr::from((Ipv6Addr::from(b), dport)),
                    )
                } else {
                    let a = [a[0] & 0xdf, a[1], a[2], a[3]]; // below 224
                    (
                        SocketAddr::from((Ipv4Addr::from(a), sport)),
                        SocketAddr::from((Ipv4Addr::new(b[0], b[1], b[2], b[3]), dport)),
                    )
                };
                FrameTemplate::with_dst_mac(src_mac, dst_mac, src, dst, hops, tos).unwrap()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(
            bytes in prop::collection::vec(any::<u8>(), 0..200),
            ethertype in prop::sample::select(vec![0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x0806]),
        ) {
            check_accepted(&bytes)?;
            // The same bytes behind a plausible EtherType, to get past the first check.
            let mut framed = bytes.clone();
            if framed.len() >= 14 {
                framed[12..14].copy_from_slice(&ethertype.to_be_bytes());
                check_accepted(&framed)?;
            }
        }

        #[test]
        fn built_frames_parse_back_whatever_the_addresses(
            template in any_template(),
            payload in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let frame = build(&template, &payload);
            let udp = parse(&frame);
            prop_assert!(udp.is_ok(), "{:?}", udp);
            let udp = udp.unwrap();
            prop_assert_eq!(udp.src, template.src());
            prop_assert_eq!(udp.dst, template.dst());
            prop_assert_eq!(udp.payload, &payload[..]);
            check_accepted(&frame)?;
        }

        #[test]
        fn parse_never_panics_on_mutated_valid_frames(
            template in any_template(),
            payload in prop::collection::vec(any::<u8>(), 0..100),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            cut_it in any::<bool>(),
        ) {
            let mut frame = build(&template, &payload);
            for (at, value) in &edits {
                let i = at.index(frame.len());
                frame[i] = *value;
            }
            if cut_it {
                frame.truncate(cut.index(frame.len() + 1));
            }
            check_accepted(&frame)?;
        }

        #[test]
        fn a_single_bit_flip_in_the_checked_bytes_is_caught(
            template in any_template(),
            payload in prop::collection::vec(any::<u8>(), 0..100),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let frame = build(&template, &payload);
            // IPv4: the whole IP header and UDP datagram; IPv6: addresses and UDP.
            let checked = if template.src().is_ipv4() { 14..frame.len() } else { 22..frame.len() };
            let i = checked.start + at.index(checked.len());
            let mut bad = frame.clone();
            bad[i] ^= 1 << bit;
            let udp_checksum = template.header_len() - 2;
            // Over IPv4, a flip that leaves the UDP checksum 0 turns checking off.
            if !(template.src().is_ipv4()
                && (i == udp_checksum || i == udp_checksum + 1)
                && bad[udp_checksum..udp_checksum + 2] == [0, 0])
            {
                prop_assert!(parse(&bad).is_err(), "flip of bit {} of byte {}", bit, i);
            }
        }

        #[test]
        fn the_word_sum_equals_the_reference(data in prop::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert_eq!(!fold(sum(&data)), reference_checksum(&data));
        }
    }
}
