//! Junk on a subscription's group and port — random bytes, truncated copies of real
//! packets, packets broken in other ways — is counted as malformed and skipped; packets
//! of another session are counted and ignored; the real stream beside them arrives whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;

use common::{
    assert_received_stream, await_end_of_session, checked_subscription, flush_and_wait, group,
    loopback_subscription, start_or_skip, wait_until, Expected, Net, Paced, Stream, BACKENDS,
    MAX_LEN, STALL,
};
use multipoint_dataplane::io::sim::SimNet;
use multipoint_dataplane::wire::{
    pack_all, write_end_of_session, write_heartbeat, Packet, Session, DEFAULT_MAX_DATAGRAM,
    HEADER_LEN,
};
use multipoint_dataplane::{BackendChoice, Publisher, ShardConfig};

const MESSAGES: u64 = 50_000;
const WINDOW: u64 = 3_000;
/// The real stream goes out in this many parts, with junk sent between them.
const PARTS: u64 = 50;

/// xorshift64: deterministic junk.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Datagrams that no MoldUDP64 parser may accept, whatever the luck of the draw.
fn junk(session: &Session, stream: &Stream, rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut junk = Vec::new();
    // Random bytes shorter than a header.
    for len in 1..HEADER_LEN {
        junk.push(rng.bytes(len));
    }
    // Random bytes under a header whose count promises more blocks than the bytes can
    // hold: at least 200 two-byte block headers in at most 280 bytes.
    for _ in 0..40 {
        let len = HEADER_LEN + 1 + rng.below(260);
        let mut bytes = rng.bytes(len);
        let count = 200 + rng.below(0xFFFE - 200) as u16;
        bytes[18..20].copy_from_slice(&count.to_be_bytes());
        junk.push(bytes);
    }
    // Real packets of the same session (numbered like the stream), cut short anywhere:
    // a prefix of a data packet always lacks a block or part of one.
    let mut buf = [0u8; MAX_LEN];
    let messages: Vec<Vec<u8>> = (1..=200)
        .map(|seq| {
            let len = stream.write(seq, &mut buf);
            buf[..len].to_vec()
        })
        .collect();
    let packets = pack_all(
        session,
        1,
        DEFAULT_MAX_DATAGRAM,
        messages.iter().map(Vec::as_slice),
    )
    .unwrap();
    for packet in &packets {
        assert!(Packet::new_checked(&packet[..]).is_ok());
        junk.push(packet[..1 + rng.below(packet.len() as u64 - 1)].to_vec());
        junk.push(packet[..HEADER_LEN + rng.below((packet.len() - HEADER_LEN) as u64)].to_vec());
        junk.push(packet[..packet.len() - 1].to_vec());
    }
    // A whole packet with one byte too many.
    let mut long = packets[0].clone();
    long.push(0);
    junk.push(long);
    // A heartbeat and an end of session of our session, each with a payload.
    let mut control = [0u8; HEADER_LEN];
    write_heartbeat(&mut control, session, 1).unwrap();
    junk.push([&control[..], b"x"].concat());
    write_end_of_session(&mut control, session, 1).unwrap();
    junk.push([&control[..], &[0, 0]].concat());
    // A data packet whose messages would run past sequence number 2^64 - 1.
    let mut overflow = pack_all(session, 1, DEFAULT_MAX_DATAGRAM, [&b"ab"[..], b"cd"])
        .unwrap()
        .remove(0);
    overflow[10..18].copy_from_slice(&(u64::MAX - 1).to_be_bytes());
    junk.push(overflow);

    for datagram in &junk {
        assert!(
            Packet::new_checked(&datagram[..]).is_err(),
            "junk that parses: {datagram:?}"
        );
        assert!(
            !datagram.is_empty(),
            "see an_empty_datagram_is_counted_as_malformed"
        );
    }
    junk
}

/// Valid packets of another session: data, a heartbeat and an end of session (which
/// must not end ours).
fn foreign() -> Vec<Vec<u8>> {
    let other = Session::new("INTRUDER").unwrap();
    let mut packets = pack_all(&other, 1, DEFAULT_MAX_DATAGRAM, [&b"not yours"[..]; 3]).unwrap();
    let mut control = [0u8; HEADER_LEN];
    write_heartbeat(&mut control, &other, 4).unwrap();
    packets.push(control.to_vec());
    write_end_of_session(&mut control, &other, 4).unwrap();
    packets.push(control.to_vec());
    packets
}

