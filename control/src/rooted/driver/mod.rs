//! The driver thread of a root or a leaf: one `mio` poller that moves bytes between
//! sockets and the side's core, and keeps the core's timer. Nothing here decides
//! anything about a session; that is the [core](super::core)'s.
//!
//! The loop: wait for I/O until the core's [`poll_timeout`](Machine::poll_timeout) (or
//! not at all while a connection has bytes left to read); accept connections, finish
//! connections being opened, read and decode frames, and feed each to the core with
//! `Instant::now()`; take the API's commands; call the core's
//! [`handle_timeout`](Machine::handle_timeout) when its time has come. After every input
//! the core's outputs are carried out in order: connection work here, the rest (events,
//! answers to waiting calls) by the [`Side`], the root's or the leaf's API glue.
//!
//! Nothing on the driver thread sleeps or blocks. Accepting takes every waiting
//! connection (the listener is edge-triggered) and reads what each has sent at once, so a
//! leaf's Join is decided before later connections can crowd it out. When `accept` fails
//! for want of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) the core is
//! asked to [shed](Machine::handle_pressure) a connection to make room; if it has none,
//! accepting stops and starts again after [`ACCEPT_RETRY`], whatever the listener says
//! meanwhile. A connection closed with output still queued stays registered, written as
//! the socket takes it, until it is flushed or [`LINGER`] has passed.
//!
//! Threads: the driver thread alone touches the core and the sockets; the API reaches it
//! through [`Ctl`] (a command queue and a waker) and reads back only what the [`Side`]
//! publishes. Nothing here panics on anything a peer or the OS does; should the loop
//! itself panic (a bug), the thread catches it and the side marks everything gone.

mod conn;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use self::conn::Conn;
use super::core::{ConnError, ConnId, Machine, Output, Transmit};
use super::proto::Frame;
use crate::error::{Error, Result};
use crate::socket::Direction;

/// The poller's token of a driver's waker.
const WAKER: Token = Token(0);
/// The poller's token of a driver's listening socket.
const LISTENER: Token = Token(1);
/// The first token of a connection.
const FIRST_CONN: usize = 2;
/// How long a connection closed with output still queued has for the socket to take it.
const LINGER: Duration = Duration::from_millis(100);
/// How long accepting pauses when `accept` failed for want of descriptors or memory with
/// nothing to shed: long enough not to spin on a full descriptor table, short against a
/// leaf's join timeout (seconds). The connections wait in the listen queue meanwhile.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// What a caller waiting for the driver's answer allows beyond the core's own deadline,
/// for scheduling.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// A command from a root's or leaf's API to its driver: the two every driver takes, and
/// the side's own (`C`).
pub(crate) enum Cmd<C> {
    /// Watch this listener for connections.
    Listen(TcpListener),
    /// Close every connection (the core says how) and stop.
    Close,
    /// A command of the side's API.
    Side(C),
}

/// What runs once the outputs of a command are carried out: the command's answer.
pub(crate) type Reply = Box<dyn FnOnce()>;

/// The root's or the leaf's API glue: its commands, and what its core's notes mean to the
/// API (events, handles, answers).
pub(crate) trait Side {
    /// The side's core.
    type Machine: Machine;
    /// The side's own commands.
    type Cmd;
    /// What the side's driver is called.
    const NAMES: Names;
    /// Feeds `cmd` to `machine`; what it returns runs after the outputs.
    fn command(
        &mut self,
        machine: &mut Self::Machine,
        cmd: Self::Cmd,
        now: Instant,
    ) -> Option<Reply>;
    /// Carries out a note of the core (it may feed the core again).
    fn note(&mut self, machine: &mut Self::Machine, note: <Self::Machine as Machine>::Note);
    /// Makes what the API reads of the core's state current; runs after every input and
    /// every output.
    fn publish(&self, machine: &Self::Machine) {
        let _ = machine;
    }
    /// The driver thread failed: leave nothing that claims to be alive.
    fn abandon(&mut self);
}

