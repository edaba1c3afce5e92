//! A unicast UDP socket for small request/reply traffic beside the data path: the
//! publisher's re-request server receives MoldUDP64 Requests on it and sends each reply
//! back to the address its request came from, from this socket (so the reply's source is
//! the address the request went to).
//!
//! - **Receiving is batched.** On the host, one non-blocking `recvmmsg(2)` takes up to
//!   [`BATCH`] datagrams with their source addresses (one system call per batch, and one
//!   that finds nothing when idle); on a simulated network, up to [`BATCH`]
//!   [`SimSocket::recv`]s. Each datagram is cut at [`ROOM`] bytes: plenty for 20-byte
//!   Requests, and a longer datagram is not a Request whatever its tail says (a cut one
//!   still reads longer than 20 bytes).
//! - **Replies are batched too**, without blocking: the replies to one batch of requests
//!   leave in one `sendmmsg(2)`, each to its own destination (on a simulated network, one
//!   [`SimSocket::send_to`] each). A reply the kernel refuses (a full send buffer, an
//!   unreachable destination) fails alone: the others still go, none stalls the publisher.
//! - Nothing here allocates after [`DatagramSocket::bind_host`] or
//!   [`DatagramSocket::bind_sim`], and nothing panics: lengths and addresses the kernel
//!   reports are checked and clamped.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Instant;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::parse_sockaddr;
use super::sim::{SimNet, SimSocket};

/// Most datagrams one [`DatagramSocket::recv_batch`] takes.
pub(crate) const BATCH: usize = 64;

/// Bytes kept of each received datagram.
pub(crate) const ROOM: usize = 64;

/// The socket itself.
enum Endpoint {
    Host(Socket),
    Sim(SimSocket),
}

/// A bound unicast UDP socket and room for one batch of received datagrams. See the
/// module docs.
pub(crate) struct DatagramSocket {
    endpoint: Endpoint,
    local: SocketAddr,
    bufs: Box<[[u8; ROOM]; BATCH]>,
    /// Length and source of each datagram of the last batch (`None`: the source could not
    /// be read).
    got: [(usize, Option<SocketAddr>); BATCH],
    count: usize,
}

impl std::fmt::Debug for DatagramSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramSocket")
            .field("local", &self.local)
            .finish()
    }
}

