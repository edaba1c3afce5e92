//! One framed, non-blocking TCP connection of the rooted control protocol: bytes in,
//! [`Frame`]s out, and back. Used by the root's and the leaf's driver threads.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::proto::{decode, Frame, ProtoError};

/// Why a connection can no longer be used.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// The peer closed its end.
    Closed,
    /// The peer sent bytes that are not a frame of this protocol.
    Protocol(ProtoError),
    /// The socket failed.
    Io(io::Error),
    /// The peer sent a well-formed frame that makes no sense where the session stands.
    Unexpected(&'static str),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Closed => f.write_str("the connection was closed without a leave"),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::Io(e) => write!(f, "connection failed: {e}"),
            ConnError::Unexpected(what) => write!(f, "protocol error: unexpected {what}"),
        }
    }
}

/// Bytes read per system call.
const READ_CHUNK: usize = 4096;
/// Most bytes read from one connection before the others get their turn.
const READ_BUDGET: usize = 64 * 1024;

pub(crate) struct Conn {
    stream: TcpStream,
    pub(crate) peer: SocketAddr,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    pub(crate) last_rx: Instant,
    pub(crate) last_tx: Instant,
}

impl Conn {
    /// Takes a connected stream and registers it for reads and writes under `token`.
    pub(crate) fn new(
        mut stream: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Conn> {
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let now = Instant::now();
        Ok(Conn {
            stream,
            peer,
            inbuf: Vec::with_capacity(256),
            outbuf: Vec::with_capacity(256),
            last_rx: now,
            last_tx: now,
        })
    }

    /// Reads what the socket has, up to [`READ_BUDGET`] bytes, and appends the decoded
    /// frames to `frames`. Returns whether bytes may be left to read: the registration is
    /// edge-triggered, so the caller must come back without waiting for an event.
    ///
    /// Frames that arrived before an error or the peer's close are decoded first, so a
    /// last frame (an End, a Leave) is never lost to the reset that may follow it.
    pub(crate) fn read(&mut self, frames: &mut Vec<Frame>) -> Result<bool, ConnError> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut taken = 0;
        let outcome = loop {
            if taken >= READ_BUDGET {
                break Ok(true);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break Err(ConnError::Closed),
                Ok(n) => {
                    taken += n;
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    self.last_rx = Instant::now();
                    // Decoding as bytes arrive keeps the buffer within one frame.
                    self.decode(frames)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(ConnError::Io(e)),
            }
        };
        self.decode(frames)?;
        outcome
    }

    fn decode(&mut self, frames: &mut Vec<Frame>) -> Result<(), ConnError> {
        let mut used = 0;
        let result = loop {
            match decode(&self.inbuf[used..]) {
                Ok(Some((frame, n))) => {
                    used += n;
                    frames.push(frame);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(ConnError::Protocol(e)),
            }
        };
        self.inbuf.drain(..used);
        result
    }

    /// Queues `frame` and writes as much as the socket takes now; the rest leaves on the
    /// next writable event.
    pub(crate) fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        frame
            .encode(&mut self.outbuf)
            .map_err(ConnError::Protocol)?;
        self.last_tx = Instant::now();
        self.flush()
    }

    /// Writes queued bytes until done or the socket is full.
    pub(crate) fn flush(&mut self) -> Result<(), ConnError> {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(0) => return Err(ConnError::Closed),
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        Ok(())
    }

    /// Whether bytes are still waiting to be written.
    pub(crate) fn pending_output(&self) -> bool {
        !self.outbuf.is_empty()
    }

    /// Makes a last attempt to write what is queued (waiting at most `patience` for the
    /// socket to take it), closes the sending side, discards what the peer sent that was
    /// not read (closing with unread bytes would make the kernel send a reset, which can
    /// destroy our last frame before the peer reads it), and deregisters the stream;
    /// dropping the `Conn` closes it.
    pub(crate) fn finish(mut self, registry: &Registry, patience: Duration) {
        let deadline = Instant::now() + patience;
        while self.pending_output() && Instant::now() < deadline {
            if self.flush().is_err() {
                break;
            }
            if self.pending_output() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let mut sink = [0u8; READ_CHUNK];
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match self.stream.read(&mut sink) {
                Ok(n) if n > 0 => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
        let _ = registry.deregister(&mut self.stream);
    }
}

/// Opens a control connection to `addr` within `timeout`, with Nagle off, and hands it
/// over non-blocking.
pub(crate) fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(TcpStream::from_std(stream))
}

/// A listening TCP socket for control connections, with a deep accept queue (hundreds of
/// leaves may arrive at once) and `SO_REUSEADDR` (a restarted root can listen again at
/// once).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// The earlier of two optional instants.
pub(crate) fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(match a {
        Some(a) if a < b => a,
        _ => b,
    })
}

/// The poller's token of a driver's waker.
pub(crate) const WAKER: Token = Token(0);
/// The poller's token of a driver's listening socket.
pub(crate) const LISTENER: Token = Token(1);
/// The first token of a connection.
const FIRST_CONN: usize = 2;

/// One connection of a driver and where it stands.
pub(crate) struct Entry<S> {
    pub(crate) conn: Conn,
    pub(crate) state: S,
    /// When the connection was made or last changed state (for deadlines before a
    /// session).
    pub(crate) since: Instant,
}

/// The connections of one driver thread (a root's or a leaf's), with the poller they are
/// registered with and the listener, if any.
pub(crate) struct Table<S> {
    pub(crate) poll: mio::Poll,
    pub(crate) conns: std::collections::HashMap<Token, Entry<S>>,
    listener: Option<mio::net::TcpListener>,
    next_token: usize,
    /// Connections read up to their budget with bytes perhaps left.
    more: Vec<Token>,
}

impl<S> Table<S> {
    pub(crate) fn new(poll: mio::Poll) -> Table<S> {
        Table {
            poll,
            conns: std::collections::HashMap::new(),
            listener: None,
            next_token: FIRST_CONN,
            more: Vec::new(),
        }
    }

