//! Poll rings: a subscription's events handed to the application's own thread through a
//! bounded single-producer, single-consumer ring of bytes, so that the application reads
//! them when it likes (`poll(handler, limit)`, as Aeron's subscriptions do) with its own
//! idle strategy, or awaits them.
//!
//! # Contract
//!
//! - [`poll_ring`] makes a ring of [`PollConfig::capacity`] bytes (anonymous memory,
//!   allocated once and touched on the caller's thread, so the shard takes no page fault
//!   on its first lap) and its two ends. The [`RingWriter`] is a [`Handler`]: give it to
//!   [`Shards::subscribe`](crate::Shards::subscribe) (or any call that takes a handler) and
//!   the shard writes each event into the ring — a message's bytes once, straight from
//!   the receive buffer, with a 16-byte header — and allocates nothing per message.
//! - The [`RingReader`] reads the events in place, in the order the shard produced them:
//!   [`RingReader::poll`] hands up to `limit` of them to a closure and returns at once;
//!   [`RingReader::wait`] blocks until there is something to read (or a timeout);
//!   [`RingReader::recv`] is the async twin of wait-then-poll. Each event's bytes borrow
//!   the ring until the closure returns; the space is the writer's again after that.
//! - The writer never waits for the reader. When an event does not fit (the reader is
//!   behind by the whole ring), it is dropped and counted, and the reader is told at that
//!   place in the stream: [`Event::Lost`] with the number dropped, never a silent drop.
//!   Nothing later is written before that notice; an end of session or a failure that
//!   does not fit is never dropped but waits likewise, in its place, and goes as soon as
//!   the reader made room (the shard retries every turn). So the reader sees events and
//!   notices in the order they happened.
//! - When the writer is dropped (the subscription closed), the reader reads what is left
//!   (and is then told what the writer could not write any more: drops, the end, a
//!   failure), and then [`RingReader::is_closed`] says so (and the stream of events ends).
//! - While the writer is alive, a poll of a ring with anything in it gives at least one
//!   event; [`RingReader::poll_wait`] and [`RingReader::recv`] return 0 only on a time-out
//!   or once the ring is closed and read.
//! - Ordering: the writer publishes each record with a release store of its tail; the
//!   reader frees space with a release store of its head. A reader that sleeps sets a
//!   flag that the writer checks, after a full fence, once per shard turn
//!   ([`Handler::flush`]), so a wake-up is never missed.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use memmap2::MmapMut;

use crate::core::event::Event;
#[cfg(feature = "tokio")]
use crate::core::event::OwnedEvent;
use crate::core::lines::Line;
use crate::core::receive::Handler;
use crate::core::sequence::Gap;
use crate::error::{Error, Result};

/// How a poll ring is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    /// Ring size in bytes: a power of two, at least [`PollConfig::MIN_CAPACITY`]. Each
    /// event takes 16 bytes of header plus its bytes rounded up to 16: a 32-byte message
    /// takes 48.
    pub capacity: usize,
}

impl PollConfig {
    /// The smallest ring: room for a few of the largest datagrams.
    pub const MIN_CAPACITY: usize = 1 << 18;

    /// A ring of `capacity` bytes.
    pub fn new(capacity: usize) -> PollConfig {
        PollConfig { capacity }
    }
}

impl Default for PollConfig {
    /// 16 MiB: about 350,000 messages of 32 bytes, 35 ms of a 10 M msgs/s stream that
    /// the reader may fall behind by before anything is dropped.
    fn default() -> Self {
        PollConfig { capacity: 16 << 20 }
    }
}

/// Record kinds in the ring.
const MESSAGE: u32 = 1;
const RECOVERED: u32 = 2;
const GAP: u32 = 3;
const END: u32 = 4;
const LINE: u32 = 5;
const FAILURE: u32 = 6;
const LOST: u32 = 7;
const PAD: u32 = 8;

/// Every record starts with this: payload length (u32), kind (u32), a value (u64: the
/// sequence, a gap's first number, the cumulative count of dropped events...).
const HEADER: usize = 16;

/// Records (and so every offset in the ring) are aligned to this.
const ALIGN: usize = 16;

/// What both ends share.
struct Shared {
    /// The ring's memory; only touched through `base`.
    _memory: MmapMut,
    base: *mut u8,
    capacity: usize,
    /// One past the last byte the writer published.
    tail: CachePadded<AtomicU64>,
    /// One past the last byte the reader is done with.
    head: CachePadded<AtomicU64>,
    /// Events dropped so far (cumulative; only the writer adds).
    dropped: AtomicU64,
    /// Events written so far (updated by the writer once per turn).
    written: AtomicU64,
    /// The writer is gone.
    closed: AtomicBool,
    /// Set by a writer that went with an end of session (or a failure) it could not write
    /// in the stream: told once the reader has read everything.
    end_untold: AtomicBool,
    failure_untold: AtomicBool,
    /// The reason of the shard's failure, once it failed.
    failure: Mutex<Option<String>>,
    /// The reader sleeps (or awaits) and wants a wake-up.
    parked: CachePadded<AtomicBool>,
    waker: Mutex<Option<Waker>>,
    thread: Mutex<Option<Thread>>,
}

