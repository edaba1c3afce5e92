//! The ring in one process: a writer and readers on real `/dev/shm` files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::layout::{HEADER_LEN, OFF_CAPACITY, OFF_PID, OFF_TAIL, OFF_VERSION};
use super::*;
use crate::core::event::Event;
use crate::core::receive::Handler;
use crate::core::sequence::Gap;
use crate::error::Error;

/// A ring name no other test (or test process) uses; the file is removed on drop.
struct Name(String);

impl Name {
    fn new(what: &str) -> Name {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Name(format!("test-{}-{n}-{what}", std::process::id()))
    }
    fn path(&self) -> std::path::PathBuf {
        ring_path(&self.0).unwrap()
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

fn small() -> IpcConfig {
    IpcConfig::new(IpcConfig::MIN_CAPACITY)
}

/// A writer of a new small ring at `name` that wrote and flushed messages `1..=upto`.
fn written(name: &Name, upto: u64) -> IpcWriter {
    let mut writer = IpcWriter::create(&name.0, small()).unwrap();
    for sequence in 1..=upto {
        writer.offer(sequence, &message(sequence)).unwrap();
    }
    writer.flush();
    writer
}

/// A message whose bytes say its sequence number.
fn message(sequence: u64) -> Vec<u8> {
    let len = 8 + (sequence % 41) as usize;
    let mut m = vec![(sequence % 251) as u8; len];
    m[..8].copy_from_slice(&sequence.to_le_bytes());
    m
}

#[derive(Debug, Default)]
struct Seen {
    sequences: Vec<u64>,
    lapped: Vec<(u64, u64, u64)>,
    failures: Vec<String>,
    other: Vec<String>,
}

impl Seen {
    fn take(&mut self, event: Event<'_>) {
        match event {
            Event::Message {
                sequence,
                message: m,
            } => {
                assert_eq!(m, &message(sequence)[..], "bytes of {sequence}");
                self.sequences.push(sequence);
            }
            Event::Lapped {
                count,
                first_sequence,
                resume_sequence,
            } => self.lapped.push((count, first_sequence, resume_sequence)),
            Event::Failure(why) => self.failures.push(why.to_owned()),
            other => self.other.push(format!("{other:?}")),
        }
    }
    fn lost(&self) -> u64 {
        self.lapped.iter().map(|l| l.0).sum()
    }
}

fn drain(sub: &mut IpcSubscription, seen: &mut Seen) {
    while sub.poll(|e| seen.take(e), 100) > 0 {}
}

#[test]
fn a_reader_that_keeps_up_gets_every_message_in_order_across_many_laps() {
    let name = Name::new("laps");
    let mut writer = IpcWriter::create(&name.0, small()).unwrap();
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    let mut seen = Seen::default();
    for sequence in 1..=100_000u64 {
        writer.offer(sequence, &message(sequence)).unwrap();
        if sequence % 100 == 0 {
            writer.flush();
            drain(&mut sub, &mut seen);
        }
    }
    writer.on_gap(Gap {
        first_missing: 100_001,
        count: 5,
    });
    writer.end_of_session();
    drain(&mut sub, &mut seen);
    assert!(writer.stats().laps > 50, "{:?}", writer.stats());
    assert_eq!(seen.sequences, (1..=100_000).collect::<Vec<_>>());
    assert!(seen.lapped.is_empty(), "{:?}", seen.lapped);
    assert_eq!(seen.other.len(), 2, "{:?}", seen.other);
    assert!(seen.other[0].contains("first_missing: 100001, count: 5"));
    assert_eq!(seen.other[1], "EndOfSession");
    assert_eq!(sub.stats().messages, 100_000);
    assert_eq!((sub.stats().lost, sub.stats().discarded), (0, 0));
    writer.close();
    drain(&mut sub, &mut seen);
    assert!(sub.is_closed());
    assert_eq!(sub.writer_state(), WriterState::Closed);
    assert!(seen.failures.is_empty(), "a close is no failure");
    assert!(!name.path().exists(), "the writer removed its file");
}

/// Writes messages 1..=`total` into a small ring (published every 64), calling `read`
/// every `every` messages, then closes the writer; the reader and what it saw.
fn write_reading_now_and_then(
    what: &str,
    total: u64,
    every: u64,
    mut read: impl FnMut(&mut IpcSubscription, &mut Seen),
) -> (Name, IpcSubscription, Seen) {
    let name = Name::new(what);
    let mut writer = IpcWriter::create(&name.0, small()).unwrap();
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    let mut seen = Seen::default();
    for sequence in 1..=total {
        writer.offer(sequence, &message(sequence)).unwrap();
        if sequence % 64 == 0 {
            writer.flush();
        }
        if sequence % every == 0 {
            read(&mut sub, &mut seen);
        }
    }
    writer.close();
    (name, sub, seen)
}

#[test]
fn a_lapped_reader_is_told_exactly_what_it_lost_and_where_it_resumes() {
    let total = 60_000u64;
    // The reader reads a little now and then: far slower than the writer.
    let (_name, mut sub, mut seen) =
        write_reading_now_and_then("lapped", total, 5_000, |sub, seen| {
            sub.poll(|e| seen.take(e), 300);
        });
    drain(&mut sub, &mut seen);
    assert!(sub.is_closed());
    let stats = sub.stats();
    assert!(stats.lapped > 3, "{stats:?}");
    assert_eq!(
        seen.sequences.len() as u64 + seen.lost(),
        total,
        "{stats:?}"
    );
    assert_eq!(stats.lost, seen.lost());
    // Each loss sits where it happened and says which sequence numbers went.
    let mut next = 1;
    let mut laps = seen.lapped.iter();
    let mut i = 0;
    while i < seen.sequences.len() {
        let s = seen.sequences[i];
        if s != next {
            let &(count, first, resume) = laps.next().expect("a jump is told");
            // Before the first message read, where the stream began is not known: 0.
            let from = if seen.sequences[..i].is_empty() {
                0
            } else {
                next
            };
            assert_eq!((first, resume, count), (from, s, s - next), "at {next}");
        }
        next = s + 1;
        i += 1;
    }
    assert!(laps.all(|l| l.1 == next && next + l.0 == total + 1));
}

#[test]
fn a_reader_lapped_while_its_handler_runs_counts_the_message_torn_and_lost() {
    let name = Name::new("torn");
    let mut writer = IpcWriter::create(&name.0, small()).unwrap();
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    for sequence in 1..=10 {
        writer.offer(sequence, &message(sequence)).unwrap();
    }
    writer.flush();
    let mut events = Vec::new();
    let mut next = 11u64;
    sub.poll(
        |e| {
            events.push(crate::core::event::OwnedEvent::from(e));
            if e.sequence() == Some(3) {
                // The writer goes round the whole ring while message 3 is handled.
                for _ in 0..2_000 {
                    writer.offer(next, &message(next)).unwrap();
                    next += 1;
                }
                writer.flush();
            }
        },
        5,
    );
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen);
    assert_eq!(sub.stats().torn_during_read, 1);
    use crate::core::event::OwnedEvent;
    // 1, 2 and 3 (torn), then the loss from 3 on, then where it resumes.
    let OwnedEvent::Lapped {
        count,
        first_sequence,
        resume_sequence,
    } = events[3]
    else {
        panic!("{events:?}")
    };
    assert_eq!(first_sequence, 3, "the torn message is the first lost");
    assert_eq!(count, resume_sequence - 3);
    assert!(
        matches!(events[4], OwnedEvent::Message { sequence, .. } if sequence == resume_sequence)
    );
    assert_eq!(sub.stats().messages, 3 + seen.sequences.len() as u64);
    assert_eq!(sub.stats().lost, count);
    assert_eq!(seen.sequences.last().copied(), Some(next - 1));
    assert_eq!(2 + count + 1 + seen.sequences.len() as u64, next - 1);
}

#[test]
fn a_reader_attached_at_the_tail_sees_only_what_comes_after() {
    let name = Name::new("tail");
    let mut writer = written(&name, 10);
    let config = IpcAttachConfig {
        start: IpcStart::Tail,
        ..IpcAttachConfig::default()
    };
    let mut sub = IpcSubscription::attach_with(&name.0, config).unwrap();
    let mut oldest = IpcSubscription::attach(&name.0).unwrap();
    writer.offer(11, &message(11)).unwrap();
    writer.flush();
    let (mut seen, mut all) = (Seen::default(), Seen::default());
    drain(&mut sub, &mut seen);
    drain(&mut oldest, &mut all);
    assert_eq!(seen.sequences, [11]);
    assert!(seen.lapped.is_empty(), "a late start is no loss");
    assert_eq!(all.sequences, (1..=11).collect::<Vec<_>>());
}

#[test]
fn a_reader_that_attaches_after_laps_starts_at_a_record_with_no_loss_told() {
    let name = Name::new("late");
    let writer = written(&name, 20_000);
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    writer.close();
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen);
    assert!(seen.lapped.is_empty(), "{:?}", seen.lapped);
    let first = seen.sequences[0];
    assert!(first > 1);
    assert_eq!(seen.sequences, (first..=20_000).collect::<Vec<_>>());
}