/// What a side's driver is called: its thread, and the steps of its set-up in errors;
/// [`names!`] makes them from the side's name.
pub(crate) struct Names {
    /// "root" or "leaf", for logs.
    pub(crate) who: &'static str,
    pub(crate) thread: &'static str,
    pub(crate) poller: &'static str,
    pub(crate) waker: &'static str,
    pub(crate) wake: &'static str,
    pub(crate) start: &'static str,
}

/// The [`Names`] of the driver of `$who` ("root" or "leaf").
macro_rules! names {
    ($who:literal) => {
        $crate::rooted::driver::Names {
            who: $who,
            thread: concat!("mp-", $who),
            poller: concat!("creating the ", $who, "'s poller"),
            waker: concat!("creating the ", $who, "'s waker"),
            wake: concat!("waking the ", $who, "'s driver thread"),
            start: concat!("starting the ", $who, "'s driver thread"),
        }
    };
}
pub(crate) use names;

/// A join (a leaf's) or an invitation (a root's), asked by a caller who waits for the
/// answer.
pub(crate) struct Ask<T> {
    peer: SocketAddr,
    direction: Direction,
    reply: oneshot::Sender<Result<T>>,
}

/// The caller of a join (or an invitation) waiting for the core's answer; the core takes
/// one at a time.
pub(crate) struct Waiting<T>(Option<oneshot::Sender<Result<T>>>);

impl<T> Waiting<T> {
    pub(crate) fn new() -> Waiting<T> {
        Waiting(None)
    }

    /// Feeds `ask` to the core through `start`: if the core takes it, its caller waits
    /// for the answer; if the core refuses it at once, the caller is answered now.
    pub(crate) fn start(
        &mut self,
        ask: Ask<T>,
        start: impl FnOnce(SocketAddr, Direction) -> Result<()>,
    ) {
        match start(ask.peer, ask.direction) {
            Ok(()) => self.0 = Some(ask.reply),
            Err(e) => {
                let _ = ask.reply.send(Err(e));
            }
        }
    }

    /// Answers the waiting caller; gives the answer back if nobody waits for it any more.
    pub(crate) fn answer(&mut self, answer: Result<T>) -> Option<Result<T>> {
        match self.0.take() {
            Some(reply) => reply.send(answer).err().map(|e| e.into_inner()),
            None => Some(answer),
        }
    }
}

/// A side's driver: its poller, its sockets, its core and its API glue.
pub(crate) struct Driver<S: Side> {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: HashMap<Token, (ConnId, Conn)>,
    tokens: HashMap<ConnId, Token>,
    next_token: usize,
    /// Connections read up to their budget with bytes perhaps left.
    more: Vec<Token>,
    /// Connections the core closed with output still queued, and until when they may
    /// take to write it.
    closing: HashMap<Token, (Conn, Instant)>,
    /// Accepting is paused until then (`accept` failed for want of descriptors).
    accept_paused: Option<Instant>,
    machine: S::Machine,
    side: S,
    commands: Receiver<Cmd<S::Cmd>>,
}

/// A driver thread running, and the way into it. Dropping it closes the driver (its core
/// closes every connection) and waits for the thread.
pub(crate) struct Running<C> {
    ctl: Arc<Ctl<C>>,
    thread: Option<JoinHandle<()>>,
}

impl<C> std::ops::Deref for Running<C> {
    type Target = Ctl<C>;
    fn deref(&self) -> &Ctl<C> {
        &self.ctl
    }
}

impl<C> std::fmt::Debug for Running<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("ctl", &self.ctl)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl<C> Drop for Running<C> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.ctl.command(Cmd::Close);
            let _ = thread.join();
        }
    }
}

/// Starts a side's driver: its poller, its command link (handed to `side`, which makes the
/// side's glue), and its thread running `machine`.
///
/// # Errors
///
/// [`Error::Os`] if the poller, the waker or the thread cannot be made.
pub(crate) fn start<S>(
    machine: S::Machine,
    side: impl FnOnce(&Arc<Ctl<S::Cmd>>) -> S,
) -> Result<Running<S::Cmd>>
where
    S: Side + Send + 'static,
    S::Machine: Send,
    S::Cmd: Send + 'static,
{
    let names = &S::NAMES;
    let poll = Poll::new().map_err(Error::os(names.poller))?;
    let (ctl, commands) = Ctl::new(&poll, names.wake).map_err(Error::os(names.waker))?;
    let ctl = Arc::new(ctl);
    let side = side(&ctl);
    let thread = Driver::new(poll, machine, side, commands)
        .spawn(names.thread, Arc::clone(&ctl))
        .map_err(Error::os(names.start))?;
    Ok(Running {
        ctl,
        thread: Some(thread),
    })
}

