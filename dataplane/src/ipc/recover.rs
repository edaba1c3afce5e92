//! Filling a lapped reader's loss by MoldUDP64 re-request: what the ring lost a reader
//! (told as [`Event::Lapped`]) is asked of the stream's re-request server, and the
//! messages that come back are handed over as [`Event::Recovered`].
//!
//! The decisions (when to ask, how to split a range, retries on an adaptive timeout,
//! the deadline) are the subscriber's sans-IO book ([`crate::core::recovery`]), the same
//! as a network subscription's; this is only its driver: one non-blocking UDP socket,
//! driven from [`IpcSubscription::poll`](super::IpcSubscription::poll).
//!
//! A reply counts only when it comes from the server asked, is a well-formed data
//! packet of the ring's session, and answers a request still out; anything else is
//! counted and dropped. A range not filled by its deadline is handed over as
//! [`Event::Gap`]: lost for good.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use crate::core::event::Event;
use crate::core::recovery::{Recovery, RecoveryConfig};
use crate::core::sequence::Gap;
use crate::error::{Error, Result};
use crate::latency::now_ns;
use crate::wire::{Packet, PacketKind, Session, REREQUEST_LEN};

/// Replies read per poll at most (the rest wait for the next poll).
const REPLIES_PER_POLL: usize = 64;
/// Requests sent per poll at most.
const REQUESTS_PER_POLL: usize = 64;
/// A request asks for this many messages until replies show how many one holds.
const FIRST_GUESS: u16 = 32;

/// What recovery did, for [`IpcReaderStats`](super::IpcReaderStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    pub(crate) requests: u64,
    pub(crate) retries: u64,
    pub(crate) replies: u64,
    pub(crate) recovered: u64,
    pub(crate) gaps_given_up: u64,
    pub(crate) reply_foreign: u64,
    pub(crate) reply_unasked: u64,
}

/// A reader's recovery: the book and its socket.
pub(crate) struct IpcRecovery {
    book: Recovery,
    socket: UdpSocket,
    server: SocketAddr,
    session: Session,
    buf: Box<[u8]>,
    request: [u8; REREQUEST_LEN],
    counts: Counts,
}

impl std::fmt::Debug for IpcRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcRecovery")
            .field("server", &self.server)
            .field("counts", &self.counts)
            .finish()
    }
}

impl IpcRecovery {
    /// Recovery of `session`'s messages from `config.server`, over a socket of the
    /// server's family bound to an ephemeral port.
    pub(crate) fn new(config: &RecoveryConfig, session: Session) -> Result<IpcRecovery> {
        let any: SocketAddr = match config.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(any)
            .map_err(Error::io("binding the IPC reader's re-request socket"))?;
        socket.set_nonblocking(true).map_err(Error::io(
            "making the IPC reader's re-request socket non-blocking",
        ))?;
        let mut book = Recovery::new(config);
        book.note_packet(FIRST_GUESS);
        Ok(IpcRecovery {
            book,
            socket,
            server: config.server,
            session,
            buf: vec![0; 65_536].into_boxed_slice(),
            request: [0; REREQUEST_LEN],
            counts: Counts::default(),
        })
    }

    /// What it did so far.
    pub(crate) fn counts(&self) -> Counts {
        let c = self.book.counts();
        Counts {
            requests: c.requests,
            retries: c.retries,
            ..self.counts
        }
    }

    /// Whether nothing is being recovered.
    pub(crate) fn is_idle(&self) -> bool {
        self.book.is_empty()
    }

    /// Messages `first..end` were lost to a lap: ask for them. Returns the events
    /// handed over (a range that finds no room in the book is given up at once).
    pub(crate) fn handle_lost<F: FnMut(Event<'_>)>(
        &mut self,
        first: u64,
        end: u64,
        f: &mut F,
    ) -> usize {
        if first == 0 || first >= end {
            return 0;
        }
        if self.book.add(first, end, now_ns()) {
            return 0;
        }
        self.give_up(first, end, f);
        1
    }

    fn give_up<F: FnMut(Event<'_>)>(&mut self, first: u64, end: u64, f: &mut F) {
        self.counts.gaps_given_up += 1;
        f(Event::Gap(Gap {
            first_missing: first,
            count: end - first,
        }));
    }

    /// Reads the replies that came, hands over what they recover, gives up what is past
    /// its deadline and sends the requests due. Never blocks; returns the events
    /// handed over.
    pub(crate) fn drive<F: FnMut(Event<'_>)>(&mut self, f: &mut F) -> usize {
        let mut told = 0;
        for _ in 0..REPLIES_PER_POLL {
            let (len, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(got) => got,
                // WouldBlock: nothing more now; any other error: look again next poll.
                Err(_) => break,
            };
            told += self.handle_reply(len, from, f);
        }
        let now = now_ns();
        // Allocates only when something expires.
        let mut lost = Vec::new();
        self.book
            .expire(now, &mut |first, end| lost.push((first, end)));
        for (first, end) in lost {
            self.give_up(first, end, f);
            told += 1;
        }
        for _ in 0..REQUESTS_PER_POLL {
            let Some((len, to)) = self.book.poll_request(self.session, now, &mut self.request)
            else {
                break;
            };
            // A request the kernel refused is asked again at its timeout.
            let _ = self.socket.send_to(&self.request[..len], to);
        }
        told
    }