impl DatagramSocket {
    /// A non-blocking UDP socket of this host bound at `addr` (port 0: any free port),
    /// without `SO_REUSEADDR`, so that two servers never share an address unknowingly.
    ///
    /// # Errors
    ///
    /// What `socket(2)`, `setsockopt(2)` or `bind(2)` said (e.g. `AddrInUse`).
    pub(crate) fn bind_host(addr: SocketAddr) -> io::Result<DatagramSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(false)?;
        socket.set_nonblocking(true)?;
        socket.bind(&SockAddr::from(addr))?;
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("the bound socket has no IP address"))?;
        Ok(DatagramSocket::with(Endpoint::Host(socket), local))
    }

    /// A socket of the simulated network `net` bound at `addr`.
    ///
    /// # Errors
    ///
    /// What [`SimNet::bind`] said.
    pub(crate) fn bind_sim(net: &SimNet, addr: SocketAddr) -> io::Result<DatagramSocket> {
        let socket = net.bind(addr)?;
        let local = socket.local_addr();
        Ok(DatagramSocket::with(Endpoint::Sim(socket), local))
    }

    fn with(endpoint: Endpoint, local: SocketAddr) -> DatagramSocket {
        DatagramSocket {
            endpoint,
            local,
            bufs: Box::new([[0; ROOM]; BATCH]),
            got: [(0, None); BATCH],
            count: 0,
        }
    }

    /// The address it is bound at.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Takes what has arrived, up to [`BATCH`] datagrams, without waiting (on a simulated
    /// network, what is due at `now`); returns how many. Read them with
    /// [`datagram`](Self::datagram) until the next call.
    ///
    /// # Errors
    ///
    /// What `recvmmsg(2)` said, other than that nothing is there (which is `Ok(0)`).
    pub(crate) fn recv_batch(&mut self, now: Instant) -> io::Result<usize> {
        self.count = 0;
        let count = match &self.endpoint {
            Endpoint::Sim(socket) => {
                let mut n = 0;
                for (buf, got) in self.bufs.iter_mut().zip(self.got.iter_mut()) {
                    let Some(datagram) = socket.recv(now, buf) else {
                        break;
                    };
                    // A cut datagram reads as longer than any Request, like on the host.
                    let len = if datagram.truncated {
                        ROOM
                    } else {
                        datagram.len
                    };
                    *got = (len.min(ROOM), Some(datagram.from));
                    n += 1;
                }
                n
            }
            Endpoint::Host(socket) => recv_mmsg(socket, &mut self.bufs, &mut self.got)?,
        };
        self.count = count;
        Ok(count)
    }

    /// Datagram `i` of the last batch and its source (`None` for the source when the
    /// kernel's could not be read); `None` past the batch.
    pub(crate) fn datagram(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        if i >= self.count {
            return None;
        }
        let &(len, from) = self.got.get(i)?;
        let bytes = self.bufs.get(i)?.get(..len)?;
        Some((bytes, from))
    }

    /// Sends `bytes` to `to` without blocking (at `now` on a simulated network). An IPv4
    /// destination from an IPv6 socket (a dual-stack one, whose IPv4 sources are read as
    /// IPv4) goes to its IPv4-mapped address, as the kernel wants.
    ///
    /// # Errors
    ///
    /// What `sendto(2)` said (`WouldBlock` when the send buffer is full).
    pub(crate) fn send_to(&self, bytes: &[u8], to: SocketAddr, now: Instant) -> io::Result<()> {
        match &self.endpoint {
            Endpoint::Host(socket) => socket
                .send_to(bytes, &SockAddr::from(self.destination(to)))
                .map(|_| ()),
            Endpoint::Sim(socket) => socket.send_to(bytes, to, now).map(|_| ()),
        }
    }
}

impl DatagramSocket {
    /// Sends each of `replies` (`(bytes, destination)`; those past the first [`BATCH`]
    /// are not sent and count as failed) without blocking, at `now` on a simulated
    /// network, and returns how many were sent; [`send_to`](Self::send_to) for each, in
    /// one `sendmmsg(2)` on the host (more only when the kernel refuses one: it is
    /// skipped and the rest go on). Calls `failed(i)` for each reply `i` not sent.
    pub(crate) fn send_batch(
        &self,
        replies: &[(&[u8], SocketAddr)],
        now: Instant,
        mut failed: impl FnMut(usize),
    ) -> usize {
        (BATCH..replies.len()).for_each(&mut failed);
        let replies = replies.get(..BATCH).unwrap_or(replies);
        if replies.is_empty() {
            return 0;
        }
        match &self.endpoint {
            Endpoint::Sim(_) => {
                let mut sent = 0;
                for (i, &(bytes, to)) in replies.iter().enumerate() {
                    match self.send_to(bytes, to, now) {
                        Ok(()) => sent += 1,
                        Err(_) => failed(i),
                    }
                }
                sent
            }
            Endpoint::Host(socket) => send_mmsg(socket, replies, |to| self.destination(to), failed),
        }
    }

    /// Where the kernel wants a datagram to `to` addressed from this socket: an IPv4
    /// destination from an IPv6 (dual-stack) socket at its IPv4-mapped address.
    fn destination(&self, to: SocketAddr) -> SocketAddr {
        match to {
            SocketAddr::V4(v4) if self.local.is_ipv6() => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        }
    }
}

