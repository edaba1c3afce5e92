//! `multipoint fanout`: deliveries per second from one root to N leaves by UDP unicast
//! (the `rooted-unicast` data plane), with a plain `send_to` loop beside it.
//!
//! Everything runs in this process on 127.0.0.1: N leaf sockets, each connected to the
//! root's data socket as a real leaf is, drained by one or two receiver threads (epoll and
//! `recvmmsg`) that count the datagrams they get. A delivery is one packet received by
//! one leaf; `deliveries_per_sec` is what the leaves received per second, from the first
//! message offered until the last delivery arrived.
//! What the kernel took but the leaves never got (full receive buffers) is reported as
//! drops, never hidden.
//!
//! The root is a [`Fanout`] with `--shards` shards, offered `--size`-byte messages as fast
//! as it takes them (it packs them into packets of up to `--max-datagram` bytes). With
//! `--baseline` the same leaves then get the same packets from a plain loop that builds
//! each packet once and calls `UdpSocket::send_to` for every leaf, on one thread, from
//! the same root socket.
//!
//! The pieces ([`Rig`], [`Baseline`], [`drive_fanout`]) are public so that the criterion
//! benches measure exactly what the tool does.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use multipoint_control::socket2::{Domain, SockRef, Socket, Type};
use multipoint_dataplane::wire::{Packet, PacketBuilder, Session, BLOCK_HEADER_LEN, HEADER_LEN};
use multipoint_dataplane::{
    BackendInfo, Fanout, FanoutConfig, FanoutStats, HostNeeds, IdleStrategy, OfferError,
};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{recvmmsg, setsockopt, sockopt, MsgFlags, MultiHeaders};

use crate::cli::FanoutArgs;
use crate::error::{Error, Result};
use crate::interrupt;
use crate::progress::{Progress, TICK};
use crate::report::FanoutReport;

