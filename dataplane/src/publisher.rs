//! The publisher: packs messages into MoldUDP64 packets and sends them to a group, or
//! (with [`Publisher::with_socket`]) to any destination from a socket the caller made.
//!
//! # Contract
//!
//! - A [`Publisher`] belongs to one thread (`Send`, not `Sync`): every call takes
//!   `&mut self`, and the caller's thread does all the work; there is no background thread.
//! - [`offer`](Publisher::offer) copies the message into the open packet and numbers it
//!   (sequence numbers start at 1). A packet leaves when the next message does not fit,
//!   on [`flush`](Publisher::flush), or once it has been open for `max_delay` (checked by
//!   [`poll`](Publisher::poll), and by every 16th `offer` outside a batch). Between [`begin_batch`](Publisher::begin_batch)
//!   and [`end_batch`](Publisher::end_batch), full packets are held and leave together, so
//!   that runs of equal-length packets go as one GSO send; nothing else ever waits to make
//!   a batch bigger.
//! - When every packet buffer is in flight, `offer` refuses the message with
//!   [`OfferError::Backpressure`]: it was not taken, nothing is lost; `poll` and retry.
//! - Call `poll` from the idle loop: it sends packets whose delay expired, heartbeats
//!   when idle (default every second) and collects finished sends.
//! - [`close`](Publisher::close) sends what is pending and an end-of-session packet;
//!   dropping an open publisher does the same, ignoring errors.
//! - After warm-up nothing here allocates.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use multipoint_control::{Direction, Interface, Membership, MultipointSocket, Roles, Transport};
use socket2::{SockAddr, Socket, Type};

use crate::config::{BackendChoice, BackendInfo, BackendKind};
use crate::error::{Error, Result};
use crate::host::{HostNeeds, RingSize};
use crate::io::region::Region;
use crate::io::send::{build_ring, Sender};
use crate::io::{choose, MAX_GSO_SEGMENTS};
use crate::stats::PublisherStats;
use crate::wire::{
    write_end_of_session, write_heartbeat, PacketBuilder, PushError, Session, BLOCK_HEADER_LEN,
    DEFAULT_MAX_DATAGRAM, HEADER_LEN,
};

/// How a publisher is set up.
///
/// [`Publisher::with_socket`] ignores `group` (it sends to the destination it is given),
/// and `interface`, `bind`, `scope` and `loopback` (the caller configured the socket).
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The MoldUDP64 session name carried in every packet.
    pub session: Session,
    /// The group and port to send to.
    pub group: SocketAddr,
    /// The interface to send on (see [`multipoint_control::Interface`]).
    pub interface: Interface,
    /// Local address to bind (e.g. to choose the source address); `None`: any.
    pub bind: Option<SocketAddr>,
    /// Multicast scope (TTL / hop limit).
    pub scope: u8,
    /// Whether this host's own receivers get what is sent.
    pub loopback: bool,
    /// Largest datagram payload: packets are filled up to this size.
    pub max_datagram: usize,
    /// Longest a non-empty packet waits for more messages before it leaves.
    pub max_delay: Duration,
    /// Heartbeat interval while idle.
    pub heartbeat: Duration,
    /// Which I/O backend.
    pub backend: BackendChoice,
    /// Whether runs of equal-length packets leave as one UDP GSO send.
    pub gso: bool,
    /// Packet buffers (each `max_datagram` bytes), in flight or being filled.
    pub buffers: usize,
    /// Most packets held in a batch before they leave anyway, and most per GSO send (at
    /// most 64, the kernel's segment limit).
    pub max_batch: usize,
    /// io_uring only: send with `SENDMSG_ZC` from the packet buffers registered as a
    /// fixed buffer, so the kernel need not copy them where the device can read user
    /// memory directly. Each send then completes twice (sent, and buffers released). On
    /// loopback and veth the kernel copies anyway, so this only costs there.
    pub zero_copy: bool,
}

impl PublisherConfig {
    /// Defaults for `session` and `group`: the interface chosen by route (name one for
    /// real use), scope 1, loopback on, 1472-byte datagrams, 100 µs maximum delay,
    /// heartbeats every second, backend auto, GSO on, 256 buffers, batches of 32.
    pub fn new(session: Session, group: SocketAddr) -> PublisherConfig {
        PublisherConfig {
            session,
            group,
            interface: Interface::Default,
            bind: None,
            scope: 1,
            loopback: true,
            max_datagram: DEFAULT_MAX_DATAGRAM,
            max_delay: Duration::from_micros(100),
            heartbeat: Duration::from_secs(1),
            backend: BackendChoice::Auto,
            gso: true,
            buffers: 256,
            max_batch: 32,
            zero_copy: false,
        }
    }
}

