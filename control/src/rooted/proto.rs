//! The wire format of the rooted control protocol, sans-IO.
//!
//! A root and each of its leaves hold one TCP connection, over which they exchange
//! [`Frame`]s. This module only turns frames into bytes ([`Frame::encode`]) and bytes back
//! into frames ([`decode`]): it owns no socket, reads no clock and keeps no state, so the
//! session logic above it can be tested without a network.
//!
//! # The conversation
//!
//! - **Leaf-initiated**: the root listens; a leaf connects and sends [`Frame::Join`]; the
//!   root answers [`Frame::Admit`] or [`Frame::Refuse`].
//! - **Root-initiated**: a leaf listens; the root connects and sends [`Frame::Invite`]; the
//!   leaf accepts with [`Frame::Join`] (the same frame a leaf-initiated join sends) or
//!   declines with [`Frame::Refuse`]; the root then answers the `Join` as above.
//! - **Authenticated** (only when the root has a pre-shared key): the root answers a
//!   `Join` with [`Frame::Challenge`] (its fresh nonce); the leaf answers with
//!   [`Frame::Proof`] (its own fresh nonce and an HMAC over both nonces and its `Join`);
//!   the root then refuses (`authentication failed`) or, admitting, sends
//!   [`Frame::RootProof`] (its HMAC over both nonces, the `Join` and the `Admit`) right
//!   before the [`Frame::Admit`]. What is computed is in
//!   [`rooted::auth`](super::auth). A root without a key never sends these frames, so
//!   it speaks to a leaf of a release without them as before.
//! - **Admitted**: both sides send [`Frame::Heartbeat`] every `timeout_ms / 3` (the
//!   timeout comes in the [`Frame::Admit`]) and count the peer gone after `timeout_ms`
//!   without a frame. Either side may send [`Frame::Leave`]; the root ends the session
//!   for a leaf with [`Frame::End`].
//!
//! The order in which frames are allowed belongs to the session logic, not to this
//! codec: [`decode`] accepts any well-formed frame in any order.
//!
//! # Wire layout
//!
//! Every integer is big-endian (network order). A frame is:
//!
//! | offset | bytes        | field                                                     |
//! |-------:|-------------:|-----------------------------------------------------------|
//! | 0      | 4            | `length`: u32, the number of bytes after this field, 2 to [`MAX_FRAME`] |
//! | 4      | 1            | `version`: u8, [`VERSION`] (1)                            |
//! | 5      | 1            | `type`: u8, from the table below                          |
//! | 6      | `length` − 2 | the body: the type's fields, in order, nothing after them |
//!
//! | type | frame                 | sent by       | body fields, in order                                   |
//! |-----:|-----------------------|---------------|---------------------------------------------------------|
//! | 1    | [`Join`](Frame::Join)           | leaf → root   | transport, direction, `data`: opt-addr, `name`: text |
//! | 2    | [`Admit`](Frame::Admit)         | root → leaf   | `session`: 10 bytes, `timeout_ms`: u32, `next_sequence`: u64, plan |
//! | 3    | [`Refuse`](Frame::Refuse)       | either        | `reason`: text                                      |
//! | 4    | [`Invite`](Frame::Invite)       | root → leaf   | transport, direction                                |
//! | 5    | [`Leave`](Frame::Leave)         | either        | `reason`: text                                      |
//! | 6    | [`Heartbeat`](Frame::Heartbeat) | either        | (none)                                              |
//! | 7    | [`End`](Frame::End)             | root → leaf   | `reason`: text                                      |
//! | 8    | [`Challenge`](Frame::Challenge) | root → leaf   | `nonce`: 32 bytes                                   |
//! | 9    | [`Proof`](Frame::Proof)         | leaf → root   | `nonce`: 32 bytes, `mac`: 32 bytes                  |
//! | 10   | [`RootProof`](Frame::RootProof) | root → leaf   | `mac`: 32 bytes                                     |
//!
//! The field types:
//!
//! | field type | bytes        | encoding                                                         |
//! |------------|-------------:|------------------------------------------------------------------|
//! | transport  | 1            | 1 `rooted-unicast`, 2 `admitted-multicast` (the IP multicast transports have no rooted control plane and no value) |
//! | direction  | 1            | 1 sender-only, 2 receiver-only, 3 both                           |
//! | text       | 2 + n        | u16 n (at most [`MAX_TEXT`]), then n bytes of UTF-8              |
//! | addr       | 7 or 23      | u8 family; family 4: 4 address bytes, u16 port; family 6: 16 address bytes, u16 port, u32 scope id |
//! | opt-addr   | 1, 7 or 23   | u8 family 0 alone for none; otherwise an addr                    |
//! | ip         | 5 or 17      | u8 family; family 4: 4 address bytes; family 6: 16 address bytes |
//! | plan       | 1 + fields   | u8 tag; tag 1 ([`Unicast`](DataPlan::Unicast)): `root`: addr, `uplink`: opt-addr; tag 2 ([`Multicast`](DataPlan::Multicast)): `group`: addr, `source`: ip |
//!
//! The IPv6 flow label of an address is not carried: it is sent as nothing and decodes as
//! 0. Everything else has exactly one encoding, so decoding a frame and encoding it again
//! gives back the same bytes.
//!
//! For example, `Refuse { reason: "full" }` is `00 00 00 08 | 01 | 03 | 00 04 66 75 6c
//! 6c`, and `Heartbeat` is `00 00 00 02 | 01 | 06`.
//!
//! # Decoding
//!
//! [`decode`] looks at the front of a buffer of received bytes and checks, in order:
//!
//! 1. the length: above [`MAX_FRAME`] is [`ProtoError::TooLong`] at once, without waiting
//!    for the body; 0 is [`ProtoError::Malformed`];
//! 2. the version, as soon as its byte is there: anything but [`VERSION`] is
//!    [`ProtoError::Version`];
//! 3. once the whole frame is there, the type ([`ProtoError::UnknownType`]) and then the
//!    fields in order: a text longer than [`MAX_TEXT`] is [`ProtoError::TooLong`]; a field
//!    cut short, a value outside the tables, invalid UTF-8 or bytes left after the last
//!    field are [`ProtoError::Malformed`].
//!
//! Until a frame is complete and nothing is wrong so far, [`decode`] returns `Ok(None)`:
//! read more bytes and call it again. After any error the stream cannot be trusted: close
//! the connection (telling the peer why in a [`Frame::Refuse`], [`Frame::Leave`] or
//! [`Frame::End`] first, if that suits).
//!
//! ```
//! use multipoint_control::rooted::proto::{decode, Frame, ProtoError};
//!
//! # fn main() -> Result<(), ProtoError> {
//! let mut wire = Vec::new();
//! Frame::Refuse { reason: "full".into() }.encode(&mut wire)?;
//! Frame::Heartbeat.encode(&mut wire)?;
//! assert_eq!(wire, [0, 0, 0, 8, 1, 3, 0, 4, b'f', b'u', b'l', b'l', 0, 0, 0, 2, 1, 6]);
//!
//! // TCP hands bytes over in arbitrary pieces: keep them, decode from the front, and
//! // drop what each frame used.
//! let mut pending = Vec::new();
//! let mut frames = Vec::new();
//! for piece in wire.chunks(5) {
//!     pending.extend_from_slice(piece);
//!     while let Some((frame, used)) = decode(&pending)? {
//!         frames.push(frame);
//!         pending.drain(..used);
//!     }
//! }
//! assert_eq!(frames, [Frame::Refuse { reason: "full".into() }, Frame::Heartbeat]);
//! # Ok(())
//! # }
//! ```
//!
//! # Contract
//!
//! Nothing here panics, whatever the bytes or frames given. [`decode`] allocates only the
//! strings of the frame it returns; [`Frame::encode`] only grows the caller's buffer, and
//! on error leaves it as it was. Every type is `Send + Sync`; there is no shared state.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::socket::Direction;
use crate::transport::Transport;

