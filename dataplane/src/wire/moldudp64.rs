//! MoldUDP64 packets and re-requests: typed views over bytes, an allocation-free
//! builder, and owned representations for tests and tools.
//!
//! See the [module documentation of `wire`](super) for the contract.

use core::fmt;
use core::ops::Range;
use core::str::FromStr;

/// Length of the MoldUDP64 header: session, sequence number and message count.
pub const HEADER_LEN: usize = 20;

/// Length of the session field, in bytes.
pub const SESSION_LEN: usize = 10;

/// Length of the big-endian length that precedes every message block.
pub const BLOCK_HEADER_LEN: usize = 2;

/// Message count of a heartbeat packet.
pub const HEARTBEAT_COUNT: u16 = 0;

/// Message count of an end-of-session packet.
pub const END_OF_SESSION_COUNT: u16 = 0xFFFF;

/// Largest message count of a data packet (one less than [`END_OF_SESSION_COUNT`]).
pub const MAX_MESSAGE_COUNT: u16 = 0xFFFE;

/// Default maximum UDP payload: a 1500-byte Ethernet MTU minus the IPv4 and UDP
/// headers.
pub const DEFAULT_MAX_DATAGRAM: usize = 1472;

/// Length of a re-request packet: session, first sequence number and count.
pub const REREQUEST_LEN: usize = 20;

/// Largest message a block length can describe.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;

/// Byte ranges of the header fields, shared by packets and re-requests.
mod field {
    use core::ops::{Range, RangeFrom};

    pub(super) const SESSION: Range<usize> = 0..10;
    pub(super) const SEQUENCE: Range<usize> = 10..18;
    pub(super) const COUNT: Range<usize> = 18..20;
    pub(super) const PAYLOAD: RangeFrom<usize> = 20..;
}

/// Everything that can be wrong with a MoldUDP64 packet, a re-request, a session
/// name, or a buffer given to write one into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The packet is shorter than the 20-byte header.
    #[error("packet is {len} bytes, shorter than the {HEADER_LEN}-byte MoldUDP64 header")]
    Truncated {
        /// Length of the packet.
        len: usize,
    },

    /// The packet ends inside the 2-byte length of a message block.
    #[error(
        "packet is {len} bytes but declares {count} messages: it ends inside the \
         {BLOCK_HEADER_LEN}-byte length of message block {index}, which starts at byte {offset}"
    )]
    BlockHeaderTruncated {
        /// Zero-based index of the block.
        index: u16,
        /// Message count in the header.
        count: u16,
        /// Offset of the block in the packet.
        offset: usize,
        /// Length of the packet.
        len: usize,
    },

    /// A message block declares more bytes than the packet has left.
    #[error(
        "message block {index} of {count} declares {declared} bytes but only {available} \
         remain in the packet"
    )]
    BlockTruncated {
        /// Zero-based index of the block.
        index: u16,
        /// Message count in the header.
        count: u16,
        /// Length the block declares.
        declared: usize,
        /// Bytes left in the packet after the block's length.
        available: usize,
    },

    /// Bytes follow the last declared message block.
    #[error(
        "packet has {extra} bytes after its {count} declared message blocks: the count or a \
         block length is wrong"
    )]
    TrailingBytes {
        /// Message count in the header.
        count: u16,
        /// Number of bytes after the last block.
        extra: usize,
    },

    /// A heartbeat or end-of-session packet carries bytes after the header.
    #[error(
        "{kind} packet carries {extra} bytes after the header; heartbeats and end-of-session \
         packets carry none"
    )]
    ControlWithPayload {
        /// Kind of the packet.
        kind: PacketKind,
        /// Number of bytes after the header.
        extra: usize,
    },

    /// The sequence number plus the message count does not fit in 64 bits.
    #[error(
        "sequence number {sequence} plus {count} messages overflows 64 bits: the session \
         cannot go on"
    )]
    SequenceOverflow {
        /// First sequence number.
        sequence: u64,
        /// Message count.
        count: u16,
    },

    /// A re-request is not exactly 20 bytes long.
    #[error("re-request is {len} bytes; a MoldUDP64 re-request is exactly {REREQUEST_LEN}")]
    ReRequestLength {
        /// Length of the datagram.
        len: usize,
    },

    /// A buffer given to write into is too short.
    #[error("buffer is {len} bytes but {needed} are needed")]
    BufferTooSmall {
        /// Length of the buffer.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },

    /// A session name is empty, or only spaces.
    #[error("session name is empty: give 1 to {SESSION_LEN} printable ASCII characters")]
    SessionEmpty,

    /// A session name is longer than 10 bytes.
    #[error(
        "session name is {len} bytes, longer than the {SESSION_LEN} a MoldUDP64 session holds"
    )]
    SessionTooLong {
        /// Length of the name in bytes.
        len: usize,
    },

    /// A session name contains a byte that is not printable ASCII.
    #[error("session name byte {index} is {byte:#04x}, not printable ASCII (0x20 to 0x7e)")]
    SessionNotPrintable {
        /// Zero-based position of the byte.
        index: usize,
        /// The byte.
        byte: u8,
    },

    /// A message is longer than a 16-bit block length can describe.
    #[error(
        "message {index} is {len} bytes, longer than the {MAX_MESSAGE_LEN} a block length can say"
    )]
    MessageTooLong {
        /// Zero-based index of the message.
        index: usize,
        /// Length of the message.
        len: usize,
    },

    /// A packet representation's kind does not agree with its number of messages.
    #[error(
        "a {kind} packet cannot carry {count} messages: data packets carry 1 to \
         {MAX_MESSAGE_COUNT}, heartbeats and end-of-session packets none"
    )]
    MessageCount {
        /// Kind of the packet.
        kind: PacketKind,
        /// Number of messages given.
        count: usize,
    },
}

/// Why a message could not be added to a [`PacketBuilder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The message does not fit in what is left of this packet: finish and send
    /// it, then start a new one with the message.
    #[error("packet is full: finish and send it, then start a new packet for this message")]
    Full,

    /// The message can never fit a packet of this capacity, even an empty one.
    #[error(
        "a {len}-byte message can never fit a {capacity}-byte MoldUDP64 packet ({HEADER_LEN}-byte \
         header, {BLOCK_HEADER_LEN}-byte block length, at most {MAX_MESSAGE_LEN} bytes per \
         message): split it or raise the datagram size"
    )]
    TooLarge {
        /// Length of the message.
        len: usize,
        /// Capacity of the packet.
        capacity: usize,
    },

    /// The next sequence number would overflow 64 bits: end the session.
    #[error("sequence numbers are exhausted: end this session and start a new one")]
    SequenceExhausted,
}