impl PublisherConfig {
    /// What this publisher will ask of the host (see [`crate::host`]).
    pub fn host_needs(&self) -> HostNeeds {
        HostNeeds {
            senders: 1,
            sender_ring: PUBLISHER_RING,
            sender_registered_bytes: if self.zero_copy {
                (self.buffers * self.max_datagram) as u64
            } else {
                0
            },
            probes: 1,
            send_buffer: SEND_BUFFER as u64,
            ..HostNeeds::default()
        }
    }
}

/// The publisher's io_uring: room for a whole buffer pool of sends in flight.
const PUBLISHER_RING: RingSize = RingSize { sq: 256, cq: 1024 };

/// The send buffer a publisher asks for (capped by `net.core.wmem_max`): a deep one
/// absorbs bursts.
const SEND_BUFFER: usize = 4 << 20;

/// Why [`Publisher::offer`] did not take a message. The message was not consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Every packet buffer is in flight: call [`Publisher::poll`] and offer again.
    #[error("every packet buffer is in flight: poll and offer again")]
    Backpressure,
    /// The message can never fit in a packet of the configured datagram size.
    #[error("a {len}-byte message exceeds the {limit}-byte limit of a packet")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The longest message a packet carries.
        limit: usize,
    },
    /// The sequence numbers are used up (2^64 - 1 messages).
    #[error("the session's sequence numbers are exhausted")]
    SequenceExhausted,
}

/// Longest `close` waits for sends in flight.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

struct Open {
    slot: u16,
    builder: PacketBuilder,
    since: Instant,
}

/// The socket a publisher sends from.
enum PubSocket {
    /// Made and joined (sender-only) by [`Publisher::new`]. The membership is declared
    /// first so that it drops while its socket is still open.
    Joined {
        _membership: Membership,
        socket: MultipointSocket,
    },
    /// The caller's socket, from [`Publisher::with_socket`].
    Given(Socket),
}

impl PubSocket {
    fn socket(&self) -> &Socket {
        match self {
            PubSocket::Joined { socket, .. } => socket.socket(),
            PubSocket::Given(socket) => socket,
        }
    }
}

/// Publishes MoldUDP64 packets to one destination (a group, or any address). See the
/// module docs.
pub struct Publisher {
    config: PublisherConfig,
    /// Where every packet goes.
    dest: SocketAddr,
    socket: PubSocket,
    backend: BackendInfo,
    // `sender` must stay declared before `region`: its ring may hold the region
    // registered, and fields drop in declaration order.
    sender: Sender,
    region: Region,
    free: Vec<u16>,
    ready: Vec<(u16, u16)>,
    open: Option<Open>,
    batching: bool,
    next_sequence: u64,
    last_send: Instant,
    stats: PublisherStats,
    max_message: usize,
    closed: bool,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("dest", &self.dest)
            .field("backend", &self.backend)
            .field("next_sequence", &self.next_sequence)
            .finish()
    }
}

impl Publisher {
    /// Creates the socket (through the control crate), joins the group sender-only and
    /// sets up the chosen backend.
    ///
    /// # Errors
    ///
    /// [`Error::Control`] if the socket cannot be configured; [`Error::Config`] for
    /// settings out of range; [`Error::UringUnavailable`] when io_uring was required and
    /// is not there; [`Error::Io`] if setting up the ring or buffers fails.
    pub fn new(mut config: PublisherConfig) -> Result<Publisher> {
        check(&mut config)?;
        let transport = match config.group.ip() {
            IpAddr::V4(_) => Transport::Udp4Multicast,
            IpAddr::V6(_) => Transport::Udp6Multicast,
        };
        let socket = MultipointSocket::new(transport, Roles::LEAF)?;
        socket.set_interface(config.interface.clone())?;
        socket.set_scope(config.scope)?;
        socket.set_loopback(config.loopback)?;
        if let Some(bind) = config.bind {
            socket.bind(bind)?;
        }
        let membership = socket.join_leaf(config.group, Direction::SenderOnly, None)?;
        let dest = config.group;
        let socket = PubSocket::Joined {
            _membership: membership,
            socket,
        };
        Publisher::build(config, socket, dest)
    }

