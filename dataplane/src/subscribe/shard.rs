//! One receive shard: a [`Worker`] of the shard runtime that owns a receive backend, its
//! subscriptions' sockets, their receive states (sans-IO, [`crate::core::receive`]) and
//! handlers. Each event the backend reports goes to the receive state of its socket's
//! subscription; a handler that panics loses its subscription, not the shard.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use crossbeam_channel::Sender as Tx;

use crate::core::lines::Line;
use crate::core::receive::{DatagramInfo, Handler, ReceiveState};
use crate::core::stamps::{KernelLatency, RxStamp};
use crate::error::{Error, Result};
use crate::io::OwnedSocket;
use crate::io::{BatchRecv, Event};
use crate::latency::{now_ns, realtime_ns, LatencyHistogram};
use crate::runtime::Worker;
use crate::stat::kinds::SubscriptionEntries;
use crate::stat::Cadence;

/// A handler whose concrete type is forgotten on the shard and recovered on close.
pub(crate) trait ErasedHandler: Handler {
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<H: Handler> ErasedHandler for H {
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// One subscription on its shard. Allocated by the subscribing thread and then written by
/// the shard for every packet: aligned to 128 bytes so that it shares no cache line with
/// what that thread allocates next.
#[repr(align(128))]
pub(crate) struct SubState {
    pub(crate) id: u64,
    pub(crate) slot: u32,
    pub(crate) socket: OwnedSocket,
    pub(crate) state: ReceiveState,
    pub(crate) handler: Box<dyn ErasedHandler>,
    /// With recovery: the socket requests leave from and replies arrive on, and its
    /// slot in the receive backend.
    pub(crate) requests: Option<OwnedSocket>,
    pub(crate) request_slot: u32,
    /// With two lines: line B's socket, and its slot in the receive backend.
    pub(crate) line_b: Option<OwnedSocket>,
    pub(crate) line_b_slot: u32,
    /// Its entries in the counters file (`multipoint stat`).
    pub(crate) stat: SubscriptionEntries,
}

/// What a socket other than a subscription's own (line A) is to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Its request socket: replies arrive there.
    Replies,
    /// Its line B.
    LineB,
}

/// What the owner asks of a receive shard.
pub(crate) enum Command {
    Subscribe(Box<SubState>, oneshot::Sender<Result<()>>),
    Close(u64, oneshot::Sender<Result<Box<SubState>>>),
    /// Swap the subscription's histogram for the one given (so the shard allocates
    /// nothing) and send the old one back.
    TakeLatency(
        u64,
        Box<LatencyHistogram>,
        Tx<Option<Box<LatencyHistogram>>>,
    ),
    /// The same for the wire→application figures (the inner `None`: no kernel stamps).
    #[allow(clippy::type_complexity)]
    TakeKernelLatency(
        u64,
        Box<KernelLatency>,
        Tx<Option<Option<Box<KernelLatency>>>>,
    ),
    Shutdown,
}

/// A receive shard on backend `R`.
pub(crate) struct Shard<R> {
    index: usize,
    receiver: R,
    subs: Vec<Option<Box<SubState>>>,
    /// Slots whose handler panicked during the last poll (capacity reserved).
    panicked: Vec<u32>,
    /// Ids of subscriptions closed because their handler panicked.
    dead: Vec<u64>,
    /// Subscriptions with timers (a reorder window, or recovery), which each turn runs.
    windowed: usize,
    /// Subscriptions that recover by re-request, whose requests each turn sends.
    recovering: usize,
    /// For the slot of each request or line B socket, the slot of its subscription and
    /// what the socket is to it (`None`: a subscription's own socket, or nothing).
    owner: Vec<Option<(u32, Via)>>,
    /// Backend polls that failed in a row.
    errors: u32,
    /// Why the shard stopped receiving, once it did (see [`Shard::fail`]).
    failure: Option<String>,
    stop: bool,
    /// When the subscriptions' counters next go into the counters file.
    stat: Cadence,
}

/// Backend polls that may fail in a row (10 ms apart) before the shard gives up.
const POLL_FAILURES: u32 = 3;

impl<R: BatchRecv> Shard<R> {
    /// Shard `index` receiving with `receiver`, for up to `max_subscriptions`.
    pub(crate) fn new(index: usize, receiver: R, max_subscriptions: u32) -> Shard<R> {
        Shard {
            index,
            receiver,
            subs: (0..max_subscriptions).map(|_| None).collect(),
            panicked: Vec::with_capacity(max_subscriptions as usize),
            dead: Vec::new(),
            windowed: 0,
            recovering: 0,
            owner: vec![None; max_subscriptions as usize],
            errors: 0,
            failure: None,
            stop: false,
            stat: Cadence::default(),
        }
    }