// SAFETY: `base` points into `_memory`, which lives as long as `Shared`. The writer
// writes only bytes in [tail, head + capacity) and the reader reads only bytes in
// [head, tail), each range published to the other side by a release store of `tail` or
// `head` and read with an acquire load, so no byte is written and read at once. Every
// other field is an atomic or behind a mutex.
unsafe impl Send for Shared {}
// SAFETY: as for `Send`.
unsafe impl Sync for Shared {}

impl Shared {
    fn mask(&self) -> u64 {
        self.capacity as u64 - 1
    }

    /// Wakes a reader that sleeps or awaits (outside the locks: the waker may run
    /// anything).
    fn wake(&self) {
        if self.parked.swap(false, Ordering::AcqRel) {
            let waker = lock(&self.waker).take();
            if let Some(waker) = waker {
                waker.wake();
            }
            let thread = lock(&self.thread).take();
            if let Some(thread) = thread {
                thread.unpark();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Space a record of `len` payload bytes takes.
fn record_len(len: usize) -> usize {
    HEADER + len.div_ceil(ALIGN) * ALIGN
}

/// Makes a poll ring: the writer to give a subscription as its handler, the reader to
/// poll on the application's thread. See the module docs.
///
/// The memory is mapped and touched here, on the caller's thread, so that the shard
/// takes no page fault on its first lap.
///
/// # Errors
///
/// [`Error::Config`] for a capacity that is not a power of two or is below
/// [`PollConfig::MIN_CAPACITY`]; [`Error::Io`] if the memory cannot be mapped.
pub fn poll_ring(config: PollConfig) -> Result<(RingWriter, RingReader)> {
    let capacity = config.capacity;
    if !capacity.is_power_of_two() || capacity < PollConfig::MIN_CAPACITY {
        return Err(Error::Config(format!(
            "a poll ring's capacity must be a power of two of at least {} bytes, not {capacity}",
            PollConfig::MIN_CAPACITY
        )));
    }
    let mut memory = memmap2::MmapOptions::new()
        .len(capacity)
        .populate()
        .map_anon()
        .map_err(Error::io("mapping a poll ring"))?;
    let base = memory.as_mut_ptr();
    let shared = Arc::new(Shared {
        _memory: memory,
        base,
        capacity,
        tail: CachePadded::new(AtomicU64::new(0)),
        head: CachePadded::new(AtomicU64::new(0)),
        dropped: AtomicU64::new(0),
        written: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        end_untold: AtomicBool::new(false),
        failure_untold: AtomicBool::new(false),
        failure: Mutex::new(None),
        parked: CachePadded::new(AtomicBool::new(false)),
        waker: Mutex::new(None),
        thread: Mutex::new(None),
    });
    let writer = RingWriter {
        shared: Arc::clone(&shared),
        tail: 0,
        published: 0,
        head: 0,
        dropped: 0,
        notices: [Notice::None; NOTICES],
        written: 0,
        notified: 0,
        flags: false,
    };
    let reader = RingReader {
        shared,
        head: 0,
        reported: 0,
        end_reported: false,
        failure_reported: false,
        broken: false,
    };
    Ok((writer, reader))
}

/// A ring's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    /// The ring's size in bytes.
    pub capacity: usize,
    /// Events the writer put in the ring (as of its last turn).
    pub written: u64,
    /// Events it dropped because the reader was behind.
    pub dropped: u64,
    /// Bytes written and not yet read.
    pub pending_bytes: u64,
}

fn stats_of(shared: &Shared) -> RingStats {
    let tail = shared.tail.load(Ordering::Acquire);
    let head = shared.head.load(Ordering::Acquire);
    RingStats {
        capacity: shared.capacity,
        written: shared.written.load(Ordering::Relaxed),
        dropped: shared.dropped.load(Ordering::Acquire),
        pending_bytes: tail.saturating_sub(head),
    }
}

/// What the writer still has to tell the reader in the stream, in order: drops (as the
/// cumulative count after them), and an end of session or a failure that did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    None,
    Lost(u64),
    End,
    Failure,
}

/// Notices waiting at most: drops are merged with a Lost just before them, and an end
/// and a failure come once each, so at most Lost, End, Lost, Failure, Lost.
const NOTICES: usize = 5;

/// The shard's end of a poll ring: a [`Handler`] that writes every event into the ring.
///
/// What does not fit is told in its place: once an event was dropped, nothing later is
/// written before the reader is told of it (a Lost record, or the end of session or
/// failure that did not fit), so the reader sees every event and every notice in the
/// order they happened.
pub struct RingWriter {
    shared: Arc<Shared>,
    /// Where the next record goes.
    tail: u64,
    /// The tail as last published to the reader.
    published: u64,
    /// The reader's head as last read.
    head: u64,
    /// Events dropped so far.
    dropped: u64,
    /// Notices still to write, oldest first (`Notice::None` past the last).
    notices: [Notice; NOTICES],
    written: u64,
    /// The tail when the reader was last told (or found to need no telling).
    notified: u64,
    /// A flag the reader reads changed since the last flush.
    flags: bool,
}

impl std::fmt::Debug for RingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingWriter")
            .field("stats", &stats_of(&self.shared))
            .finish()
    }
}

