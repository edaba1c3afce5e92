//! A publisher's sends: packets from its buffer region to its one destination, as batches
//! of operations over a send backend — one operation per packet, or one per GSO run of
//! equal-length packets — linked so that they leave in order.
//!
//! The sender owns every buffer it was given until that buffer's send completed: the
//! `done` callbacks of [`PacketSender::send`] and [`PacketSender::reap`] hand each slot
//! back exactly once. With io_uring completions arrive later; with mmsg and sim they
//! arrive before `send` returns.

use std::io;
use std::time::Duration;

use socket2::SockAddr;

use crate::core::stamps::{SendLatency, TxSampler, TxStampConfig};
use crate::io::mmsg::MmsgSend;
use crate::io::region::Region;
use crate::io::sim::SimSend;
use crate::io::stamps::ErrQueue;
use crate::io::uring::UringSend;
use crate::io::xdp::send::XdpSend;
use crate::io::{gso_run, BatchSend, Completion, Sending, StampRequest, MAX_GSO_SEGMENTS};
use crate::latency::realtime_ns;

/// What one [`PacketSender::send`] call did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendCount {
    /// Packets taken.
    pub(crate) packets: usize,
    /// Send operations used.
    pub(crate) ops: usize,
    /// Operations that carried more than one packet (GSO).
    pub(crate) gso_ops: usize,
}

/// Sends packets from a region to one destination over backend `S`. See the module docs.
pub(crate) struct PacketSender<S> {
    backend: Sending<S>,
    dest: SockAddr,
    max_segments: usize,
    /// The packet slots of each operation in flight, by operation number.
    slots: Box<[[u16; MAX_GSO_SEGMENTS]]>,
    /// With transmit stamps: the sampler and the socket's error queue.
    stamps: Option<Box<TxStamps>>,
}

/// A sender's transmit stamps: which sends ask for one, and where they come back.
pub(crate) struct TxStamps {
    sampler: TxSampler,
    /// Sends name their key (`SCM_TS_OPT_ID`) rather than rely on the kernel's counter.
    explicit: bool,
    errors: ErrQueue,
}

/// Error-queue messages read per drain at most (a drain runs once per transmit while
/// samples wait, so the queue never holds more than the samples outstanding).
const DRAIN_MAX: usize = 64;

impl TxStamps {
    /// Sampling as `config` says, reading stamps from `fd`'s error queue (the socket must
    /// have had [`set_tx_stamping`](crate::io::stamps::set_tx_stamping)).
    pub(crate) fn new(config: TxStampConfig, fd: std::os::fd::RawFd, explicit: bool) -> TxStamps {
        TxStamps {
            sampler: TxSampler::new(config),
            explicit,
            errors: ErrQueue::new(fd),
        }
    }

    /// Reads the stamps that came (only while samples wait: no system call otherwise)
    /// and gives up those too old.
    pub(crate) fn drain(&mut self) {
        if self.sampler.outstanding() == 0 {
            return;
        }
        let sampler = &mut self.sampler;
        self.errors.drain(DRAIN_MAX, &mut |key, stamp| {
            let _ = sampler.handle_stamp(key, stamp);
        });
        sampler.poll_expired(realtime_ns());
    }

    /// Samples still waiting for their stamp.
    pub(crate) fn outstanding(&self) -> usize {
        self.sampler.outstanding()
    }

    /// The histogram and counters so far.
    pub(crate) fn latency(&self) -> &SendLatency {
        self.sampler.latency()
    }

    /// See [`TxSampler::mirror_to`].
    pub(crate) fn mirror_to(&mut self, mirror: crate::stat::Histogram) {
        self.sampler.mirror_to(mirror);
    }
}

impl<S: BatchSend> PacketSender<S> {
    /// Sends to `dest` over `backend` (which has room for `max_ops` operations), at most
    /// `max_segments` packets per GSO send.
    pub(crate) fn new(
        backend: Sending<S>,
        dest: SockAddr,
        max_ops: usize,
        max_segments: usize,
    ) -> PacketSender<S> {
        PacketSender {
            backend,
            dest,
            max_segments: max_segments.clamp(1, MAX_GSO_SEGMENTS),
            slots: vec![[0; MAX_GSO_SEGMENTS]; max_ops.max(1)].into_boxed_slice(),
            stamps: None,
        }
    }