    /// The shard stops receiving for `reason`: every subscription it serves hears it at
    /// once (its handler, its stats, [`Subscription::failure`](crate::Subscription::failure)),
    /// and so will any that is added from now on.
    fn fail(&mut self, reason: &str) {
        tracing::error!(shard = self.index, reason, "a receive shard failed");
        for sub in self.subs.iter_mut().flatten() {
            let SubState { state, handler, .. } = &mut **sub;
            let tell = AssertUnwindSafe(|| state.handle_failure(reason, &mut **handler));
            if std::panic::catch_unwind(tell).is_err() {
                tracing::error!(
                    subscription = sub.id,
                    "a handler panicked hearing of a failure"
                );
            }
        }
        self.failure = Some(reason.to_owned());
    }

    /// The subscription with `id`, if it is on the shard.
    fn find(&mut self, id: u64) -> Option<&mut SubState> {
        self.subs
            .iter_mut()
            .flatten()
            .find(|s| s.id == id)
            .map(|s| &mut **s)
    }

    /// The subscription in `slot` is no longer on the shard.
    fn forget(&mut self, state: &SubState) {
        if state.state.has_timers() {
            self.windowed = self.windowed.saturating_sub(1);
        }
        if let Err(e) = self.receiver.remove(state.slot) {
            tracing::warn!(error = %e, "removing a socket from the shard");
        }
        if state.requests.is_some() {
            self.recovering = self.recovering.saturating_sub(1);
            self.remove_owned(state.request_slot, "a request socket");
        }
        if state.line_b.is_some() {
            self.remove_owned(state.line_b_slot, "a line B socket");
        }
    }

    /// Removes the socket in `slot`, which belongs to a subscription (`what` it is).
    fn remove_owned(&mut self, slot: u32, what: &str) {
        if let Some(o) = self.owner.get_mut(slot as usize) {
            *o = None;
        }
        if let Err(e) = self.receiver.remove(slot) {
            tracing::warn!(error = %e, "removing {what} from the shard");
        }
    }

    /// Sends every request that recovery has due, from each subscription's request
    /// socket. A send that fails is as good as a lost request: it is asked again when
    /// its time runs out.
    fn send_requests(&mut self) {
        let now = now_ns();
        let mut buf = [0u8; crate::wire::REREQUEST_LEN];
        for sub in self.subs.iter_mut().flatten() {
            let SubState {
                state, requests, ..
            } = &mut **sub;
            let Some(socket) = requests.as_ref() else {
                continue;
            };
            while let Some((len, to)) = state.poll_transmit(now, &mut buf) {
                if let Err(e) = send_request(socket, &buf[..len], to) {
                    tracing::debug!(error = %e, %to, "sending a re-request");
                }
            }
        }
    }

    /// `wait`, cut short to the earliest time a reorder window lets a packet go.
    fn until_timer(&self, wait: Option<Duration>) -> Option<Duration> {
        let wait = wait?;
        let earliest = self
            .subs
            .iter()
            .flatten()
            .filter_map(|s| s.state.poll_timeout())
            .min();
        Some(match earliest {
            Some(at) => wait.min(Duration::from_nanos(at.saturating_sub(now_ns()))),
            None => wait,
        })
    }

    /// Hands what the backend has (waiting at most `wait` for it) to the subscriptions;
    /// a handler that panics loses its subscription, not the whole shard.
    fn poll(&mut self, wait: Option<Duration>) -> std::io::Result<usize> {
        let subs = &mut self.subs;
        let panicked = &mut self.panicked;
        let owner = &self.owner;
        // Commands write the eventfd the receiver watches: a waiting poll ends for them.
        self.receiver.poll(wait, &mut |event| {
            let (slot, via) = match owner.get(event.slot() as usize) {
                Some(&Some((o, via))) => (o, Some(via)),
                _ => (event.slot(), None),
            };
            let run = AssertUnwindSafe(|| on_event(subs, slot, via, event));
            if std::panic::catch_unwind(run).is_err() && !panicked.contains(&slot) {
                panicked.push(slot);
            }
        })
    }

    /// Runs the reorder windows' timers that are due; returns whether any was. What
    /// arrived by now goes in first, so that a window never runs out on a packet that
    /// was already there.
    fn run_timers(&mut self) -> bool {
        let now = now_ns();
        let due = self
            .subs
            .iter()
            .flatten()
            .any(|s| s.state.poll_timeout().is_some_and(|at| at <= now));
        if !due {
            return false;
        }
        if let Err(e) = self.poll(None) {
            tracing::debug!(shard = self.index, error = %e, "receiving before the timers");
        }
        let mut ran = false;
        for (slot, sub) in self.subs.iter_mut().enumerate() {
            let Some(sub) = sub.as_mut() else {
                continue;
            };
            if sub.state.poll_timeout().is_none_or(|at| at > now) {
                continue;
            }
            ran = true;
            let SubState { state, handler, .. } = &mut **sub;
            let run = AssertUnwindSafe(|| state.handle_timeout(now, &mut **handler));
            if std::panic::catch_unwind(run).is_err() && !self.panicked.contains(&(slot as u32)) {
                self.panicked.push(slot as u32);
            }
        }
        ran
    }