/// [`DatagramSocket::send_batch`] on the host: `sendmmsg(2)` from the first reply not yet
/// tried; the kernel stops at the first it refuses, which is counted failed and skipped.
fn send_mmsg(
    socket: &Socket,
    replies: &[(&[u8], SocketAddr)],
    destination: impl Fn(SocketAddr) -> SocketAddr,
    mut failed: impl FnMut(usize),
) -> usize {
    let n = replies.len().min(BATCH);
    // Past `n` unused (never handed to the kernel); an array needs a value there.
    let names: [SockAddr; BATCH] = std::array::from_fn(|i| {
        SockAddr::from(
            replies
                .get(i)
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |r| destination(r.1)),
        )
    });
    // SAFETY: plain C structs, for which all zeroes is a valid value.
    let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    for (((&(bytes, _), iov), name), msg) in replies
        .iter()
        .zip(iovs.iter_mut())
        .zip(names.iter())
        .zip(msgs.iter_mut())
    {
        iov.iov_base = bytes.as_ptr().cast_mut().cast();
        iov.iov_len = bytes.len();
        msg.msg_hdr.msg_name = name.as_ptr().cast_mut().cast();
        msg.msg_hdr.msg_namelen = name.len();
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    let (mut start, mut sent) = (0usize, 0usize);
    while start < n {
        let Some(rest) = msgs.get_mut(start..n) else {
            break;
        };
        // SAFETY: each of the `rest.len()` headers points at its own iovec (over a reply
        // borrowed for this call), and name (a live SockAddr of the length it says); the
        // kernel only reads them, and writes each header's msg_len.
        let r = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                rest.as_mut_ptr(),
                rest.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r <= 0 {
            // The first of the rest was refused (the kernel sends at least one when it
            // does not fail): skip it, try the others.
            failed(start);
            start += 1;
            continue;
        }
        let r = (r as usize).min(rest.len());
        sent += r;
        start += r;
    }
    sent
}