    /// Samples sends for transmit stamps from now on.
    pub(crate) fn set_stamps(&mut self, stamps: TxStamps) {
        self.stamps = Some(Box::new(stamps));
    }

    /// The transmit stamps, if sampled.
    pub(crate) fn stamps_mut(&mut self) -> Option<&mut TxStamps> {
        self.stamps.as_deref_mut()
    }

    /// Send operations in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.backend.in_flight()
    }

    /// Sends the packets `(slot, len)` from `region`, in order. Returns how many it took;
    /// the rest did not fit in the free operations (reap and call again). Each taken slot
    /// comes back through `done` exactly once (with whether its send succeeded), when its
    /// send finished. Also returns the error if queueing or submitting failed: operations
    /// already submitted stay in flight, and the packets not taken wait for the next call.
    pub(crate) fn send(
        &mut self,
        region: &Region,
        packets: &[(u16, u16)],
        done: &mut impl FnMut(u16, bool),
    ) -> (SendCount, Option<io::Error>) {
        let mut count = SendCount::default();
        let mut error = None;
        let mut taken = 0;
        let gso = self.backend.gso();
        while taken < packets.len() {
            let Some(op) = self.backend.take_op() else {
                break;
            };
            let rest = &packets[taken..];
            let n = if gso {
                gso_run(
                    rest.iter().map(|&(_, len)| usize::from(len)),
                    self.max_segments,
                )
            } else {
                1
            };
            let run = &rest[..n];
            // One predictable branch per send when stamps are off.
            let stamp = match self.stamps.as_deref_mut() {
                Some(t) => t.sampler.poll_sample().map(|key| StampRequest {
                    key,
                    explicit: t.explicit,
                }),
                None => None,
            };
            // SAFETY: the region's slots stay allocated for the publisher's life (the
            // region is dropped after the sender), and a slot handed to `send` is not
            // written again before `done` returned it.
            unsafe {
                self.backend.ops_mut().fill(op, &self.dest, n, stamp, |i| {
                    let (slot, len) = run[i];
                    let bytes = &region.slot(usize::from(slot))[..usize::from(len)];
                    (bytes.as_ptr(), bytes.len())
                });
            }
            if let Some(place) = self.slots.get_mut(usize::from(op)) {
                for (i, &(slot, _)) in run.iter().enumerate() {
                    place[i] = slot;
                }
            }
            let linked = taken + n < packets.len() && self.backend.has_free_op();
            if let (Some(req), Some(t)) = (stamp, self.stamps.as_deref_mut()) {
                // The submission time: the send is handed over at this call's flush.
                t.sampler.handle_submitted(req.key, realtime_ns());
            }
            if let Err(e) = self.backend.queue(op, linked) {
                error = Some(e);
                break;
            }
            taken += n;
            count.ops += 1;
            if n > 1 {
                count.gso_ops += 1;
            }
        }
        let slots = &self.slots;
        if let Err(e) = self
            .backend
            .flush(&mut |c: Completion| finish(slots, c, done))
        {
            error = Some(e);
        }
        count.packets = taken;
        (count, error)
    }

    /// Collects finished sends, handing their slots to `done`; with `wait`, blocks until
    /// at least one finished if any is in flight. Returns how many operations finished.
    pub(crate) fn reap(
        &mut self,
        wait: bool,
        done: &mut impl FnMut(u16, bool),
    ) -> io::Result<usize> {
        let slots = &self.slots;
        self.backend
            .reap(wait, &mut |c: Completion| finish(slots, c, done))
    }
}

