//! MoldUDP64 framing (sans-IO).
//!
//! [`frame`] holds the layer below, for the AF_XDP backend: raw Ethernet/IPv4/IPv6/UDP
//! frames parsed down to their UDP payload (untrusted, every rejection a counted
//! [`frame::Discard`]) and header templates for the frames it sends. The rest of this
//! page is about MoldUDP64.
//!
//! MoldUDP64 (Nasdaq) carries numbered messages in UDP datagrams. A packet is a
//! 20-byte header — session (10 bytes ASCII, space-padded), sequence number of the
//! first message (u64 big-endian), message count (u16 big-endian) — followed by
//! `count` blocks, each a u16 big-endian length and that many bytes. A count of 0
//! is a heartbeat and 0xFFFF ends the session; both carry the next sequence number
//! and no blocks. Sequence numbers start at 1. A re-request is exactly 20 bytes:
//! session, first sequence number, number of messages wanted.
//!
//! # Contract
//!
//! - **Nothing here panics**, whatever the bytes. [`Packet::new_checked`] and
//!   [`ReRequest::new_checked`] accept a datagram only if it is exactly one
//!   well-formed packet (no short blocks, no trailing bytes, no sequence overflow);
//!   after that every accessor describes it exactly. Views made with
//!   `new_unchecked` never panic either: missing header fields read as zero and
//!   [`Packet::messages`] stops at the first short block.
//! - **Parsing and building do not allocate.** [`Messages`] borrows from the
//!   packet; [`PacketBuilder`], [`write_heartbeat`] and [`write_end_of_session`]
//!   write into buffers the caller owns. [`PacketBuilder`] holds no borrow between
//!   calls, so buffers can stay in a pool; give every call the same buffer.
//!   [`PacketRepr`], [`ReRequestRepr`] and [`pack_all`] allocate and are for tests
//!   and tools.
//! - **No I/O, no clock, no shared state**: every type is plain data, `Send` and
//!   `Sync` when its buffer is, and used from one thread at a time like any value.
//! - **Ordering**: messages come out of [`Packet::messages`] in wire order; the
//!   n-th (from 0) has sequence number `packet.sequence() + n`.
//!
//! ```
//! use multipoint_dataplane::wire::{pack_all, Packet, PacketKind, Session};
//!
//! let session = Session::new("FEED1")?;
//! let msgs: [&[u8]; 3] = [b"one", b"two", b"three"];
//! let packets = pack_all(&session, 1, 32, msgs)?;
//! assert_eq!(packets.len(), 2, "a 32-byte datagram holds at most 12 bytes of blocks");
//!
//! let mut next = 1;
//! for bytes in &packets {
//!     let packet = Packet::new_checked(&bytes[..])?;
//!     assert_eq!(packet.kind(), PacketKind::Data);
//!     assert_eq!(packet.sequence(), next);
//!     next = packet.next_sequence();
//! }
//! assert_eq!(next, 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod frame;
mod moldudp64;

pub use moldudp64::{
    pack_all, write_end_of_session, write_heartbeat, Messages, Packet, PacketBuilder, PacketKind,
    PacketRepr, PushError, ReRequest, ReRequestRepr, Session, WireError, BLOCK_HEADER_LEN,
    DEFAULT_MAX_DATAGRAM, END_OF_SESSION_COUNT, HEADER_LEN, HEARTBEAT_COUNT, MAX_MESSAGE_COUNT,
    MAX_MESSAGE_LEN, REREQUEST_LEN, SESSION_LEN,
};