#[test]
fn the_header_says_the_writer_the_session_and_the_rerequest_server() {
    let name = Name::new("header");
    let config = IpcConfig {
        session: Some(crate::wire::Session::new("FEED1").unwrap()),
        rerequest: Some("127.0.0.1:31099".parse().unwrap()),
        ..small()
    };
    let mut writer = IpcWriter::create(&name.0, config).unwrap();
    writer.flush();
    let sub = IpcSubscription::attach(&name.0).unwrap();
    assert_eq!(sub.layout().pid, std::process::id());
    assert_eq!(sub.session().map(|s| s.to_string()), Some("FEED1".into()));
    assert_eq!(sub.rerequest(), config.rerequest);
    assert!(sub.heartbeat_age() < Duration::from_secs(60));
    assert_eq!(sub.writer_state(), WriterState::Live);
}

/// Writes `bytes` at `at` of the ring file `name`.
fn scribble(name: &Name, at: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(name.path())
        .unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_writer_whose_process_is_gone_is_told_once_the_rest_is_read() {
    let name = Name::new("dead");
    let writer = written(&name, 1);
    // As if another process had made it and died: a pid above any pid_max.
    scribble(&name, OFF_PID as u64, &4_999_999u32.to_le_bytes());
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen);
    assert_eq!(seen.sequences, [1]);
    assert_eq!(sub.writer_state(), WriterState::Dead);
    assert!(sub.is_closed());
    assert_eq!(seen.failures.len(), 1);
    assert!(
        seen.failures[0].contains("pid 4999999"),
        "{:?}",
        seen.failures
    );
    // A new writer may take the name of a dead one.
    let again = IpcWriter::create(&name.0, small());
    assert!(again.is_ok(), "{again:?}");
    drop(writer);
}