impl<S: BatchSend> PacketSender<S> {
    /// Sleeps until a send completes or `timeout` passes, handing the slots of what
    /// finished to `done`; returns how many operations finished.
    pub(crate) fn wait(&mut self, timeout: Duration, done: &mut impl FnMut(u16, bool)) -> usize {
        let slots = &self.slots;
        self.backend
            .wait(timeout, &mut |c: Completion| finish(slots, c, done))
    }
}

/// Hands the slots of a finished operation back.
fn finish(slots: &[[u16; MAX_GSO_SEGMENTS]], c: Completion, done: &mut impl FnMut(u16, bool)) {
    let Some(place) = slots.get(usize::from(c.op)) else {
        return;
    };
    let ok = c.result >= 0;
    if !ok {
        tracing::debug!(errno = -c.result, "send failed");
    }
    for &slot in &place[..c.packets.min(MAX_GSO_SEGMENTS)] {
        done(slot, ok);
    }
}

/// A publisher's sender on whichever backend runs (chosen once, when the publisher is
/// made; the sends themselves are monomorphised per backend). One per publisher: the
/// size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AnySender {
    /// io_uring.
    Uring(PacketSender<UringSend>),
    /// sendmmsg.
    Mmsg(PacketSender<MmsgSend>),
    /// A simulated network.
    Sim(PacketSender<SimSend>),
    /// AF_XDP.
    Xdp(PacketSender<XdpSend>),
}

/// Runs `$body` with `$s` bound to the sender of whichever backend this is (static
/// dispatch: one arm a backend).
macro_rules! each {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            AnySender::Uring($s) => $body,
            AnySender::Mmsg($s) => $body,
            AnySender::Sim($s) => $body,
            AnySender::Xdp($s) => $body,
        }
    };
}

impl AnySender {
    /// See [`PacketSender::stamps_mut`].
    pub(crate) fn stamps_mut(&mut self) -> Option<&mut TxStamps> {
        each!(self, s => s.stamps_mut())
    }

    /// See [`PacketSender::set_stamps`].
    pub(crate) fn set_stamps(&mut self, stamps: TxStamps) {
        each!(self, s => s.set_stamps(stamps))
    }

    /// See [`PacketSender::in_flight`].
    pub(crate) fn in_flight(&self) -> usize {
        each!(self, s => s.in_flight())
    }

    /// See [`PacketSender::send`].
    pub(crate) fn send(
        &mut self,
        region: &Region,
        packets: &[(u16, u16)],
        done: &mut impl FnMut(u16, bool),
    ) -> (SendCount, Option<io::Error>) {
        each!(self, s => s.send(region, packets, done))
    }

    /// See [`PacketSender::wait`].
    pub(crate) fn wait(&mut self, timeout: Duration, done: &mut impl FnMut(u16, bool)) -> usize {
        each!(self, s => s.wait(timeout, done))
    }

    /// Makes the kernel write eventfd `fd` when a send completes after its submission;
    /// `false` for the backends that complete every send within the call or cannot
    /// signal (mmsg, sim).
    #[cfg(feature = "tokio")]
    pub(crate) fn notify_completions(&mut self, fd: std::os::fd::RawFd) -> io::Result<bool> {
        match self {
            AnySender::Uring(s) => s
                .backend
                .backend_mut()
                .notify_completions(fd)
                .map(|()| true),
            AnySender::Mmsg(_) | AnySender::Sim(_) | AnySender::Xdp(_) => Ok(false),
        }
    }

    /// For the async path, which must not block its thread: the mmsg backend leaves
    /// what a full socket refuses queued (in flight) rather than waiting for room (its
    /// socket is non-blocking); the others never wait in a send.
    #[cfg(feature = "tokio")]
    pub(crate) fn defer_when_full(&mut self) {
        if let AnySender::Mmsg(s) = self {
            s.backend.backend_mut().set_defer_when_full(true);
        }
    }

    /// See [`PacketSender::reap`].
    pub(crate) fn reap(
        &mut self,
        wait: bool,
        done: &mut impl FnMut(u16, bool),
    ) -> io::Result<usize> {
        each!(self, s => s.reap(wait, done))
    }
}