impl<S> Driver<S>
where
    S: Side + Send + 'static,
    S::Machine: Send,
    S::Cmd: Send + 'static,
{
    /// A driver polling `poll` for `machine`, taking commands from `commands`.
    fn new(poll: Poll, machine: S::Machine, side: S, commands: Receiver<Cmd<S::Cmd>>) -> Driver<S> {
        Driver {
            poll,
            listener: None,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            next_token: FIRST_CONN,
            more: Vec::new(),
            closing: HashMap::new(),
            accept_paused: None,
            machine,
            side,
            commands,
        }
    }

    /// Runs the driver on a thread of its own, named `name`, whose id `ctl` records.
    fn spawn(mut self, name: &str, ctl: Arc<Ctl<S::Cmd>>) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = ctl.driver.set(std::thread::current().id());
                let run = std::panic::AssertUnwindSafe(|| {
                    self.run();
                    self.shutdown();
                });
                if std::panic::catch_unwind(run).is_err() {
                    // The embedder's hooks are caught one by one; this is a bug of ours.
                    // The connections close when the driver drops.
                    tracing::error!("{}: the driver thread panicked; it stops", S::NAMES.who);
                    self.side.abandon();
                }
            })
    }

    /// Polls, serves connections, commands and the core's timer until told to stop.
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut frames = Vec::new();
        let mut again = Vec::new();
        loop {
            let timeout = if self.more.is_empty() {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                // Connections with bytes left to read get no new event: come back at once.
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("{} driver: poll failed: {e}", S::NAMES.who);
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER if self.accept_paused.is_some() => {}
                    LISTENER => self.accept(&mut frames),
                    token if self.closing.contains_key(&token) => self.linger(token, None),
                    token => self.serve(token, event.is_readable(), &mut frames),
                }
            }
            std::mem::swap(&mut again, &mut self.more);
            for token in again.drain(..) {
                self.serve(token, true, &mut frames);
            }
            if self.commands() {
                return;
            }
            let now = Instant::now();
            if self.machine.poll_timeout().is_some_and(|at| at <= now) {
                self.machine.handle_timeout(now);
                self.settle();
            }
            if self.accept_paused.is_some_and(|at| at <= now) {
                self.accept_paused = None;
                self.accept(&mut frames);
            }
            let due: Vec<Token> = (self.closing.iter())
                .filter(|(_, (_, until))| *until <= now)
                .map(|(token, _)| *token)
                .collect();
            for token in due {
                self.linger(token, Some(now));
            }
        }
    }

    /// The earliest of the core's deadline, the end of a pause in accepting and the last
    /// moment of a closing connection.
    fn next_deadline(&self) -> Option<Instant> {
        let closing = self.closing.values().map(|(_, until)| *until);
        (self.machine.poll_timeout().into_iter())
            .chain(self.accept_paused)
            .chain(closing)
            .min()
    }

    /// Lets the core close everything and stops listening; then gives the connections
    /// closed with output queued (the end of session, say) up to [`LINGER`] in all to
    /// write it.
    fn shutdown(&mut self) {
        self.machine.handle_close();
        self.settle();
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let mut events = Events::with_capacity(256);
        let until = Instant::now() + LINGER;
        while !self.closing.is_empty() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(until - now)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            for event in events.iter() {
                if self.closing.contains_key(&event.token()) {
                    self.linger(event.token(), None);
                }
            }
        }
        for token in self.closing.keys().copied().collect::<Vec<_>>() {
            self.linger(token, Some(Instant::now()));
        }
    }

    /// A closing connection `token` can write: writes what it can; when done, failed or
    /// out of time (`expired`), finishes it.
    fn linger(&mut self, token: Token, expired: Option<Instant>) {
        let Some((conn, _)) = self.closing.get_mut(&token) else {
            return;
        };
        let flushed = conn.flush().is_err() || !conn.pending_output();
        if flushed || expired.is_some() {
            if let Some((conn, _)) = self.closing.remove(&token) {
                conn.finish(self.poll.registry());
            }
        }
    }

    /// Handles the API's commands; true when the driver is to stop.
    fn commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Cmd::Listen(mut listener) => {
                    let registry = self.poll.registry();
                    match registry.register(&mut listener, LISTENER, Interest::READABLE) {
                        Ok(()) => {
                            self.listener = Some(listener);
                            // Peers may have connected before the registration.
                            self.accept(&mut Vec::new());
                        }
                        Err(e) => {
                            tracing::error!("{}: cannot watch the listener: {e}", S::NAMES.who)
                        }
                    }
                }
                Cmd::Close => return true,
                Cmd::Side(cmd) => {
                    let reply = self.side.command(&mut self.machine, cmd, Instant::now());
                    self.settle();
                    if let Some(reply) = reply {
                        reply();
                    }
                }
            }
        }
        false
    }

    /// Takes every waiting connection (the registration is edge-triggered) to the core,
    /// and reads what each sent already. Out of descriptors, the core is asked to shed
    /// one; with none to shed, accepting pauses for [`ACCEPT_RETRY`].
    fn accept(&mut self, frames: &mut Vec<Frame>) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match self.register(stream, false) {
                        Ok((token, conn)) => {
                            let id = self.machine.handle_accepted(peer, Instant::now());
                            self.keep(token, id, conn);
                            self.settle();
                            // Its Join may be there already: decide it before the next.
                            self.serve(token, true, frames);
                        }
                        Err(e) => tracing::warn!(
                            "{}: registering the connection of {peer} failed: {e}",
                            S::NAMES.who
                        ),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) if out_of_room(&e) => {
                    // The kernel takes the descriptor before it looks at the queue: with
                    // none free, accept fails also when nobody waits. Shedding then would
                    // close a connection (one just taken, its Join still on the way) for
                    // nobody; the next connection to come raises a new edge.
                    if !has_waiting(listener) {
                        return;
                    }
                    let lingering = self.closing.len();
                    if self.machine.handle_pressure(Instant::now()) {
                        self.settle();
                        // The core closed a connection: unless it lingers with its last
                        // frame, its descriptor is free. Try again.
                        if self.closing.len() <= lingering {
                            continue;
                        }
                    }
                    tracing::warn!(
                        "{}: accepting a connection failed: {e}; trying again in {:?}",
                        S::NAMES.who,
                        ACCEPT_RETRY
                    );
                    self.accept_paused = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
                Err(e) => {
                    // Not ours to fix (a protocol error of one connection, say): the
                    // connection is gone from the queue, go on with the rest after a pause
                    // (were it the listener's, no event would come to try again).
                    tracing::warn!("{}: accepting a connection failed: {e}", S::NAMES.who);
                    self.accept_paused = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// Registers `stream` with the poller under a fresh token.
    fn register(&mut self, stream: TcpStream, connecting: bool) -> io::Result<(Token, Conn)> {
        let token = Token(self.next_token);
        self.next_token += 1;
        let conn = Conn::new(stream, connecting, self.poll.registry(), token)?;
        Ok((token, conn))
    }

    /// Keeps `conn`, registered under `token`, as the core's connection `id`.
    fn keep(&mut self, token: Token, id: ConnId, conn: Conn) {
        self.conns.insert(token, (id, conn));
        self.tokens.insert(id, token);
    }

    /// Serves connection `token` after an event: finishes opening it, writes what is
    /// queued, and (if `readable`) feeds the core each frame read, then a failure.
    fn serve(&mut self, token: Token, readable: bool, frames: &mut Vec<Frame>) {
        let Some((id, conn)) = self.conns.get_mut(&token) else {
            return;
        };
        let id = *id;
        match conn.came_up() {
            Ok(true) => {
                self.machine.handle_connected(id, Instant::now());
                self.settle();
            }
            Ok(false) if conn.connecting() => return,
            Ok(false) => {}
            Err(e) => {
                self.machine.handle_lost(id, e);
                return self.settle();
            }
        }
        let Some((_, conn)) = self.conns.get_mut(&token) else {
            return;
        };
        frames.clear();
        let read = conn.flush().and_then(|()| {
            if readable {
                conn.read(frames)
            } else {
                Ok(false)
            }
        });
        let failure = match read {
            Ok(true) if !self.more.contains(&token) => {
                self.more.push(token);
                None
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        let now = Instant::now();
        for frame in frames.drain(..) {
            if !self.conns.contains_key(&token) {
                break;
            }
            self.machine.handle_frame(id, frame, now);
            self.settle();
        }
        if let Some(why) = failure {
            if self.conns.contains_key(&token) {
                self.machine.handle_lost(id, why);
                self.settle();
            }
        }
    }

    /// Carries out the core's outputs, in order, until it has none.
    fn settle(&mut self) {
        self.side.publish(&self.machine);
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Conn(id, what) => self.transmit(id, what),
                Output::Note(note) => self.side.note(&mut self.machine, note),
            }
            self.side.publish(&self.machine);
        }
    }

    /// Does `what` to connection `id`; a failure goes back to the core.
    fn transmit(&mut self, id: ConnId, what: Transmit) {
        let failure = match what {
            Transmit::Connect(peer) => {
                match conn::connect(peer).and_then(|stream| self.register(stream, true)) {
                    Ok((token, conn)) => {
                        self.keep(token, id, conn);
                        None
                    }
                    Err(e) => Some(ConnError::Io(e)),
                }
            }
            Transmit::Send(frame) => {
                let conn = self.tokens.get(&id).and_then(|t| self.conns.get_mut(t));
                conn.and_then(|(_, conn)| conn.send(&frame).err())
            }
            Transmit::Close(last) => {
                let token = self.tokens.remove(&id);
                let entry = token.and_then(|t| Some((t, self.conns.remove(&t)?)));
                if let Some((token, (_, mut conn))) = entry {
                    self.more.retain(|t| *t != token);
                    let sent = match &last {
                        Some(frame) => conn.send(frame).is_ok(),
                        None => conn.flush().is_ok(),
                    };
                    if sent && conn.pending_output() {
                        // The socket is full: write the rest as it drains, not waiting here.
                        let until = Instant::now() + LINGER;
                        self.closing.insert(token, (conn, until));
                    } else {
                        conn.finish(self.poll.registry());
                    }
                }
                None
            }
        };
        if let Some(why) = failure {
            self.machine.handle_lost(id, why);
        }
    }
}

/// The way from a root's or leaf's API into its driver thread: a command queue and the
/// waker that ends the driver's poll.
pub(crate) struct Ctl<C> {
    tx: Sender<Cmd<C>>,
    waker: Waker,
    /// What waking is called in errors.
    wake_op: &'static str,
    /// The driver thread, which runs the hooks: calls that wait for it cannot be made
    /// from it.
    driver: OnceLock<ThreadId>,
}

impl<C> std::fmt::Debug for Ctl<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctl")
            .field("queued", &self.tx.len())
            .finish()
    }
}