/// The protocol version this module speaks, the second field of every frame.
pub const VERSION: u8 = 1;
/// Largest frame body accepted (bytes after the 4-byte length prefix).
pub const MAX_FRAME: usize = 4096;
/// Longest string (reason, name) in bytes.
pub const MAX_TEXT: usize = 1024;

/// Bytes of a nonce in [`Frame::Challenge`] and [`Frame::Proof`].
pub const NONCE_LEN: usize = 32;
/// Bytes of an HMAC-SHA256 in [`Frame::Proof`] and [`Frame::RootProof`].
pub const MAC_LEN: usize = 32;

/// Bytes of the length prefix.
const PREFIX_LEN: usize = 4;

/// One message of the rooted control protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// leaf -> root: ask to join (leaf-initiated), or accept an Invite (same frame as the reply).
    Join {
        /// The rooted transport the leaf joins on: [`Transport::RootedUnicast`] or
        /// [`Transport::AdmittedMulticast`].
        transport: Transport,
        /// Whether the leaf sends, receives or both.
        direction: Direction,
        /// Where the leaf receives data over UDP (rooted-unicast), if it names one; the
        /// root may otherwise use the address the connection comes from.
        data: Option<SocketAddr>,
        /// The leaf's name, for logs and the root's leaf list (at most [`MAX_TEXT`] bytes).
        name: String,
    },
    /// root -> leaf: admitted. `session` is the MoldUDP64 session name (10 bytes);
    /// `timeout_ms` the liveness timeout both sides use (heartbeats every timeout/3).
    Admit {
        /// The MoldUDP64 session name the data carries.
        session: [u8; 10],
        /// The liveness timeout in milliseconds: each side sends a heartbeat every
        /// third of it and counts the peer gone after it passes without a frame.
        timeout_ms: u32,
        /// The sequence number from which the leaf gets every message (everything the
        /// root publishes from it on reaches the leaf); 0 when the root cannot say.
        /// Anything older that arrives is not this membership's (a previous session's
        /// tail, say).
        next_sequence: u64,
        /// How data reaches the leaf, and where a sending leaf sends.
        plan: DataPlan,
    },
    /// either way: a join refused by the root, or an invite declined by the leaf.
    Refuse {
        /// Why, for people (at most [`MAX_TEXT`] bytes).
        reason: String,
    },
    /// root -> leaf, on a connection the root opened to a listening leaf.
    Invite {
        /// The rooted transport of the session the leaf is invited to.
        transport: Transport,
        /// Whether the leaf is to send, receive or both.
        direction: Direction,
    },
    /// either way: this side leaves the session.
    Leave {
        /// Why, for people (at most [`MAX_TEXT`] bytes).
        reason: String,
    },
    /// either way: still alive.
    Heartbeat,
    /// root -> leaf: the root closed the session.
    End {
        /// Why, for people (at most [`MAX_TEXT`] bytes).
        reason: String,
    },
    /// root -> leaf, answering a Join when the root requires a pre-shared key: prove
    /// that you hold it.
    Challenge {
        /// The root's nonce, fresh for this connection.
        nonce: [u8; NONCE_LEN],
    },
    /// leaf -> root, answering a Challenge.
    Proof {
        /// The leaf's nonce, fresh for this connection.
        nonce: [u8; NONCE_LEN],
        /// The leaf's HMAC-SHA256 over both nonces and its Join.
        mac: [u8; MAC_LEN],
    },
    /// root -> leaf, right before the Admit of a leaf that proved the key.
    RootProof {
        /// The root's HMAC-SHA256 over both nonces, the Join and the Admit that follows.
        mac: [u8; MAC_LEN],
    },
}

