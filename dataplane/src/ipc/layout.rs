//! The ring file's layout: the header (a typed view over the mapped bytes) and the
//! record format.
//!
//! ```text
//! file = header (HEADER_LEN bytes) | ring (capacity bytes, a power of two)
//!
//! header, little-endian, offsets in bytes:
//!   0  magic "MPIPCRNG"         8  version u32     12 header length u32
//!  16  capacity u64            24  alignment u32   28 record header length u32
//!  32  blocks u32              36  largest payload u32
//!  40  writer pid u32          48  writer start time u64 (clock ticks since boot, /proc/PID/stat field 22)
//!  56  session [u8; 10]        66  has session u8  67 re-request family u8 (0, 4, 6)
//!  68  re-request port u16     72  re-request address [u8; 16]
//! 128  intent u64 (its own cache line)
//! 192  tail u64 (its own cache line)
//! 256  heartbeat u64 (CLOCK_MONOTONIC ns)   264 closed u64   272 records u64   280 messages u64
//! 320  block starts [u64; blocks]
//!
//! record, at a multiple of 8 in the ring:
//!   word 0: payload length (low 32 bits) | kind (high 32 bits)
//!   word 1: the writer's index of the record (0, 1, 2 ...; padding has none)
//!   word 2: value: a message's sequence number; for other kinds the sequence number the
//!           stream expects next
//!   payload, padded to a multiple of 8
//! padding (to the end of the ring): word 0 only, kind PAD
//! ```
//!
//! Everything a reader reads here was written by another process: [`Layout::check`]
//! checks every field before anything is used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The file's first 8 bytes.
pub(crate) const MAGIC: [u8; 8] = *b"MPIPCRNG";
/// The layout's version; a reader refuses any other.
pub const VERSION: u32 = 1;
/// The header's length (a page, so the ring is page-aligned).
pub(crate) const HEADER_LEN: usize = 4096;
/// Records are aligned to this.
pub(crate) const ALIGN: usize = 8;
/// A record's header: three words.
pub(crate) const RECORD_HEADER: usize = 24;
/// Entries in the block-start table.
pub(crate) const BLOCKS: usize = 16;

pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_HEADER_LEN: usize = 12;
pub(crate) const OFF_CAPACITY: usize = 16;
pub(crate) const OFF_ALIGN: usize = 24;
pub(crate) const OFF_RECORD_HEADER: usize = 28;
pub(crate) const OFF_BLOCKS: usize = 32;
pub(crate) const OFF_MAX_PAYLOAD: usize = 36;
pub(crate) const OFF_PID: usize = 40;
pub(crate) const OFF_START_TIME: usize = 48;
pub(crate) const OFF_SESSION: usize = 56;
pub(crate) const OFF_HAS_SESSION: usize = 66;
pub(crate) const OFF_RR_FAMILY: usize = 67;
pub(crate) const OFF_RR_PORT: usize = 68;
pub(crate) const OFF_RR_ADDR: usize = 72;
pub(crate) const OFF_INTENT: usize = 128;
pub(crate) const OFF_TAIL: usize = 192;
pub(crate) const OFF_HEARTBEAT: usize = 256;
pub(crate) const OFF_CLOSED: usize = 264;
pub(crate) const OFF_RECORDS: usize = 272;
pub(crate) const OFF_MESSAGES: usize = 280;
pub(crate) const OFF_TABLE: usize = 320;

/// Record kinds.
pub(crate) const MESSAGE: u32 = 1;
pub(crate) const RECOVERED: u32 = 2;
pub(crate) const GAP: u32 = 3;
pub(crate) const END: u32 = 4;
pub(crate) const LINE: u32 = 5;
pub(crate) const FAILURE: u32 = 6;
pub(crate) const PAD: u32 = 0xFFFF_FFFF;

/// The space a record of `len` payload bytes takes.
pub(crate) const fn record_len(len: usize) -> usize {
    RECORD_HEADER + len.div_ceil(ALIGN) * ALIGN
}

/// The largest payload a ring of `capacity` bytes takes: a quarter of it.
pub(crate) const fn max_payload(capacity: usize) -> usize {
    capacity / 4
}

