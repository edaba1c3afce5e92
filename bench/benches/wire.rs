//! MoldUDP64 framing: encoding and decoding, in messages per second.
//!
//! One group per operation and message size (`encode_32B`, `decode_1024B`, ...). An
//! iteration handles [`MESSAGES`] messages packed into default-size (1472-byte) datagrams:
//! encoding starts, fills and finishes packets in one reused buffer; decoding checks
//! pre-built packets with `Packet::new_checked` and walks their messages. Nothing is
//! allocated inside the measured loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use multipoint_dataplane::wire::{pack_all, Packet, PacketBuilder, PushError, Session};
use multipoint_dataplane::wire::{BLOCK_HEADER_LEN, DEFAULT_MAX_DATAGRAM, HEADER_LEN};

const SIZES: [usize; 3] = [32, 256, 1024];
/// Messages per iteration.
const MESSAGES: usize = 1024;

fn session() -> Session {
    Session::new("BENCH").unwrap()
}

fn message(size: usize) -> Vec<u8> {
    (0..size).map(|i| i as u8).collect()
}

/// Packs `MESSAGES` copies of `msg` into packets built in `buf`, one after the other, and
/// returns the total length of the packets (so the work cannot be optimised away).
fn encode(buf: &mut [u8], session: &Session, first_sequence: u64, msg: &[u8]) -> usize {
    let mut builder = PacketBuilder::start(buf, session, first_sequence).unwrap();
    let mut total = 0;
    for _ in 0..MESSAGES {
        match builder.push(buf, msg) {
            Ok(()) => {}
            Err(PushError::Full) => {
                total += builder.finish(buf);
                black_box(&mut *buf);
                builder = PacketBuilder::start(buf, session, builder.next_sequence()).unwrap();
                builder.push(buf, msg).unwrap();
            }
            Err(e) => panic!("pushing a {}-byte message: {e}", msg.len()),
        }
    }
    total + builder.finish(buf)
}

/// A group named `name` counting [`MESSAGES`] messages per iteration, with the timings
/// every group of this bench uses.
fn group(c: &mut Criterion, name: String) -> BenchmarkGroup<'_, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(MESSAGES as u64))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    group
}

fn bench_encode(c: &mut Criterion, size: usize) {
    let session = session();
    let msg = message(size);
    let mut buf = vec![0u8; DEFAULT_MAX_DATAGRAM];
    let mut group = group(c, format!("encode_{size}B"));
    let mut sequence = 1u64;
    group.bench_function("packet_builder", |b| {
        b.iter(|| {
            let len = encode(&mut buf, &session, sequence, black_box(&msg));
            sequence += MESSAGES as u64;
            black_box(len)
        })
    });
    group.finish();
}

fn bench_decode(c: &mut Criterion, size: usize) {
    let session = session();
    let msg = message(size);
    let packets = pack_all(
        &session,
        1,
        DEFAULT_MAX_DATAGRAM,
        std::iter::repeat_n(&msg[..], MESSAGES),
    )
    .unwrap();
    let per_packet = (DEFAULT_MAX_DATAGRAM - HEADER_LEN) / (BLOCK_HEADER_LEN + size);
    assert_eq!(packets.len(), MESSAGES.div_ceil(per_packet));
    let mut group = group(c, format!("decode_{size}B"));
    group.bench_function("new_checked_messages", |b| {
        b.iter(|| {
            let (mut count, mut bytes) = (0usize, 0usize);
            for p in black_box(&packets) {
                let packet = Packet::new_checked(&p[..]).unwrap();
                for m in packet.messages() {
                    count += 1;
                    bytes += m.len();
                }
            }
            assert_eq!(count, MESSAGES);
            black_box(bytes)
        })
    });
    group.finish();
}

fn wire(c: &mut Criterion) {
    for size in SIZES {
        bench_encode(c, size);
    }
    for size in SIZES {
        bench_decode(c, size);
    }
}

criterion_group!(benches, wire);
criterion_main!(benches);