/// Datagrams one `recvmmsg` call takes at most.
const RECV_BATCH: usize = 32;
/// A receive buffer: a whole GRO batch (64 KiB) when leaves coalesce, else a datagram.
const GRO_BUFFER: usize = 65_536;
const PLAIN_BUFFER: usize = 2_048;
/// How long a receiver polls without sleeping after its last datagram.
const SPIN: Duration = Duration::from_millis(2);
/// How long the receivers may go without a datagram before a phase counts as drained.
const QUIET: Duration = Duration::from_millis(50);
/// How far (in deliveries per leaf) the root may run ahead of what the leaves received,
/// unless `--window` says otherwise: 256 packets of 1472 bytes, about a third of the
/// receive buffer a leaf gets by default.
pub const WINDOW_PER_LEAF: u64 = 256;
/// Longest a phase waits for its last datagrams.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The leaves and the threads that drain them, shared by the fan-out and the baseline.
#[derive(Debug)]
pub struct Rig {
    root: Socket,
    root_addr: SocketAddr,
    leaves: Vec<SocketAddr>,
    received: Vec<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Rig {
    /// A root socket and `leaves` leaf sockets on 127.0.0.1, each leaf connected to the
    /// root and asking for a `rcvbuf`-byte receive buffer (and, with `gro`, UDP GRO),
    /// drained by `receivers` threads (with `pin`, receiver `i` pinned to the `i`-th core
    /// from the last, away from the fan-out's shards, which are pinned from the first).
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] when a socket, an epoll instance or a thread cannot be made (a
    /// thousand leaves need a thousand descriptors: see `ulimit -n`).
    pub fn new(
        leaves: usize,
        receivers: usize,
        rcvbuf: usize,
        gro: bool,
        pin: bool,
    ) -> Result<Rig> {
        let setup = |what: &'static str| move |e: std::io::Error| Error::Setup { what, source: e };
        let root = Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(setup("root socket"))?;
        root.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .map_err(setup("binding the root socket"))?;
        let root_addr = root
            .local_addr()
            .map_err(setup("the root socket's address"))?
            .as_socket()
            .ok_or_else(|| Error::Setup {
                what: "the root socket's address",
                source: std::io::Error::other("not an IP address"),
            })?;
        let receivers = receivers.clamp(1, leaves.max(1));
        let mut groups: Vec<Vec<UdpSocket>> = (0..receivers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::with_capacity(leaves);
        for i in 0..leaves {
            let leaf = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .map_err(setup("a leaf socket (ulimit -n?)"))?;
            leaf.connect(root_addr)
                .map_err(setup("connecting a leaf"))?;
            leaf.set_nonblocking(true).map_err(setup("a leaf socket"))?;
            let _ = SockRef::from(&leaf).set_recv_buffer_size(rcvbuf);
            if gro {
                setsockopt(&leaf, sockopt::UdpGroSegment, &true).map_err(|e| Error::Setup {
                    what: "UDP_GRO on a leaf",
                    source: e.into(),
                })?;
            }
            addrs.push(leaf.local_addr().map_err(setup("a leaf's address"))?);
            groups[i % receivers].push(leaf);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut received = Vec::with_capacity(receivers);
        let mut threads = Vec::with_capacity(receivers);
        for (i, sockets) in groups.into_iter().enumerate() {
            let count = Arc::new(AtomicU64::new(0));
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::Setup {
                what: "an epoll instance",
                source: e.into(),
            })?;
            for (k, s) in sockets.iter().enumerate() {
                epoll
                    .add(s.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, k as u64))
                    .map_err(|e| Error::Setup {
                        what: "watching a leaf socket",
                        source: e.into(),
                    })?;
            }
            let (c, s) = (Arc::clone(&count), Arc::clone(&stop));
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let core = pin.then(|| cores - 1 - i % cores);
            let thread = std::thread::Builder::new()
                .name(format!("leaves-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        pin_to(core);
                    }
                    drain(&epoll, &sockets, gro, &c, &s)
                })
                .map_err(setup("a receiver thread"))?;
            received.push(count);
            threads.push(thread);
        }
        Ok(Rig {
            root,
            root_addr,
            leaves: addrs,
            received,
            stop,
            threads,
        })
    }

    /// The leaves' addresses.
    pub fn leaves(&self) -> &[SocketAddr] {
        &self.leaves
    }

    /// The root's data socket address.
    pub fn root_addr(&self) -> SocketAddr {
        self.root_addr
    }

    /// Another handle on the root's data socket (for a [`Fanout`] to own).
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] if the descriptor cannot be duplicated.
    pub fn root(&self) -> Result<Socket> {
        self.root.try_clone().map_err(|e| Error::Setup {
            what: "duplicating the root socket",
            source: e,
        })
    }

    /// Datagrams all leaves received so far.
    pub fn received(&self) -> u64 {
        self.received
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until the leaves have `expected` datagrams, or nothing arrived for a while
    /// (what is missing then was dropped); returns the count and when the last of them
    /// arrived (to within a fraction of a millisecond).
    pub fn settle(&self, expected: u64) -> (u64, Instant) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut arrivals = Arrivals::new(self);
        loop {
            if arrivals.count >= expected
                || Instant::now() >= deadline
                || arrivals.quiet_after(self, Duration::from_micros(100))
            {
                return (arrivals.count, arrivals.at);
            }
        }
    }
}

/// What the leaves have received, as last looked at, and when that count was reached.
#[derive(Debug, Clone, Copy)]
struct Arrivals {
    count: u64,
    at: Instant,
}

impl Arrivals {
    fn new(rig: &Rig) -> Arrivals {
        Arrivals {
            count: rig.received(),
            at: Instant::now(),
        }
    }