#[test]
fn a_ring_replaced_by_a_new_writer_ends_for_its_old_readers() {
    let name = Name::new("replaced");
    let first = written(&name, 1);
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    let _second = written(&name, 1);
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen);
    assert_eq!(sub.writer_state(), WriterState::Replaced);
    assert_eq!(seen.sequences, [1]);
    assert!(
        seen.failures[0].contains("attach again"),
        "{:?}",
        seen.failures
    );
    drop(first);
    assert!(
        name.path().exists(),
        "the old writer leaves the new file alone"
    );
    let mut again = IpcSubscription::attach(&name.0).unwrap();
    let mut seen = Seen::default();
    drain(&mut again, &mut seen);
    assert_eq!(seen.sequences, [1]);
}

#[test]
fn a_live_writers_name_is_refused_to_another_process() {
    let name = Name::new("inuse");
    let writer = IpcWriter::create(&name.0, small()).unwrap();
    // As if it were another live process: this test's parent, which outlives it.
    let parent = std::os::unix::process::parent_id();
    scribble(&name, OFF_PID as u64, &parent.to_le_bytes());
    let start = shm::start_time(Some(parent)).unwrap();
    scribble(&name, layout::OFF_START_TIME as u64, &start.to_le_bytes());
    let err = IpcWriter::create(&name.0, small()).unwrap_err();
    assert!(
        matches!(err, Error::IpcInUse { pid, .. } if pid == parent),
        "{err}"
    );
    // Its pid with another start time is a reused pid, not the writer.
    scribble(
        &name,
        layout::OFF_START_TIME as u64,
        &(start + 1).to_le_bytes(),
    );
    assert!(IpcWriter::create(&name.0, small()).is_ok());
    drop(writer);
}