fn junk_beside_a_real_stream(test: &str, net: Net, group: SocketAddr) {
    let Some((shards, sub, stream)) = checked_subscription(test, &net, group) else {
        return;
    };
    let session = Session::new("REAL").unwrap();
    let mut publisher = Publisher::new(net.publisher(session, group)).unwrap();
    let junk_sender = net.raw_sender(group);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let junk = junk(&session, &stream, &mut rng);
    let foreign = foreign();

    let mut paced = Paced::new(&stream, WINDOW, || sub.stats().messages);
    let per_part = MESSAGES / PARTS;
    let mut junk_sent = 0;
    for part in 0..PARTS {
        let first = part * per_part + 1;
        paced.publish(&mut publisher, first..=first + per_part - 1);
        if part == 0 {
            // The subscription follows the first session it sees: let that be ours.
            flush_and_wait(&mut publisher, "the first real messages", || {
                paced.received() > 0
            });
        }
        // Spread the junk over the stream, the foreign packets in the middle.
        let share = junk.len().div_ceil(PARTS as usize);
        for datagram in junk.iter().skip(part as usize * share).take(share) {
            assert_eq!(junk_sender.send(datagram), datagram.len());
            junk_sent += 1;
        }
        if part == PARTS / 2 {
            for packet in &foreign {
                junk_sender.send(packet);
            }
        }
    }
    assert_eq!(junk_sent, junk.len());
    let expected = Expected {
        malformed: junk_sent as u64,
        other_session: foreign.len() as u64,
        ..Expected::stream(MESSAGES, paced.sent)
    };
    flush_and_wait(&mut publisher, "the stream and the junk", || {
        let s = sub.stats();
        s.messages == MESSAGES
            && s.malformed >= expected.malformed
            && s.other_session >= expected.other_session
    });
    let published = publisher.close();
    await_end_of_session(std::slice::from_ref(&sub));

    let closed = sub.close().unwrap();
    assert_received_stream(test, &closed, &published, expected);
    let stats = closed.stats;
    assert_eq!(stats.end_of_session, 1, "{test}: {stats:?}");
    shards.shutdown();
}

#[test]
fn junk_is_counted_as_malformed_and_leaves_the_stream_undisturbed_on_io_uring() {
    junk_beside_a_real_stream("io_uring", Net::Host(BackendChoice::Uring), group(102, 1));
}

#[test]
fn junk_is_counted_as_malformed_and_leaves_the_stream_undisturbed_on_mmsg() {
    junk_beside_a_real_stream("mmsg", Net::Host(BackendChoice::Mmsg), group(102, 2));
}

#[test]
fn junk_is_counted_as_malformed_and_leaves_the_stream_undisturbed_on_sim() {
    junk_beside_a_real_stream("sim", Net::Sim(SimNet::new(102)), group(102, 5));
}

/// A zero-length datagram is not a MoldUDP64 packet either (it lacks the 20-byte header):
/// it must be counted as malformed like any other.
#[test]
fn an_empty_datagram_is_counted_as_malformed() {
    let mut wrong = Vec::new();
    let nets = BACKENDS
        .map(Net::Host)
        .into_iter()
        .chain([Net::Sim(SimNet::new(103))]);
    for (net, last) in nets.zip([3, 4, 6]) {
        let test = format!("{net:?}");
        let group = group(102, last);
        let Some(mut shards) = start_or_skip(&test, net.shards(ShardConfig::default())) else {
            continue;
        };
        let sub = shards
            .subscribe(loopback_subscription(group), |_: u64, _: &[u8]| {})
            .unwrap();
        let sender = net.raw_sender(group);
        assert_eq!(sender.send(&[]), 0);
        assert_eq!(sender.send(b"short"), 5);
        wait_until("both datagrams", STALL, || sub.stats().datagrams == 2);
        let stats = sub.close().unwrap().stats;
        shards.shutdown();
        if stats.malformed != 2 {
            wrong.push(format!(
                "{test}: malformed {} of 2: {stats:?}",
                stats.malformed
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "an empty and a 5-byte datagram:\n{}",
        wrong.join("\n")
    );
}