/// How data flows once a leaf is admitted, sent in [`Frame::Admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPlan {
    /// rooted-unicast: the root's data arrives from `root`; a sending leaf sends to `uplink`.
    Unicast {
        /// The address the root sends data from.
        root: SocketAddr,
        /// Where a sending leaf sends its data; `None` when the leaf does not send.
        uplink: Option<SocketAddr>,
    },
    /// admitted-multicast: join `group` source-specifically for `source`.
    Multicast {
        /// The multicast group and port the data flows to.
        group: SocketAddr,
        /// The one source to accept the group's data from.
        source: IpAddr,
    },
}

/// What was wrong with a frame being decoded or encoded.
///
/// After any of these from [`decode`], the connection's byte stream cannot be trusted
/// any more: close it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A frame, or a string inside one, is longer than the protocol allows.
    #[error("{} of {len} bytes is longer than the {max} bytes allowed: {}", too_long_what(*max), too_long_advice(*max))]
    TooLong {
        /// The length found (or, when encoding, given).
        len: usize,
        /// The limit it broke: [`MAX_FRAME`] for a frame, [`MAX_TEXT`] for a string.
        max: usize,
    },
    /// The peer speaks another version of the protocol.
    #[error(
        "the peer speaks version {got} of the rooted control protocol and this side \
         version {VERSION}: run the same multipoint release on the root and its leaves"
    )]
    Version {
        /// The version byte the peer sent.
        got: u8,
    },
    /// The frame's type byte names no frame of this version.
    #[error(
        "unknown rooted control frame type {0} (version {VERSION} knows 1 to 10): the peer \
         is broken or speaks another protocol; close the connection"
    )]
    UnknownType(u8),
    /// A field is cut short, holds a value the protocol does not allow, or is followed by
    /// bytes that belong to no field. The text names the field.
    #[error(
        "malformed rooted control frame: bad {0} (the layout is in the docs of \
         multipoint_control::rooted::proto; from a peer, this means it is broken or speaks \
         another protocol: close the connection)"
    )]
    Malformed(&'static str),
}

fn too_long_what(max: usize) -> &'static str {
    if max == MAX_TEXT {
        "a string in a rooted control frame"
    } else {
        "a rooted control frame"
    }
}

fn too_long_advice(max: usize) -> &'static str {
    if max == MAX_TEXT {
        "shorten the reason or name (from a peer: it is broken; close the connection)"
    } else {
        "the peer is broken or speaks another protocol; close the connection"
    }
}

// Type bytes.
const JOIN: u8 = 1;
const ADMIT: u8 = 2;
const REFUSE: u8 = 3;
const INVITE: u8 = 4;
const LEAVE: u8 = 5;
const HEARTBEAT: u8 = 6;
const END: u8 = 7;
const CHALLENGE: u8 = 8;
const PROOF: u8 = 9;
const ROOT_PROOF: u8 = 10;