/// Reads `N` bytes at `range`, or zeros if the buffer is too short.
fn read_array<const N: usize>(data: &[u8], range: Range<usize>) -> [u8; N] {
    data.get(range)
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .unwrap_or([0; N])
}

/// Writes `bytes` at `range`; returns false and writes nothing if it does not fit.
fn write_at(data: &mut [u8], start: usize, bytes: &[u8]) -> bool {
    let end = start.saturating_add(bytes.len());
    match data.get_mut(start..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Writes a complete 20-byte header at the start of `buf`.
fn write_header(
    buf: &mut [u8],
    session: &Session,
    sequence: u64,
    count: u16,
) -> Result<(), WireError> {
    let len = buf.len();
    let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::BufferTooSmall {
        len,
        needed: HEADER_LEN,
    })?;
    write_at(header, field::SESSION.start, session.as_bytes());
    write_at(header, field::SEQUENCE.start, &sequence.to_be_bytes());
    write_at(header, field::COUNT.start, &count.to_be_bytes());
    Ok(())
}

/// A MoldUDP64 session name: 10 bytes, by convention printable ASCII padded with
/// spaces on the right.
///
/// [`Session::new`] checks a name given by a person; [`Session::from_bytes`] takes
/// whatever arrived off the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Session([u8; SESSION_LEN]);

impl Session {
    /// Makes a session from a name of 1 to 10 printable ASCII characters, padding it
    /// with spaces on the right. Trailing spaces count as padding, so a name of
    /// only spaces is empty.
    ///
    /// ```
    /// use multipoint_dataplane::wire::Session;
    /// let session = Session::new("NASDAQ")?;
    /// assert_eq!(session.as_bytes(), b"NASDAQ    ");
    /// assert!(Session::new("ELEVEN-CHAR").is_err());
    /// # Ok::<(), multipoint_dataplane::wire::WireError>(())
    /// ```
    pub fn new(name: &str) -> Result<Session, WireError> {
        let bytes = name.as_bytes();
        if let Some((index, &byte)) = bytes.iter().enumerate().find(|(_, b)| !is_printable(**b)) {
            return Err(WireError::SessionNotPrintable { index, byte });
        }
        let trimmed = trim_padding(bytes);
        if trimmed.is_empty() {
            return Err(WireError::SessionEmpty);
        }
        if trimmed.len() > SESSION_LEN {
            return Err(WireError::SessionTooLong { len: trimmed.len() });
        }
        let mut out = [b' '; SESSION_LEN];
        write_at(&mut out, 0, trimmed);
        Ok(Session(out))
    }

    /// Takes the session bytes exactly as they arrived, whatever they are.
    pub const fn from_bytes(bytes: [u8; SESSION_LEN]) -> Session {
        Session(bytes)
    }

    /// The 10 bytes as they go on the wire.
    pub const fn as_bytes(&self) -> &[u8; SESSION_LEN] {
        &self.0
    }

    /// The name without its trailing space padding.
    pub fn trimmed(&self) -> &[u8] {
        trim_padding(&self.0)
    }
}

fn is_printable(byte: u8) -> bool {
    (0x20..=0x7e).contains(&byte)
}

fn trim_padding(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(0, |last| last + 1);
    bytes.get(..end).unwrap_or(&[])
}

impl fmt::Display for Session {
    /// Shows the name without trailing spaces; bytes that are not printable ASCII
    /// appear as `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.trimmed() {
            if is_printable(byte) {
                write!(f, "{}", char::from(byte))?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session(\"{self}\")")
    }
}

impl FromStr for Session {
    type Err = WireError;

    /// Same as [`Session::new`].
    fn from_str(name: &str) -> Result<Session, WireError> {
        Session::new(name)
    }
}

/// What a packet is, from its message count.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PacketKind {
    /// 1 to 65534 messages.
    Data,
    /// No messages; the sequence number is the next one the publisher will send.
    Heartbeat,
    /// The session is over; the sequence number is one past the last message.
    EndOfSession,
}

impl PacketKind {
    /// The kind a header's message count means.
    pub const fn from_count(count: u16) -> PacketKind {
        match count {
            HEARTBEAT_COUNT => PacketKind::Heartbeat,
            END_OF_SESSION_COUNT => PacketKind::EndOfSession,
            _ => PacketKind::Data,
        }
    }
}

impl fmt::Display for PacketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PacketKind::Data => "data",
            PacketKind::Heartbeat => "heartbeat",
            PacketKind::EndOfSession => "end-of-session",
        })
    }
}

