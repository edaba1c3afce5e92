//! A re-request server driven by a packetizer's owner: the socket at its unicast
//! address, the sans-IO [`RerequestServer`] deciding what to answer, and the reply
//! buffer. The store it answers from is the packetizer's
//! ([`Packetizer::store`](crate::core::packetizer::Packetizer::store)), filled as packets
//! close. Both drivers of a packetizer run one when configured: the
//! [`Publisher`](super::Publisher) ([`PublisherConfig::rerequest`](super::PublisherConfig::rerequest))
//! and the [`Fanout`](crate::Fanout) root ([`FanoutConfig::rerequest`](crate::FanoutConfig::rerequest)).
//!
//! # When it runs
//!
//! On the driver's thread, whenever the driver is driven: every `poll` (of the publisher
//! or the fan-out), and after sends on the send path, but there at most once every
//! [`SEND_PATH_INTERVAL`] (a receive that finds nothing costs a system call, which after
//! every packet would cost more than the packet). Each time it takes one batch of at most
//! 64 requests ([`BATCH`](crate::io::datagram::BATCH)) (one `recvmmsg`), so that a flood
//! delays the live stream by at most one batch of parsing per call; the per-address
//! buckets of the server keep the replies of one requester from crowding out another's.
//! Replies are unicast to each requester's address from the server's socket, never
//! through the stream's socket or the fan-out's shards; the replies to one batch leave
//! together, in one `sendmmsg` (a system call per reply is, at 5% loss of 12 M msgs/s,
//! about 29,000 a second on the publisher's thread, which is also the stream's).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::server::{RerequestServer, ServerConfig, ServerStats};
use crate::core::store::{RetransmitStore, StoreConfig};
use crate::error::{Error, Result};
use crate::io::datagram::{DatagramSocket, BATCH};
use crate::io::sim::SimNet;
use crate::stat::kinds::Counters as _;
use crate::stat::Entry;
use crate::wire::Session;

/// A placeholder destination for the unused entries of a batch of replies.
const NO_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Shortest time between two looks at the re-request socket from the send path.
pub(crate) const SEND_PATH_INTERVAL: Duration = Duration::from_micros(100);

/// A re-request server (of a publisher or a fan-out root): where it listens, how much it
/// keeps and how much it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerequestConfig {
    /// The unicast address the server's UDP socket is bound at (port 0: any free port,
    /// see [`Publisher::rerequest_address`](super::Publisher::rerequest_address) and
    /// [`Fanout::rerequest_address`](crate::Fanout::rerequest_address)). Subscribers
    /// (and leaves) send their Requests here and the replies come from here. Give a
    /// specific address of the host: bound at a wildcard, replies leave from whichever
    /// address the route to each requester picks, which need not be the one it asked.
    pub address: SocketAddr,
    /// How many messages, and bytes of them, are kept to be sent again.
    pub store: StoreConfig,
    /// How much each requesting address may be sent.
    pub server: ServerConfig,
}

impl RerequestConfig {
    /// A server at `address` with the default store (1,000,000 messages, 128 MiB) and
    /// limits (per address 1,000 replies a second, burst 100; 2,000,000 bytes a second,
    /// burst 200,000; 4,096 addresses).
    pub fn new(address: SocketAddr) -> RerequestConfig {
        RerequestConfig {
            address,
            store: StoreConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

/// The store a packetizer (a publisher's or a fan-out's) keeps for `config`.
pub(crate) fn store(config: &RerequestConfig) -> Result<RetransmitStore> {
    RetransmitStore::new(&config.store).map_err(|e| Error::Config(e.0))
}

/// The running server. See the module docs.
pub(crate) struct Rerequests {
    socket: DatagramSocket,
    server: RerequestServer,
    /// Room for one batch of replies: [`BATCH`] of `max_datagram` bytes each.
    replies: Box<[u8]>,
    max_datagram: usize,
    /// When the send path last looked at the socket.
    looked: Option<Instant>,
    /// Its entry in the counters file (`multipoint stat`), written after each batch.
    stat: Option<Entry>,
}

impl std::fmt::Debug for Rerequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rerequests")
            .field("address", &self.socket.local_addr())
            .field("stats", &self.server.stats())
            .finish()
    }
}

impl Rerequests {
    /// Binds the server's socket at `config.address` — on `sim` if given, else on the
    /// host — for `session`, replying in datagrams of up to `max_datagram` bytes.
    pub(crate) fn bind(
        config: &RerequestConfig,
        session: Session,
        max_datagram: usize,
        sim: Option<&SimNet>,
    ) -> Result<Rerequests> {
        let server = RerequestServer::new(session, config.server)
            .map_err(|e| Error::Config(format!("re-request server: {}", e.0)))?;
        let addr = config.address;
        let socket = match sim {
            Some(net) => DatagramSocket::bind_sim(net, addr),
            None => DatagramSocket::bind_host(addr),
        }
        .map_err(|source| Error::RerequestBind { addr, source })?;
        let stat = ServerStats::register(&session.to_string(), &socket.local_addr().to_string());
        Ok(Rerequests {
            socket,
            server,
            replies: vec![0; BATCH * max_datagram].into_boxed_slice(),
            max_datagram,
            looked: None,
            stat,
        })
    }

    /// The address it is bound at.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr()
    }

    /// Its counters.
    pub(crate) fn stats(&self) -> ServerStats {
        self.server.stats()
    }

    /// From the send path: [`serve`](Self::serve), unless it was done less than
    /// [`SEND_PATH_INTERVAL`] ago.
    pub(crate) fn serve_if_due(&mut self, store: &RetransmitStore, now: Instant) {
        if self
            .looked
            .is_some_and(|at| now.saturating_duration_since(at) < SEND_PATH_INTERVAL)
        {
            return;
        }
        self.serve(store, now);
    }

    /// Answers one batch (at most [`BATCH`](crate::io::datagram::BATCH)) of what has arrived from `store`; returns how
    /// many datagrams it took.
    pub(crate) fn serve(&mut self, store: &RetransmitStore, now: Instant) -> usize {
        self.looked = Some(now);
        let n = match self.socket.recv_batch(now) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "receiving re-requests failed");
                self.server.handle_receive_failed();
                self.publish_stat();
                return 0;
            }
        };
        let Rerequests {
            socket,
            server,
            replies,
            max_datagram,
            ..
        } = self;
        // Each request's reply goes into a room of its own (one per datagram of the
        // batch); all leave in one send.
        let mut out: [(&[u8], SocketAddr); BATCH] = [(&[], NO_ADDRESS); BATCH];
        let mut count = 0;
        let mut rooms = replies.chunks_exact_mut((*max_datagram).max(1));
        for i in 0..n {
            let Some((request, from)) = socket.datagram(i) else {
                break;
            };
            let Some(from) = from else {
                server.handle_unaddressed();
                continue;
            };
            let Some(room) = rooms.next() else {
                break;
            };
            let Some(len) = server.handle_request(request, from, now, store, room) else {
                continue;
            };
            // A request not answered leaves its room unused: there is one per datagram of
            // the batch, so none runs short.
            let Some(slot) = out.get_mut(count) else {
                break;
            };
            *slot = (room.get(..len).unwrap_or_default(), from);
            count += 1;
        }
        let replies = out.get(..count).unwrap_or_default();
        socket.send_batch(replies, now, |_| server.handle_reply_failed());
        if n > 0 {
            self.publish_stat();
        }
        n
    }

    /// Writes the counters into the counters file.
    fn publish_stat(&self) {
        if let Some(entry) = &self.stat {
            self.server.stats().publish(entry);
        }
    }
}
