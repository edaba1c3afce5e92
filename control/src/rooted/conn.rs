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