    /// Lets every handler publish what it gathered this turn ([`Handler::flush`]).
    fn flush_handlers(&mut self) {
        for (slot, sub) in self.subs.iter_mut().enumerate() {
            let Some(sub) = sub else { continue };
            let run = AssertUnwindSafe(|| sub.handler.flush());
            if std::panic::catch_unwind(run).is_err() {
                let slot = slot as u32;
                if !self.panicked.contains(&slot) {
                    self.panicked.push(slot);
                }
            }
        }
    }

    /// Removes the subscriptions whose handler panicked, remembering their ids so that
    /// closing them reports why.
    fn drop_panicked(&mut self) {
        while let Some(slot) = self.panicked.pop() {
            let Some(state) = self.subs.get_mut(slot as usize).and_then(Option::take) else {
                continue;
            };
            tracing::error!(
                shard = self.index,
                subscription = state.id,
                "a subscription's handler panicked; the subscription is closed"
            );
            self.forget(&state);
            self.dead.push(state.id);
        }
    }
}

impl<R: BatchRecv> Shard<R> {
    /// Puts a subscription (its socket, and its request and line B sockets if it has
    /// them) on the shard.
    fn add(&mut self, mut state: Box<SubState>) -> Result<()> {
        let slot = self
            .receiver
            .add(state.socket.endpoint())
            .map_err(Error::io("adding a socket to the shard"))?;
        if slot as usize >= self.subs.len() {
            let _ = self.receiver.remove(slot);
            return Err(Error::Config("shard slot out of range".into()));
        }
        state.slot = slot;
        if let Some(requests) = &state.requests {
            match self.add_owned(requests, slot, Via::Replies) {
                Ok(r) => state.request_slot = r,
                Err(e) => {
                    let _ = self.receiver.remove(slot);
                    return Err(e);
                }
            }
        }
        if let Some(line_b) = &state.line_b {
            match self.add_owned(line_b, slot, Via::LineB) {
                Ok(b) => state.line_b_slot = b,
                Err(e) => {
                    if state.requests.is_some() {
                        self.remove_owned(state.request_slot, "a request socket");
                    }
                    let _ = self.receiver.remove(slot);
                    return Err(e);
                }
            }
        }
        self.recovering += usize::from(state.requests.is_some());
        self.windowed += usize::from(state.state.has_timers());
        self.subs[slot as usize] = Some(state);
        Ok(())
    }