impl<C> Ctl<C> {
    /// A control link to a driver polling `poll`, and the driver's end of the queue.
    pub(crate) fn new(
        poll: &Poll,
        wake_op: &'static str,
    ) -> io::Result<(Ctl<C>, Receiver<Cmd<C>>)> {
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let ctl = Ctl {
            tx,
            waker,
            wake_op,
            driver: OnceLock::new(),
        };
        Ok((ctl, rx))
    }

    /// Queues `cmd` and wakes the driver.
    pub(crate) fn command(&self, cmd: Cmd<C>) -> Result<()> {
        self.tx.send(cmd).map_err(|_| Error::SessionClosed)?;
        self.waker.wake().map_err(Error::os(self.wake_op))
    }

    /// Asks the driver (with the side's command `cmd`) to join or invite `peer` in
    /// `direction`, and waits for the answer, which the core gives within `answered`;
    /// the margin beyond it covers scheduling. When none comes even then, the caller
    /// timed out `what`.
    pub(crate) fn ask<T>(
        &self,
        peer: SocketAddr,
        direction: Direction,
        cmd: impl FnOnce(Ask<T>) -> C,
        answered: Duration,
        what: &'static str,
    ) -> Result<T> {
        let rx = self.ask_start(peer, direction, cmd)?;
        match rx.recv_timeout(answered.saturating_add(ANSWER_MARGIN)) {
            Ok(answer) => answer,
            Err(oneshot::RecvTimeoutError::Timeout) => Err(Error::TimedOut { what, peer }),
            Err(oneshot::RecvTimeoutError::Disconnected) => Err(Error::SessionClosed),
        }
    }