impl RingWriter {
    /// The ring's counters.
    pub fn stats(&self) -> RingStats {
        stats_of(&self.shared)
    }

    /// Whether `total` more bytes fit now.
    fn room(&mut self, total: usize) -> bool {
        let capacity = self.shared.capacity as u64;
        let total = total as u64;
        if capacity - (self.tail - self.head) >= total {
            return true;
        }
        self.head = self.shared.head.load(Ordering::Acquire);
        capacity - (self.tail - self.head) >= total
    }

    /// Writes one record (not yet published), or returns false when it does not fit.
    fn put(&mut self, kind: u32, value: u64, payload: &[u8]) -> bool {
        let capacity = self.shared.capacity;
        let need = record_len(payload.len());
        let Ok(len) = u32::try_from(payload.len()) else {
            return false;
        };
        if need > capacity / 2 {
            return false;
        }
        let at = (self.tail & self.shared.mask()) as usize;
        let to_end = capacity - at;
        let total = if need > to_end { to_end + need } else { need };
        if !self.room(total) {
            return false;
        }
        let at = if need > to_end {
            // The record does not fit before the end: pad to it and start again at 0.
            // `to_end` is a multiple of ALIGN, so at least a header.
            self.header(at, (to_end - HEADER) as u32, PAD, 0);
            self.tail += to_end as u64;
            0
        } else {
            at
        };
        self.header(at, len, kind, value);
        // SAFETY: [at + HEADER, at + HEADER + len) lies inside the ring (need <= the
        // space from `at` to the end) and in the writer's free range (room checked
        // above); the payload is another buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                self.shared.base.add(at + HEADER),
                payload.len(),
            );
        }
        self.tail += need as u64;
        true
    }

    fn header(&mut self, at: usize, len: u32, kind: u32, value: u64) {
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&len.to_ne_bytes());
        header[4..8].copy_from_slice(&kind.to_ne_bytes());
        header[8..].copy_from_slice(&value.to_ne_bytes());
        // SAFETY: `at` is ALIGN-aligned and below the capacity, so the header lies inside
        // the ring, in the writer's free range (checked by the caller).
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), self.shared.base.add(at), HEADER);
        }
    }

    /// Publishes what was written since the last time, in one store.
    fn publish(&mut self) {
        if self.tail != self.published {
            self.published = self.tail;
            self.shared.tail.store(self.tail, Ordering::Release);
        }
    }

    /// Writes the notices that wait, oldest first; false when one does not fit (it and
    /// those after it wait on).
    fn tell(&mut self) -> bool {
        while self.notices[0] != Notice::None {
            let written = match self.notices[0] {
                Notice::Lost(count) => self.put(LOST, count, &[]),
                Notice::End => self.put(END, 0, &[]),
                Notice::Failure => {
                    let reason = lock(&self.shared.failure).clone().unwrap_or_default();
                    self.put(FAILURE, 0, reason.as_bytes())
                }
                Notice::None => true,
            };
            if !written {
                return false;
            }
            if self.notices[0] != Notice::None && !matches!(self.notices[0], Notice::Lost(_)) {
                self.written += 1;
            }
            self.notices.rotate_left(1);
            self.notices[NOTICES - 1] = Notice::None;
        }
        true
    }

    /// Queues `notice` after those that wait (a drop merges into a Lost just before it).
    fn queue(&mut self, notice: Notice) {
        let last = self.notices.iter().rposition(|n| *n != Notice::None);
        match (last.map(|i| self.notices[i]), notice) {
            (Some(Notice::Lost(_)), Notice::Lost(_)) => {
                if let Some(i) = last {
                    self.notices[i] = notice;
                }
            }
            _ => {
                let at = last.map_or(0, |i| i + 1);
                match self.notices.get_mut(at) {
                    Some(slot) => *slot = notice,
                    // Cannot happen (see NOTICES); merge into the last rather than lose it.
                    None => self.notices[NOTICES - 1] = notice,
                }
            }
        }
    }

    /// Writes one event after the notices that wait; counts it dropped when either does
    /// not fit. Publishes both at once.
    fn event(&mut self, kind: u32, value: u64, payload: &[u8]) {
        if self.tell() && self.put(kind, value, payload) {
            self.written += 1;
        } else {
            self.dropped += 1;
            self.shared.dropped.store(self.dropped, Ordering::Release);
            self.queue(Notice::Lost(self.dropped));
            self.flags = true;
        }
        self.publish();
    }

    /// Writes an end of session or a failure in its place, or queues it to be written
    /// there as soon as there is room (it is never dropped).
    fn notice(&mut self, notice: Notice) {
        self.queue(notice);
        self.tell();
        self.publish();
        self.flags = true;
    }
}