/// What a packet view and a re-request view share: construction, the three header
/// fields (at the same offsets in both), and the buffer. One definition for both views;
/// each gives the documentation of its own fields.
macro_rules! header_views {
    ($(
        $view:ident {
            checked: $checked:literal,
            session: $session:literal,
            sequence: $sequence:literal,
            count: $count:literal,
            bytes: $bytes:literal $(,)?
        }
    )+) => {$(
        impl<T: AsRef<[u8]>> $view<T> {
            /// Wraps a buffer without checking it.
            pub const fn new_unchecked(buffer: T) -> $view<T> {
                $view { buffer }
            }

            #[doc = $checked]
            pub fn new_checked(buffer: T) -> Result<$view<T>, WireError> {
                let view = $view::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            #[doc = $session]
            pub fn session(&self) -> Session {
                Session(read_array(self.buffer.as_ref(), field::SESSION))
            }

            #[doc = $sequence]
            pub fn sequence(&self) -> u64 {
                u64::from_be_bytes(read_array(self.buffer.as_ref(), field::SEQUENCE))
            }

            #[doc = $count]
            pub fn count(&self) -> u16 {
                u16::from_be_bytes(read_array(self.buffer.as_ref(), field::COUNT))
            }

            #[doc = $bytes]
            pub fn as_bytes(&self) -> &[u8] {
                self.buffer.as_ref()
            }

            /// Gives the buffer back.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    )+};
}

header_views! {
    Packet {
        checked: "Wraps a buffer after checking that it is exactly one well-formed packet \
                  (see [`Packet::check_len`]).",
        session: "The session the packet belongs to.",
        sequence: "The sequence number of the first message; for a heartbeat or \
                   end-of-session packet, the next sequence number.",
        count: "The message count exactly as in the header (0 and 0xFFFF included).",
        bytes: "The whole packet.",
    }
    ReRequest {
        checked: "Wraps a buffer after checking it (see [`ReRequest::check_len`]).",
        session: "The session asked about.",
        sequence: "Sequence number of the first message requested.",
        count: "Number of messages requested.",
        bytes: "The whole request.",
    }
}

/// A read-only view of a MoldUDP64 packet in a buffer.
///
/// Make it with [`Packet::new_checked`] for anything that came off the network;
/// after that every accessor describes the packet exactly. Accessors never panic,
/// even on a [`Packet::new_unchecked`] view of a short buffer: header fields that
/// are missing read as zero and [`Packet::messages`] stops at the first block that
/// does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the buffer holds exactly one well-formed packet: a whole header;
    /// for a data packet, every declared block inside the buffer and nothing after
    /// the last; for a heartbeat or end-of-session packet, nothing after the
    /// header; and a sequence number that can be followed by all the messages
    /// without overflowing.
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        let len = data.len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated { len });
        }
        let count = self.count();
        let kind = self.kind();
        if kind != PacketKind::Data {
            if len != HEADER_LEN {
                return Err(WireError::ControlWithPayload {
                    kind,
                    extra: len - HEADER_LEN,
                });
            }
            return Ok(());
        }
        if self.sequence().checked_add(u64::from(count)).is_none() {
            return Err(WireError::SequenceOverflow {
                sequence: self.sequence(),
                count,
            });
        }
        let mut offset = HEADER_LEN;
        for index in 0..count {
            let body = offset + BLOCK_HEADER_LEN;
            let Some(&[hi, lo]) = data.get(offset..body) else {
                return Err(WireError::BlockHeaderTruncated {
                    index,
                    count,
                    offset,
                    len,
                });
            };
            let declared = usize::from(u16::from_be_bytes([hi, lo]));
            let available = len - body;
            if declared > available {
                return Err(WireError::BlockTruncated {
                    index,
                    count,
                    declared,
                    available,
                });
            }
            offset = body + declared;
        }
        if offset != len {
            return Err(WireError::TrailingBytes {
                count,
                extra: len - offset,
            });
        }
        Ok(())
    }

    /// Whether this is a data, heartbeat or end-of-session packet.
    pub fn kind(&self) -> PacketKind {
        PacketKind::from_count(self.count())
    }

    /// Number of messages carried: the count for a data packet, 0 otherwise.
    pub fn message_count(&self) -> u16 {
        match self.kind() {
            PacketKind::Data => self.count(),
            PacketKind::Heartbeat | PacketKind::EndOfSession => 0,
        }
    }

    /// The sequence number that follows this packet's messages. On a checked
    /// packet this cannot overflow; on an unchecked one it saturates.
    pub fn next_sequence(&self) -> u64 {
        self.sequence()
            .saturating_add(u64::from(self.message_count()))
    }

    /// The message blocks, in order, borrowed from the buffer. Pair them with
    /// sequence numbers by zipping with `packet.sequence()..`.
    pub fn messages(&self) -> Messages<'_> {
        Messages {
            rest: self.buffer.as_ref().get(field::PAYLOAD).unwrap_or(&[]),
            remaining: self.message_count(),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Like [`Packet::messages`], but borrowing from the underlying buffer rather
    /// than from this view, so the messages can outlive it.
    pub fn into_messages(self) -> Messages<'a> {
        let count = self.message_count();
        Messages {
            rest: self.buffer.as_ref().get(field::PAYLOAD).unwrap_or(&[]),
            remaining: count,
        }
    }
}