    /// [`ask`](Self::ask) without blocking the caller's thread: the answer is awaited.
    /// The core answers by its own deadlines (a join that is not answered in time is
    /// answered with a time-out), so this needs no timer of its own.
    pub(crate) async fn ask_async<T>(
        &self,
        peer: SocketAddr,
        direction: Direction,
        cmd: impl FnOnce(Ask<T>) -> C,
    ) -> Result<T> {
        let rx = self.ask_start(peer, direction, cmd)?;
        rx.await.unwrap_or(Err(Error::SessionClosed))
    }

    /// Hands the ask to the driver; the answer comes on the receiver.
    fn ask_start<T>(
        &self,
        peer: SocketAddr,
        direction: Direction,
        cmd: impl FnOnce(Ask<T>) -> C,
    ) -> Result<oneshot::Receiver<Result<T>>> {
        let (reply, rx) = oneshot::channel();
        let ask = Ask {
            peer,
            direction,
            reply,
        };
        self.command(Cmd::Side(cmd(ask)))?;
        Ok(rx)
    }

    /// Binds a listener at `addr` and hands it to the driver, once per socket: `local`
    /// holds where it listens. `op` names the listening in errors.
    pub(crate) fn listen(
        &self,
        local: &Mutex<Option<SocketAddr>>,
        addr: SocketAddr,
        op: &'static str,
    ) -> Result<SocketAddr> {
        let mut local = lock(local);
        if let Some(at) = *local {
            return Err(Error::AlreadyListening { addr: at });
        }
        let listener = conn::listen(addr).map_err(Error::os_at(op, addr))?;
        let at = listener
            .local_addr()
            .map_err(Error::os("reading the listening address"))?;
        self.command(Cmd::Listen(listener))?;
        *local = Some(at);
        Ok(at)
    }