impl Handler for RingWriter {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        self.event(MESSAGE, sequence, message);
    }
    fn on_recovered(&mut self, sequence: u64, message: &[u8]) {
        self.event(RECOVERED, sequence, message);
    }
    fn on_gap(&mut self, gap: Gap) {
        self.event(GAP, gap.first_missing, &gap.count.to_ne_bytes());
    }
    fn on_end_of_session(&mut self) {
        self.notice(Notice::End);
    }
    fn on_line(&mut self, line: Line, up: bool) {
        let value = (u64::from(line == Line::B) << 1) | u64::from(up);
        self.event(LINE, value, &[]);
    }
    fn on_failure(&mut self, reason: &str) {
        *lock(&self.shared.failure) = Some(reason.to_owned());
        self.notice(Notice::Failure);
        self.flush();
    }
    fn flush(&mut self) {
        // Notices that waited for room go now if there is some.
        if self.notices[0] != Notice::None {
            self.tell();
            self.publish();
        }
        if self.tail == self.notified && !self.flags {
            return;
        }
        self.notified = self.tail;
        self.flags = false;
        self.shared.written.store(self.written, Ordering::Relaxed);
        // Pairs with the reader's fence between raising `parked` and looking again.
        fence(Ordering::SeqCst);
        if self.shared.parked.load(Ordering::Relaxed) {
            self.shared.wake();
        }
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        self.tell();
        self.publish();
        // What still could not be written is told once the reader has read the rest:
        // the drops by the `dropped` counter, the end and the failure by their flags.
        for notice in self.notices {
            match notice {
                Notice::End => self.shared.end_untold.store(true, Ordering::Relaxed),
                Notice::Failure => self.shared.failure_untold.store(true, Ordering::Relaxed),
                Notice::Lost(_) | Notice::None => {}
            }
        }
        self.shared.written.store(self.written, Ordering::Relaxed);
        // Release: a reader that sees `closed` sees the flags and the last tail.
        self.shared.closed.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        self.shared.wake();
    }
}

/// The application's end of a poll ring. See the module docs.
pub struct RingReader {
    shared: Arc<Shared>,
    head: u64,
    /// Dropped events already told (cumulative).
    reported: u64,
    end_reported: bool,
    failure_reported: bool,
    /// A record made no sense (a bug of the writer's): nothing more is read.
    broken: bool,
}

