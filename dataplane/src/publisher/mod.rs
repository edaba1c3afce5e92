//! The publisher: packs messages into MoldUDP64 packets and sends them to a group, or
//! (with `Publisher::with_socket`) to any destination from a socket the caller made.
//!
//! # Contract
//!
//! - A [`Publisher`] belongs to one thread (`Send`, not `Sync`): every call takes
//!   `&mut self`, and the caller's thread does all the work; there is no background thread.
//! - `offer` copies the message into the open packet and numbers it
//!   (sequence numbers start at 1). A packet leaves when the next message does not fit,
//!   on `flush`, or once it has been open for `max_delay` (checked by
//!   `poll`, and by every 16th `offer` outside a batch). Between `begin_batch`
//!   and `end_batch`, full packets are held and leave together, so
//!   that runs of equal-length packets go as one GSO send.
//! - Outside a batch, batching is adaptive: a full packet leaves at once when the sender
//!   is idle (an idle publisher adds no latency), and waits while it is busy — while a
//!   send is in flight, and after it completed for twice as long as handing it over took
//!   (a packet filled that fast was produced faster than packets can be sent one by one;
//!   `core::packetizer::BUSY_FACTOR`).
//!   What waited leaves together, as GSO runs, at the first `offer` (every 16th, or one
//!   that fills a packet) that finds the sender idle, once `max_batch` packets wait, once
//!   the first waited `max_delay`, and always on `poll`, `flush` and `end_session`. So a
//!   plain `offer` loop sends about as few, large sends as a `begin_batch` loop. "In
//!   flight" per backend: on io_uring a send is in flight from its submission until its
//!   completion is collected (the publisher collects right after submitting, so a UDP send
//!   that completed inside the submit is not in flight, one that waits for room in the
//!   socket buffer is); on mmsg a send completes within the call, so only the busy time
//!   after it holds packets; on a simulated network, as on mmsg, unless sends are deferred
//!   (`SimNet::defer_sends_to`), which are in flight until reaped.
//! - When every packet buffer is in flight, `offer` refuses the message with
//!   `OfferError::Backpressure`: it was not taken, nothing is lost; `poll` and retry.
//!   `offer_wait` waits for room instead, idling as [`PublisherConfig::idle`] says (by
//!   default asleep in the kernel until a send completes), within a timeout; with the
//!   `tokio` feature `offer_async` awaits room without blocking the executor, and
//!   `close_async` awaits the sends in flight (see `async_wait`). Pacing to a rate is
//!   the caller's, with a [`crate::Pacer`].
//! - Call `poll` from the idle loop: it sends packets whose delay expired, heartbeats
//!   when idle (default every second) and collects finished sends.
//! - `end_session` sends what is pending and an end-of-session packet (once; later
//!   calls do nothing); offers are refused from then on. `close` ends the session and
//!   waits for the sends in flight; dropping an open publisher does the same, ignoring
//!   errors.
//! - With [`PublisherConfig::line_b`] every packet also goes to a second group (line B),
//!   from a socket of its own (on line B's interface), after line A's send of it and as a
//!   batch of its own: one packetizer, so the same session and sequence numbers, byte for
//!   byte. A packet's buffer is reused only once both sends of it completed; line B's
//!   counters are [`Publisher::line_b_stats`], and a failure on line B is counted there
//!   and never stops line A (see `lines`).
//! - With [`PublisherConfig::rerequest`] the publisher also runs a MoldUDP64 re-request
//!   server at a unicast address: the packetizer keeps every data packet in a
//!   retransmission store as it closes it, and requests are answered on the publisher's
//!   thread whenever it is driven — each `poll`, and from the send path at most every
//!   100 µs — one batch of at most 64 requests at a time (see `rerequest`). After
//!   `end_session`, keep calling `poll` for as long as re-requests should be served
//!   (the linger): it answers them and sends the end of session again every heartbeat
//!   interval, so that a lost end is not final.
//! - After warm-up nothing here allocates.
//!
//! The decisions (what goes in which packet, when a packet leaves, heartbeats, the end of
//! session) are the sans-IO [`Packetizer`]'s; this module gives it buffers and sends what
//! it says is ready, through the chosen backend (`sender`).

#[cfg(feature = "tokio")]
mod async_wait;
mod lines;
pub(crate) mod packing;
pub(crate) mod rerequest;
mod sender;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use multipoint_control::{Direction, Interface, MultipointSocket, Roles, Transport};
use socket2::{SockAddr, Socket, Type};

use self::lines::SlotBook;
pub use self::lines::{LineB, LineSendStats};
use self::packing::{packing_methods, Packing};
pub use self::rerequest::RerequestConfig;
use self::rerequest::Rerequests;
use self::sender::{AnySender, PacketSender, SendCount, TxStamps};
use crate::config::{
    BackendChoice, BackendInfo, BackendKind, IdleStrategy, Network, XdpConfig, BACKOFF_SPIN,
};
use crate::core::packetizer::{OfferError, Packetizer, PacketizerConfig, Slots};
use crate::core::stamps::{SendLatency, TxStampConfig};
use crate::core::SystemClock;
use crate::error::{Error, Result};
use crate::host::{HostNeeds, RingSize};
use crate::io::mmsg::MmsgSend;
use crate::io::op::OpTable;
use crate::io::region::Region;
use crate::io::sim::{self, SimSend};
use crate::io::stamps::{explicit_keys, set_tx_stamping};
use crate::io::uring::{build_ring, UringSend};
use crate::io::xdp::send::{XdpSend, XdpSendCounters};
use crate::io::xdp::{XdpSendStats, XdpShared};
use crate::io::{choose, sim_backend, DataSocket, OwnedSocket, MAX_GSO_SEGMENTS};
use crate::runtime::BLOCK_WAIT;
use crate::stat::kinds::SenderEntries;
use crate::stats::PublisherStats;
use crate::wire::{Session, DEFAULT_MAX_DATAGRAM};