/// Iterator over the message blocks of a [`Packet`], yielding each message without
/// its length prefix.
///
/// On a checked packet it yields exactly [`Packet::message_count`] items; on an
/// unchecked one it stops early at a block that runs past the end of the buffer.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for Messages<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        let block = self
            .rest
            .split_first_chunk::<BLOCK_HEADER_LEN>()
            .and_then(|(len, rest)| {
                let len = usize::from(u16::from_be_bytes(*len));
                rest.split_at_checked(len)
            });
        match block {
            Some((message, rest)) => {
                self.rest = rest;
                self.remaining -= 1;
                Some(message)
            }
            None => {
                self.rest = &[];
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

impl core::iter::FusedIterator for Messages<'_> {}

/// Builds a data packet in a caller's buffer, one message at a time, without
/// allocating and without holding a borrow between calls.
///
/// [`PacketBuilder::start`] writes the header; [`PacketBuilder::push`] appends
/// messages; [`PacketBuilder::finish`] writes the message count and returns the
/// packet's length. Each call must be given the same buffer (or one at least as
/// long with the same contents): a publisher can keep the builder next to a pooled
/// buffer and lend the buffer in for each call. Given a different buffer, debug
/// builds panic on the length check and release builds write a wrong packet, never
/// out of bounds.
///
/// ```
/// use multipoint_dataplane::wire::{Packet, PacketBuilder, PushError, Session, DEFAULT_MAX_DATAGRAM};
///
/// let session = Session::new("FEED1")?;
/// let mut buf = [0u8; DEFAULT_MAX_DATAGRAM];
/// let mut builder = PacketBuilder::start(&mut buf, &session, 1)?;
/// for msg in [&b"hello"[..], b"world"] {
///     match builder.push(&mut buf, msg) {
///         Ok(()) => {}
///         Err(PushError::Full) => { /* send, then start a new packet */ }
///         Err(other) => return Err(other.into()),
///     }
/// }
/// let len = builder.finish(&mut buf);
///
/// let packet = Packet::new_checked(&buf[..len])?;
/// assert_eq!(packet.messages().collect::<Vec<_>>(), [b"hello", b"world"]);
/// assert_eq!(packet.next_sequence(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketBuilder {
    capacity: usize,
    len: usize,
    count: u16,
    first_sequence: u64,
}

impl PacketBuilder {
    /// Writes the header of a packet whose first message will have
    /// `first_sequence`. The packet may use all of `buf`: to stay within a
    /// datagram size, pass `&mut buf[..max_datagram]`.
    pub fn start(
        buf: &mut [u8],
        session: &Session,
        first_sequence: u64,
    ) -> Result<PacketBuilder, WireError> {
        write_header(buf, session, first_sequence, HEARTBEAT_COUNT)?;
        Ok(PacketBuilder {
            capacity: buf.len(),
            len: HEADER_LEN,
            count: 0,
            first_sequence,
        })
    }

    /// Appends a message.
    ///
    /// Fails with [`PushError::Full`] when it does not fit in what is left (the
    /// packet is unchanged: finish and send it, then push the message into a new
    /// one), [`PushError::TooLarge`] when it cannot fit even an empty packet of
    /// this capacity, and [`PushError::SequenceExhausted`] when its sequence number
    /// would not leave room for a next one.
    pub fn push(&mut self, buf: &mut [u8], msg: &[u8]) -> Result<(), PushError> {
        self.push_inline(buf, msg)
    }

    /// [`push`](Self::push), always inlined: for the packetizer, whose offer has two
    /// paths that push (with two call sites LLVM stopped inlining `push` into the common
    /// one: 160 instructions a message instead of 117). Other callers keep `push`, left
    /// to the inliner (forcing it into the `encode_32B` bench's loop made that 10% slower).
    #[inline(always)]
    pub(crate) fn push_inline(&mut self, buf: &mut [u8], msg: &[u8]) -> Result<(), PushError> {
        debug_assert!(
            buf.len() >= self.capacity,
            "PacketBuilder::push given a {}-byte buffer, not the {}-byte one it started in",
            buf.len(),
            self.capacity
        );
        let too_large = PushError::TooLarge {
            len: msg.len(),
            capacity: self.capacity,
        };
        let block_len = u16::try_from(msg.len()).map_err(|_| too_large)?;
        if HEADER_LEN + BLOCK_HEADER_LEN + msg.len() > self.capacity {
            return Err(too_large);
        }
        if !self.fits_now(msg.len()) {
            return Err(PushError::Full);
        }
        if self
            .first_sequence
            .checked_add(u64::from(self.count) + 1)
            .is_none()
        {
            return Err(PushError::SequenceExhausted);
        }
        let body = self.len + BLOCK_HEADER_LEN;
        // Writing into a wrong, shorter buffer reports Full rather than panicking.
        if buf.len() < body + msg.len() {
            return Err(PushError::Full);
        }
        write_at(buf, self.len, &block_len.to_be_bytes());
        write_at(buf, body, msg);
        self.len = body + msg.len();
        self.count += 1;
        Ok(())
    }

    fn fits_now(&self, msg_len: usize) -> bool {
        self.count < MAX_MESSAGE_COUNT
            && msg_len <= MAX_MESSAGE_LEN
            && BLOCK_HEADER_LEN + msg_len <= self.remaining()
    }

    /// Whether a message of `msg_len` bytes would be accepted by
    /// [`PacketBuilder::push`] now.
    pub fn fits(&self, msg_len: usize) -> bool {
        self.fits_now(msg_len)
            && self
                .first_sequence
                .checked_add(u64::from(self.count) + 1)
                .is_some()
    }

    /// Writes the message count and returns the packet's length: send
    /// `&buf[..len]`. A builder with no messages yields a heartbeat for
    /// [`PacketBuilder::first_sequence`]. More messages may be pushed afterwards;
    /// call `finish` again.
    pub fn finish(&mut self, buf: &mut [u8]) -> usize {
        debug_assert!(
            buf.len() >= self.capacity,
            "PacketBuilder::finish given a {}-byte buffer, not the {}-byte one it started in",
            buf.len(),
            self.capacity
        );
        write_at(buf, field::COUNT.start, &self.count.to_be_bytes());
        self.len
    }

    /// Length of the packet so far, header included.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Number of messages pushed.
    pub const fn count(&self) -> u16 {
        self.count
    }

    /// Whether no message has been pushed.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the buffer still free. A message of `n` bytes takes
    /// `n + BLOCK_HEADER_LEN` of them.
    pub const fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Length of the buffer the packet was started in.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sequence number of the first message.
    pub const fn first_sequence(&self) -> u64 {
        self.first_sequence
    }

    /// Sequence number the next message pushed will have (after finishing, the
    /// first sequence number of the next packet).
    pub const fn next_sequence(&self) -> u64 {
        self.first_sequence.saturating_add(self.count as u64)
    }
}

/// Writes a heartbeat announcing `next_sequence` into the start of `buf` and
/// returns its length, [`HEADER_LEN`].
pub fn write_heartbeat(
    buf: &mut [u8],
    session: &Session,
    next_sequence: u64,
) -> Result<usize, WireError> {
    write_header(buf, session, next_sequence, HEARTBEAT_COUNT)?;
    Ok(HEADER_LEN)
}

/// Writes an end-of-session packet carrying `next_sequence` (one past the last
/// message) into the start of `buf` and returns its length, [`HEADER_LEN`].
pub fn write_end_of_session(
    buf: &mut [u8],
    session: &Session,
    next_sequence: u64,
) -> Result<usize, WireError> {
    write_header(buf, session, next_sequence, END_OF_SESSION_COUNT)?;
    Ok(HEADER_LEN)
}

/// Packs `messages` in order into as few data packets as fit `max_datagram` bytes
/// each, numbering them from `first_sequence`. No messages give no packets.
///
/// Allocates every packet: for tests and tools, not for the hot path (use
/// [`PacketBuilder`] there).
pub fn pack_all<'a>(
    session: &Session,
    first_sequence: u64,
    max_datagram: usize,
    messages: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Vec<u8>>, PushError> {
    let mut packets = Vec::new();
    let mut current: Option<(Vec<u8>, PacketBuilder)> = None;
    let mut next_sequence = first_sequence;
    for msg in messages {
        if let Some((buf, builder)) = current.as_mut() {
            match builder.push(buf, msg) {
                Ok(()) => continue,
                Err(PushError::Full) => {
                    let len = builder.finish(buf);
                    next_sequence = builder.next_sequence();
                    buf.truncate(len);
                    packets.push(core::mem::take(buf));
                }
                Err(other) => return Err(other),
            }
        }
        let mut buf = vec![0; max_datagram];
        let mut builder = PacketBuilder::start(&mut buf, session, next_sequence).map_err(|_| {
            PushError::TooLarge {
                len: msg.len(),
                capacity: max_datagram,
            }
        })?;
        // A fresh packet is never full: this fails only for a message that can
        // never fit or an exhausted sequence.
        builder.push(&mut buf, msg)?;
        current = Some((buf, builder));
    }
    if let Some((mut buf, mut builder)) = current {
        let len = builder.finish(&mut buf);
        buf.truncate(len);
        packets.push(buf);
    }
    Ok(packets)
}

/// An owned, parsed MoldUDP64 packet, for tests and tools (it allocates).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PacketRepr {
    /// The session.
    pub session: Session,
    /// First sequence number (data) or next sequence number (heartbeat,
    /// end-of-session).
    pub sequence: u64,
    /// What the packet is.
    pub kind: PacketKind,
    /// The messages: 1 to 65534 for data, none otherwise.
    pub messages: Vec<Vec<u8>>,
}