impl std::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader")
            .field("stats", &stats_of(&self.shared))
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl RingReader {
    /// The ring's counters.
    pub fn stats(&self) -> RingStats {
        stats_of(&self.shared)
    }

    /// Events dropped because this reader was behind, as told so far.
    pub fn lost(&self) -> u64 {
        self.reported
    }

    /// Whether the writer is gone and everything it wrote was read: nothing more will
    /// come.
    pub fn is_closed(&self) -> bool {
        self.broken || (self.shared.closed.load(Ordering::Acquire) && !self.ready())
    }

    /// Whether a poll would hand over something now: a record, or, once the writer is
    /// gone, what it could not write.
    fn ready(&self) -> bool {
        if self.broken {
            return false;
        }
        // `closed` first: seeing it, the last tail and the flags are seen too.
        let closed = self.shared.closed.load(Ordering::Acquire);
        self.shared.tail.load(Ordering::Acquire) != self.head || (closed && self.untold())
    }

    /// What a writer that is gone could not write in the stream and was not told yet.
    fn untold(&self) -> bool {
        self.shared.dropped.load(Ordering::Acquire) > self.reported
            || (!self.end_reported && self.shared.end_untold.load(Ordering::Relaxed))
            || (!self.failure_reported && self.shared.failure_untold.load(Ordering::Relaxed))
    }

    /// Hands up to `limit` events to `f`, in order, and returns how many. Never waits.
    /// While the writer is alive, a ring with anything in it gives at least one event.
    pub fn poll<F: FnMut(Event<'_>)>(&mut self, mut f: F, limit: usize) -> usize {
        if self.broken {
            return 0;
        }
        let mut done = 0;
        let closed = self.shared.closed.load(Ordering::Acquire);
        let tail = self.shared.tail.load(Ordering::Acquire);
        let mask = self.shared.mask();
        while done < limit && self.head != tail {
            let at = (self.head & mask) as usize;
            let mut header = [0u8; HEADER];
            // SAFETY: `at` is ALIGN-aligned and below the capacity; [head, tail) is the
            // reader's, published by the writer's release store of `tail` (acquired).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.shared.base.add(at),
                    header.as_mut_ptr(),
                    HEADER,
                );
            }
            let (len, kind, value) = parse_header(&header);
            let room = self.shared.capacity - at - HEADER;
            if len > room || record_len(len) as u64 > tail - self.head {
                // Cannot happen with this writer; stop for good rather than read out of
                // the ring or spin on the record.
                tracing::error!(len, room, "poll ring record makes no sense: reader stopped");
                self.broken = true;
                f(Event::Failure(
                    "the poll ring is corrupt; its reader stopped",
                ));
                return done + 1;
            }
            if kind == PAD {
                self.head += (HEADER + len) as u64;
                continue;
            }
            // SAFETY: [at + HEADER, at + HEADER + len) is inside the ring (checked above)
            // and in the reader's range; the writer does not touch it until `head` passes
            // it.
            let payload =
                unsafe { std::slice::from_raw_parts(self.shared.base.add(at + HEADER), len) };
            let event = match kind {
                MESSAGE => Some(Event::Message {
                    sequence: value,
                    message: payload,
                }),
                RECOVERED => Some(Event::Recovered {
                    sequence: value,
                    message: payload,
                }),
                GAP => {
                    let mut count = [0u8; 8];
                    count.copy_from_slice(payload.get(..8).unwrap_or(&[0; 8]));
                    Some(Event::Gap(Gap {
                        first_missing: value,
                        count: u64::from_ne_bytes(count),
                    }))
                }
                END => {
                    self.end_reported = true;
                    Some(Event::EndOfSession)
                }
                LINE => Some(Event::Line {
                    line: if value & 2 != 0 { Line::B } else { Line::A },
                    up: value & 1 != 0,
                }),
                FAILURE => {
                    self.failure_reported = true;
                    Some(Event::Failure(
                        std::str::from_utf8(payload).unwrap_or("the shard failed"),
                    ))
                }
                LOST if value > self.reported => {
                    let count = value - self.reported;
                    self.reported = value;
                    Some(Event::Lost { count })
                }
                _ => None,
            };
            self.head += record_len(len) as u64;
            if let Some(event) = event {
                f(event);
                done += 1;
            }
        }
        self.shared.head.store(self.head, Ordering::Release);
        if closed && self.head == tail && done < limit {
            done += self.tell_untold(&mut f, limit - done);
        }
        done
    }

    /// Once the writer is gone and the ring is read: what it could not write (drops,
    /// then the end, then a failure).
    fn tell_untold<F: FnMut(Event<'_>)>(&mut self, f: &mut F, limit: usize) -> usize {
        let mut done = 0;
        let dropped = self.shared.dropped.load(Ordering::Acquire);
        if done < limit && dropped > self.reported {
            let count = dropped - self.reported;
            self.reported = dropped;
            f(Event::Lost { count });
            done += 1;
        }
        if done < limit && !self.end_reported && self.shared.end_untold.load(Ordering::Relaxed) {
            self.end_reported = true;
            f(Event::EndOfSession);
            done += 1;
        }
        if done < limit
            && !self.failure_reported
            && self.shared.failure_untold.load(Ordering::Relaxed)
        {
            self.failure_reported = true;
            let reason = lock(&self.shared.failure).clone().unwrap_or_default();
            f(Event::Failure(&reason));
            done += 1;
        }
        done
    }

    /// Blocks until there is something to poll, the writer is gone, or `timeout` passed;
    /// returns whether there is something to poll. `Duration::MAX` waits for ever.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if self.ready() {
                return true;
            }
            if self.is_closed() {
                return false;
            }
            *lock(&self.shared.thread) = Some(std::thread::current());
            self.shared.parked.store(true, Ordering::SeqCst);
            // Pairs with the writer's fence between publishing and reading `parked`.
            fence(Ordering::SeqCst);
            if self.ready() || self.shared.closed.load(Ordering::Acquire) {
                self.shared.parked.store(false, Ordering::Relaxed);
                continue;
            }
            match deadline {
                None => std::thread::park(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        self.shared.parked.store(false, Ordering::Relaxed);
                        return false;
                    }
                    std::thread::park_timeout(deadline - now);
                }
            }
        }
    }

    /// Polls up to `limit` events, first waiting up to `timeout` if there are none;
    /// returns 0 only once `timeout` passed or the ring is closed and read.
    pub fn poll_wait<F: FnMut(Event<'_>)>(
        &mut self,
        mut f: F,
        limit: usize,
        timeout: Duration,
    ) -> usize {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if !self.wait(left) {
                return 0;
            }
            let n = self.poll(&mut f, limit);
            if n > 0 || self.is_closed() {
                return n;
            }
        }
    }

    /// Whether there is something to poll; otherwise registers `cx`'s waker to be woken
    /// when there is (or when the writer goes).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.ready() || self.is_closed() {
            return Poll::Ready(());
        }
        *lock(&self.shared.waker) = Some(cx.waker().clone());
        self.shared.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.ready() || self.shared.closed.load(Ordering::Acquire) {
            self.shared.parked.store(false, Ordering::Relaxed);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Waits, without blocking the thread, until there is something to poll, then polls
    /// up to `limit` events into `f`; returns 0 only once the ring is closed and read.
    pub async fn recv<F: FnMut(Event<'_>)>(&mut self, mut f: F, limit: usize) -> usize {
        loop {
            std::future::poll_fn(|cx| self.poll_ready(cx)).await;
            let n = self.poll(&mut f, limit);
            if n > 0 || self.is_closed() {
                return n;
            }
        }
    }
}