/// A record's first word.
pub(crate) const fn first_word(kind: u32, len: usize) -> u64 {
    ((kind as u64) << 32) | (len as u32 as u64)
}

/// A padding record's first word.
pub(crate) const fn pad_word() -> u64 {
    first_word(PAD, 0)
}

/// Whether a first word is padding's.
pub(crate) const fn is_pad(word: u64) -> bool {
    (word >> 32) as u32 == PAD
}

/// A first word's kind and length.
pub(crate) const fn split_first_word(word: u64) -> (u32, usize) {
    ((word >> 32) as u32, word as u32 as usize)
}

/// The fixed fields of a header: what a writer writes once, and a reader checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The ring's size in bytes.
    pub capacity: usize,
    /// The writer's process id.
    pub pid: u32,
    /// The writer's start time (clock ticks since boot), so that a reused pid is not
    /// taken for the writer.
    pub start_time: u64,
    /// The stream's MoldUDP64 session, if known (10 bytes, space-padded).
    pub session: Option<[u8; 10]>,
    /// The stream's re-request server, if known.
    pub rerequest: Option<SocketAddr>,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The first bytes are not [`MAGIC`].
    Magic,
    /// Another version.
    Version(u32),
    /// The layout is not one this version makes.
    Layout(String),
}

impl Layout {
    /// The header's first [`OFF_INTENT`] bytes for this layout.
    pub(crate) fn encode(&self) -> [u8; OFF_INTENT] {
        let mut h = [0u8; OFF_INTENT];
        h[..8].copy_from_slice(&MAGIC);
        h[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        h[OFF_HEADER_LEN..OFF_HEADER_LEN + 4].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h[OFF_CAPACITY..OFF_CAPACITY + 8].copy_from_slice(&(self.capacity as u64).to_le_bytes());
        h[OFF_ALIGN..OFF_ALIGN + 4].copy_from_slice(&(ALIGN as u32).to_le_bytes());
        h[OFF_RECORD_HEADER..OFF_RECORD_HEADER + 4]
            .copy_from_slice(&(RECORD_HEADER as u32).to_le_bytes());
        h[OFF_BLOCKS..OFF_BLOCKS + 4].copy_from_slice(&(BLOCKS as u32).to_le_bytes());
        h[OFF_MAX_PAYLOAD..OFF_MAX_PAYLOAD + 4]
            .copy_from_slice(&(max_payload(self.capacity) as u32).to_le_bytes());
        h[OFF_PID..OFF_PID + 4].copy_from_slice(&self.pid.to_le_bytes());
        h[OFF_START_TIME..OFF_START_TIME + 8].copy_from_slice(&self.start_time.to_le_bytes());
        if let Some(session) = self.session {
            h[OFF_SESSION..OFF_SESSION + 10].copy_from_slice(&session);
            h[OFF_HAS_SESSION] = 1;
        }
        if let Some(addr) = self.rerequest {
            let (family, ip) = match addr.ip() {
                IpAddr::V4(ip) => (4u8, ip.to_ipv6_mapped().octets()),
                IpAddr::V6(ip) => (6u8, ip.octets()),
            };
            h[OFF_RR_FAMILY] = family;
            h[OFF_RR_PORT..OFF_RR_PORT + 2].copy_from_slice(&addr.port().to_le_bytes());
            h[OFF_RR_ADDR..OFF_RR_ADDR + 16].copy_from_slice(&ip);
        }
        h
    }

    /// Checks a header's fixed fields (`bytes`: a copy of its first [`OFF_INTENT`]
    /// bytes) against what this version writes, for a file of `file_len` bytes.
    pub(crate) fn check(bytes: &[u8], file_len: u64) -> Result<Layout, Refused> {
        if bytes.len() < OFF_INTENT || bytes[..8] != MAGIC {
            return Err(Refused::Magic);
        }
        let version = u32_at(bytes, OFF_VERSION);
        if version != VERSION {
            return Err(Refused::Version(version));
        }
        let field = |name: &str, found: u64, want: u64| {
            if found == want {
                Ok(())
            } else {
                Err(Refused::Layout(format!("{name} {found}, expected {want}")))
            }
        };
        field(
            "header length",
            u32_at(bytes, OFF_HEADER_LEN).into(),
            HEADER_LEN as u64,
        )?;
        field("alignment", u32_at(bytes, OFF_ALIGN).into(), ALIGN as u64)?;
        field(
            "record header length",
            u32_at(bytes, OFF_RECORD_HEADER).into(),
            RECORD_HEADER as u64,
        )?;
        field(
            "block table length",
            u32_at(bytes, OFF_BLOCKS).into(),
            BLOCKS as u64,
        )?;
        let capacity = u64_at(bytes, OFF_CAPACITY);
        if !capacity.is_power_of_two()
            || capacity < super::IpcConfig::MIN_CAPACITY as u64
            || capacity > super::IpcConfig::MAX_CAPACITY as u64
        {
            return Err(Refused::Layout(format!(
                "capacity {capacity} is not a power of two between {} and {}",
                super::IpcConfig::MIN_CAPACITY,
                super::IpcConfig::MAX_CAPACITY
            )));
        }
        field("file length", file_len, HEADER_LEN as u64 + capacity)?;
        let capacity = capacity as usize;
        field(
            "largest payload",
            u32_at(bytes, OFF_MAX_PAYLOAD).into(),
            max_payload(capacity) as u64,
        )?;
        let session = (bytes[OFF_HAS_SESSION] == 1).then(|| {
            let mut s = [0u8; 10];
            s.copy_from_slice(&bytes[OFF_SESSION..OFF_SESSION + 10]);
            s
        });
        let port = u16::from_le_bytes([bytes[OFF_RR_PORT], bytes[OFF_RR_PORT + 1]]);
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&bytes[OFF_RR_ADDR..OFF_RR_ADDR + 16]);
        let rerequest = match bytes[OFF_RR_FAMILY] {
            4 => Some(SocketAddr::new(
                IpAddr::V4(
                    Ipv6Addr::from(ip)
                        .to_ipv4_mapped()
                        .unwrap_or(Ipv4Addr::UNSPECIFIED),
                ),
                port,
            )),
            6 => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
            _ => None,
        };
        Ok(Layout {
            capacity,
            pid: u32_at(bytes, OFF_PID),
            start_time: u64_at(bytes, OFF_START_TIME),
            session,
            rerequest,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn layout() -> Layout {
        Layout {
            capacity: 1 << 20,
            pid: 42,
            start_time: 7,
            session: Some(*b"FEED1     "),
            rerequest: Some("127.0.0.1:9000".parse().unwrap()),
        }
    }

    #[test]
    fn a_header_reads_back_as_written() {
        let h = layout().encode();
        assert_eq!(
            Layout::check(&h, (HEADER_LEN + (1 << 20)) as u64),
            Ok(layout())
        );
    }

    #[test]
    fn every_byte_of_a_header_changed_is_refused_or_read_without_panic() {
        let good = layout().encode();
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut h = good;
                h[at] ^= 1 << bit;
                let _ = Layout::check(&h, (HEADER_LEN + (1 << 20)) as u64);
            }
        }
        let mut h = good;
        h[0] = b'X';
        assert_eq!(Layout::check(&h, 0), Err(Refused::Magic));
        let mut h = good;
        h[OFF_VERSION] = 9;
        assert_eq!(Layout::check(&h, 0), Err(Refused::Version(9)));
        assert!(matches!(Layout::check(&good, 5), Err(Refused::Layout(_))));
        assert_eq!(Layout::check(&good[..10], 0), Err(Refused::Magic));
    }

    #[test]
    fn a_first_word_splits_into_its_kind_and_length() {
        assert_eq!(split_first_word(first_word(GAP, 16)), (GAP, 16));
        assert!(is_pad(pad_word()));
        assert!(!is_pad(first_word(MESSAGE, 0)));
        assert_eq!(record_len(32), 56);
        assert_eq!(record_len(0), 24);
        assert_eq!(record_len(1), 32);
    }
}