/// One non-blocking `recvmmsg(2)` of up to [`BATCH`] datagrams into `bufs`, their lengths
/// and sources into `got`; returns how many (0 when nothing is there).
fn recv_mmsg(
    socket: &Socket,
    bufs: &mut [[u8; ROOM]; BATCH],
    got: &mut [(usize, Option<SocketAddr>); BATCH],
) -> io::Result<usize> {
    const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();
    // SAFETY: plain C structs, for which all zeroes is a valid value.
    let mut names: [libc::sockaddr_in6; BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    for ((buf, iov), (name, msg)) in bufs
        .iter_mut()
        .zip(iovs.iter_mut())
        .zip(names.iter_mut().zip(msgs.iter_mut()))
    {
        iov.iov_base = buf.as_mut_ptr().cast();
        iov.iov_len = ROOM;
        msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_in6).cast();
        msg.msg_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every mmsghdr points at its own iovec, buffer (ROOM bytes) and name (of the
    // length it says), all alive and not otherwise borrowed until the call returns; the
    // kernel writes at most those lengths and `BATCH` headers.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        };
    }
    let n = (n as usize).min(BATCH);
    for ((msg, name), got) in msgs.iter().zip(names.iter()).zip(got.iter_mut()).take(n) {
        let name_len = (msg.msg_hdr.msg_namelen as usize).min(NAME_LEN);
        // SAFETY: `name` is a live sockaddr_in6 of NAME_LEN bytes, read as bytes only.
        let name_bytes = unsafe {
            std::slice::from_raw_parts((name as *const libc::sockaddr_in6).cast::<u8>(), name_len)
        };
        *got = ((msg.msg_len as usize).min(ROOM), parse_sockaddr(name_bytes));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[test]
    fn a_batch_reads_each_datagram_with_its_source_and_a_reply_reaches_it() {
        let mut server = DatagramSocket::bind_host(loopback()).unwrap_or_else(|e| panic!("{e}"));
        let client = UdpSocket::bind(loopback()).unwrap_or_else(|e| panic!("{e}"));
        let now = Instant::now();
        assert_eq!(server.recv_batch(now).ok(), Some(0), "nothing yet");
        let to = server.local_addr();
        client
            .send_to(&[1; 20], to)
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .send_to(&[2; 200], to)
            .unwrap_or_else(|e| panic!("{e}"));
        // Loopback delivers at once; the loop only guards against a hang.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < 2 && Instant::now() < deadline {
            let n = server.recv_batch(now).unwrap_or_else(|e| panic!("{e}"));
            got.extend(
                (0..n)
                    .filter_map(|i| server.datagram(i))
                    .map(|(b, f)| (b.to_vec(), f)),
            );
            std::thread::yield_now();
        }
        let from = client.local_addr().ok();
        assert_eq!(
            got,
            [(vec![1; 20], from), (vec![2; ROOM], from)],
            "the second is cut"
        );
        let from = from.unwrap_or_else(|| panic!("the client's address"));
        server
            .send_to(b"reply", from, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 16];
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("{e}"));
        let (len, source) = client.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((&buf[..len], source), (&b"reply"[..], to));
    }

    #[test]
    fn a_dual_stack_socket_answers_an_ipv4_source() {
        let Ok(mut server) = DatagramSocket::bind_host(SocketAddr::from(([0u16; 8], 0))) else {
            eprintln!("skipped: this host cannot bind an IPv6 wildcard socket");
            return;
        };
        let client = UdpSocket::bind(loopback()).unwrap_or_else(|e| panic!("{e}"));
        let port = server.local_addr().port();
        client
            .send_to(&[1; 20], SocketAddr::from(([127, 0, 0, 1], port)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut from = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while from.is_none() && Instant::now() < deadline {
            let n = server
                .recv_batch(Instant::now())
                .unwrap_or_else(|e| panic!("{e}"));
            from = (n > 0)
                .then(|| server.datagram(0).and_then(|(_, f)| f))
                .flatten();
            std::thread::yield_now();
        }
        let from = from.unwrap_or_else(|| panic!("no request"));
        assert_eq!(Some(from), client.local_addr().ok(), "read as IPv4");
        server
            .send_to(b"reply", from, Instant::now())
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 16];
        let (len, _) = client.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..len], b"reply");
    }

    #[test]
    fn a_batch_of_replies_reaches_each_destination_and_a_refused_one_fails_alone() {
        let server = DatagramSocket::bind_host(loopback()).unwrap_or_else(|e| panic!("{e}"));
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind(loopback()).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let addr = |c: &UdpSocket| c.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // Port 0 is no destination: the kernel refuses that reply (EINVAL).
        let refused = SocketAddr::from(([127, 0, 0, 1], 0));
        let replies: [(&[u8], SocketAddr); 4] = [
            (b"to one", addr(&clients[0])),
            (b"nowhere", refused),
            (b"to two", addr(&clients[1])),
            (b"to three", addr(&clients[2])),
        ];
        let mut failed = Vec::new();
        let sent = server.send_batch(&replies, Instant::now(), |i| failed.push(i));
        assert_eq!((sent, failed), (3, vec![1]));
        for (client, want) in clients.iter().zip([&b"to one"[..], b"to two", b"to three"]) {
            client
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 16];
            let (len, source) = client.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((&buf[..len], source), (want, server.local_addr()));
        }
    }

    #[test]
    fn an_address_in_use_is_refused() {
        let first = DatagramSocket::bind_host(loopback()).unwrap_or_else(|e| panic!("{e}"));
        let again = DatagramSocket::bind_host(first.local_addr());
        assert_eq!(
            again.err().map(|e| e.kind()),
            Some(io::ErrorKind::AddrInUse)
        );
    }

    #[test]
    fn a_simulated_socket_reads_the_same_way() {
        let net = SimNet::new(1);
        let mut server = DatagramSocket::bind_sim(
            &net,
            "10.0.0.1:7000".parse().unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let client = net
            .bind("10.0.0.2:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let now = Instant::now();
        for len in [20, 100] {
            client
                .send_to(&vec![7; len], server.local_addr(), now)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(server.recv_batch(now).ok(), Some(2));
        let from = Some(client.local_addr());
        assert_eq!(server.datagram(0), Some((&[7u8; 20][..], from)));
        assert_eq!(
            server.datagram(1).map(|(b, f)| (b.len(), f)),
            Some((ROOM, from))
        );
        assert_eq!(server.datagram(2), None);
        server
            .send_to(b"reply", client.local_addr(), now)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 16];
        assert_eq!(
            client.recv(now, &mut buf).map(|d| (d.len, d.from)),
            Some((5, server.local_addr()))
        );
    }
}