fn parse_header(header: &[u8; HEADER]) -> (usize, u32, u64) {
    let mut len = [0u8; 4];
    let mut kind = [0u8; 4];
    let mut value = [0u8; 8];
    len.copy_from_slice(&header[..4]);
    kind.copy_from_slice(&header[4..8]);
    value.copy_from_slice(&header[8..]);
    (
        u32::from_ne_bytes(len) as usize,
        u32::from_ne_bytes(kind),
        u64::from_ne_bytes(value),
    )
}

/// With the `tokio` feature: the ring's events as a stream, each one copied out of the
/// ring ([`OwnedEvent`]); it ends once the writer is gone and everything was read. For
/// events read in place, without a copy, await [`RingReader::recv`] instead.
#[cfg(feature = "tokio")]
impl futures_core::Stream for RingReader {
    type Item = OwnedEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<OwnedEvent>> {
        loop {
            let mut out = None;
            if self.poll(|event| out = Some(OwnedEvent::from(event)), 1) > 0 {
                return Poll::Ready(out);
            }
            if self.is_closed() {
                return Poll::Ready(None);
            }
            if self.poll_ready(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn ring(capacity: usize) -> (RingWriter, RingReader) {
        poll_ring(PollConfig::new(capacity)).unwrap()
    }

    /// A message whose bytes say its sequence number, of a length that varies with it.
    fn message(sequence: u64) -> Vec<u8> {
        let len = 8 + (sequence % 57) as usize;
        let mut m = vec![(sequence % 251) as u8; len];
        m[..8].copy_from_slice(&sequence.to_be_bytes());
        m
    }

    /// What a reader saw: messages (checked against their bytes) and losses.
    #[derive(Default, Debug)]
    struct Seen {
        sequences: Vec<u64>,
        lost: u64,
        /// (sequence before, count) of each loss told.
        losses: Vec<(u64, u64)>,
        ends: u32,
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
                Event::Lost { count } => {
                    self.lost += count;
                    self.losses
                        .push((self.sequences.last().copied().unwrap_or(0), count));
                }
                Event::EndOfSession => self.ends += 1,
                other => self.other.push(format!("{other:?}")),
            }
        }
    }

    fn drain(reader: &mut RingReader, seen: &mut Seen) {
        while reader.poll(|e| seen.take(e), 64) > 0 {}
    }

    #[test]
    fn a_capacity_that_is_not_a_power_of_two_or_too_small_is_refused() {
        for bad in [
            0,
            1000,
            PollConfig::MIN_CAPACITY / 2,
            PollConfig::MIN_CAPACITY + 16,
        ] {
            let err = poll_ring(PollConfig::new(bad)).unwrap_err().to_string();
            assert!(err.contains("power of two"), "{bad}: {err}");
        }
    }

    #[test]
    fn events_come_out_in_order_with_their_bytes_across_many_laps_of_the_ring() {
        let (mut writer, mut reader) = ring(PollConfig::MIN_CAPACITY);
        let mut seen = Seen::default();
        // About 40 laps of the ring, read in uneven bites.
        for sequence in 1..=200_000u64 {
            writer.on_message(sequence, &message(sequence));
            if sequence % 997 == 0 {
                writer.on_gap(Gap {
                    first_missing: sequence + 1_000_000,
                    count: 3,
                });
                writer.on_line(Line::B, sequence % 2 == 0);
                writer.flush();
                reader.poll(|e| seen.take(e), (sequence % 5000) as usize + 1);
            }
        }
        writer.on_end_of_session();
        writer.flush();
        drain(&mut reader, &mut seen);
        assert_eq!(seen.sequences, (1..=200_000).collect::<Vec<_>>());
        assert_eq!((seen.lost, seen.ends), (0, 1), "{seen:?}");
        assert_eq!(seen.other.len(), 2 * (200_000 / 997));
        assert!(
            seen.other[0].contains("first_missing: 1000997, count: 3"),
            "{:?}",
            seen.other[0]
        );
        assert!(seen.other[1].contains("up: false"), "{:?}", seen.other[1]);
        assert_eq!(reader.stats().written, 200_001 + 2 * (200_000 / 997));
        assert_eq!((reader.stats().dropped, reader.lost()), (0, 0));
    }

    #[test]
    fn a_reader_that_falls_behind_is_told_exactly_how_many_were_dropped_and_where() {
        let (mut writer, mut reader) = ring(PollConfig::MIN_CAPACITY);
        let mut seen = Seen::default();
        // Nobody reads: the ring fills, then everything else is dropped.
        for sequence in 1..=20_000u64 {
            writer.on_message(sequence, &message(sequence));
        }
        writer.flush();
        let written = reader.stats().written;
        let dropped = reader.stats().dropped;
        assert!(written > 1000 && dropped > 1000, "{:?}", reader.stats());
        assert_eq!(written + dropped, 20_000);
        // The reader reads half of what is there; the writer goes on (and drops less).
        reader.poll(|e| seen.take(e), (written / 2) as usize);
        for sequence in 20_001..=40_000u64 {
            writer.on_message(sequence, &message(sequence));
            if sequence % 100 == 0 {
                writer.flush();
                reader.poll(|e| seen.take(e), 50);
            }
        }
        writer.on_end_of_session();
        writer.flush();
        drain(&mut reader, &mut seen);
        let stats = reader.stats();
        assert_eq!(seen.lost, stats.dropped, "{seen:?}");
        assert_eq!(seen.sequences.len() as u64 + seen.lost, 40_000);
        assert_eq!(seen.ends, 1);
        // Each loss is told where it happened: the message after it follows on from
        // the one before, past exactly the ones dropped between them.
        let mut lost_after = std::collections::HashMap::new();
        for &(before, count) in &seen.losses {
            *lost_after.entry(before).or_insert(0) += count;
        }
        let mut previous = 0;
        for &sequence in &seen.sequences {
            let between = lost_after.remove(&previous).unwrap_or(0);
            assert_eq!(sequence, previous + 1 + between, "after {previous}");
            previous = sequence;
        }
        let tail = lost_after.remove(&previous).unwrap_or(0);
        assert_eq!(previous + tail, 40_000);
        assert!(
            lost_after.is_empty(),
            "every loss was placed: {lost_after:?}"
        );
    }

    #[test]
    fn an_end_of_session_that_does_not_fit_is_still_told_after_everything_before_it() {
        let (mut writer, mut reader) = ring(PollConfig::MIN_CAPACITY);
        let mut sequence = 0;
        while reader.stats().dropped == 0 {
            sequence += 1;
            writer.on_message(sequence, &message(sequence));
        }
        writer.on_end_of_session();
        writer.flush();
        let mut seen = Seen::default();
        drain(&mut reader, &mut seen);
        assert_eq!(seen.ends, 0, "it waits for room, in its place");
        // The shard's next turn finds the room the reader made.
        writer.flush();
        drain(&mut reader, &mut seen);
        assert_eq!(seen.ends, 1, "{seen:?}");
        assert_eq!(seen.lost, 1, "the message that did not fit");
        assert_eq!(seen.sequences.len() as u64, sequence - 1);
        assert_eq!(reader.poll(|e| seen.take(e), 10), 0, "told once");
    }

    #[test]
    fn a_failure_that_does_not_fit_is_told_with_its_reason() {
        let (mut writer, mut reader) = ring(PollConfig::MIN_CAPACITY);
        let big = vec![0u8; 60_000];
        while reader.stats().dropped == 0 {
            writer.on_message(1, &big);
        }
        writer.on_failure(&"x".repeat(70_000));
        let mut reasons = Vec::new();
        let mut lost = 0;
        for _ in 0..2 {
            while reader.poll(
                |e| match e {
                    Event::Failure(why) => reasons.push(why.len()),
                    Event::Lost { count } => lost += count,
                    _ => {}
                },
                16,
            ) > 0
            {}
            writer.flush();
        }
        assert_eq!(reasons, [70_000]);
        assert_eq!(
            lost, 1,
            "the message that did not fit, told before the failure"
        );
    }

    #[test]
    fn once_the_writer_is_gone_the_reader_reads_the_rest_then_is_closed() {
        let (mut writer, mut reader) = ring(PollConfig::MIN_CAPACITY);
        writer.on_message(1, &message(1));
        drop(writer);
        assert!(!reader.is_closed(), "one message is left");
        assert!(reader.wait(Duration::from_secs(1)));
        let mut seen = Seen::default();
        drain(&mut reader, &mut seen);
        assert_eq!(seen.sequences, [1]);
        assert!(reader.is_closed());
        assert!(!reader.wait(Duration::from_millis(1)));
    }

    #[test]
    fn a_waiting_reader_is_woken_by_the_writers_flush_on_another_thread() {
        let (mut writer, mut reader) = ring(1 << 22);
        let total = 300_000u64;
        let producer = std::thread::spawn(move || {
            for sequence in 1..=total {
                writer.on_message(sequence, &message(sequence));
                if sequence % 64 == 0 {
                    writer.flush();
                }
                if sequence % 20_000 == 0 {
                    // Quiet spells, so that the reader goes to sleep and must be woken.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            writer.on_end_of_session();
            writer.flush();
        });
        let mut seen = Seen::default();
        let begun = Instant::now();
        while seen.ends == 0 {
            assert!(
                begun.elapsed() < Duration::from_secs(60),
                "stuck: {:?}",
                reader.stats()
            );
            reader.poll_wait(|e| seen.take(e), 1024, Duration::from_secs(5));
        }
        producer.join().unwrap();
        assert_eq!(seen.sequences.len() as u64 + seen.lost, total);
        let mut last = 0;
        for &s in &seen.sequences {
            assert!(s > last, "in order");
            last = s;
        }
        assert_eq!(seen.lost, reader.stats().dropped);
    }

    #[test]
    fn an_end_that_never_found_room_is_told_once_the_writer_is_gone_and_the_rest_read() {
        let (mut writer, mut reader) = ring(PollConfig::MIN_CAPACITY);
        let mut sequence = 0;
        while reader.stats().dropped < 3 {
            sequence += 1;
            writer.on_message(sequence, &message(sequence));
        }
        writer.on_end_of_session();
        drop(writer);
        let mut seen = Seen::default();
        drain(&mut reader, &mut seen);
        assert_eq!((seen.lost, seen.ends), (3, 1), "{seen:?}");
        assert_eq!(seen.sequences.len() as u64, sequence - 3);
        assert!(reader.is_closed());
    }

    #[test]
    fn a_waiting_reader_gets_something_or_nothing_only_at_its_time_out_or_the_close() {
        let (mut writer, mut reader) = ring(PollConfig::MIN_CAPACITY);
        let producer = std::thread::spawn(move || {
            // Far more than the ring holds: drops all the time.
            for sequence in 1..=2_000_000u64 {
                writer.on_message(sequence, &message(sequence));
                if sequence % 32 == 0 {
                    writer.flush();
                }
            }
            writer.on_end_of_session();
            writer.flush();
        });
        let mut seen = Seen::default();
        loop {
            let n = reader.poll_wait(|e| seen.take(e), 7, Duration::from_secs(30));
            if n == 0 {
                assert!(
                    reader.is_closed(),
                    "0 only at the close: {:?}",
                    reader.stats()
                );
                break;
            }
        }
        producer.join().unwrap();
        assert_eq!(seen.sequences.len() as u64 + seen.lost, 2_000_000);
        assert_eq!(seen.ends, 1);
        assert!(
            !reader.wait(Duration::MAX),
            "a closed ring does not wait, even for ever"
        );
    }

    #[test]
    fn an_awaiting_reader_is_woken_by_the_writer() {
        use std::future::Future;
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (mut writer, mut reader) = ring(PollConfig::MIN_CAPACITY);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        {
            let mut recv = std::pin::pin!(reader.recv(|e| got.push(e.sequence()), 8));
            assert!(recv.as_mut().poll(&mut cx).is_pending());
            writer.on_message(7, b"seven");
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                0,
                "woken at the flush, not before"
            );
            writer.flush();
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            assert_eq!(recv.as_mut().poll(&mut cx), Poll::Ready(1));
        }
        assert_eq!(got, [Some(7)]);
    }
}