    /// A publisher that sends every packet to `dest` from `socket`, a UDP socket the
    /// caller made and configured (e.g. a unicast socket of a rooted transport's root). The
    /// socket may be bound or not, and may even be `connect()`ed to another peer: each
    /// send names `dest` explicitly, which Linux allows on a connected UDP socket.
    ///
    /// `config.group` is ignored in favour of `dest`, and so are `interface`, `bind`,
    /// `scope` and `loopback`: the socket is used as it is (only its send buffer is
    /// enlarged, as for [`new`](Self::new)). Everything else applies as for `new`. The
    /// publisher owns the socket from now on; dropping or closing it closes the socket.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for settings out of range, a socket that is not an IP datagram
    /// socket, or a destination of the other address family (for an IPv4 peer on an IPv6
    /// socket, give its IPv4-mapped address `::ffff:a.b.c.d`); [`Error::Io`] if the socket
    /// cannot be inspected, or setting up the ring or buffers fails;
    /// [`Error::UringUnavailable`] when io_uring was required and is not there.
    pub fn with_socket(
        socket: Socket,
        dest: SocketAddr,
        mut config: PublisherConfig,
    ) -> Result<Publisher> {
        check(&mut config)?;
        let kind = socket
            .r#type()
            .map_err(Error::io("reading the socket's type (SO_TYPE)"))?;
        if kind != Type::DGRAM {
            return Err(Error::Config(format!(
                "Publisher::with_socket needs a UDP (datagram) socket, and this one is of \
                 type {kind:?}"
            )));
        }
        let local = socket
            .local_addr()
            .map_err(Error::io("reading the socket's local address"))?;
        match local.as_socket() {
            Some(addr) if addr.is_ipv4() == dest.is_ipv4() => {}
            Some(addr) => {
                return Err(Error::Config(format!(
                    "destination {dest} is not of the socket's address family (the socket \
                     is {}): use a socket of the same family, or an IPv4-mapped address \
                     (::ffff:a.b.c.d) for an IPv4 peer on an IPv6 socket",
                    if addr.is_ipv4() { "IPv4" } else { "IPv6" }
                )))
            }
            None => {
                return Err(Error::Config(
                    "Publisher::with_socket needs an IPv4 or IPv6 UDP socket".into(),
                ))
            }
        }
        Publisher::build(config, PubSocket::Given(socket), dest)
    }

    /// Everything after the socket: buffers, backend and sender to `dest`.
    fn build(config: PublisherConfig, socket: PubSocket, dest: SocketAddr) -> Result<Publisher> {
        // A deep send buffer absorbs bursts; the kernel caps it at net.core.wmem_max.
        let _ = socket.socket().set_send_buffer_size(SEND_BUFFER);

        let backend = choose(config.backend)?;
        let ring = match backend.kind {
            BackendKind::Uring => Some(
                build_ring(PUBLISHER_RING.sq, PUBLISHER_RING.cq, false)
                    .map_err(Error::io("setting up the publisher's io_uring"))?,
            ),
            BackendKind::Mmsg => None,
        };
        let max_batch = config.max_batch;
        let region = Region::new(config.buffers, config.max_datagram)
            .map_err(Error::io("allocating packet buffers"))?;
        // SAFETY: the region is stored in the publisher next to the sender, declared after
        // it, so it is dropped after the sender's ring.
        let sender = unsafe {
            Sender::new(
                socket.socket().as_raw_fd(),
                SockAddr::from(dest),
                ring,
                &region,
                config.zero_copy,
                config.buffers,
                config.gso,
                max_batch,
            )
        }
        .map_err(Error::io("setting up the sender"))?;
        let free = (0..config.buffers as u16).rev().collect();
        Ok(Publisher {
            max_message: config.max_datagram - HEADER_LEN - BLOCK_HEADER_LEN,
            ready: Vec::with_capacity(config.buffers),
            config,
            dest,
            socket,
            backend,
            sender,
            region,
            free,
            open: None,
            batching: false,
            next_sequence: 1,
            last_send: Instant::now(),
            stats: PublisherStats::default(),
            closed: false,
        })
    }

    /// The backend in use and why.
    pub fn backend(&self) -> &BackendInfo {
        &self.backend
    }

    /// The socket (for reading its settings): the one [`new`](Self::new) made, or the
    /// one given to [`with_socket`](Self::with_socket).
    pub fn socket(&self) -> &Socket {
        self.socket.socket()
    }