    /// Adds `socket`, which is `via` to the subscription in `slot`; returns its slot.
    fn add_owned(&mut self, socket: &OwnedSocket, slot: u32, via: Via) -> Result<u32> {
        let what = match via {
            Via::Replies => "request",
            Via::LineB => "line B",
        };
        let added = self.receiver.add(socket.endpoint()).map_err(Error::io(
            "adding a subscription's second socket to the shard",
        ))?;
        if added as usize >= self.owner.len() {
            let _ = self.receiver.remove(added);
            return Err(Error::Config(format!(
                "no room on the shard for the subscription's {what} socket (each socket of a \
                 subscription, its own, its request socket with recovery and its line B, \
                 takes one of max_subscriptions)"
            )));
        }
        self.owner[added as usize] = Some((slot, via));
        Ok(added)
    }
}

impl<R: BatchRecv> Worker for Shard<R> {
    type Command = Command;

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe(state, reply) => {
                if let Some(reason) = &self.failure {
                    let _ = reply.send(Err(Error::ShardFailed {
                        shard: self.index,
                        reason: reason.clone(),
                    }));
                    return;
                }
                let result = self.add(state);
                let _ = reply.send(result);
            }
            Command::Close(id, reply) => {
                let found = self
                    .subs
                    .iter_mut()
                    .find(|s| s.as_ref().is_some_and(|s| s.id == id));
                let result = match found.and_then(Option::take) {
                    Some(mut state) => {
                        self.forget(&state);
                        // Whatever the reorder window still holds goes on first.
                        let SubState {
                            state: s, handler, ..
                        } = &mut *state;
                        let finish = AssertUnwindSafe(|| {
                            s.finish(now_ns(), &mut **handler);
                            handler.flush();
                        });
                        match std::panic::catch_unwind(finish) {
                            Ok(()) => {
                                // The final counters, readable until the entry goes.
                                state.stat.publish(&state.state);
                                Ok(state)
                            }
                            Err(_) => Err(Error::HandlerPanicked { shard: self.index }),
                        }
                    }
                    None if self.dead.contains(&id) => {
                        self.dead.retain(|&d| d != id);
                        Err(Error::HandlerPanicked { shard: self.index })
                    }
                    None => Err(Error::ShardGone(self.index)),
                };
                let _ = reply.send(result);
            }
            Command::TakeLatency(id, fresh, reply) => {
                let taken = self.find(id).map(|s| s.state.swap_latency(fresh));
                let _ = reply.send(taken);
            }
            Command::TakeKernelLatency(id, fresh, reply) => {
                let taken = self.find(id).map(|s| s.state.swap_kernel_latency(fresh));
                let _ = reply.send(taken);
            }
            Command::Shutdown => self.stop = true,
        }
    }

    fn orphaned(&mut self) {
        self.stop = true;
    }

    fn done(&mut self) -> bool {
        self.stop
    }

    fn failed(&mut self, reason: &str) {
        self.fail(reason);
    }

    fn turn(&mut self, wait: Option<Duration>, _commands_waiting: &dyn Fn() -> bool) -> bool {
        if self.failure.is_some() {
            // Nothing is received any more; commands still are.
            std::thread::sleep(wait.unwrap_or(Duration::from_millis(1)));
            return false;
        }
        let wait = if self.windowed > 0 {
            self.until_timer(wait)
        } else {
            wait
        };
        let polled = self.poll(wait);
        let timers = self.windowed > 0 && self.run_timers();
        if self.recovering > 0 {
            self.send_requests();
        }
        // Every turn: what a handler gathered may have come from a poll inside the
        // timers, or before a backend error; a handler with nothing new returns at once.
        self.flush_handlers();
        self.drop_panicked();
        if self.stat.due() {
            for sub in self.subs.iter_mut().flatten() {
                sub.stat.publish(&sub.state);
            }
        }
        match polled {
            Ok(n) => {
                self.errors = 0;
                n > 0 || timers
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
            Err(e) => {
                self.errors += 1;
                tracing::warn!(shard = self.index, error = %e, "receive backend failed");
                if self.errors >= POLL_FAILURES {
                    self.fail(&format!(
                        "the receive backend failed {POLL_FAILURES} times in a row: {e}"
                    ));
                } else {
                    std::thread::sleep(Duration::from_millis(10));
                }
                false
            }
        }
    }
}

/// Sends one re-request from a subscription's request socket.
fn send_request(
    socket: &OwnedSocket,
    bytes: &[u8],
    to: std::net::SocketAddr,
) -> std::io::Result<()> {
    match socket {
        OwnedSocket::Sim(s) => s.send_to(bytes, to, std::time::Instant::now()).map(drop),
        _ => match socket.host() {
            Some(s) => s.send_to(bytes, &socket2::SockAddr::from(to)).map(drop),
            None => Ok(()),
        },
    }
}

/// Hands one backend event to the receive state of the subscription in `slot` (the
/// event's own slot, or, for a request or line B socket, its subscription's: `via`).
fn on_event(subs: &mut [Option<Box<SubState>>], slot: u32, via: Option<Via>, event: Event<'_>) {
    let Some(Some(sub)) = subs.get_mut(slot as usize) else {
        return;
    };
    let SubState { state, handler, .. } = &mut **sub;
    match event {
        Event::Datagram {
            payload,
            truncated,
            meta,
            ..
        } => {
            // CLOCK_REALTIME first, then the latency clock: wire→application never
            // exceeds the end-to-end latency of the same message.
            let kernel_stamp = if state.wants_realtime() {
                RxStamp {
                    wire_ns: meta.rx_hw_stamp.or(meta.rx_stamp),
                    app_ns: realtime_ns(),
                    malformed: meta.stamp_malformed,
                    control_truncated: meta.control_truncated,
                }
            } else {
                RxStamp::default()
            };
            let now = if state.wants_clock() { now_ns() } else { 0 };
            let info = DatagramInfo {
                truncated,
                gro_segment: meta.gro_segment,
                kernel_drops: meta.drops,
                source: meta.source,
                kernel_stamp,
            };
            match via {
                Some(Via::Replies) => state.handle_reply(payload, info, now, &mut **handler),
                Some(Via::LineB) => {
                    state.handle_line_datagram(Line::B, payload, info, now, &mut **handler)
                }
                None => state.handle_datagram(payload, info, now, &mut **handler),
            }
        }
        Event::Malformed { .. } => state.handle_unreadable(),
        Event::Rearm { .. } => state.handle_rearm(),
        Event::Error { errno, .. } => state.handle_receive_error(errno),
    }
}