    fn handle_reply<F: FnMut(Event<'_>)>(
        &mut self,
        len: usize,
        from: SocketAddr,
        f: &mut F,
    ) -> usize {
        if from != self.server {
            self.counts.reply_foreign += 1;
            return 0;
        }
        let Some(bytes) = self.buf.get(..len) else {
            self.counts.reply_unasked += 1;
            return 0;
        };
        let Ok(packet) = Packet::new_checked(bytes) else {
            self.counts.reply_unasked += 1;
            return 0;
        };
        let count = packet.message_count();
        if packet.kind() != PacketKind::Data || packet.session() != self.session {
            self.counts.reply_unasked += 1;
            return 0;
        }
        let first = packet.sequence();
        let now = now_ns();
        if !self.book.handle_reply(first, count, now) {
            self.counts.reply_unasked += 1;
            return 0;
        }
        self.counts.replies += 1;
        self.book.note_packet(count);
        let mut told = 0;
        for (sequence, message) in (first..).zip(packet.messages()) {
            if self.book.contains(sequence) {
                self.counts.recovered += 1;
                f(Event::Recovered { sequence, message });
                told += 1;
            }
        }
        let end = first.saturating_add(u64::from(count));
        let mut split = None;
        self.book
            .fill(first, end, now, &mut |a, b| split = Some((a, b)));
        if let Some((a, b)) = split {
            self.give_up(a, b, f);
            told += 1;
        }
        told
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::time::{Duration, Instant};

    use super::*;
    use crate::wire::{PacketBuilder, ReRequest, ReRequestRepr};

    /// Drives `r` until `done` says so (or a few seconds passed), collecting its
    /// events as (recovered sequence numbers, gaps).
    fn drive_until(
        r: &mut IpcRecovery,
        done: impl Fn(&IpcRecovery) -> bool,
    ) -> (Vec<u64>, Vec<Gap>) {
        let (mut recovered, mut gaps) = (Vec::new(), Vec::new());
        let begun = Instant::now();
        while !done(r) && begun.elapsed() < Duration::from_secs(5) {
            r.drive(&mut |e| match e {
                Event::Recovered { sequence, .. } => recovered.push(sequence),
                Event::Gap(g) => gaps.push(g),
                _ => {}
            });
            std::thread::sleep(Duration::from_millis(1));
        }
        (recovered, gaps)
    }

    /// A reply of messages `first..end` of `session`.
    fn reply(session: &Session, first: u64, end: u64) -> Vec<u8> {
        let mut buf = vec![0u8; 1500];
        let mut b = PacketBuilder::start(&mut buf, session, first).unwrap();
        for s in first..end {
            b.push(&mut buf, &s.to_be_bytes()).unwrap();
        }
        let len = b.finish(&mut buf);
        buf.truncate(len);
        buf
    }

    #[test]
    fn a_lost_range_is_asked_for_and_only_the_servers_replies_for_its_session_fill_it() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let session = Session::new("IPCREC").unwrap();
        let config = RecoveryConfig {
            delay: Duration::ZERO,
            ..RecoveryConfig::new(server.local_addr().unwrap())
        };
        let mut r = IpcRecovery::new(&config, session).unwrap();
        assert_eq!(r.handle_lost(10, 20, &mut |_| panic!("nothing yet")), 0);
        let _ = drive_until(&mut r, |r| r.counts().requests > 0);
        let mut buf = [0u8; 64];
        let (len, from) = server.recv_from(&mut buf).unwrap();
        let asked = ReRequestRepr::parse(&ReRequest::new_checked(&buf[..len]).unwrap()).unwrap();
        assert_eq!((asked.sequence, asked.session), (10, session));

        // From anyone else, or for another session: counted and dropped.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(&reply(&session, 10, 20), from).unwrap();
        let other = Session::new("OTHER").unwrap();
        server.send_to(&reply(&other, 10, 20), from).unwrap();
        server.send_to(b"not a packet", from).unwrap();
        let (recovered, _) = drive_until(&mut r, |r| {
            let c = r.counts();
            c.reply_foreign == 1 && c.reply_unasked == 2
        });
        assert!(recovered.is_empty());
        assert!(!r.is_idle());

        // The server's reply fills it.
        server.send_to(&reply(&session, 10, 20), from).unwrap();
        let (recovered, gaps) = drive_until(&mut r, IpcRecovery::is_idle);
        assert_eq!(recovered, (10..20).collect::<Vec<_>>());
        assert!(gaps.is_empty());
        assert_eq!(r.counts().recovered, 10);
    }

    #[test]
    fn a_range_nobody_answers_is_given_up_at_its_deadline_as_a_gap() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let session = Session::new("IPCREC").unwrap();
        let config = RecoveryConfig {
            delay: Duration::ZERO,
            deadline: Duration::from_millis(20),
            ..RecoveryConfig::new(server.local_addr().unwrap())
        };
        let mut r = IpcRecovery::new(&config, session).unwrap();
        r.handle_lost(5, 8, &mut |_| panic!("nothing yet"));
        let (recovered, gaps) = drive_until(&mut r, IpcRecovery::is_idle);
        assert!(recovered.is_empty());
        assert_eq!(
            gaps,
            [Gap {
                first_missing: 5,
                count: 3
            }]
        );
        assert_eq!(r.counts().gaps_given_up, 1);
    }
}