    /// Where packets go: the group, or the destination given to
    /// [`with_socket`](Self::with_socket).
    pub fn destination(&self) -> SocketAddr {
        self.dest
    }

    /// The sequence number the next message will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The longest message a packet can carry.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Counters so far.
    pub fn stats(&self) -> PublisherStats {
        self.stats
    }

    /// Packs `msg` into the open packet and returns its sequence number.
    ///
    /// # Errors
    ///
    /// [`OfferError`]; the message was not taken.
    pub fn offer(&mut self, msg: &[u8]) -> std::result::Result<u64, OfferError> {
        if msg.len() > self.max_message {
            return Err(OfferError::TooLarge {
                len: msg.len(),
                limit: self.max_message,
            });
        }
        if let Some(open) = &self.open {
            if !open.builder.fits(msg.len()) {
                self.close_open();
                if !self.batching || self.ready.len() >= self.config.max_batch {
                    self.send_ready();
                }
            }
        }
        if self.open.is_none() {
            let slot = self.take_slot()?;
            let buf = &mut self.region.slot_mut(usize::from(slot))[..self.config.max_datagram];
            let Ok(builder) = PacketBuilder::start(buf, &self.config.session, self.next_sequence)
            else {
                // Unreachable with max_datagram >= HEADER_LEN (checked in new): give the
                // slot back rather than panic.
                self.free.push(slot);
                return Err(OfferError::Backpressure);
            };
            self.open = Some(Open {
                slot,
                builder,
                since: Instant::now(),
            });
        }
        let Some(open) = self.open.as_mut() else {
            return Err(OfferError::Backpressure);
        };
        let buf = &mut self.region.slot_mut(usize::from(open.slot))[..self.config.max_datagram];
        match open.builder.push(buf, msg) {
            Ok(()) => {}
            Err(PushError::SequenceExhausted) => return Err(OfferError::SequenceExhausted),
            Err(_) => {
                return Err(OfferError::TooLarge {
                    len: msg.len(),
                    limit: self.max_message,
                })
            }
        }
        let seq = self.next_sequence;
        self.next_sequence += 1;
        self.stats.messages += 1;
        self.stats.bytes += msg.len() as u64;
        if !self.batching {
            if self.config.max_delay.is_zero() {
                self.flush();
            } else if seq % 16 == 0 {
                // A clock read every 16th message keeps a steady trickle from waiting for
                // a full packet without paying for one per message.
                self.flush_if_due(Instant::now());
            }
        }
        Ok(seq)
    }

    /// Holds full packets until [`end_batch`](Self::end_batch) (or until `max_batch`
    /// of them wait), so that they leave together.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Sends the packets held since [`begin_batch`](Self::begin_batch); the open packet
    /// stays open (it leaves when full, on flush or after `max_delay`).
    pub fn end_batch(&mut self) {
        self.batching = false;
        self.send_ready();
    }

    /// Sends the open packet and everything held, now.
    pub fn flush(&mut self) {
        self.close_open();
        self.send_ready();
    }

    /// Timers and completions: sends the open packet once `max_delay` passed, a
    /// heartbeat when nothing was sent for the heartbeat interval, and collects finished
    /// sends. Call it from the idle loop.
    pub fn poll(&mut self) {
        self.reap(false);
        let now = Instant::now();
        self.flush_if_due(now);
        if self.open.is_none()
            && self.ready.is_empty()
            && now.duration_since(self.last_send) >= self.config.heartbeat
        {
            self.send_control(false);
        }
    }

    /// Sends the open packet if it has waited `max_delay`.
    fn flush_if_due(&mut self, now: Instant) {
        if let Some(open) = &self.open {
            if now.duration_since(open.since) >= self.config.max_delay {
                self.flush();
            }
        }
    }

    /// Sends what is pending and an end-of-session packet, waits for every send to
    /// finish, and returns the final counters.
    pub fn close(mut self) -> PublisherStats {
        self.finish();
        self.stats
    }

    fn finish(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.flush();
        // End of session needs a buffer: wait for one if all are in flight.
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while self.free.is_empty() && self.sender.in_flight() > 0 && Instant::now() < deadline {
            if self.reap_blocking().is_err() {
                break;
            }
        }
        self.send_control(true);
        while self.sender.in_flight() > 0 && Instant::now() < deadline {
            if self.reap_blocking().is_err() {
                break;
            }
        }
        if self.sender.in_flight() > 0 {
            tracing::warn!(
                in_flight = self.sender.in_flight(),
                "closing with sends still in flight"
            );
        }
    }