impl PacketRepr {
    /// Checks the packet and copies it out.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<PacketRepr, WireError> {
        packet.check_len()?;
        Ok(PacketRepr {
            session: packet.session(),
            sequence: packet.sequence(),
            kind: packet.kind(),
            messages: packet.messages().map(<[u8]>::to_vec).collect(),
        })
    }

    /// Length of the emitted packet (the messages count only for a data packet).
    pub fn buffer_len(&self) -> usize {
        match self.kind {
            PacketKind::Data => self.messages.iter().fold(HEADER_LEN, |len, msg| {
                len.saturating_add(BLOCK_HEADER_LEN)
                    .saturating_add(msg.len())
            }),
            PacketKind::Heartbeat | PacketKind::EndOfSession => HEADER_LEN,
        }
    }

    /// The header's message count, after checking that the kind, the messages and
    /// the sequence number agree.
    fn wire_count(&self) -> Result<u16, WireError> {
        let mismatch = WireError::MessageCount {
            kind: self.kind,
            count: self.messages.len(),
        };
        match self.kind {
            PacketKind::Heartbeat if self.messages.is_empty() => Ok(HEARTBEAT_COUNT),
            PacketKind::EndOfSession if self.messages.is_empty() => Ok(END_OF_SESSION_COUNT),
            PacketKind::Heartbeat | PacketKind::EndOfSession => Err(mismatch),
            PacketKind::Data => {
                let count = u16::try_from(self.messages.len())
                    .ok()
                    .filter(|count| (1..=MAX_MESSAGE_COUNT).contains(count))
                    .ok_or(mismatch)?;
                if let Some((index, msg)) = self
                    .messages
                    .iter()
                    .enumerate()
                    .find(|(_, msg)| msg.len() > MAX_MESSAGE_LEN)
                {
                    return Err(WireError::MessageTooLong {
                        index,
                        len: msg.len(),
                    });
                }
                if self.sequence.checked_add(u64::from(count)).is_none() {
                    return Err(WireError::SequenceOverflow {
                        sequence: self.sequence,
                        count,
                    });
                }
                Ok(count)
            }
        }
    }

    /// Writes the packet into the start of `buf` and returns its length. Fails if
    /// the kind and the messages disagree, a message is too long, the sequence
    /// would overflow, or `buf` is shorter than [`PacketRepr::buffer_len`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let count = self.wire_count()?;
        let needed = self.buffer_len();
        if buf.len() < needed {
            return Err(WireError::BufferTooSmall {
                len: buf.len(),
                needed,
            });
        }
        write_header(buf, &self.session, self.sequence, count)?;
        let mut offset = HEADER_LEN;
        if self.kind == PacketKind::Data {
            for msg in &self.messages {
                // Lengths were checked by wire_count.
                let block_len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
                write_at(buf, offset, &block_len.to_be_bytes());
                write_at(buf, offset + BLOCK_HEADER_LEN, msg);
                offset += BLOCK_HEADER_LEN + msg.len();
            }
        }
        Ok(offset)
    }
}

/// A read-only view of a MoldUDP64 re-request: a subscriber asking a re-request
/// server for `count` messages from `sequence`.
///
/// Accessors never panic; on an unchecked short buffer missing fields read as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReRequest<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ReRequest<T> {
    /// Checks that the buffer is exactly 20 bytes and that the requested range
    /// does not run past the largest sequence number.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len != REREQUEST_LEN {
            return Err(WireError::ReRequestLength { len });
        }
        if self
            .sequence()
            .checked_add(u64::from(self.count()))
            .is_none()
        {
            return Err(WireError::SequenceOverflow {
                sequence: self.sequence(),
                count: self.count(),
            });
        }
        Ok(())
    }
}

/// An owned MoldUDP64 re-request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReRequestRepr {
    /// The session asked about.
    pub session: Session,
    /// Sequence number of the first message requested.
    pub sequence: u64,
    /// Number of messages requested.
    pub count: u16,
}

impl ReRequestRepr {
    /// Checks the request and copies it out.
    pub fn parse<T: AsRef<[u8]>>(request: &ReRequest<T>) -> Result<ReRequestRepr, WireError> {
        request.check_len()?;
        Ok(ReRequestRepr {
            session: request.session(),
            sequence: request.sequence(),
            count: request.count(),
        })
    }

    /// Length of the emitted request, [`REREQUEST_LEN`].
    pub const fn buffer_len(&self) -> usize {
        REREQUEST_LEN
    }