#[test]
fn attaching_says_what_is_wrong_with_the_file() {
    let name = Name::new("errors");
    let err = IpcSubscription::attach(&name.0).unwrap_err();
    assert!(matches!(err, Error::IpcNotFound { .. }), "{err}");
    assert!(err.to_string().contains("is its writer running"), "{err}");
    assert!(matches!(
        IpcSubscription::attach("a/b"),
        Err(Error::IpcName { .. })
    ));
    std::fs::write(name.path(), vec![7u8; 8192]).unwrap();
    let err = IpcSubscription::attach(&name.0).unwrap_err();
    assert!(matches!(err, Error::IpcNotARing { .. }), "{err}");
    std::fs::write(name.path(), b"short").unwrap();
    assert!(matches!(
        IpcSubscription::attach(&name.0),
        Err(Error::IpcNotARing { .. })
    ));
    let writer = IpcWriter::create(&name.0, small()).unwrap();
    scribble(&name, OFF_VERSION as u64, &99u32.to_le_bytes());
    let err = IpcSubscription::attach(&name.0).unwrap_err();
    assert!(matches!(err, Error::IpcVersion { found: 99, .. }), "{err}");
    scribble(&name, OFF_VERSION as u64, &VERSION.to_le_bytes());
    scribble(&name, OFF_CAPACITY as u64, &(1u64 << 20).to_le_bytes());
    let err = IpcSubscription::attach(&name.0).unwrap_err();
    assert!(matches!(err, Error::IpcLayout { .. }), "{err}");
    drop(writer);
    let bad = IpcWriter::create(&name.0, IpcConfig::new(1000)).unwrap_err();
    assert!(bad.to_string().contains("power of two"), "{bad}");
    let mut writer = IpcWriter::create(&name.0, small()).unwrap();
    let big = writer
        .offer(1, &vec![0; IpcConfig::MIN_CAPACITY])
        .unwrap_err();
    assert!(matches!(big, Error::IpcMessageTooLarge { .. }), "{big}");
}

#[test]
fn garbage_in_the_ring_never_panics_a_reader_and_each_discard_is_counted() {
    let mut rng = fastrand::Rng::with_seed(15);
    for round in 0..40 {
        let name = Name::new("garbage");
        let _writer = written(&name, 3_000);
        let mut sub = IpcSubscription::attach(&name.0).unwrap();
        // Random words over the records, and now and then a random tail.
        for _ in 0..rng.usize(1..50) {
            let at = HEADER_LEN as u64 + rng.u64(0..(IpcConfig::MIN_CAPACITY as u64 / 8)) * 8;
            scribble(&name, at, &rng.u64(..).to_le_bytes());
        }
        if round % 4 == 0 {
            scribble(&name, OFF_TAIL as u64, &rng.u64(..).to_le_bytes());
        }
        let mut events = 0;
        for _ in 0..10_000 {
            let n = sub.poll(|_| events += 1, 64);
            if n == 0 {
                break;
            }
        }
        let stats = sub.stats();
        assert!(stats.messages <= 3_000, "{stats:?}");
        assert_eq!(stats.events, events, "{stats:?}");
    }
}