    /// Sends a heartbeat (or, `end`, an end-of-session packet) carrying the next
    /// sequence number.
    fn send_control(&mut self, end: bool) {
        let Ok(slot) = self.take_slot() else {
            return;
        };
        let buf = self.region.slot_mut(usize::from(slot));
        let written = if end {
            write_end_of_session(buf, &self.config.session, self.next_sequence)
        } else {
            write_heartbeat(buf, &self.config.session, self.next_sequence)
        };
        match written {
            Ok(len) => {
                self.ready.push((slot, len as u16));
                self.stats.heartbeats += u64::from(!end);
                self.send_ready();
            }
            Err(_) => self.free.push(slot),
        }
    }

    fn close_open(&mut self) {
        if let Some(mut open) = self.open.take() {
            let buf = self.region.slot_mut(usize::from(open.slot));
            let len = open.builder.finish(buf);
            self.ready.push((open.slot, len as u16));
        }
    }

    /// A free packet buffer, collecting finished sends if none is free.
    fn take_slot(&mut self) -> std::result::Result<u16, OfferError> {
        if let Some(slot) = self.free.pop() {
            return Ok(slot);
        }
        self.reap(false);
        if self.free.is_empty() && self.ready.len() + 1 >= self.config.buffers {
            // Everything is held in a batch: send it to make room.
            self.send_ready();
            self.reap(false);
        }
        self.free.pop().ok_or_else(|| {
            self.stats.backpressure += 1;
            OfferError::Backpressure
        })
    }

    fn send_ready(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let Publisher {
            sender,
            region,
            ready,
            free,
            stats,
            ..
        } = self;
        let mut done = |slot: u16, result: std::io::Result<()>| {
            free.push(slot);
            if let Err(e) = result {
                stats.send_errors += 1;
                tracing::debug!(error = %e, "send failed");
            }
        };
        while !ready.is_empty() {
            let (count, error) = sender.send(region, ready, &mut done);
            stats.packets += count.packets as u64;
            stats.sends += count.ops as u64;
            stats.gso_sends += count.gso_ops as u64;
            ready.drain(..count.packets);
            if let Some(e) = error {
                // What was taken stays queued in the ring; the rest waits for the next
                // flush or poll. Nothing is freed that the kernel may still read.
                tracing::warn!(error = %e, "submitting sends failed; will retry");
                break;
            }
            if count.packets == 0 {
                // Every operation is in flight: wait for one to finish.
                // Each blocking reap consumes at least one completion, so this ends.
                if sender.reap(true, &mut done).is_err() {
                    break;
                }
            }
        }
        self.last_send = Instant::now();
    }

    /// Waits for at least one send to finish (or a completion of one in progress).
    fn reap_blocking(&mut self) -> std::io::Result<usize> {
        let Publisher {
            sender,
            free,
            stats,
            ..
        } = self;
        let mut done = |slot: u16, result: std::io::Result<()>| {
            free.push(slot);
            if result.is_err() {
                stats.send_errors += 1;
            }
        };
        sender.reap(true, &mut done)
    }

    /// Collects finished sends; returns how many operations finished.
    fn reap(&mut self, wait: bool) -> usize {
        let Publisher {
            sender,
            free,
            stats,
            ..
        } = self;
        let mut done = |slot: u16, result: std::io::Result<()>| {
            free.push(slot);
            if result.is_err() {
                stats.send_errors += 1;
            }
        };
        sender.reap(wait, &mut done).unwrap_or(0)
    }
}

/// Checks the settings both constructors share, clamping `max_batch` to what one GSO send
/// can carry.
fn check(config: &mut PublisherConfig) -> Result<()> {
    config.max_batch = config.max_batch.clamp(1, MAX_GSO_SEGMENTS);
    if config.max_datagram < HEADER_LEN + BLOCK_HEADER_LEN || config.max_datagram > 65_507 {
        return Err(Error::Config(format!(
            "max_datagram {} is outside {}..=65507",
            config.max_datagram,
            HEADER_LEN + BLOCK_HEADER_LEN
        )));
    }
    if config.buffers == 0 || config.buffers > usize::from(u16::MAX) {
        return Err(Error::Config(format!(
            "buffers {} is outside 1..=65535",
            config.buffers
        )));
    }
    Ok(())
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.finish();
    }
}