impl Frame {
    /// Appends the encoded frame (length prefix included) to `out`.
    /// Errors (ProtoError::TooLong) if a string exceeds MAX_TEXT; never panics.
    ///
    /// A [`Frame::Join`] or [`Frame::Invite`] whose transport is one of the IP multicast
    /// transports, which have no rooted control plane, is [`ProtoError::Malformed`]. On
    /// any error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let start = out.len();
        let result = self.encode_at(out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_at(&self, out: &mut Vec<u8>, start: usize) -> Result<(), ProtoError> {
        out.extend_from_slice(&[0; PREFIX_LEN]);
        out.push(VERSION);
        out.push(self.type_byte());
        match self {
            Frame::Join {
                transport,
                direction,
                data,
                name,
            } => {
                put_route(out, *transport, *direction, JOIN_NOT_ROOTED)?;
                put_opt_addr(out, data.as_ref());
                put_text(out, name)?;
            }
            Frame::Admit {
                session,
                timeout_ms,
                next_sequence,
                plan,
            } => {
                out.extend_from_slice(session);
                out.extend_from_slice(&timeout_ms.to_be_bytes());
                out.extend_from_slice(&next_sequence.to_be_bytes());
                put_plan(out, plan);
            }
            Frame::Invite {
                transport,
                direction,
            } => put_route(out, *transport, *direction, INVITE_NOT_ROOTED)?,
            Frame::Refuse { reason } | Frame::Leave { reason } | Frame::End { reason } => {
                put_text(out, reason)?;
            }
            Frame::Heartbeat => {}
            Frame::Challenge { nonce } => out.extend_from_slice(nonce),
            Frame::Proof { nonce, mac } => {
                out.extend_from_slice(nonce);
                out.extend_from_slice(mac);
            }
            Frame::RootProof { mac } => out.extend_from_slice(mac),
        }
        // The largest frame (a Join with a full name and an IPv6 address) is far below
        // MAX_FRAME; checked anyway so nothing encoded here is refused by `decode`.
        let len = out.len() - start - PREFIX_LEN;
        if len > MAX_FRAME {
            return Err(ProtoError::TooLong {
                len,
                max: MAX_FRAME,
            });
        }
        let prefix = u32::try_from(len)
            .map_err(|_| ProtoError::TooLong {
                len,
                max: MAX_FRAME,
            })?
            .to_be_bytes();
        if let Some(slot) = out.get_mut(start..start + PREFIX_LEN) {
            slot.copy_from_slice(&prefix);
        }
        Ok(())
    }

    fn type_byte(&self) -> u8 {
        match self {
            Frame::Join { .. } => JOIN,
            Frame::Admit { .. } => ADMIT,
            Frame::Refuse { .. } => REFUSE,
            Frame::Invite { .. } => INVITE,
            Frame::Leave { .. } => LEAVE,
            Frame::Heartbeat => HEARTBEAT,
            Frame::End { .. } => END,
            Frame::Challenge { .. } => CHALLENGE,
            Frame::Proof { .. } => PROOF,
            Frame::RootProof { .. } => ROOT_PROOF,
        }
    }
}

/// Why a Join for an IP multicast transport cannot be encoded.
const JOIN_NOT_ROOTED: &str = "Join transport: udp4-multicast and udp6-multicast have no \
                               rooted control plane; use rooted-unicast or admitted-multicast";
/// Why an Invite for an IP multicast transport cannot be encoded.
const INVITE_NOT_ROOTED: &str = "Invite transport: udp4-multicast and udp6-multicast have no \
                                 rooted control plane; use rooted-unicast or \
                                 admitted-multicast";

/// The transport and direction a Join or an Invite carries; `not_rooted` is the error
/// for a transport without a rooted control plane.
fn put_route(
    out: &mut Vec<u8>,
    transport: Transport,
    direction: Direction,
    not_rooted: &'static str,
) -> Result<(), ProtoError> {
    out.push(transport_byte(transport, not_rooted)?);
    out.push(direction_byte(direction));
    Ok(())
}

/// The wire value of a rooted transport; `not_rooted` is the error for the others.
fn transport_byte(transport: Transport, not_rooted: &'static str) -> Result<u8, ProtoError> {
    match transport {
        Transport::RootedUnicast => Ok(1),
        Transport::AdmittedMulticast => Ok(2),
        Transport::Udp4Multicast | Transport::Udp6Multicast => {
            Err(ProtoError::Malformed(not_rooted))
        }
    }
}

fn direction_byte(direction: Direction) -> u8 {
    match direction {
        Direction::SenderOnly => 1,
        Direction::ReceiverOnly => 2,
        Direction::Both => 3,
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) -> Result<(), ProtoError> {
    let len = text.len();
    let too_long = ProtoError::TooLong { len, max: MAX_TEXT };
    if len > MAX_TEXT {
        return Err(too_long);
    }
    let prefix = u16::try_from(len).map_err(|_| too_long)?;
    out.extend_from_slice(&prefix.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

// Family bytes of the addr, opt-addr and ip fields.
const NONE: u8 = 0;
const V4: u8 = 4;
const V6: u8 = 6;

fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            out.push(V4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        SocketAddr::V6(a) => {
            out.push(V6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.scope_id().to_be_bytes());
        }
    }
}

fn put_opt_addr(out: &mut Vec<u8>, addr: Option<&SocketAddr>) {
    match addr {
        Some(addr) => put_addr(out, addr),
        None => out.push(NONE),
    }
}

fn put_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(ip) => {
            out.push(V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(V6);
            out.extend_from_slice(&ip.octets());
        }
    }
}

// Tags of the plan field.
const PLAN_UNICAST: u8 = 1;
const PLAN_MULTICAST: u8 = 2;

fn put_plan(out: &mut Vec<u8>, plan: &DataPlan) {
    match plan {
        DataPlan::Unicast { root, uplink } => {
            out.push(PLAN_UNICAST);
            put_addr(out, root);
            put_opt_addr(out, uplink.as_ref());
        }
        DataPlan::Multicast { group, source } => {
            out.push(PLAN_MULTICAST);
            put_addr(out, group);
            put_ip(out, source);
        }
    }
}

/// Decodes one frame from the front of `buf`: Ok(None) if more bytes are needed,
/// Ok(Some((frame, consumed))) otherwise. Never panics on any input; rejects a length
/// prefix above MAX_FRAME before waiting for the body.
///
/// `consumed` is the whole frame, length prefix included: drop that many bytes from the
/// front of `buf` before the next call. The checks and their order are listed in the
/// [module docs](self#decoding).
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtoError> {
    let Some((prefix, rest)) = buf.split_first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
    if len > MAX_FRAME {
        return Err(ProtoError::TooLong {
            len,
            max: MAX_FRAME,
        });
    }
    if len == 0 {
        return Err(ProtoError::Malformed(
            "frame length: 0, too short for the version and type",
        ));
    }
    // The version is checked as soon as it arrives: a peer of another version is told so
    // even if its frame never completes.
    if let Some(&version) = rest.first() {
        if version != VERSION {
            return Err(ProtoError::Version { got: version });
        }
    }
    let Some(body) = rest.get(..len) else {
        return Ok(None);
    };
    let mut r = Reader { rest: body };
    r.u8("version")?; // checked above
    let ty = r.u8("frame type: missing (frame length 1)")?;
    let frame = match ty {
        JOIN => Frame::Join {
            transport: r.transport("Join transport")?,
            direction: r.direction("Join direction")?,
            data: r.opt_addr("Join data address")?,
            name: r.text("Join name")?,
        },
        ADMIT => Frame::Admit {
            session: r.array("Admit session")?,
            timeout_ms: u32::from_be_bytes(r.array("Admit timeout_ms")?),
            next_sequence: u64::from_be_bytes(r.array("Admit next_sequence")?),
            plan: r.plan()?,
        },
        REFUSE => Frame::Refuse {
            reason: r.text("Refuse reason")?,
        },
        INVITE => Frame::Invite {
            transport: r.transport("Invite transport")?,
            direction: r.direction("Invite direction")?,
        },
        LEAVE => Frame::Leave {
            reason: r.text("Leave reason")?,
        },
        HEARTBEAT => Frame::Heartbeat,
        END => Frame::End {
            reason: r.text("End reason")?,
        },
        CHALLENGE => Frame::Challenge {
            nonce: r.array("Challenge nonce")?,
        },
        PROOF => Frame::Proof {
            nonce: r.array("Proof nonce")?,
            mac: r.array("Proof mac")?,
        },
        ROOT_PROOF => Frame::RootProof {
            mac: r.array("RootProof mac")?,
        },
        other => return Err(ProtoError::UnknownType(other)),
    };
    if !r.rest.is_empty() {
        return Err(ProtoError::Malformed(
            "frame length: bytes left after the last field",
        ));
    }
    Ok(Some((frame, PREFIX_LEN + len)))
}

/// Reads fields off the front of a frame body. Every read checks the bytes are there;
/// a failed read names the field.
struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtoError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(ProtoError::Malformed(field))?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, ProtoError> {
        let [b] = self.array(field)?;
        Ok(b)
    }

    fn transport(&mut self, field: &'static str) -> Result<Transport, ProtoError> {
        match self.u8(field)? {
            1 => Ok(Transport::RootedUnicast),
            2 => Ok(Transport::AdmittedMulticast),
            _ => Err(ProtoError::Malformed(field)),
        }
    }

    fn direction(&mut self, field: &'static str) -> Result<Direction, ProtoError> {
        match self.u8(field)? {
            1 => Ok(Direction::SenderOnly),
            2 => Ok(Direction::ReceiverOnly),
            3 => Ok(Direction::Both),
            _ => Err(ProtoError::Malformed(field)),
        }
    }

    fn text(&mut self, field: &'static str) -> Result<String, ProtoError> {
        let len = usize::from(u16::from_be_bytes(self.array(field)?));
        if len > MAX_TEXT {
            return Err(ProtoError::TooLong { len, max: MAX_TEXT });
        }
        let Some((bytes, tail)) = self.rest.split_at_checked(len) else {
            return Err(ProtoError::Malformed(field));
        };
        self.rest = tail;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ProtoError::Malformed(field))
    }