/// How a publisher is set up.
///
/// [`Publisher::with_socket`] ignores `group` (it sends to the destination it is given),
/// and `interface`, `bind`, `scope` and `loopback` (the caller configured the socket).
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The MoldUDP64 session name carried in every packet.
    pub session: Session,
    /// The group and port to send to (line A).
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
    /// The network [`Publisher::new`] makes its socket on: the host's, or a simulated one
    /// (which ignores `interface`, `scope` and `loopback`, and runs the sim backend
    /// whatever `backend` says).
    pub network: Network,
    /// A re-request server to run beside the stream (`None`: lost messages are lost for
    /// good). Its socket is made on the same network as the publisher's.
    pub rerequest: Option<RerequestConfig>,
    /// A second line (`None`: one line only): every packet also goes to
    /// [`LineB::group`], after line A's send of it, from a second socket made like the
    /// first (`scope`, `loopback`, `backend` and `network` apply to it too) but with
    /// [`LineB::interface`] as its multicast interface and never bound to `bind` (the
    /// kernel chooses its source address on that interface; on a simulated network it
    /// sends from the loopback address, any port). Only [`Publisher::new`] takes one.
    /// With `zero_copy`, each line's ring registers the packet buffers.
    pub line_b: Option<LineB>,
    /// How [`Publisher::offer_wait`] waits for room when every buffer is in flight. The
    /// default, [`IdleStrategy::Block`], sleeps in the kernel until a send completes (on
    /// io_uring, in the ring's wait): back-pressure means the kernel is behind, and
    /// spinning would take the core it needs to catch up (on loopback the sender's
    /// core also runs the receive side), while a wake-up costs little against the wait
    /// for room in a socket buffer. `Backoff` spins first ([`crate::config::BACKOFF_SPIN`])
    /// for short waits; `Spin` and `Yield` never sleep.
    pub idle: IdleStrategy,
    /// Sample one send in this many for a send→wire latency (see
    /// [`crate::core::stamps`]): the sampled sends (line A's) ask the kernel for a
    /// software transmit stamp, read back from the socket's error queue and matched to
    /// the `CLOCK_REALTIME` reading at submission ([`Publisher::send_latency`]). A GSO
    /// send is one send and gets one stamp, its first segment's. 0, the default: off, and
    /// the send path is what it was (one flag check per send). Costs, when on: a control
    /// message and a clock read per sampled send, and one non-blocking `recvmsg` of the
    /// error queue per flush while a sample waits. No stamps on a simulated network.
    pub tx_stamp_every: u32,
    /// With [`BackendChoice::Xdp`]: the AF_XDP socket's queue and sizes, and its
    /// interface (when [`XdpConfig::interface`] is left at `Default`, `interface`'s).
    /// Frames leave through the TX ring with headers built here: to multicast groups
    /// only, from the interface's first address of the group's family, and not looped
    /// back to this host's receivers.
    pub xdp: XdpConfig,
}

impl PublisherConfig {
    /// Defaults for `session` and `group`: the interface chosen by route (name one for
    /// real use), scope 1, loopback on, 1472-byte datagrams, 100 µs maximum delay,
    /// heartbeats every second, backend auto, GSO on, 256 buffers, batches of 32, the
    /// host's network, no re-request server, one line, and blocking waits for room.
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
            network: Network::Host,
            rerequest: None,
            line_b: None,
            idle: IdleStrategy::Block,
            tx_stamp_every: 0,
            xdp: XdpConfig::default(),
        }
    }
}