#[test]
fn a_writer_fed_by_a_handler_carries_every_kind_of_event() {
    let name = Name::new("handler");
    let mut writer = IpcWriter::create(&name.0, small()).unwrap();
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    writer.on_message(1, &message(1));
    writer.on_recovered(2, &message(2));
    writer.on_line(crate::Line::B, false);
    writer.on_failure("the shard failed");
    writer.on_end_of_session();
    let mut events = Vec::new();
    while sub.poll(|e| events.push(format!("{e:?}")), 10) > 0 {}
    assert_eq!(events.len(), 5, "{events:?}");
    assert!(events[1].starts_with("Recovered { sequence: 2"));
    assert_eq!(events[2], "Line { line: B, up: false }");
    assert_eq!(events[3], "Failure(\"the shard failed\")");
    assert_eq!(events[4], "EndOfSession");
}

#[test]
fn a_waiting_reader_returns_nothing_only_at_its_timeout_or_the_end() {
    let name = Name::new("wait");
    let writer = IpcWriter::create(&name.0, small()).unwrap();
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    assert_eq!(sub.poll_wait(|_| {}, 10, Duration::from_millis(5)), 0);
    assert!(!sub.is_closed());
    drop(writer);
    assert_eq!(sub.poll_wait(|_| {}, 10, Duration::from_secs(30)), 0);
    assert!(sub.is_closed());
}

#[test]
fn a_reader_polling_one_event_at_a_time_is_told_each_loss_once() {
    let total = 30_000u64;
    // A few events now and then, one poll each, each of limit 1: a Lapped notice fills a
    // poll on its own, and the record it resumes at comes in the next.
    let (_name, mut sub, mut seen) =
        write_reading_now_and_then("one-at-a-time", total, 3_000, |sub, seen| {
            for _ in 0..3 {
                sub.poll(|e| seen.take(e), 1);
            }
        });
    while sub.poll(|e| seen.take(e), 1) > 0 {}
    let stats = sub.stats();
    assert!(stats.lapped > 3, "{stats:?}");
    assert_eq!(stats.discarded, 0, "{stats:?}");
    assert_eq!(
        seen.sequences.len() as u64 + seen.lost(),
        total,
        "{stats:?}"
    );
    assert_eq!(stats.lost, seen.lost());
    assert!(seen.sequences.windows(2).all(|w| w[0] < w[1]));
}

/// A ring of MIN_CAPACITY bytes filled with messages 1.. up to `fill` bytes of records
/// (not round it), then read by a reader that attaches at the oldest: what it read.
fn attach_after_filling(what: &str, fill: usize) -> (u64, Seen) {
    let name = Name::new(what);
    let mut writer = IpcWriter::create(&name.0, small()).unwrap();
    let mut used = 0;
    let mut sequence = 0;
    while used + super::layout::record_len(message(sequence + 1).len()) < fill {
        sequence += 1;
        used += super::layout::record_len(message(sequence).len());
        writer.offer(sequence, &message(sequence)).unwrap();
    }
    writer.flush();
    let mut sub = IpcSubscription::attach(&name.0).unwrap();
    writer.close();
    let mut seen = Seen::default();
    drain(&mut sub, &mut seen);
    assert!(seen.lapped.is_empty(), "{:?}", seen.lapped);
    (sequence, seen)
}

#[test]
fn a_reader_attaching_before_the_first_lap_ends_gets_the_stream_from_its_start() {
    // The writer claims a sixteenth of a ring ahead of what it writes: below fifteen
    // sixteenths of the first lap, nothing can have been overwritten.
    let capacity = IpcConfig::MIN_CAPACITY;
    let (last, seen) = attach_after_filling("early", capacity / 16 * 15 - 64);
    assert_eq!(seen.sequences, (1..=last).collect::<Vec<_>>());
}

#[test]
fn a_reader_attaching_as_the_first_lap_ends_loses_at_most_an_eighth_and_a_block() {
    // Past fifteen sixteenths, the start may be claimed for overwriting: the reader
    // starts at the oldest block an eighth of a ring clear of that, not half a ring
    // back as a lapped reader does.
    let capacity = IpcConfig::MIN_CAPACITY;
    let (last, seen) = attach_after_filling("nearly-round", capacity - 64);
    let first = seen.sequences[0];
    assert!(first > 1);
    assert!(first < last / 4, "started at {first} of {last}");
    assert_eq!(seen.sequences, (first..=last).collect::<Vec<_>>());
}