    /// Looks again after `pause`; returns whether nothing arrived for [`QUIET`].
    fn quiet_after(&mut self, rig: &Rig, pause: Duration) -> bool {
        std::thread::sleep(pause);
        let now = rig.received();
        if now != self.count {
            self.count = now;
            self.at = Instant::now();
            return false;
        }
        self.at.elapsed() >= QUIET
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Pins the calling thread to `core` (best effort: a benchmark still runs unpinned).
fn pin_to(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(core).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// A receiver thread: waits on its leaves with epoll and empties each ready one with
/// `recvmmsg`, counting datagrams (the segments of a GRO batch one by one).
fn drain(epoll: &Epoll, sockets: &[UdpSocket], gro: bool, count: &AtomicU64, stop: &AtomicBool) {
    let size = if gro { GRO_BUFFER } else { PLAIN_BUFFER };
    let mut buffers = vec![vec![0u8; size]; RECV_BATCH];
    let mut headers = MultiHeaders::<()>::preallocate(RECV_BATCH, None);
    let mut events = vec![EpollEvent::empty(); sockets.len().min(256)];
    let mut total = 0u64;
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::Acquire) {
        // Poll without sleeping while datagrams keep coming (a sleeping receiver costs the
        // sender a wake-up per datagram on loopback); sleep once idle for a while.
        let timeout = if idle_since.elapsed() < SPIN {
            0u16
        } else {
            20u16
        };
        let Ok(ready) = epoll.wait(&mut events, timeout) else {
            continue;
        };
        if ready > 0 {
            idle_since = Instant::now();
        }
        for event in &events[..ready] {
            let Some(socket) = sockets.get(event.data() as usize) else {
                continue;
            };
            loop {
                let mut iovs: Vec<[std::io::IoSliceMut<'_>; 1]> = buffers
                    .iter_mut()
                    .map(|b| [std::io::IoSliceMut::new(b)])
                    .collect();
                let Ok(results) = recvmmsg(
                    socket.as_raw_fd(),
                    &mut headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) else {
                    break;
                };
                let lens: Vec<usize> = results.map(|r| r.bytes).collect();
                for (buf, &len) in buffers.iter().zip(&lens) {
                    total += datagrams(&buf[..len.min(buf.len())]);
                }
                let n = lens.len();
                count.store(total, Ordering::Relaxed);
                if n < RECV_BATCH {
                    break;
                }
            }
        }
    }
}

/// How many datagrams one receive holds: one, or (a GRO batch) as many as the first
/// packet's length goes into it, since a GSO train is cut into segments of its first
/// packet's length (the last may be shorter). Counting from the MoldUDP64 header rather
/// than the `UDP_GRO` control message keeps this independent of control-message handling.
fn datagrams(payload: &[u8]) -> u64 {
    let packet = Packet::new_unchecked(payload);
    let first = HEADER_LEN
        + packet
            .messages()
            .map(|m| BLOCK_HEADER_LEN + m.len())
            .sum::<usize>();
    if first == 0 || payload.len() <= first {
        1
    } else {
        payload.len().div_ceil(first) as u64
    }
}

/// What one phase (the fan-out, or the baseline) did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Phase {
    /// From the first message offered until the leaves received the last delivery.
    pub elapsed: Duration,
    /// Messages offered (packed into packets).
    pub messages: u64,
    /// Packets built (each went to every leaf).
    pub packets: u64,
    /// Packet sends the kernel took (one per packet and leaf).
    pub sent: u64,
    /// Packet sends that failed.
    pub send_errors: u64,
    /// Packets the leaves received.
    pub received: u64,
}

impl Phase {
    /// Sends the kernel took that never reached a leaf.
    pub fn drops(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// Deliveries (packets received by leaves) per second.
    pub fn deliveries_per_sec(&self) -> f64 {
        crate::report::per_second(self.received, self.elapsed)
    }
}

/// When a phase stops: after `secs`, or after `count` messages, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Until {
    /// Publishing time.
    pub secs: Option<Duration>,
    /// Messages.
    pub count: Option<u64>,
}

impl Until {
    fn done(&self, started: Instant, messages: u64) -> bool {
        self.count.is_some_and(|c| messages >= c)
            || self.secs.is_some_and(|s| started.elapsed() >= s)
            || interrupt::requested()
    }
}

/// Offers `size`-byte messages to `fanout` as fast as it takes them, in batches of one
/// full GSO send ([`round_of`]), until
/// `until`, but never more than `window` deliveries (packets handed to the shards, times
/// leaves) ahead of what `rig`'s leaves received
/// (a leaf that falls further behind would make the kernel drop, and a dropped packet costs
/// the sender as much as a delivered one); sleeps briefly when every buffer is in flight
/// or the leaves are behind. Flushes at the end. Returns the messages offered and how long
/// it took. `tick` is called about once a second with the messages so far.
///
/// # Errors
///
/// [`Error::Offer`] if the fan-out refuses a message for any reason but backpressure.
pub fn drive_fanout(
    fanout: &mut Fanout,
    rig: &Rig,
    window: u64,
    size: usize,
    until: Until,
    mut tick: impl FnMut(u64),
) -> Result<(u64, Duration)> {
    let msg = vec![0x5Au8; size];
    let leaves = rig.leaves().len() as u64;
    let base = fanout.stats().packets;
    // Offer whole GSO sends' worth of packets at a time (the fan-out hands packets over in
    // groups of one full GSO send), so that each leaf's sends are full runs.
    let round = round_of(fanout.max_message() + HEADER_LEN + BLOCK_HEADER_LEN, size);
    let mut pace = Pace::new(rig, window);
    let started = Instant::now();
    let mut messages = 0u64;
    let mut next_tick = started + TICK;
    while !until.done(started, messages) {
        // Every packet handed over goes to every leaf, sooner or later.
        pace.wait(rig, (fanout.stats().packets - base) * leaves);
        let room = until.count.map_or(round, |c| (c - messages).min(round));
        fanout.begin_batch();
        let mut refused = false;
        for _ in 0..room {
            match fanout.offer(&msg) {
                Ok(_) => messages += 1,
                Err(OfferError::Backpressure) => {
                    refused = true;
                    break;
                }
                Err(e) => return Err(Error::Offer(e)),
            }
        }
        fanout.end_batch();
        if refused {
            std::thread::sleep(Duration::from_micros(20));
        }
        if Instant::now() >= next_tick {
            tick(messages);
            next_tick += TICK;
        }
    }
    fanout.flush();
    Ok((messages, started.elapsed()))
}

/// Messages of `size` bytes that fill the packets of one full GSO send of
/// `max_datagram`-byte datagrams (at least one message).
pub fn round_of(max_datagram: usize, size: usize) -> u64 {
    let per_packet = (max_datagram.saturating_sub(HEADER_LEN) / (BLOCK_HEADER_LEN + size)).max(1);
    let packets = (65_507 / max_datagram.max(1)).clamp(1, 64);
    (per_packet * packets) as u64
}

/// Keeps a sender at most `window` deliveries ahead of what the leaves received.
#[derive(Debug)]
struct Pace {
    window: u64,
    /// The leaves' count when the phase began.
    start: u64,
    /// Deliveries given up on: the leaves stopped receiving while behind (the kernel
    /// dropped them), so they will never be counted.
    lost: u64,
}

impl Pace {
    fn new(rig: &Rig, window: u64) -> Pace {
        Pace {
            window,
            start: rig.received(),
            lost: 0,
        }
    }

    /// Waits while `committed` deliveries are more than the window ahead of those
    /// received; gives up on the difference if nothing arrives for a while.
    fn wait(&mut self, rig: &Rig, committed: u64) {
        let mut arrivals = Arrivals::new(rig);
        while committed > arrivals.count - self.start + self.lost + self.window {
            if arrivals.quiet_after(rig, Duration::from_micros(20)) {
                self.lost = committed - (arrivals.count - self.start) - self.window;
                break;
            }
        }
    }
}

/// The plain loop: a packet of `size`-byte messages built once, then `send_to` to every
/// leaf, from the root's socket, on one thread.
#[derive(Debug)]
pub struct Baseline {
    socket: UdpSocket,
    packet: Vec<u8>,
    leaves: Vec<SocketAddr>,
    per_packet: u64,
    session: Session,
    max_datagram: usize,
    size: usize,
    next_sequence: u64,
}

impl Baseline {
    /// A plain loop sending from `rig`'s root socket to its leaves.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] if the root socket cannot be duplicated; [`Error::SizeTooLarge`]
    /// if a `size`-byte message does not fit a `max_datagram`-byte packet.
    pub fn new(rig: &Rig, size: usize, max_datagram: usize) -> Result<Baseline> {
        let socket: UdpSocket = rig.root()?.into();
        let mut baseline = Baseline {
            socket,
            packet: vec![0u8; max_datagram],
            leaves: rig.leaves().to_vec(),
            per_packet: 0,
            session: Session::new("BASELINE").map_err(|e| Error::Dataplane(e.into()))?,
            max_datagram,
            size,
            next_sequence: 1,
        };
        baseline.build()?;
        Ok(baseline)
    }

    /// Builds the next packet (as many messages as fit) once.
    fn build(&mut self) -> Result<()> {
        let msg = vec![0x5Au8; self.size];
        let buf = &mut self.packet[..];
        let mut builder = PacketBuilder::start(buf, &self.session, self.next_sequence)
            .map_err(|e| Error::Dataplane(e.into()))?;
        let mut n = 0u64;
        while builder.fits(msg.len()) {
            if builder.push(buf, &msg).is_err() {
                break;
            }
            n += 1;
        }
        if n == 0 {
            return Err(Error::SizeTooLarge {
                size: self.size,
                limit: self
                    .max_datagram
                    .saturating_sub(HEADER_LEN + BLOCK_HEADER_LEN),
                max_datagram: self.max_datagram,
            });
        }
        let len = builder.finish(buf);
        self.packet.truncate(len);
        self.per_packet = n;
        self.next_sequence += n;
        Ok(())
    }

    /// Messages in each packet.
    pub fn messages_per_packet(&self) -> u64 {
        self.per_packet
    }

    /// Sends one packet to every leaf; returns (sent, failed).
    pub fn send_packet(&mut self) -> (u64, u64) {
        let (mut sent, mut failed) = (0, 0);
        for leaf in &self.leaves {
            match self.socket.send_to(&self.packet, leaf) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        (sent, failed)
    }
}

/// The fan-out `multipoint fanout` starts.
///
/// # Errors
///
/// [`Error::Dataplane`] (not for the fixed session name, which is valid).
fn fanout_config(args: &FanoutArgs) -> Result<FanoutConfig> {
    let io = &args.engine.io;
    Ok(FanoutConfig {
        shards: usize::from(args.shards),
        backend: io.backend.into(),
        idle: IdleStrategy::from(args.engine.idle),
        gso: io.gso.is_on(),
        max_datagram: io.max_datagram,
        buffers: args.buffers,
        pin: args.pin.is_on(),
        max_leaves_per_shard: args.leaves.div_ceil(usize::from(args.shards)).max(1),
        ..FanoutConfig::new(Session::new("FANOUT").map_err(|e| Error::Dataplane(e.into()))?)
    })
}

/// What `multipoint fanout` will ask of the host: the fan-out (the leaves are plain
/// sockets of this process).
///
/// # Errors
///
/// As the fan-out's settings.
pub fn host_needs(args: &FanoutArgs) -> Result<HostNeeds> {
    Ok(fanout_config(args)?.host_needs())
}

/// Runs `multipoint fanout` and returns what it measured. With `progress`, a line on
/// stdout is rewritten once a second.
///
/// # Errors
///
/// [`Error::Setup`] for sockets and threads; [`Error::Dataplane`] if the fan-out cannot
/// start; [`Error::Offer`] if it refuses a message for a reason other than backpressure.
pub fn run(args: &FanoutArgs, progress: bool) -> Result<FanoutReport> {
    let gro = args.leaf_gro.is_on();
    let rig = Rig::new(
        args.leaves,
        usize::from(args.receivers),
        args.leaf_rcvbuf,
        gro,
        args.pin.is_on(),
    )?;
    let until = Until {
        secs: args.stop.secs,
        count: args.stop.count,
    };
    let mut line = Progress::new(progress);

    let config = fanout_config(args)?;
    let mut fanout = Fanout::start(rig.root()?, config).map_err(Error::Dataplane)?;
    if args.size > fanout.max_message() {
        return Err(Error::SizeTooLarge {
            size: args.size,
            limit: fanout.max_message(),
            max_datagram: args.engine.io.max_datagram,
        });
    }
    let backend: BackendInfo = fanout.backend().clone();
    let handle = fanout.leaves();
    for &leaf in rig.leaves() {
        handle.add(leaf).map_err(Error::Dataplane)?;
    }
    let window = args.window.unwrap_or(WINDOW_PER_LEAF * args.leaves as u64);
    let start = rig.received();
    let started = Instant::now();
    let (messages, _) = drive_fanout(&mut fanout, &rig, window, args.size, until, |m| {
        let got = rig.received() - start;
        line.show(|| format!("fanout: {m} messages offered, {got} deliveries"));
    })?;
    // Let the shards finish what they were handed, then the leaves receive it: the phase
    // lasts until the last delivery arrived.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while fanout.stats().buffers_in_use > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(100));
    }
    let stats: FanoutStats = fanout.stats();
    let (received, last) = rig.settle(start + stats.deliveries);
    let fan = Phase {
        elapsed: last.duration_since(started),
        messages,
        packets: stats.packets,
        sent: stats.deliveries,
        send_errors: stats.send_errors,
        received: received - start,
    };
    // The end of session goes to every leaf too, apart from the figures.
    let closed = fanout.close();
    let _ = rig.settle(received + closed.deliveries - stats.deliveries);

    // A run cut short by a signal reports the fan-out without starting the baseline.
    let baseline = if args.baseline && !interrupt::requested() {
        let start = rig.received();
        let mut plain = Baseline::new(&rig, args.size, args.engine.io.max_datagram)?;
        let started = Instant::now();
        let (mut packets, mut sent, mut failed) = (0u64, 0u64, 0u64);
        let mut next_tick = started + TICK;
        let mut pace = Pace::new(&rig, window);
        while !until.done(started, packets * plain.messages_per_packet()) {
            // The same pacing as the fan-out's (it hardly ever has to wait).
            pace.wait(&rig, sent);
            let (s, f) = plain.send_packet();
            packets += 1;
            sent += s;
            failed += f;
            if packets % 16 == 0 && Instant::now() >= next_tick {
                let got = rig.received() - start;
                line.show(|| format!("baseline: {packets} packets, {got} deliveries"));
                next_tick += TICK;
            }
        }
        let (received, last) = rig.settle(start + sent);
        Some(Phase {
            elapsed: last.duration_since(started),
            messages: packets * plain.messages_per_packet(),
            packets,
            sent,
            send_errors: failed,
            received: received - start,
        })
    } else {
        None
    };
    line.clear();
    Ok(FanoutReport {
        leaves: args.leaves,
        shards: usize::from(args.shards),
        receivers: usize::from(args.receivers),
        size: args.size,
        max_datagram: args.engine.io.max_datagram,
        gso: args.engine.io.gso.is_on(),
        leaf_gro: gro,
        idle: args.engine.idle.name().to_owned(),
        backend,
        stats,
        fanout: fan,
        baseline,
    })
}