    /// An address whose family byte has been read.
    fn addr_of(&mut self, family: u8, field: &'static str) -> Result<SocketAddr, ProtoError> {
        match family {
            V4 => {
                let ip = Ipv4Addr::from(self.array::<4>(field)?);
                let port = u16::from_be_bytes(self.array(field)?);
                Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
            }
            V6 => {
                let ip = Ipv6Addr::from(self.array::<16>(field)?);
                let port = u16::from_be_bytes(self.array(field)?);
                let scope = u32::from_be_bytes(self.array(field)?);
                Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)))
            }
            _ => Err(ProtoError::Malformed(field)),
        }
    }

    fn addr(&mut self, field: &'static str) -> Result<SocketAddr, ProtoError> {
        let family = self.u8(field)?;
        self.addr_of(family, field)
    }

    fn opt_addr(&mut self, field: &'static str) -> Result<Option<SocketAddr>, ProtoError> {
        match self.u8(field)? {
            NONE => Ok(None),
            family => self.addr_of(family, field).map(Some),
        }
    }

    fn ip(&mut self, field: &'static str) -> Result<IpAddr, ProtoError> {
        match self.u8(field)? {
            V4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?))),
            V6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?))),
            _ => Err(ProtoError::Malformed(field)),
        }
    }

    /// The plan of an Admit (the only frame with one).
    fn plan(&mut self) -> Result<DataPlan, ProtoError> {
        match self.u8("Admit plan tag")? {
            PLAN_UNICAST => Ok(DataPlan::Unicast {
                root: self.addr("Admit plan root address")?,
                uplink: self.opt_addr("Admit plan uplink address")?,
            }),
            PLAN_MULTICAST => Ok(DataPlan::Multicast {
                group: self.addr("Admit plan group address")?,
                source: self.ip("Admit plan source address")?,
            }),
            _ => Err(ProtoError::Malformed(
                "Admit plan tag: not 1 (unicast) or 2 (multicast)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.encode(&mut out).unwrap();
        out
    }

    /// Encodes, checks the bytes, and checks they decode back to the frame.
    fn check(frame: Frame, bytes: &[u8]) {
        let wire = encoded(&frame);
        assert_eq!(wire, bytes, "encoding of {frame:?}");
        assert_eq!(decode(&wire).unwrap(), Some((frame, bytes.len())));
        // Every strict prefix asks for more bytes.
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]).unwrap(),
                None,
                "prefix of {cut} bytes"
            );
        }
    }

    /// A frame around `body` (version 1 and `ty` included), with a correct length.
    fn frame_bytes(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(body.len() + 2)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(&[VERSION, ty]);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn join_with_an_ipv4_data_address_round_trips() {
        let frame = Frame::Join {
            transport: Transport::RootedUnicast,
            direction: Direction::ReceiverOnly,
            data: Some("127.0.0.1:5000".parse().unwrap()),
            name: "leaf-1".into(),
        };
        let mut body = vec![1, 2, 4, 127, 0, 0, 1, 0x13, 0x88, 0, 6];
        body.extend_from_slice(b"leaf-1");
        check(frame, &frame_bytes(JOIN, &body));
    }

    #[test]
    fn join_without_a_data_address_round_trips() {
        let frame = Frame::Join {
            transport: Transport::AdmittedMulticast,
            direction: Direction::Both,
            data: None,
            name: String::new(),
        };
        check(frame, &frame_bytes(JOIN, &[2, 3, 0, 0, 0]));
    }

    #[test]
    fn join_with_an_ipv6_data_address_carries_the_scope_id() {
        let addr = SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            0x1234,
            0,
            0x0102_0304,
        ));
        let frame = Frame::Join {
            transport: Transport::RootedUnicast,
            direction: Direction::SenderOnly,
            data: Some(addr),
            name: "é".into(),
        };
        let mut body = vec![1, 1, 6, 0xfe, 0x80];
        body.extend_from_slice(&[0; 13]);
        body.extend_from_slice(&[1, 0x12, 0x34, 1, 2, 3, 4, 0, 2, 0xc3, 0xa9]);
        check(frame, &frame_bytes(JOIN, &body));
    }

    /// An Admit of `session` with a timeout of `timeout_ms` and the plan given.
    fn admit(session: [u8; 10], timeout_ms: u32, next_sequence: u64, plan: DataPlan) -> Frame {
        Frame::Admit {
            session,
            timeout_ms,
            next_sequence,
            plan,
        }
    }

    fn unicast(root: &str, uplink: Option<&str>) -> DataPlan {
        DataPlan::Unicast {
            root: root.parse().unwrap(),
            uplink: uplink.map(|at| at.parse().unwrap()),
        }
    }

    fn multicast(group: &str, source: &str) -> DataPlan {
        DataPlan::Multicast {
            group: group.parse().unwrap(),
            source: source.parse().unwrap(),
        }
    }

    #[test]
    fn admit_with_a_unicast_plan_round_trips() {
        let plan = unicast("127.0.0.1:7000", Some("127.0.0.2:7001"));
        let mut body = b"SESSION001".to_vec();
        body.extend_from_slice(&[0, 0, 0x0b, 0xb8]);
        body.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 1]);
        body.extend_from_slice(&[4, 127, 0, 0, 1, 0x1b, 0x58]);
        body.extend_from_slice(&[4, 127, 0, 0, 2, 0x1b, 0x59]);
        let frame = admit(*b"SESSION001", 3000, 0x0102_0304_0506_0708, plan);
        check(frame, &frame_bytes(ADMIT, &body));

        let receiver_only = admit([0; 10], u32::MAX, 0, unicast("[::1]:9", None));
        let mut body = vec![0; 10];
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 6]);
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&[0, 9, 0, 0, 0, 0, 0]);
        check(receiver_only, &frame_bytes(ADMIT, &body));
    }

    #[test]
    fn admit_with_a_multicast_plan_round_trips() {
        let frame = admit(
            *b"0123456789",
            1,
            1,
            multicast("232.1.2.3:40000", "127.0.0.1"),
        );
        let mut body = b"0123456789".to_vec();
        body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        body.extend_from_slice(&[4, 232, 1, 2, 3, 0x9c, 0x40]);
        body.extend_from_slice(&[4, 127, 0, 0, 1]);
        check(frame, &frame_bytes(ADMIT, &body));

        let v6 = admit(*b"0123456789", 1, u64::MAX, multicast("[ff35::1]:1", "::1"));
        let wire = encoded(&v6);
        assert_eq!(wire.len(), PREFIX_LEN + 2 + 10 + 4 + 8 + 1 + 23 + 17);
        assert_eq!(decode(&wire).unwrap(), Some((v6, wire.len())));
    }

    #[test]
    fn refuse_leave_and_end_carry_their_reason() {
        check(
            Frame::Refuse {
                reason: "full".into(),
            },
            &[0, 0, 0, 8, 1, 3, 0, 4, b'f', b'u', b'l', b'l'],
        );
        check(
            Frame::Leave {
                reason: "bye".into(),
            },
            &frame_bytes(LEAVE, &[0, 3, b'b', b'y', b'e']),
        );
        check(
            Frame::End {
                reason: String::new(),
            },
            &frame_bytes(END, &[0, 0]),
        );
    }

    #[test]
    fn invite_round_trips() {
        check(
            Frame::Invite {
                transport: Transport::AdmittedMulticast,
                direction: Direction::SenderOnly,
            },
            &frame_bytes(INVITE, &[2, 1]),
        );
    }

    #[test]
    fn the_authentication_frames_round_trip() {
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| i as u8);
        let mac: [u8; MAC_LEN] = std::array::from_fn(|i| 0xff - i as u8);
        check(Frame::Challenge { nonce }, &frame_bytes(CHALLENGE, &nonce));
        check(
            Frame::Proof { nonce, mac },
            &frame_bytes(PROOF, &[&nonce[..], &mac[..]].concat()),
        );
        check(Frame::RootProof { mac }, &frame_bytes(ROOT_PROOF, &mac));
    }

    #[test]
    fn authentication_frames_cut_short_or_too_long_are_malformed() {
        let cases: [(u8, usize, &str); 6] = [
            (CHALLENGE, NONCE_LEN - 1, "Challenge nonce"),
            (
                CHALLENGE,
                NONCE_LEN + 1,
                "frame length: bytes left after the last field",
            ),
            (PROOF, NONCE_LEN, "Proof mac"),
            (PROOF, 3, "Proof nonce"),
            (ROOT_PROOF, 0, "RootProof mac"),
            (
                ROOT_PROOF,
                MAC_LEN + 5,
                "frame length: bytes left after the last field",
            ),
        ];
        for (ty, len, field) in cases {
            assert_eq!(
                decode(&frame_bytes(ty, &vec![7; len])).unwrap_err(),
                ProtoError::Malformed(field),
                "type {ty}, {len} bytes"
            );
        }
    }

    #[test]
    fn heartbeat_is_six_bytes() {
        check(Frame::Heartbeat, &[0, 0, 0, 2, 1, 6]);
    }

    #[test]
    fn a_string_of_exactly_max_text_bytes_is_accepted() {
        let frame = Frame::Leave {
            reason: "x".repeat(MAX_TEXT),
        };
        let wire = encoded(&frame);
        assert_eq!(wire.len(), PREFIX_LEN + 2 + 2 + MAX_TEXT);
        assert_eq!(decode(&wire).unwrap(), Some((frame, wire.len())));
    }

    #[test]
    fn encoding_a_string_over_max_text_fails_and_leaves_the_buffer_alone() {
        let mut out = vec![9, 9];
        let err = Frame::Join {
            transport: Transport::RootedUnicast,
            direction: Direction::Both,
            data: None,
            name: "n".repeat(MAX_TEXT + 1),
        }
        .encode(&mut out)
        .unwrap_err();
        assert_eq!(
            err,
            ProtoError::TooLong {
                len: MAX_TEXT + 1,
                max: MAX_TEXT
            }
        );
        assert!(
            err.to_string().contains("shorten the reason or name"),
            "{err}"
        );
        assert_eq!(out, [9, 9]);
    }

    #[test]
    fn encoding_a_non_rooted_transport_fails() {
        let mut out = Vec::new();
        for transport in [Transport::Udp4Multicast, Transport::Udp6Multicast] {
            let join = Frame::Join {
                transport,
                direction: Direction::Both,
                data: None,
                name: "x".into(),
            };
            let err = join.encode(&mut out).unwrap_err();
            assert!(matches!(err, ProtoError::Malformed(f) if f.starts_with("Join transport")));
            assert!(err.to_string().contains("rooted-unicast"), "{err}");
            let invite = Frame::Invite {
                transport,
                direction: Direction::Both,
            };
            let err = invite.encode(&mut out).unwrap_err();
            assert!(matches!(err, ProtoError::Malformed(f) if f.starts_with("Invite transport")));
        }
        assert!(out.is_empty());
    }

    #[test]
    fn a_length_over_max_frame_is_refused_before_the_body_arrives() {
        let len = u32::try_from(MAX_FRAME + 1).unwrap();
        let err = decode(&len.to_be_bytes()).unwrap_err();
        assert_eq!(
            err,
            ProtoError::TooLong {
                len: MAX_FRAME + 1,
                max: MAX_FRAME
            }
        );
        assert!(err.to_string().contains("close the connection"), "{err}");
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(ProtoError::TooLong { .. })
        ));
        // MAX_FRAME itself only waits for more.
        let max = u32::try_from(MAX_FRAME).unwrap().to_be_bytes();
        assert_eq!(decode(&[&max[..], &[1, 6]].concat()).unwrap(), None);
    }

    #[test]
    fn a_zero_length_is_malformed() {
        assert!(matches!(
            decode(&[0, 0, 0, 0]),
            Err(ProtoError::Malformed(
                "frame length: 0, too short for the version and type"
            ))
        ));
    }

    #[test]
    fn a_frame_of_only_a_version_is_malformed() {
        assert_eq!(decode(&[0, 0, 0, 1]).unwrap(), None);
        assert!(matches!(
            decode(&[0, 0, 0, 1, 1]),
            Err(ProtoError::Malformed(f)) if f.starts_with("frame type")
        ));
    }

    #[test]
    fn another_version_is_refused_as_soon_as_its_byte_arrives() {
        let err = decode(&[0, 0, 0, 100, 2]).unwrap_err();
        assert_eq!(err, ProtoError::Version { got: 2 });
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(err.to_string().contains("same multipoint release"), "{err}");
        // The version is checked before the type.
        assert_eq!(
            decode(&[0, 0, 0, 2, 0, 99]).unwrap_err(),
            ProtoError::Version { got: 0 }
        );
    }

    #[test]
    fn unknown_types_are_refused() {
        for ty in [0, 11, 255] {
            let err = decode(&frame_bytes(ty, &[])).unwrap_err();
            assert_eq!(err, ProtoError::UnknownType(ty));
            assert!(err.to_string().contains(&format!("type {ty}")), "{err}");
        }
    }

    #[test]
    fn trailing_bytes_in_a_frame_are_malformed() {
        let err = decode(&frame_bytes(HEARTBEAT, &[0])).unwrap_err();
        assert_eq!(
            err,
            ProtoError::Malformed("frame length: bytes left after the last field")
        );
        assert!(err.to_string().contains("bytes left"), "{err}");
        let err = decode(&frame_bytes(INVITE, &[1, 1, 1])).unwrap_err();
        assert!(matches!(err, ProtoError::Malformed(f) if f.contains("bytes left")));
    }

    #[test]
    fn bytes_after_a_frame_belong_to_the_next() {
        let mut wire = encoded(&Frame::Heartbeat);
        wire.extend_from_slice(&[0, 0]);
        assert_eq!(decode(&wire).unwrap(), Some((Frame::Heartbeat, 6)));
    }

    #[test]
    fn a_body_cut_short_is_malformed() {
        assert_eq!(
            decode(&frame_bytes(INVITE, &[1])).unwrap_err(),
            ProtoError::Malformed("Invite direction")
        );
        assert_eq!(
            decode(&frame_bytes(ADMIT, b"short")).unwrap_err(),
            ProtoError::Malformed("Admit session")
        );
        // A string whose length runs past the frame.
        assert_eq!(
            decode(&frame_bytes(END, &[0, 5, b'a'])).unwrap_err(),
            ProtoError::Malformed("End reason")
        );
        assert_eq!(
            decode(&frame_bytes(LEAVE, &[0])).unwrap_err(),
            ProtoError::Malformed("Leave reason")
        );
        // An IPv6 address without its scope id.
        let mut body = vec![1, 1, 6];
        body.extend_from_slice(&[0; 18]);
        assert_eq!(
            decode(&frame_bytes(JOIN, &body)).unwrap_err(),
            ProtoError::Malformed("Join data address")
        );
    }

    #[test]
    fn a_string_over_max_text_is_refused() {
        let len = u16::try_from(MAX_TEXT + 1).unwrap();
        let mut body = len.to_be_bytes().to_vec();
        body.resize(2 + MAX_TEXT + 1, b'a');
        assert_eq!(
            decode(&frame_bytes(REFUSE, &body)).unwrap_err(),
            ProtoError::TooLong {
                len: MAX_TEXT + 1,
                max: MAX_TEXT
            }
        );
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let err = decode(&frame_bytes(REFUSE, &[0, 2, 0xc3, 0x28])).unwrap_err();
        assert_eq!(err, ProtoError::Malformed("Refuse reason"));
        let err = decode(&frame_bytes(JOIN, &[1, 1, 0, 0, 1, 0xff])).unwrap_err();
        assert_eq!(err, ProtoError::Malformed("Join name"));
    }

    #[test]
    fn values_outside_the_tables_are_malformed() {
        let cases: [(&[u8], u8, &str); 9] = [
            (&[0, 1], INVITE, "Invite transport"),
            (&[3, 1], INVITE, "Invite transport"),
            (&[1, 0], INVITE, "Invite direction"),
            (&[1, 4], INVITE, "Invite direction"),
            (&[1, 1, 5, 0, 0], JOIN, "Join data address"),
            (&[9, 1, 0, 0, 0], JOIN, "Join transport"),
            (&[1, 9, 0, 0, 0], JOIN, "Join direction"),
            (&[1, 1, 0, 0, 0], JOIN, ""), // valid, as a control
            (&[1, 1, 0, 0], JOIN, "Join name"),
        ];
        for (body, ty, field) in cases {
            let result = decode(&frame_bytes(ty, body));
            if field.is_empty() {
                assert!(result.unwrap().is_some());
            } else {
                assert_eq!(
                    result.unwrap_err(),
                    ProtoError::Malformed(field),
                    "{body:?}"
                );
            }
        }
    }

    #[test]
    fn bad_data_plans_are_malformed() {
        let admit = |plan: &[u8]| {
            let mut body = vec![0; 22];
            body.extend_from_slice(plan);
            decode(&frame_bytes(ADMIT, &body))
        };
        assert!(matches!(
            admit(&[3]),
            Err(ProtoError::Malformed(f)) if f.starts_with("Admit plan tag")
        ));
        assert!(matches!(
            admit(&[]),
            Err(ProtoError::Malformed(f)) if f.starts_with("Admit plan tag")
        ));
        // A unicast plan's root address is not optional.
        assert_eq!(
            admit(&[1, 0, 0]).unwrap_err(),
            ProtoError::Malformed("Admit plan root address")
        );
        assert_eq!(
            admit(&[1, 4, 127, 0, 0, 1, 0, 1, 7]).unwrap_err(),
            ProtoError::Malformed("Admit plan uplink address")
        );
        assert_eq!(
            admit(&[2, 0]).unwrap_err(),
            ProtoError::Malformed("Admit plan group address")
        );
        // A multicast plan's source is an address without a port, never none.
        assert_eq!(
            admit(&[2, 4, 232, 0, 0, 1, 0, 1, 0]).unwrap_err(),
            ProtoError::Malformed("Admit plan source address")
        );
        assert_eq!(
            admit(&[2, 4, 232, 0, 0, 1, 0, 1, 6, 0]).unwrap_err(),
            ProtoError::Malformed("Admit plan source address")
        );
        assert!(admit(&[2, 4, 232, 0, 0, 1, 0, 1, 4, 127, 0, 0, 1])
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_ipv6_flow_label_is_not_carried() {
        let with_flow = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 77, 3));
        let frame = Frame::Join {
            transport: Transport::RootedUnicast,
            direction: Direction::Both,
            data: Some(with_flow),
            name: String::new(),
        };
        let (decoded, _) = decode(&encoded(&frame)).unwrap().unwrap();
        let Frame::Join {
            data: Some(SocketAddr::V6(addr)),
            ..
        } = decoded
        else {
            panic!("decoded {decoded:?}");
        };
        assert_eq!((addr.flowinfo(), addr.scope_id(), addr.port()), (0, 3, 1));
    }

    #[test]
    fn every_message_says_what_to_do() {
        let errors = [
            ProtoError::TooLong {
                len: 5000,
                max: MAX_FRAME,
            },
            ProtoError::TooLong {
                len: 2000,
                max: MAX_TEXT,
            },
            ProtoError::Version { got: 9 },
            ProtoError::UnknownType(9),
            ProtoError::Malformed("Join name"),
        ];
        for err in errors {
            let text = err.to_string();
            assert!(
                text.contains("close the connection") || text.contains("run the same"),
                "{text}"
            );
        }
    }
}