    /// Fails when called on the driver thread (from a hook), where waiting for the
    /// driver would wait forever.
    pub(crate) fn not_from_hook(&self, op: &'static str) -> Result<()> {
        if self.driver.get() == Some(&std::thread::current().id()) {
            return Err(Error::InsideHook { op });
        }
        Ok(())
    }
}

/// Locks `m`, whatever a panicking holder left: every update under these locks is a
/// single insert, remove or store.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a connection waits in `listener`'s queue (the listener is readable); asked
/// without taking a descriptor. An error of `poll` counts as waiting, the safe side for
/// the caller (it sheds or pauses, as before the question).
fn has_waiting(listener: &TcpListener) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the call only; a zero timeout does not block.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n != 0 && (n < 0 || fd.revents & libc::POLLIN != 0)
}

/// Whether a failed `accept` failed for want of descriptors or kernel memory: the
/// connection is still queued, and taking it needs room first.
fn out_of_room(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_has_a_connection_waiting_only_while_one_is_queued() {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(!has_waiting(&listener), "nobody has connected yet");
        let _client = std::net::TcpStream::connect(addr).unwrap();
        // The handshake completes in the kernel; the connection is queued shortly after.
        let queued = Instant::now() + Duration::from_secs(5);
        while !has_waiting(&listener) {
            assert!(
                Instant::now() < queued,
                "the connection never showed as waiting"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let (_taken, _) = listener.accept().unwrap();
        assert!(!has_waiting(&listener), "the only connection was taken");
    }
}