impl PublisherConfig {
    /// What this publisher will ask of the host (see [`crate::host`]): a sender (ring)
    /// per line.
    pub fn host_needs(&self) -> HostNeeds {
        HostNeeds {
            senders: 1 + u32::from(self.line_b.is_some()),
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

/// Longest `close` waits for sends in flight.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The packet buffers: one region of `max_datagram`-byte slots, the free list and the
/// sends each buffer in flight waits for.
pub(crate) struct Buffers {
    region: Region,
    book: SlotBook,
}

impl Slots for Buffers {
    fn take(&mut self) -> Option<u16> {
        self.book.free.pop()
    }

    unsafe fn buffer(&mut self, slot: u16) -> &mut [u8] {
        self.region.slot_mut(usize::from(slot))
    }

    fn give_back(&mut self, slot: u16) {
        self.book.give_back(slot);
    }
}

/// Line B's sending: its own socket and sender, and what it sent.
struct LineSender {
    /// Where line B's packets go.
    group: SocketAddr,
    // `sender` before `_socket`: the ring goes before the descriptor it sends on.
    sender: AnySender,
    _socket: OwnedSocket,
    stats: LineSendStats,
    /// Buffers line B's sends hold now (taken and not finished).
    held: usize,
    /// The most it may hold: half the buffers, so that line A always has the other half.
    share: usize,
}

impl LineSender {
    /// Sends the packets `(slot, len)` that line A took, in order, as batches of line B's
    /// own (GSO runs of its own). Line B may hold at most its share of the buffers
    /// ([`LineSender::share`]) in sends not finished: what would go over it, and what its
    /// backend cannot take at all (submitting failed, or nothing it had in flight
    /// finished), is counted as failed on line B and let go on line B only. So a line B
    /// that is slow (shaped, congested) loses packets of its own rather than holding the
    /// buffers line A needs. (On the mmsg backend a send completes within the call, but
    /// a full socket buffer blocks it, and the thread with it.)
    fn send(&mut self, region: &Region, mut packets: &[(u16, u16)], book: &mut SlotBook) {
        let LineSender {
            sender,
            stats,
            held,
            share,
            ..
        } = self;
        let mut errors = 0u64;
        while !packets.is_empty() {
            // What finishes in this round gives its buffers back (each slot once).
            let mut finished = 0usize;
            if *held >= *share {
                // Its share is taken: collect what finished, without waiting.
                let _ = sender.reap(false, &mut |slot: u16, ok: bool| {
                    book.sent(slot);
                    errors += u64::from(!ok);
                    finished += 1;
                });
            }
            // Up to its share (a batch larger than the share goes as several sends).
            let room = share.saturating_sub(held.saturating_sub(finished));
            let take = packets.get(..packets.len().min(room)).unwrap_or(&[]);
            let mut done = |slot: u16, ok: bool| {
                book.sent(slot);
                errors += u64::from(!ok);
                finished += 1;
            };
            let (count, error) = if take.is_empty() {
                (SendCount::default(), None)
            } else {
                sender.send(region, take, &mut done)
            };
            stats.packets += count.packets as u64;
            stats.sends += count.ops as u64;
            stats.gso_sends += count.gso_ops as u64;
            packets = packets.get(count.packets..).unwrap_or(&[]);
            let stuck = match error {
                Some(e) => {
                    tracing::warn!(error = %e, "line B: submitting sends failed");
                    true
                }
                // Over its share: what is left is line B's loss.
                None if take.is_empty() => true,
                // Every operation is in flight: wait for one to finish.
                None if count.packets == 0 => !matches!(sender.reap(true, &mut done), Ok(1..)),
                None => false,
            };
            *held = (*held + count.packets).saturating_sub(finished);
            if stuck && !packets.is_empty() {
                tracing::debug!(
                    packets = packets.len(),
                    held = *held,
                    "line B cannot take these packets; line A goes on without them"
                );
                for &(slot, _) in packets {
                    book.sent(slot);
                }
                errors += packets.len() as u64;
                break;
            }
        }
        stats.send_errors += errors;
    }

    /// Sleeps until one of line B's sends completes (collecting it) or `timeout` passes.
    fn wait(&mut self, timeout: Duration, book: &mut SlotBook) {
        let mut errors = 0u64;
        let mut finished = 0usize;
        self.sender.wait(timeout, &mut |slot: u16, ok: bool| {
            book.sent(slot);
            errors += u64::from(!ok);
            finished += 1;
        });
        self.held = self.held.saturating_sub(finished);
        self.stats.send_errors += errors;
    }

    /// Collects line B's finished sends (see [`Publisher::reap`]).
    fn reap(&mut self, wait: bool, book: &mut SlotBook) -> std::io::Result<usize> {
        let mut errors = 0u64;
        let mut finished = 0usize;
        let reaped = self.sender.reap(wait, &mut |slot: u16, ok: bool| {
            book.sent(slot);
            errors += u64::from(!ok);
            finished += 1;
        });
        self.held = self.held.saturating_sub(finished);
        self.stats.send_errors += errors;
        reaped
    }
}

/// What collecting both lines' sends came to: the sum of what each collected, or an
/// error only when both failed (one failing is logged).
fn either_line(a: std::io::Result<usize>, b: std::io::Result<usize>) -> std::io::Result<usize> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(a + b),
        (Ok(n), Err(e)) | (Err(e), Ok(n)) => {
            tracing::warn!(error = %e, "collecting one line's sends failed; the other's go on");
            Ok(n)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

/// Publishes MoldUDP64 packets to one destination (a group, or any address). See the
/// module docs.
pub struct Publisher {
    config: PublisherConfig,
    /// Where every packet goes.
    dest: SocketAddr,
    socket: OwnedSocket,
    backend: BackendInfo,
    // `sender` and `line_b` must stay declared before `buffers`: their rings may hold the
    // region registered, and fields drop in declaration order.
    sender: AnySender,
    /// Line B, if configured.
    line_b: Option<LineSender>,
    buffers: Buffers,
    core: Packetizer,
    stats: PublisherStats,
    /// The re-request server, if one was configured.
    rerequest: Option<Rerequests>,
    closed: bool,
    /// Its entries in the counters file (`multipoint stat`).
    stat: SenderEntries,
    /// With the AF_XDP backend: how its socket was set up, and its counters.
    xdp: Option<(Arc<XdpShared>, Arc<XdpSendCounters>)>,
    /// How async tasks learn that a send completed (see `async_wait`).
    #[cfg(feature = "tokio")]
    notifier: async_wait::Notifier,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("dest", &self.dest)
            .field("backend", &self.backend)
            .field("next_sequence", &self.core.next_sequence())
            .finish()
    }
}

impl Publisher {
    /// Creates the socket (through the control crate), joins the group sender-only and
    /// sets up the chosen backend. On a simulated network ([`PublisherConfig::network`])
    /// the socket is bound at `bind` (else on loopback, any port). With
    /// [`PublisherConfig::rerequest`], also binds the re-request server's socket and
    /// allocates the retransmission store. With [`PublisherConfig::line_b`], makes line
    /// B's socket the same way, on line B's interface.
    ///
    /// # Errors
    ///
    /// [`Error::Control`] if a socket cannot be configured; [`Error::Config`] for
    /// settings out of range; [`Error::UringUnavailable`] when io_uring was required and
    /// is not there; [`Error::Io`] if setting up the ring or buffers fails;
    /// [`Error::RerequestBind`] if the re-request server's address cannot be bound.
    pub fn new(config: PublisherConfig) -> Result<Publisher> {
        let core = packetizer(&config)?;
        let dest = config.group;
        let socket = line_socket(&config, dest, &config.interface, config.bind)?;
        Publisher::build(config, core, socket, dest)
    }

    /// A publisher that sends every packet to `dest` from `socket`, a UDP socket the
    /// caller made and configured (e.g. a unicast socket of a rooted transport's root), or
    /// a socket of a simulated network. The socket may be bound or not, and may even be
    /// `connect()`ed to another peer: each send names `dest` explicitly, which Linux
    /// allows on a connected UDP socket.
    ///
    /// `config.group` is ignored in favour of `dest`, and so are `interface`, `bind`,
    /// `scope`, `loopback` and `network`: the socket is used as it is (only its send
    /// buffer is enlarged, as for [`new`](Self::new)). Everything else applies as for
    /// `new`, but for `line_b`: a publisher on a given socket sends on that one line. The
    /// publisher owns the socket from now on; dropping or closing it closes the socket.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for settings out of range, a `line_b`, a socket that is not an IP
    /// datagram socket, or a destination of the other address family (for an IPv4 peer
    /// on an IPv6 socket, give its IPv4-mapped address `::ffff:a.b.c.d`); [`Error::Io`]
    /// if the socket cannot be inspected, or setting up the ring or buffers fails;
    /// [`Error::UringUnavailable`] when io_uring was required and is not there;
    /// [`Error::RerequestBind`] if the re-request server's address cannot be bound (on a
    /// simulated socket's network, for a simulated socket).
    pub fn with_socket(
        socket: impl Into<DataSocket>,
        dest: SocketAddr,
        config: PublisherConfig,
    ) -> Result<Publisher> {
        if let Some(line_b) = &config.line_b {
            return Err(Error::Config(format!(
                "Publisher::with_socket sends on the one socket it is given: line B (to {}) \
                 needs Publisher::new, which makes a socket per line",
                line_b.group
            )));
        }
        let core = packetizer(&config)?;
        let socket = match socket.into() {
            DataSocket::Sim(socket) => {
                return Publisher::build(config, core, OwnedSocket::Sim(socket), dest)
            }
            DataSocket::Host(socket) => socket,
        };
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
        Publisher::build(config, core, OwnedSocket::Given(socket), dest)
    }

    /// Everything after the socket: buffers, backend, the sender to `dest` and, with
    /// [`PublisherConfig::line_b`], line B's socket and sender.
    fn build(
        config: PublisherConfig,
        core: Packetizer,
        socket: OwnedSocket,
        dest: SocketAddr,
    ) -> Result<Publisher> {
        let region = Region::new(config.buffers, config.max_datagram)
            .map_err(Error::io("allocating packet buffers"))?;
        let mut backend = match &socket {
            OwnedSocket::Sim(_) => sim_backend(),
            OwnedSocket::Joined { .. } | OwnedSocket::Given(_) => choose(config.backend)?,
        };
        let mut xdp = None;
        let on_xdp = backend.kind == BackendKind::Xdp && !matches!(socket, OwnedSocket::Sim(_));
        if on_xdp {
            check_xdp(&config)?;
        }
        let mut sender = if on_xdp {
            let (sender, shared, counters) = xdp_sender(&socket, &config, dest)?;
            backend.reason = format!("{}: {}", backend.reason, shared.setup());
            xdp = Some((shared, counters));
            sender
        } else {
            line_sender(&socket, backend.kind, &config, &region, dest)?
        };
        if let (Some(host), true) = (socket.host(), config.tx_stamp_every > 0) {
            let fd = host.as_raw_fd();
            set_tx_stamping(fd).map_err(Error::io(
                "turning on transmit stamps (SO_TIMESTAMPING) on the publisher's socket",
            ))?;
            sender.set_stamps(TxStamps::new(
                TxStampConfig::every(config.tx_stamp_every),
                fd,
                explicit_keys(),
            ));
        }
        let line_b = match &config.line_b {
            Some(line) => {
                let socket = line_socket(&config, line.group, &line.interface, None)?;
                Some(LineSender {
                    group: line.group,
                    sender: line_sender(&socket, backend.kind, &config, &region, line.group)?,
                    _socket: socket,
                    stats: LineSendStats::default(),
                    held: 0,
                    share: (config.buffers / 2).max(1),
                })
            }
            None => None,
        };
        let rerequest = match &config.rerequest {
            Some(rerequest) => {
                let sim = match &socket {
                    OwnedSocket::Sim(socket) => Some(socket.net()),
                    OwnedSocket::Joined { .. } | OwnedSocket::Given(_) => None,
                };
                Some(Rerequests::bind(
                    rerequest,
                    config.session,
                    config.max_datagram,
                    sim,
                )?)
            }
            None => None,
        };
        let book = SlotBook::new(config.buffers, 1 + u8::from(line_b.is_some()));
        let stat = SenderEntries::register::<PublisherStats>(
            &config.session.to_string(),
            &dest.to_string(),
            line_b.as_ref().map(|l| l.group.to_string()).as_deref(),
        );
        if let Some(stamps) = sender.stamps_mut() {
            if let Some(h) = stat.add_histogram("send_to_wire") {
                stamps.mirror_to(h);
            }
        }
        Ok(Publisher {
            config,
            dest,
            socket,
            backend,
            sender,
            line_b,
            buffers: Buffers { region, book },
            core,
            stats: PublisherStats::default(),
            rerequest,
            closed: false,
            stat,
            xdp,
            #[cfg(feature = "tokio")]
            notifier: async_wait::Notifier::default(),
        })
    }

    /// The backend in use and why.
    pub fn backend(&self) -> &BackendInfo {
        &self.backend
    }

    /// The socket (for reading its settings): the one [`new`](Self::new) made, or the
    /// one given to [`with_socket`](Self::with_socket); `None` on a simulated network.
    pub fn socket(&self) -> Option<&Socket> {
        self.socket.host()
    }

    /// The address packets leave from (`None` if the kernel cannot say).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr()
    }

    /// Where packets go: the group, or the destination given to
    /// [`with_socket`](Self::with_socket).
    pub fn destination(&self) -> SocketAddr {
        self.dest
    }

    /// Where line B's packets go; `None` with one line.
    pub fn line_b_destination(&self) -> Option<SocketAddr> {
        self.line_b.as_ref().map(|line| line.group)
    }

    /// Line B's counters so far; `None` with one line.
    pub fn line_b_stats(&self) -> Option<LineSendStats> {
        self.line_b.as_ref().map(|line| line.stats)
    }

    /// With the AF_XDP backend, what its send path did so far and how it was set up;
    /// `None` on the other backends.
    pub fn xdp_stats(&self) -> Option<XdpSendStats> {
        self.xdp.as_ref().map(|(shared, c)| XdpSendStats {
            setup: shared.setup(),
            frames: c.frames.get(),
            completed: c.completed.get(),
            waits: c.waits.get(),
            dropped: c.dropped.get(),
            kick_errors: c.kick_errors.get(),
            kernel_tx_invalid: c.kernel_tx_invalid.get(),
        })
    }

    /// Counters so far. `packets`, `sends`, `gso_sends` and `send_errors` are line A's
    /// (line B's are [`line_b_stats`](Self::line_b_stats)); the rest are the publisher's.
    pub fn stats(&self) -> PublisherStats {
        let core = self.core.stats();
        PublisherStats {
            messages: core.messages,
            bytes: core.bytes,
            heartbeats: core.heartbeats,
            ..self.stats
        }
    }

    /// The send→wire latency so far (with [`PublisherConfig::tx_stamp_every`]; `None`
    /// without). Stamps that came are read first; with `wait`, for at most that long
    /// while samples still wait for theirs (the stamp of a send comes a few microseconds
    /// after it). Samples still waiting are not counted as expired yet.
    pub fn send_latency(&mut self, wait: Duration) -> Option<SendLatency> {
        let deadline = Instant::now() + wait;
        let stamps = self.sender.stamps_mut()?;
        loop {
            stamps.drain();
            if stamps.outstanding() == 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Some(stamps.latency().clone())
    }

    packing_methods!(together: "leave", hands: "Sends");

    /// Like [`offer`](Self::offer), but when every buffer is in flight it waits for room
    /// — collecting finished sends, idling between looks as [`PublisherConfig::idle`]
    /// says (`Block`: asleep in the kernel until a send completes) — instead of refusing
    /// at once, for at most `timeout` (`Duration::MAX`: for as long as it takes). A wait
    /// counts once in [`PublisherStats::backpressure`], however long it lasts.
    ///
    /// # Errors
    ///
    /// [`OfferError`]: `Backpressure` once `timeout` passed without room (the message
    /// was not taken); the other refusals at once, as `offer` gives them.
    pub fn offer_wait(
        &mut self,
        msg: &[u8],
        timeout: Duration,
    ) -> std::result::Result<u64, OfferError> {
        match self.offer_message(msg) {
            Err(OfferError::Backpressure) => {}
            taken => return taken,
        }
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        loop {
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                return Err(OfferError::Backpressure);
            }
            self.wait_for_room(now.saturating_duration_since(start), left);
            match self.offer_again(msg) {
                Err(OfferError::Backpressure) => {}
                taken => return taken,
            }
        }
    }

    /// Offers `msg` once more after a refusal (not counted again), sending what is due.
    fn offer_again(&mut self, msg: &[u8]) -> std::result::Result<u64, OfferError> {
        let taken = self.core.offer(msg, &mut self.buffers, &SystemClock);
        if self.core.poll_transmit().is_some() || self.core.wants_completions() {
            self.transmit();
        }
        taken
    }

    /// Whether a buffer is free for the next packet.
    fn has_room(&self) -> bool {
        !self.buffers.book.free.is_empty()
    }

    /// One wait for room inside [`offer_wait`](Self::offer_wait), `waited` into it and at
    /// most `left` long: sends what is held, collects finished sends, and, if no buffer
    /// came free, idles once as [`PublisherConfig::idle`] says.
    fn wait_for_room(&mut self, waited: Duration, left: Duration) {
        self.make_room();
        if self.has_room() {
            return;
        }
        match self.config.idle {
            IdleStrategy::Spin => std::hint::spin_loop(),
            IdleStrategy::Yield => std::thread::yield_now(),
            IdleStrategy::Backoff if waited < BACKOFF_SPIN => std::hint::spin_loop(),
            IdleStrategy::Block | IdleStrategy::Backoff => {
                self.block_for_completion(left.min(BLOCK_WAIT));
            }
        }
    }

    /// Sleeps until a send of either line completes (collecting it) or `timeout` passes:
    /// on io_uring in the ring's wait, on a simulated network until its deferred sends
    /// are due. With nothing in flight there is nothing to wait for (mmsg completes every
    /// send within the call): it only yields.
    fn block_for_completion(&mut self, timeout: Duration) {
        let Publisher {
            sender,
            line_b,
            buffers,
            stats,
            ..
        } = self;
        let mut errors = 0u64;
        if sender.in_flight() > 0 {
            sender.wait(timeout, &mut |slot: u16, ok: bool| {
                buffers.book.sent(slot);
                errors += u64::from(!ok);
            });
        } else if let Some(line) = line_b.as_mut().filter(|l| l.sender.in_flight() > 0) {
            line.wait(timeout, &mut buffers.book);
        } else {
            std::thread::yield_now();
        }
        stats.send_errors += errors;
        let in_flight = self.in_flight() > 0;
        self.core.handle_completions(in_flight, Instant::now());
    }

    /// Timers, completions and re-requests: sends the open packet once `max_delay`
    /// passed, a heartbeat when nothing was sent for the heartbeat interval (after the
    /// end of session, the end again), collects finished sends, and answers one batch of
    /// re-requests. Call it from the idle loop, and after
    /// [`end_session`](Self::end_session) for as long as re-requests should be served.
    pub fn poll(&mut self) {
        let _ = self.reap(false);
        self.run_timers();
        if let (Some(rerequest), Some(store)) = (self.rerequest.as_mut(), self.core.store()) {
            rerequest.serve(store, Instant::now());
        }
        if self.stat.due() {
            self.publish_stat();
        }
    }

    /// Writes the counters into the counters file.
    fn publish_stat(&self) {
        self.stat.publish(&self.stats(), self.line_b_stats());
    }

    /// Sends what is pending and an end-of-session packet, now; offers are refused from
    /// then on. Only the first call does anything. The re-request server goes on
    /// answering (from [`poll`](Self::poll)) until the publisher is closed or dropped.
    pub fn end_session(&mut self) {
        if self.core.is_ended() {
            return;
        }
        self.flush();
        // End of session needs a buffer: wait for one if all are in flight.
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while self.buffers.book.free.is_empty() && self.in_flight() > 0 && Instant::now() < deadline
        {
            if self.reap(true).is_err() {
                break;
            }
        }
        if !self.core.end_session(&mut self.buffers) {
            self.stats.backpressure += 1;
        }
        self.transmit();
    }

    /// Ends the session (if not done yet), waits for every send to finish, and returns
    /// the final counters.
    pub fn close(self) -> PublisherStats {
        self.close_lines().0
    }

    /// [`close`](Self::close), returning line B's final counters too (`None` with one
    /// line).
    pub fn close_lines(mut self) -> (PublisherStats, Option<LineSendStats>) {
        self.finish();
        (self.stats(), self.line_b_stats())
    }

    /// Send operations in flight, on both lines.
    fn in_flight(&self) -> usize {
        self.sender.in_flight()
            + self
                .line_b
                .as_ref()
                .map_or(0, |line| line.sender.in_flight())
    }

    fn finish(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.end_session();
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while self.in_flight() > 0 && Instant::now() < deadline {
            if self.reap(true).is_err() {
                break;
            }
        }
        if self.in_flight() > 0 {
            tracing::warn!(
                in_flight = self.in_flight(),
                "closing with sends still in flight"
            );
        }
        // The final counters, readable until the publisher is gone.
        self.publish_stat();
    }

    /// Sends what the packetizer says is due, waiting for sends in flight when every
    /// operation is taken: each batch to line A, then what line A took to line B.
    fn transmit(&mut self) {
        if self.core.wants_completions() {
            // Packets wait for a send in flight: collecting its completion (reported to
            // the packetizer by `reap`) may make them due.
            let _ = self.reap(false);
        }
        if self.core.poll_transmit().is_none() {
            return;
        }
        let now = Instant::now();
        let Publisher {
            sender,
            line_b,
            buffers: Buffers { region, book },
            core,
            stats,
            rerequest,
            ..
        } = self;
        let mut errors = 0u64;
        while let Some(ready) = core.poll_transmit() {
            // Before any send: a synchronous backend completes within it.
            book.hand_out(ready);
            let (count, error) = sender.send(region, ready, &mut |slot: u16, ok: bool| {
                book.sent(slot);
                errors += u64::from(!ok);
            });
            stats.packets += count.packets as u64;
            stats.sends += count.ops as u64;
            stats.gso_sends += count.gso_ops as u64;
            if let Some(line) = line_b.as_mut() {
                line.send(region, ready.get(..count.packets).unwrap_or(&[]), book);
            }
            core.handle_transmitted(count.packets, now);
            if let Some(e) = error {
                // What was submitted stays in flight; the rest waits for the next flush or
                // poll. Nothing is freed that the kernel may still read.
                tracing::warn!(error = %e, "submitting sends failed; will retry");
                break;
            }
            if count.packets == 0 {
                // Every operation is in flight: wait for one to finish. Each blocking
                // reap consumes at least one completion, so this ends.
                let reaped = sender.reap(true, &mut |slot: u16, ok: bool| {
                    book.sent(slot);
                    errors += u64::from(!ok);
                });
                if reaped.is_err() {
                    break;
                }
            }
        }
        // What completed within the hand-over (io_uring completes most UDP sends inside
        // the submit; mmsg and sim all of them) is collected now, so that the packetizer
        // learns whether a send is still in flight, and how long the hand-over took.
        if sender.in_flight() > 0 {
            let _ = sender.reap(false, &mut |slot: u16, ok: bool| {
                book.sent(slot);
                errors += u64::from(!ok);
            });
        }
        let in_flight =
            sender.in_flight() + line_b.as_ref().map_or(0, |line| line.sender.in_flight());
        core.handle_send(now, Instant::now(), in_flight > 0);
        stats.send_errors += errors;
        if let Some(stamps) = sender.stamps_mut() {
            stamps.drain();
        }
        if let (Some(rerequest), Some(store)) = (rerequest.as_mut(), core.store()) {
            rerequest.serve_if_due(store, now);
        }
        if self.stat.due() {
            self.publish_stat();
        }
    }

    /// Collects finished sends of both lines (with `wait`, at least one if any is in
    /// flight, on whichever line has some); returns how many operations finished. One
    /// line failing to collect does not stop the other's being collected: it is an error
    /// only when both fail (so that closing never stops waiting for a healthy line's
    /// sends, whose buffers the kernel may still read).
    fn reap(&mut self, wait: bool) -> std::io::Result<usize> {
        let reaped = self.reap_lines(wait);
        let in_flight = self.in_flight() > 0;
        self.core.handle_completions(in_flight, Instant::now());
        reaped
    }

    /// [`reap`](Self::reap) but for telling the packetizer.
    fn reap_lines(&mut self, wait: bool) -> std::io::Result<usize> {
        let a_in_flight = self.sender.in_flight() > 0;
        let mut reaped = self.reap_line_a(false);
        if let Some(line) = self.line_b.as_mut() {
            let b = line.reap(false, &mut self.buffers.book);
            reaped = either_line(reaped, b);
        }
        if wait && matches!(reaped, Ok(0)) {
            let b_in_flight = self
                .line_b
                .as_ref()
                .is_some_and(|line| line.sender.in_flight() > 0);
            if a_in_flight {
                reaped = self.reap_line_a(true);
            }
            if b_in_flight && !matches!(reaped, Ok(1..)) {
                if let Some(line) = self.line_b.as_mut() {
                    let b = line.reap(!a_in_flight || reaped.is_err(), &mut self.buffers.book);
                    reaped = either_line(reaped, b);
                }
            }
        }
        reaped
    }

    /// Collects line A's finished sends (see [`reap`](Self::reap)).
    fn reap_line_a(&mut self, wait: bool) -> std::io::Result<usize> {
        let Publisher {
            sender,
            buffers,
            stats,
            ..
        } = self;
        let mut errors = 0u64;
        let reaped = sender.reap(wait, &mut |slot: u16, ok: bool| {
            buffers.book.sent(slot);
            errors += u64::from(!ok);
        });
        stats.send_errors += errors;
        reaped
    }
}

impl Packing for Publisher {
    type Slots = Buffers;

    fn packing(&mut self) -> (&mut Packetizer, &mut Buffers) {
        (&mut self.core, &mut self.buffers)
    }

    fn send_ready(&mut self) {
        self.transmit();
    }

    /// Sends what is due, collects finished sends, and if every other buffer is held in a
    /// batch, or any is held for a busy sender, sends them.
    fn make_room(&mut self) {
        self.transmit();
        let _ = self.reap(false);
        let held = self.core.held();
        if self.buffers.book.free.is_empty()
            && held > 0
            && (held + 1 >= self.config.buffers || !self.core.is_batching())
        {
            self.core.release_held();
            self.transmit();
            let _ = self.reap(false);
        }
    }

    fn refused(&mut self) {
        self.stats.backpressure += 1;
    }
}

/// A line's socket, on the network `config` names: to `group` through `interface`, bound
/// at `bind` if given. On the host's network it is made through the control crate with
/// `config`'s scope and loopback and joined to `group` sender-only; on a simulated one it
/// is bound at `bind` (else the loopback address of `group`'s family, any port).
fn line_socket(
    config: &PublisherConfig,
    group: SocketAddr,
    interface: &Interface,
    bind: Option<SocketAddr>,
) -> Result<OwnedSocket> {
    if let Network::Sim(net) = &config.network {
        let bind = bind.unwrap_or_else(|| sim::default_source(group));
        let socket = net
            .bind(bind)
            .map_err(Error::io("binding the publisher's simulated socket"))?;
        return Ok(OwnedSocket::Sim(socket));
    }
    let transport = match group.ip() {
        IpAddr::V4(_) => Transport::Udp4Multicast,
        IpAddr::V6(_) => Transport::Udp6Multicast,
    };
    let socket = MultipointSocket::new(transport, Roles::LEAF)?;
    socket.set_interface(interface.clone())?;
    socket.set_scope(config.scope)?;
    socket.set_loopback(config.loopback)?;
    if let Some(bind) = bind {
        socket.bind(bind)?;
    }
    let membership = socket.join_leaf(group, Direction::SenderOnly, None)?;
    Ok(OwnedSocket::Joined {
        _membership: membership,
        socket,
    })
}

/// A line's sender: from `socket` to `dest` with the packet buffers of `region`, over
/// `kind` (a simulated socket always sends on the sim backend).
fn line_sender(
    socket: &OwnedSocket,
    kind: BackendKind,
    config: &PublisherConfig,
    region: &Region,
    dest: SocketAddr,
) -> Result<AnySender> {
    let max_batch = config.max_batch.clamp(1, MAX_GSO_SEGMENTS);
    let to = SockAddr::from(dest);
    let ops = OpTable::new(config.buffers, config.gso, None);
    if let OwnedSocket::Sim(socket) = socket {
        let send = SimSend::new(socket.net().clone(), socket.local_addr(), ops);
        return Ok(AnySender::Sim(PacketSender::new(
            send,
            to,
            config.buffers,
            max_batch,
        )));
    }
    let Some(host) = socket.host() else {
        return Err(Error::Config("the publisher has no socket".into()));
    };
    // A deep send buffer absorbs bursts; the kernel caps it at net.core.wmem_max.
    let _ = host.set_send_buffer_size(SEND_BUFFER);
    let fd = host.as_raw_fd();
    Ok(match kind {
        BackendKind::Uring => {
            let ring = build_ring(PUBLISHER_RING.sq, PUBLISHER_RING.cq, false)
                .map_err(Error::io("setting up the publisher's io_uring"))?;
            let zero_copy = config.zero_copy.then_some(region);
            // SAFETY: the region moves into the publisher beside the sender (line A's or
            // line B's), declared after both, so it is dropped after their rings.
            let send = unsafe { UringSend::new(fd, ring, ops, zero_copy) }
                .map_err(Error::io("setting up the sender"))?;
            AnySender::Uring(PacketSender::new(send, to, config.buffers, max_batch))
        }
        BackendKind::Mmsg | BackendKind::Sim | BackendKind::Ipc | BackendKind::Xdp => {
            let send = MmsgSend::new(fd, ops);
            AnySender::Mmsg(PacketSender::new(send, to, config.buffers, max_batch))
        }
    })
}

/// What the XDP backend cannot do for a publisher, refused before anything is set up.
fn check_xdp(config: &PublisherConfig) -> Result<()> {
    if config.line_b.is_some() {
        return Err(Error::Config(
            "line B is not available with the XDP backend: one AF_XDP socket per queue \
             carries one line"
                .into(),
        ));
    }
    if config.tx_stamp_every > 0 {
        return Err(Error::Config(
            "transmit stamps come from the kernel's UDP stack, which the XDP backend \
             bypasses: leave tx_stamp_every at 0"
                .into(),
        ));
    }
    if config.rerequest.is_some() {
        return Err(Error::Config(
            "the re-request server answers through the kernel: run it on the io_uring or \
             mmsg backend (the XDP backend sends the live stream only)"
                .into(),
        ));
    }
    // Ethernet (14), IPv6 (40) and UDP (8) headers in front of the datagram.
    let largest = config.max_datagram + 62;
    if largest > config.xdp.frame_size as usize {
        return Err(Error::Config(format!(
            "a {}-byte datagram does not fit a {}-byte AF_XDP frame with its headers: lower \
             max_datagram or raise the frame size to 4096",
            config.max_datagram, config.xdp.frame_size
        )));
    }
    Ok(())
}

/// The AF_XDP sender of a publisher on `socket` (a kernel socket, joined sender-only:
/// its port is the frames' source port) to the group `dest`.
fn xdp_sender(
    socket: &OwnedSocket,
    config: &PublisherConfig,
    dest: SocketAddr,
) -> Result<(AnySender, Arc<XdpShared>, Arc<XdpSendCounters>)> {
    if !dest.ip().is_multicast() {
        return Err(Error::Config(format!(
            "the XDP backend sends to multicast groups only ({dest} is not one: a unicast \
             destination's MAC would need the neighbour table)"
        )));
    }
    let mut xdp = config.xdp.clone();
    if xdp.interface == Interface::Default {
        xdp.interface = config.interface.clone();
    }
    let shared = Arc::new(XdpShared::open(&xdp, 0)?);
    let port = match socket.local_addr().map(|a| a.port()) {
        Some(port) if port != 0 => port,
        _ => {
            // The frames need a source port: take one from the kernel so that no other
            // socket of this host uses it.
            let host = socket
                .host()
                .ok_or_else(|| Error::Config("the publisher has no socket".into()))?;
            let any: SocketAddr = if dest.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            host.bind(&any.into()).map_err(Error::io(
                "binding the publisher's socket for a source port",
            ))?;
            host.local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or(0, |a| a.port())
        }
    };
    let socket = shared
        .socket(xdp.queue, config.idle == IdleStrategy::Spin)
        .map_err(|e| Error::XdpUnavailable {
            interface: shared.iface.name.clone(),
            reason: e.to_string(),
        })?;
    let counters = Arc::new(XdpSendCounters::default());
    let ops = OpTable::new(config.buffers, false, None);
    let send = XdpSend::new(
        socket,
        &shared.iface,
        port,
        config.scope,
        counters.clone(),
        ops,
    )
    .map_err(Error::io("setting up the AF_XDP sender"))?;
    let max_batch = config.max_batch.clamp(1, MAX_GSO_SEGMENTS);
    let sender = AnySender::Xdp(PacketSender::new(
        send,
        SockAddr::from(dest),
        config.buffers,
        max_batch,
    ));
    Ok((sender, shared, counters))
}

/// The packetizer for `config` (with a retransmission store if it serves re-requests), or
/// why the settings cannot work.
fn packetizer(config: &PublisherConfig) -> Result<Packetizer> {
    let packetizer = PacketizerConfig {
        session: config.session,
        max_datagram: config.max_datagram,
        max_delay: config.max_delay,
        heartbeat: config.heartbeat,
        max_batch: config.max_batch.clamp(1, MAX_GSO_SEGMENTS),
    };
    let mut core = Packetizer::new(packetizer, config.buffers, Instant::now())
        .map_err(|e| Error::Config(e.0))?;
    if let Some(rerequest) = &config.rerequest {
        core.set_store(rerequest::store(rerequest)?);
    }
    Ok(core)
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.finish();
    }
}