    /// Registers a connected stream under a fresh token; gives the state back with the
    /// error if the poller refuses it.
    pub(crate) fn add(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        state: S,
    ) -> Result<Token, (S, io::Error)> {
        let token = Token(self.next_token);
        self.next_token += 1;
        match Conn::new(stream, peer, self.poll.registry(), token) {
            Ok(conn) => {
                let since = Instant::now();
                self.conns.insert(token, Entry { conn, state, since });
                Ok(token)
            }
            Err(e) => Err((state, e)),
        }
    }

    /// Starts watching `listener` for connections.
    pub(crate) fn listen(&mut self, mut listener: mio::net::TcpListener) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        self.listener = Some(listener);
        Ok(())
    }

    /// Stops watching the listener.
    pub(crate) fn unlisten(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    /// Takes every waiting connection (the registration is edge-triggered), each in state
    /// `state()`.
    pub(crate) fn accept(&mut self, who: &str, state: fn() -> S) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    if let Err((_, e)) = self.add(stream, peer, state()) {
                        tracing::warn!("{who}: registering the connection of {peer} failed: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: the connection stays queued; say so and try
                    // again on the next event.
                    tracing::warn!("{who}: accepting a connection failed: {e}");
                    return;
                }
            }
        }
    }

    /// Flushes `token`'s output and, if `readable`, reads its frames into `frames`,
    /// remembering it when bytes may be left. Nothing for a token no longer here.
    pub(crate) fn serve(
        &mut self,
        token: Token,
        readable: bool,
        frames: &mut Vec<Frame>,
    ) -> Result<(), ConnError> {
        let Some(entry) = self.conns.get_mut(&token) else {
            return Ok(());
        };
        entry.conn.flush()?;
        if readable && entry.conn.read(frames)? && !self.more.contains(&token) {
            self.more.push(token);
        }
        Ok(())
    }
}

/// What a driver thread does with its connections; [`run`](Serve::run) is the loop both
/// the root's and the leaf's drivers run.
pub(crate) trait Serve {
    /// Where a connection stands.
    type State;
    /// "root" or "leaf", for logs.
    const WHO: &'static str;
    fn table(&mut self) -> &mut Table<Self::State>;
    /// The state of a connection taken from the listener.
    fn accepted() -> Self::State;
    fn frame(&mut self, token: Token, frame: Frame);
    /// Connection `token` failed or closed.
    fn lost(&mut self, token: Token, why: ConnError);
    /// The next heartbeat or timeout due.
    fn next_deadline(&self) -> Option<Instant>;
    /// Handles the API's commands; true when the driver is to stop.
    fn commands(&mut self) -> bool;
    fn timers(&mut self);

    /// Polls, serves connections, commands and timers until told to stop.
    fn run(&mut self) {
        let mut events = mio::Events::with_capacity(256);
        let mut frames = Vec::new();
        let mut again = Vec::new();
        loop {
            let timeout = if self.table().more.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                // Connections with bytes left to read get no new event: come back at once.
                Some(Duration::ZERO)
            };
            if let Err(e) = self.table().poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("{} driver: poll failed: {e}", Self::WHO);
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.table().accept(Self::WHO, Self::accepted),
                    token => self.io(token, event.is_readable(), &mut frames),
                }
            }
            std::mem::swap(&mut again, &mut self.table().more);
            for token in again.drain(..) {
                self.io(token, true, &mut frames);
            }
            if self.commands() {
                return;
            }
            self.timers();
        }
    }

    /// Serves connection `token`: output, then each frame read, then a failure.
    fn io(&mut self, token: Token, readable: bool, frames: &mut Vec<Frame>) {
        frames.clear();
        let result = self.table().serve(token, readable, frames);
        for frame in frames.drain(..) {
            if !self.table().conns.contains_key(&token) {
                break;
            }
            self.frame(token, frame);
        }
        if let Err(e) = result {
            if self.table().conns.contains_key(&token) {
                self.lost(token, e);
            }
        }
    }
}

/// The way from a root's or leaf's API into its driver thread: a command queue and the
/// waker that ends the driver's poll.
pub(crate) struct Ctl<C> {
    tx: crossbeam_channel::Sender<C>,
    waker: mio::Waker,
    /// What waking is called in errors.
    wake_op: &'static str,
    /// The driver thread, which runs the hooks: calls that wait for it cannot be made
    /// from it.
    pub(crate) driver: std::sync::OnceLock<std::thread::ThreadId>,
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
        poll: &mio::Poll,
        wake_op: &'static str,
    ) -> io::Result<(Ctl<C>, crossbeam_channel::Receiver<C>)> {
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let ctl = Ctl {
            tx,
            waker,
            wake_op,
            driver: std::sync::OnceLock::new(),
        };
        Ok((ctl, rx))
    }

    /// Queues `cmd` and wakes the driver.
    pub(crate) fn command(&self, cmd: C) -> crate::error::Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| crate::error::Error::SessionClosed)?;
        self.waker
            .wake()
            .map_err(crate::error::Error::os(self.wake_op))
    }

    /// Fails when called on the driver thread (from a hook), where waiting for the
    /// driver would wait forever.
    pub(crate) fn not_from_hook(&self, op: &'static str) -> crate::error::Result<()> {
        if self.driver.get() == Some(&std::thread::current().id()) {
            return Err(crate::error::Error::InsideHook { op });
        }
        Ok(())
    }
}