    /// Writes the request into the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        if self.sequence.checked_add(u64::from(self.count)).is_none() {
            return Err(WireError::SequenceOverflow {
                sequence: self.sequence,
                count: self.count,
            });
        }
        write_header(buf, &self.session, self.sequence, self.count)?;
        Ok(REREQUEST_LEN)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new("ABC").unwrap()
    }

    /// Session "ABC", first sequence 0x1_0000_0102, messages "hi", "" and "xyz".
    const HAND_WRITTEN: [u8; 31] = [
        b'A', b'B', b'C', b' ', b' ', b' ', b' ', b' ', b' ', b' ', // session
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x02, // sequence
        0x00, 0x03, // count
        0x00, 0x02, b'h', b'i', // "hi"
        0x00, 0x00, // ""
        0x00, 0x03, b'x', b'y', b'z', // "xyz"
    ];
    const HAND_WRITTEN_SEQUENCE: u64 = 0x1_0000_0102;

    #[test]
    fn a_session_is_padded_with_spaces_on_the_right() {
        assert_eq!(session().as_bytes(), b"ABC       ");
        assert_eq!(
            Session::new("ABCDEFGHIJ").unwrap().as_bytes(),
            b"ABCDEFGHIJ"
        );
        assert_eq!(Session::new("ABC  ").unwrap(), session());
        assert_eq!("ABC".parse::<Session>().unwrap(), session());
    }

    #[test]
    fn a_session_name_must_be_one_to_ten_printable_ascii_bytes() {
        assert_eq!(Session::new(""), Err(WireError::SessionEmpty));
        assert_eq!(Session::new("   "), Err(WireError::SessionEmpty));
        assert_eq!(
            Session::new("ABCDEFGHIJK"),
            Err(WireError::SessionTooLong { len: 11 })
        );
        assert_eq!(
            Session::new("AB\tC"),
            Err(WireError::SessionNotPrintable {
                index: 2,
                byte: b'\t'
            })
        );
        assert!(Session::new("é").is_err());
        let message = Session::new("AB\nC").unwrap_err().to_string();
        assert_eq!(
            message,
            "session name byte 2 is 0x0a, not printable ASCII (0x20 to 0x7e)"
        );
    }

    #[test]
    fn a_session_from_the_wire_displays_trimmed_and_escaped() {
        assert_eq!(session().to_string(), "ABC");
        assert_eq!(format!("{:?}", session()), "Session(\"ABC\")");
        let odd = Session::from_bytes(*b"A\0B\xff      ");
        assert_eq!(odd.to_string(), "A\\x00B\\xff");
        assert_eq!(odd.trimmed(), b"A\0B\xff");
        assert_eq!(Session::new(&session().to_string()).unwrap(), session());
    }

    #[test]
    fn a_data_packet_is_built_byte_for_byte() {
        let mut buf = [0xAAu8; 64];
        let mut builder =
            PacketBuilder::start(&mut buf, &session(), HAND_WRITTEN_SEQUENCE).unwrap();
        for msg in [&b"hi"[..], b"", b"xyz"] {
            builder.push(&mut buf, msg).unwrap();
        }
        let len = builder.finish(&mut buf);
        assert_eq!(&buf[..len], &HAND_WRITTEN[..]);
        assert_eq!(builder.count(), 3);
        assert_eq!(builder.next_sequence(), HAND_WRITTEN_SEQUENCE + 3);
    }

    #[test]
    fn a_hand_written_packet_parses_to_its_messages() {
        let packet = Packet::new_checked(&HAND_WRITTEN[..]).unwrap();
        assert_eq!(packet.session(), session());
        assert_eq!(packet.sequence(), HAND_WRITTEN_SEQUENCE);
        assert_eq!(packet.count(), 3);
        assert_eq!(packet.kind(), PacketKind::Data);
        assert_eq!(packet.message_count(), 3);
        assert_eq!(packet.next_sequence(), HAND_WRITTEN_SEQUENCE + 3);
        let messages: Vec<&[u8]> = packet.messages().collect();
        assert_eq!(messages, [&b"hi"[..], b"", b"xyz"]);
        assert_eq!(packet.as_bytes(), &HAND_WRITTEN[..]);
    }

    #[test]
    fn a_heartbeat_carries_the_next_sequence_number() {
        let mut buf = [0u8; 32];
        let len = write_heartbeat(&mut buf, &session(), 7).unwrap();
        assert_eq!(len, HEADER_LEN);
        let expected: [u8; 20] = [
            b'A', b'B', b'C', b' ', b' ', b' ', b' ', b' ', b' ', b' ', //
            0, 0, 0, 0, 0, 0, 0, 7, //
            0, 0,
        ];
        assert_eq!(buf[..len], expected);
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(packet.kind(), PacketKind::Heartbeat);
        assert_eq!(packet.sequence(), 7);
        assert_eq!(packet.next_sequence(), 7);
        assert_eq!(packet.message_count(), 0);
        assert_eq!(packet.messages().count(), 0);
    }

    #[test]
    fn an_end_of_session_packet_has_count_ffff_and_no_messages() {
        let mut buf = [0u8; HEADER_LEN];
        write_end_of_session(&mut buf, &session(), 42).unwrap();
        assert_eq!(buf[18..], [0xFF, 0xFF]);
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.kind(), PacketKind::EndOfSession);
        assert_eq!(packet.count(), END_OF_SESSION_COUNT);
        assert_eq!(packet.message_count(), 0);
        assert_eq!(packet.next_sequence(), 42);
        assert_eq!(packet.messages().next(), None);
    }

    #[test]
    fn writing_control_packets_into_a_short_buffer_fails() {
        let mut buf = [0u8; 19];
        let expected = Err(WireError::BufferTooSmall {
            len: 19,
            needed: 20,
        });
        assert_eq!(write_heartbeat(&mut buf, &session(), 1), expected);
        assert_eq!(write_end_of_session(&mut buf, &session(), 1), expected);
    }

    #[test]
    fn a_packet_shorter_than_the_header_is_rejected_with_its_length() {
        let err = Packet::new_checked(&HAND_WRITTEN[..13]).unwrap_err();
        assert_eq!(err, WireError::Truncated { len: 13 });
        assert_eq!(
            err.to_string(),
            "packet is 13 bytes, shorter than the 20-byte MoldUDP64 header"
        );
    }

    #[test]
    fn a_packet_ending_inside_a_block_length_is_rejected() {
        let err = Packet::new_checked(&HAND_WRITTEN[..25]).unwrap_err();
        assert_eq!(
            err,
            WireError::BlockHeaderTruncated {
                index: 1,
                count: 3,
                offset: 24,
                len: 25
            }
        );
        assert_eq!(
            err.to_string(),
            "packet is 25 bytes but declares 3 messages: it ends inside the 2-byte length of \
             message block 1, which starts at byte 24"
        );
    }

    #[test]
    fn a_block_that_runs_past_the_end_is_rejected() {
        let err = Packet::new_checked(&HAND_WRITTEN[..30]).unwrap_err();
        assert_eq!(
            err,
            WireError::BlockTruncated {
                index: 2,
                count: 3,
                declared: 3,
                available: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "message block 2 of 3 declares 3 bytes but only 2 remain in the packet"
        );
    }

    #[test]
    fn bytes_after_the_last_declared_block_are_rejected() {
        let mut long = HAND_WRITTEN.to_vec();
        long.push(0);
        assert_eq!(
            Packet::new_checked(&long[..]).unwrap_err(),
            WireError::TrailingBytes { count: 3, extra: 1 }
        );
        // The same bytes with a count of 2 leave the third block over.
        let mut fewer = HAND_WRITTEN;
        fewer[19] = 2;
        assert_eq!(
            Packet::new_checked(&fewer[..]).unwrap_err(),
            WireError::TrailingBytes { count: 2, extra: 5 }
        );
    }

    #[test]
    fn a_heartbeat_or_end_of_session_with_a_payload_is_rejected() {
        let mut heartbeat = HAND_WRITTEN;
        heartbeat[18..20].copy_from_slice(&[0, 0]);
        assert_eq!(
            Packet::new_checked(&heartbeat[..]).unwrap_err(),
            WireError::ControlWithPayload {
                kind: PacketKind::Heartbeat,
                extra: 11
            }
        );
        let mut end = HAND_WRITTEN;
        end[18..20].copy_from_slice(&[0xFF, 0xFF]);
        let err = Packet::new_checked(&end[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "end-of-session packet carries 11 bytes after the header; heartbeats and \
             end-of-session packets carry none"
        );
    }

    #[test]
    fn a_packet_whose_sequence_would_overflow_is_rejected() {
        let mut buf = HAND_WRITTEN;
        buf[10..18].copy_from_slice(&(u64::MAX - 2).to_be_bytes());
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::SequenceOverflow {
                sequence: u64::MAX - 2,
                count: 3
            }
        );
        buf[10..18].copy_from_slice(&(u64::MAX - 3).to_be_bytes());
        assert!(Packet::new_checked(&buf[..]).is_ok());
    }

    #[test]
    fn messages_of_an_unchecked_packet_stop_at_a_short_block() {
        let packet = Packet::new_unchecked(&HAND_WRITTEN[..30]);
        let messages: Vec<&[u8]> = packet.messages().collect();
        assert_eq!(messages, [&b"hi"[..], b""]);
        let mut iter = packet.messages();
        iter.by_ref().for_each(drop);
        assert_eq!(iter.next(), None);
    }

    #[test]
    fn header_fields_of_a_short_unchecked_packet_read_as_zero() {
        let packet = Packet::new_unchecked(&HAND_WRITTEN[..5]);
        assert_eq!(packet.sequence(), 0);
        assert_eq!(packet.count(), 0);
        assert_eq!(packet.session(), Session::from_bytes([0; SESSION_LEN]));
        assert_eq!(packet.messages().next(), None);
        assert_eq!(Packet::new_unchecked(&[][..]).next_sequence(), 0);
    }

    #[test]
    fn the_builder_reports_full_and_leaves_the_packet_unchanged() {
        let mut buf = [0u8; 30];
        let mut builder = PacketBuilder::start(&mut buf, &session(), 1).unwrap();
        assert_eq!(builder.remaining(), 10);
        assert!(builder.fits(8));
        assert!(!builder.fits(9));
        builder.push(&mut buf, b"12345").unwrap();
        assert_eq!(builder.remaining(), 3);
        assert_eq!(builder.push(&mut buf, b"12"), Err(PushError::Full));
        assert_eq!(builder.count(), 1);
        assert_eq!(builder.len(), 27);
        builder.push(&mut buf, b"1").unwrap();
        assert_eq!(builder.remaining(), 0);
        assert_eq!(builder.push(&mut buf, b""), Err(PushError::Full));
        let len = builder.finish(&mut buf);
        assert_eq!(len, 30);
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(packet.messages().collect::<Vec<_>>(), [&b"12345"[..], b"1"]);
    }

    #[test]
    fn the_builder_rejects_a_message_that_can_never_fit() {
        let mut buf = [0u8; 30];
        let mut builder = PacketBuilder::start(&mut buf, &session(), 1).unwrap();
        assert_eq!(
            builder.push(&mut buf, &[0; 9]),
            Err(PushError::TooLarge {
                len: 9,
                capacity: 30
            })
        );
        let mut big = vec![0u8; 70_000];
        let mut builder = PacketBuilder::start(&mut big, &session(), 1).unwrap();
        let msg = vec![1u8; MAX_MESSAGE_LEN + 1];
        assert!(!builder.fits(msg.len()));
        assert_eq!(
            builder.push(&mut big, &msg),
            Err(PushError::TooLarge {
                len: MAX_MESSAGE_LEN + 1,
                capacity: 70_000
            })
        );
        builder.push(&mut big, &msg[1..]).unwrap();
        let len = builder.finish(&mut big);
        let packet = Packet::new_checked(&big[..len]).unwrap();
        assert_eq!(
            packet.messages().next().map(<[u8]>::len),
            Some(MAX_MESSAGE_LEN)
        );
    }

    #[test]
    fn the_builder_needs_a_buffer_at_least_as_long_as_the_header() {
        let mut buf = [0u8; 19];
        assert_eq!(
            PacketBuilder::start(&mut buf, &session(), 1),
            Err(WireError::BufferTooSmall {
                len: 19,
                needed: 20
            })
        );
        let mut buf = [0u8; 21];
        let mut builder = PacketBuilder::start(&mut buf, &session(), 1).unwrap();
        assert!(matches!(
            builder.push(&mut buf, b""),
            Err(PushError::TooLarge { len: 0, .. })
        ));
    }

    #[test]
    fn a_data_packet_holds_at_most_65534_messages() {
        let mut buf = vec![0u8; HEADER_LEN + BLOCK_HEADER_LEN * 70_000];
        let mut builder = PacketBuilder::start(&mut buf, &session(), 1).unwrap();
        for _ in 0..MAX_MESSAGE_COUNT {
            builder.push(&mut buf, b"").unwrap();
        }
        assert!(!builder.fits(0));
        assert_eq!(builder.push(&mut buf, b""), Err(PushError::Full));
        let len = builder.finish(&mut buf);
        let packet = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(packet.kind(), PacketKind::Data);
        assert_eq!(packet.messages().count(), usize::from(MAX_MESSAGE_COUNT));
    }

    #[test]
    fn a_finished_builder_without_messages_is_a_heartbeat() {
        let mut buf = [0xEEu8; 64];
        let mut builder = PacketBuilder::start(&mut buf, &session(), 9).unwrap();
        assert!(builder.is_empty());
        let len = builder.finish(&mut buf);
        let mut expected = [0u8; 64];
        let expected_len = write_heartbeat(&mut expected, &session(), 9).unwrap();
        assert_eq!(buf[..len], expected[..expected_len]);
    }

    #[test]
    fn the_builder_refuses_the_last_sequence_number() {
        let mut buf = [0u8; 64];
        let mut builder = PacketBuilder::start(&mut buf, &session(), u64::MAX - 1).unwrap();
        builder.push(&mut buf, b"a").unwrap();
        assert!(!builder.fits(1));
        assert_eq!(
            builder.push(&mut buf, b"b"),
            Err(PushError::SequenceExhausted)
        );
        let len = builder.finish(&mut buf);
        assert_eq!(
            Packet::new_checked(&buf[..len]).unwrap().next_sequence(),
            u64::MAX
        );
        assert_eq!(
            pack_all(&session(), u64::MAX - 1, 64, [&b"a"[..], b"b"]),
            Err(PushError::SequenceExhausted)
        );
    }

    #[test]
    fn pack_all_splits_at_the_datagram_limit_and_numbers_consecutively() {
        // 20-byte header + two 5-byte blocks = 30 bytes per packet.
        let msgs: Vec<&[u8]> = vec![b"aaa", b"bbb", b"ccc", b"ddd", b"eee"];
        let packets = pack_all(&session(), 10, 30, msgs.iter().copied()).unwrap();
        let lens: Vec<usize> = packets.iter().map(Vec::len).collect();
        assert_eq!(lens, [30, 30, 25]);
        let sequences: Vec<u64> = packets
            .iter()
            .map(|p| Packet::new_checked(&p[..]).unwrap().sequence())
            .collect();
        assert_eq!(sequences, [10, 12, 14]);
        let back: Vec<&[u8]> = packets
            .iter()
            .flat_map(|p| Packet::new_unchecked(&p[..]).into_messages())
            .collect();
        assert_eq!(back, msgs);
    }

    #[test]
    fn pack_all_of_no_messages_is_no_packets() {
        assert_eq!(pack_all(&session(), 1, 10, []), Ok(vec![]));
    }

    #[test]
    fn pack_all_rejects_a_message_larger_than_a_datagram() {
        let err = pack_all(&session(), 1, 30, [&b"ok"[..], &[0; 9]]).unwrap_err();
        assert_eq!(
            err,
            PushError::TooLarge {
                len: 9,
                capacity: 30
            }
        );
        assert_eq!(
            pack_all(&session(), 1, 10, [&b""[..]]),
            Err(PushError::TooLarge {
                len: 0,
                capacity: 10
            })
        );
    }

    #[test]
    fn a_packet_repr_round_trips_through_bytes() {
        let packet = Packet::new_checked(&HAND_WRITTEN[..]).unwrap();
        let repr = PacketRepr::parse(&packet).unwrap();
        assert_eq!(
            repr,
            PacketRepr {
                session: session(),
                sequence: HAND_WRITTEN_SEQUENCE,
                kind: PacketKind::Data,
                messages: vec![b"hi".to_vec(), vec![], b"xyz".to_vec()],
            }
        );
        assert_eq!(repr.buffer_len(), HAND_WRITTEN.len());
        let mut buf = [0u8; 64];
        let len = repr.emit(&mut buf).unwrap();
        assert_eq!(buf[..len], HAND_WRITTEN);
        assert_eq!(
            repr.emit(&mut buf[..30]),
            Err(WireError::BufferTooSmall {
                len: 30,
                needed: 31
            })
        );
    }

    #[test]
    fn a_packet_repr_whose_kind_and_messages_disagree_is_not_emitted() {
        let mut buf = [0u8; 64];
        let empty_data = PacketRepr {
            session: session(),
            sequence: 1,
            kind: PacketKind::Data,
            messages: vec![],
        };
        assert_eq!(
            empty_data.emit(&mut buf),
            Err(WireError::MessageCount {
                kind: PacketKind::Data,
                count: 0
            })
        );
        let heartbeat_with_message = PacketRepr {
            kind: PacketKind::Heartbeat,
            messages: vec![b"x".to_vec()],
            ..empty_data.clone()
        };
        assert_eq!(heartbeat_with_message.buffer_len(), HEADER_LEN);
        assert!(heartbeat_with_message.emit(&mut buf).is_err());
        let end = PacketRepr {
            kind: PacketKind::EndOfSession,
            ..empty_data
        };
        let len = end.emit(&mut buf).unwrap();
        assert_eq!(
            PacketRepr::parse(&Packet::new_checked(&buf[..len]).unwrap()),
            Ok(end)
        );
    }

    #[test]
    fn a_rerequest_is_exactly_twenty_bytes() {
        let repr = ReRequestRepr {
            session: session(),
            sequence: 0x0102,
            count: 0x0304,
        };
        let mut buf = [0u8; 32];
        let len = repr.emit(&mut buf).unwrap();
        let expected: [u8; 20] = [
            b'A', b'B', b'C', b' ', b' ', b' ', b' ', b' ', b' ', b' ', //
            0, 0, 0, 0, 0, 0, 0x01, 0x02, //
            0x03, 0x04,
        ];
        assert_eq!(buf[..len], expected);
        let request = ReRequest::new_checked(&buf[..len]).unwrap();
        assert_eq!(request.session(), session());
        assert_eq!(request.sequence(), 0x0102);
        assert_eq!(request.count(), 0x0304);
        assert_eq!(ReRequestRepr::parse(&request), Ok(repr));
    }

    #[test]
    fn a_rerequest_of_any_other_length_is_rejected() {
        let buf = [0u8; 21];
        for len in [0, 19, 21] {
            assert_eq!(
                ReRequest::new_checked(&buf[..len]).unwrap_err(),
                WireError::ReRequestLength { len }
            );
        }
        let mut short = [0u8; 19];
        let repr = ReRequestRepr {
            session: session(),
            sequence: 1,
            count: 1,
        };
        assert!(repr.emit(&mut short).is_err());
    }

    #[test]
    fn a_rerequest_running_past_the_last_sequence_number_is_rejected() {
        let mut buf = [0u8; 20];
        buf[10..18].copy_from_slice(&u64::MAX.to_be_bytes());
        buf[19] = 1;
        assert!(matches!(
            ReRequest::new_checked(&buf[..]),
            Err(WireError::SequenceOverflow { .. })
        ));
    }
}
