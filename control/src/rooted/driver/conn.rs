//! One framed, non-blocking TCP connection of the rooted control protocol: bytes in,
//! [`Frame`]s out, and back. The driver thread owns one per connection of its core.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::rooted::core::ConnError;
use crate::rooted::proto::{decode, Frame};

/// Bytes read per system call.
const READ_CHUNK: usize = 4096;
/// Most bytes read from one connection before the others get their turn.
const READ_BUDGET: usize = 64 * 1024;

#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    /// Still on its way up (a connection this side opened).
    connecting: bool,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

impl Conn {
    /// Takes a stream, connected or (with `connecting`) on its way, and registers it for
    /// reads and writes under `token`.
    pub(super) fn new(
        mut stream: TcpStream,
        connecting: bool,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Conn> {
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Conn {
            stream,
            connecting,
            inbuf: Vec::with_capacity(256),
            outbuf: Vec::with_capacity(256),
        })
    }

    /// Whether the connection is still on its way up.
    pub(super) fn connecting(&self) -> bool {
        self.connecting
    }

    /// After an event on a connection on its way up: `Ok(true)` when it just came up,
    /// `Ok(false)` while it is still on its way (or was up before); an error when it
    /// could not be made.
    pub(super) fn came_up(&mut self) -> Result<bool, ConnError> {
        if !self.connecting {
            return Ok(false);
        }
        if let Some(e) = self.stream.take_error().map_err(ConnError::Io)? {
            return Err(ConnError::Io(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connecting = false;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(ConnError::Io(e)),
        }
    }

    /// Reads what the socket has, up to [`READ_BUDGET`] bytes, and appends the decoded
    /// frames to `frames`. Returns whether bytes may be left to read: the registration is
    /// edge-triggered, so the caller must come back without waiting for an event.
    ///
    /// Frames that arrived before an error or the peer's close are decoded first, so a
    /// last frame (an End, a Leave) is never lost to the reset that may follow it.
    pub(super) fn read(&mut self, frames: &mut Vec<Frame>) -> Result<bool, ConnError> {
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
    pub(super) fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        frame
            .encode(&mut self.outbuf)
            .map_err(ConnError::Protocol)?;
        self.flush()
    }

    /// Writes queued bytes until done or the socket is full.
    pub(super) fn flush(&mut self) -> Result<(), ConnError> {
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
    pub(super) fn pending_output(&self) -> bool {
        !self.outbuf.is_empty()
    }

    /// Closes the sending side, discards what the peer sent that was not read (closing
    /// with unread bytes would make the kernel send a reset, which can destroy our last
    /// frame before the peer reads it), and deregisters the stream; dropping the `Conn`
    /// closes it. What is still queued is lost: the driver keeps a closing connection
    /// until it is written or its time is up, and never waits here.
    pub(super) fn finish(mut self, registry: &Registry) {
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

/// Starts opening a control connection to `addr`, non-blocking, with Nagle off: the
/// poller says when it is up ([`Conn::came_up`]).
pub(super) fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A listening TCP socket for control connections, with a deep accept queue (hundreds of
/// leaves may arrive at once) and `SO_REUSEADDR` (a restarted root can listen again at
/// once).
pub(super) fn listen(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
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
