//! A reader of a broadcast ring (see the [module docs](super)).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::Mmap;

use super::layout::{
    self, Layout, Refused, END, FAILURE, GAP, HEADER_LEN, LINE, MESSAGE, OFF_CLOSED, OFF_HEARTBEAT,
    OFF_INTENT, OFF_RECORDS, RECOVERED,
};
use super::protocol::{Found, Next, ReaderIndex};
use super::recover::IpcRecovery;
use super::ring_path;
use super::shm::{self, View};
use crate::config::{IdleStrategy, BACKOFF_SPIN};
use crate::core::event::Event;
use crate::core::lines::Line;
use crate::core::sequence::Gap;
use crate::error::{Error, Result};
use crate::latency::now_ns;
use crate::stat::kinds::Counters as _;
use crate::wire::Session;

/// How often a reader with nothing to read looks at its writer's liveness.
const LOOK_EVERY_NS: u64 = 10_000_000;

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IpcStart {
    /// At the oldest record still safe to read: the whole stream while the writer is
    /// below fifteen sixteenths of its first lap (it claims a sixteenth ahead of what it
    /// writes); after that, the oldest block start an eighth of a ring clear of what
    /// the writer may overwrite next.
    #[default]
    Oldest,
    /// At the writer's tail: only what comes after the attach.
    Tail,
}

/// How a reader attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpcAttachConfig {
    /// Where it starts.
    pub start: IpcStart,
    /// What [`IpcSubscription::poll_wait`] does while there is nothing: `Spin` and
    /// `Yield` poll (one core each); `Block` sleeps (50 µs, doubling to 1 ms: a ring has
    /// no kernel wake-up); `Backoff` polls for 100 µs, then sleeps likewise.
    pub idle: IdleStrategy,
}

/// What a reader knows of its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterState {
    /// It runs (or did when last looked at).
    Live,
    /// It closed the ring.
    Closed,
    /// Its process is gone (or the pid now belongs to another process) and it did not
    /// close the ring: killed, or crashed.
    Dead,
    /// The ring's name now names another file: a new writer replaced this one.
    Replaced,
}

/// A reader's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpcReaderStats {
    /// Messages handed over intact (recovered ones too).
    pub messages: u64,
    /// Events handed over (messages, gaps, notices, Lapped...).
    pub events: u64,
    /// Records lost to the writer lapping this reader (told in `Event::Lapped`).
    pub lost: u64,
    /// Times it was lapped.
    pub lapped: u64,
    /// Messages whose bytes the writer overwrote while the handler ran (counted in
    /// `lost` too).
    pub torn_during_read: u64,
    /// Records that made no sense (not overwritten: garbage in the shared memory) and
    /// were skipped.
    pub discarded: u64,
    /// With [`IpcSubscription::recover`]: re-requests sent (first attempts and retries).
    pub requests: u64,
    /// Of those, retries after a time-out.
    pub retries: u64,
    /// Replies from the server that answered a request.
    pub replies: u64,
    /// Messages lost to a lap and recovered by re-request (handed over as
    /// [`Event::Recovered`]).
    pub recovered: u64,
    /// Ranges lost to a lap and not recovered by their deadline (each handed over as an
    /// [`Event::Gap`]).
    pub gaps_given_up: u64,
    /// Datagrams on the re-request socket from anyone but the server: dropped.
    pub reply_foreign: u64,
    /// Datagrams from the server that answer nothing asked (malformed, another session,
    /// a range not or no longer asked for): dropped.
    pub reply_unasked: u64,
}

/// A reader of a broadcast ring in `/dev/shm`, in any process (see the
/// [module docs](super)).
///
/// ```no_run
/// use multipoint_dataplane::ipc::IpcSubscription;
/// use multipoint_dataplane::Event;
/// use std::time::Duration;
///
/// let mut sub = IpcSubscription::attach("feed-a")?;
/// while !sub.is_closed() {
///     sub.poll_wait(
///         |event| match event {
///             Event::Message { sequence, message } => println!("#{sequence}: {message:?}"),
///             Event::Lapped { count, first_sequence, resume_sequence } => {
///                 println!("lost {count}: re-request {first_sequence}..{resume_sequence}")
///             }
///             _ => {}
///         },
///         1024,
///         Duration::from_millis(100),
///     );
/// }
/// # Ok::<(), multipoint_dataplane::Error>(())
/// ```
pub struct IpcSubscription {
    _map: Mmap,
    view: View,
    path: PathBuf,
    file_id: Option<(u64, u64)>,
    layout: Layout,
    index: ReaderIndex,
    /// The index the next record should have.
    expected: u64,
    /// The sequence number the stream expects next, as read.
    next_sequence: u64,
    /// Lapped: the next record read tells how many were lost.
    lapped: bool,
    state: WriterState,
    /// The end (closed, dead, replaced) was told.
    ended: bool,
    last_look_ns: u64,
    idle: IdleStrategy,
    stats: IpcReaderStats,
    /// A failure's reason, copied out of the ring.
    text: String,
    /// Its entry in the counters file (`multipoint stat`), written at most once per
    /// coarse clock tick from `poll` and when it is dropped.
    stat: Option<crate::stat::Entry>,
    cadence: crate::stat::Cadence,
    /// With [`recover`](Self::recover): laps filled by re-request.
    recovery: Option<Box<IpcRecovery>>,
}

// SAFETY: the pointers in `view` point into `_map`, owned by the subscription and mapped
// at a fixed address while it lives; the subscription is used by one thread at a time.
unsafe impl Send for IpcSubscription {}

impl std::fmt::Debug for IpcSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcSubscription")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .field("state", &self.state)
            .field("stats", &self.stats)
            .finish()
    }
}

impl IpcSubscription {
    /// Attaches to the ring `name`, from its oldest record (see [`IpcAttachConfig`]).
    ///
    /// # Errors
    ///
    /// [`Error::IpcName`], [`Error::IpcNotFound`], [`Error::IpcPermission`],
    /// [`Error::IpcNotARing`], [`Error::IpcVersion`], [`Error::IpcLayout`],
    /// [`Error::IpcIo`].
    pub fn attach(name: &str) -> Result<IpcSubscription> {
        IpcSubscription::attach_with(name, IpcAttachConfig::default())
    }

    /// Attaches to the ring `name` as `config` says.
    ///
    /// # Errors
    ///
    /// As [`attach`](Self::attach).
    pub fn attach_with(name: &str, config: IpcAttachConfig) -> Result<IpcSubscription> {
        let path = ring_path(name)?;
        IpcSubscription::attach_path(path, config)
    }

    fn attach_path(path: PathBuf, config: IpcAttachConfig) -> Result<IpcSubscription> {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::IpcNotFound { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::IpcPermission { path })
            }
            Err(source) => {
                return Err(Error::IpcIo {
                    op: "opening",
                    path,
                    source,
                })
            }
        };
        let len = file
            .metadata()
            .map_err(|source| Error::IpcIo {
                op: "looking at",
                path: path.clone(),
                source,
            })?
            .len();
        if len < HEADER_LEN as u64 {
            return Err(Error::IpcNotARing { path });
        }
        let file_id = shm::open_file_id(&file);
        // SAFETY: mapped read-only; the writer never shrinks the file (it makes a new one
        // to restart), so every byte of the mapping stays backed. Its contents change
        // under us, which the reader expects: it reads them only through atomics and
        // checked copies.
        let map =
            unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|source| Error::IpcIo {
                op: "mapping",
                path: path.clone(),
                source,
            })?;
        let mut fixed = [0u8; OFF_INTENT];
        fixed.copy_from_slice(&map[..OFF_INTENT]);
        let layout = match Layout::check(&fixed, map.len() as u64) {
            Ok(layout) => layout,
            Err(Refused::Magic) => return Err(Error::IpcNotARing { path }),
            Err(Refused::Version(found)) => {
                return Err(Error::IpcVersion {
                    path,
                    found,
                    expected: layout::VERSION,
                })
            }
            Err(Refused::Layout(reason)) => return Err(Error::IpcLayout { path, reason }),
        };
        // SAFETY: the mapping is page-aligned and HEADER_LEN + capacity long (checked by
        // Layout::check against its length); it is read-only and the view is only
        // loaded from; it lives in `_map` as long as the subscription.
        let view = unsafe { View::new(map.as_ptr() as *mut u8, layout.capacity) };
        let capacity = layout.capacity as u64;
        let ix = view.indices();
        let tail = ix.tail.load(Ordering::Acquire);
        let mut index = ReaderIndex::new(capacity, tail);
        // Where the count of losses starts: record 0 when the reader starts there,
        // else the first record it reads (a lap before that is nothing it lost).
        let mut expected = u64::MAX;
        if config.start == IpcStart::Oldest {
            index = ReaderIndex::new(capacity, 0);
            if ix.intent.load(Ordering::Acquire) <= capacity {
                // Not yet round the ring: everything from the first record.
                expected = 0;
            } else {
                index.resync_oldest(ix);
            }
        }
        let stat = IpcReaderStats::register(
            &layout.session.map_or_else(
                || {
                    let file = path.file_name().map(|n| n.to_string_lossy());
                    let file = file.unwrap_or_default();
                    file.trim_start_matches("multipoint-ipc-").to_owned()
                },
                |s| Session::from_bytes(s).to_string().trim_end().to_owned(),
            ),
            &path.display().to_string(),
        );
        let sub = IpcSubscription {
            _map: map,
            view,
            path,
            file_id,
            layout,
            index,
            expected,
            next_sequence: 0,
            lapped: false,
            state: WriterState::Live,
            ended: false,
            last_look_ns: 0,
            idle: config.idle,
            stats: IpcReaderStats::default(),
            text: String::new(),
            stat,
            cadence: crate::stat::Cadence::default(),
            recovery: None,
        };
        Ok(sub)
    }

    /// The ring's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ring's header as checked at the attach.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The stream's session, if the writer knew it.
    pub fn session(&self) -> Option<Session> {
        self.layout.session.map(Session::from_bytes)
    }

    /// The stream's re-request server, if the writer knew it.
    pub fn rerequest(&self) -> Option<std::net::SocketAddr> {
        self.layout.rerequest
    }

    /// The reader's counters.
    pub fn stats(&self) -> IpcReaderStats {
        self.stats
    }

    /// What the reader knows of its writer (looked at every 10 ms while idle).
    pub fn writer_state(&self) -> WriterState {
        self.state
    }

    /// Records the writer has published in all (as of its last publication).
    pub fn writer_records(&self) -> u64 {
        self.view.atomic(OFF_RECORDS).load(Ordering::Relaxed)
    }

    /// How long ago the writer last beat its heartbeat (it beats at each flush).
    pub fn heartbeat_age(&self) -> Duration {
        let beat = self.view.atomic(OFF_HEARTBEAT).load(Ordering::Acquire);
        Duration::from_nanos(now_ns().saturating_sub(beat))
    }

    /// Whether nothing more will come: the writer closed the ring, died or was replaced,
    /// and everything left was read and the end told.
    pub fn is_closed(&self) -> bool {
        self.ended && self.recovery.as_ref().is_none_or(|r| r.is_idle())
    }

    /// Whether lost messages are being re-requested (ranges still out).
    pub fn recovering(&self) -> bool {
        self.recovery.as_ref().is_some_and(|r| !r.is_idle())
    }

    /// From now on, fills what a lap loses by MoldUDP64 re-request from `config.server`
    /// (the ring's own [`rerequest`](Self::rerequest) server, or another): the
    /// [`Event::Lapped`] notice is followed, as replies come, by the lost messages as
    /// [`Event::Recovered`], and what is not recovered by `config.deadline` by an
    /// [`Event::Gap`]. Recovered messages come after the live ones that followed the lap
    /// (as a network subscription's do when recovery delivers them as they come;
    /// `config.in_order` is not supported here). Requests and replies go through one
    /// non-blocking UDP socket driven by [`poll`](Self::poll); a reply counts only from
    /// the server, for the ring's session, answering a range asked for.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the ring names no session (its writer did not know it) or
    /// `config.in_order` is set; [`Error::Io`] if the socket cannot be made.
    pub fn recover(&mut self, config: crate::core::recovery::RecoveryConfig) -> Result<()> {
        let Some(session) = self.session() else {
            return Err(Error::Config(format!(
                "the IPC ring {} names no session, so its losses cannot be re-requested \
                 (give its writer the session: multipoint sub --session ... --publish-ipc)",
                self.path.display()
            )));
        };
        if config.in_order {
            return Err(Error::Config(
                "an IPC reader recovers as messages come, not in order".to_owned(),
            ));
        }
        self.recovery = Some(Box::new(IpcRecovery::new(&config, session)?));
        Ok(())
    }

    /// Looks at the writer: closed flag, process, the name's file.
    fn look(&mut self) {
        if self.state != WriterState::Live {
            return;
        }
        if self.view.atomic(OFF_CLOSED).load(Ordering::Acquire) != 0 {
            self.state = WriterState::Closed;
            return;
        }
        let now = now_ns();
        if now.saturating_sub(self.last_look_ns) < LOOK_EVERY_NS {
            return;
        }
        self.last_look_ns = now;
        if !shm::alive(self.layout.pid, self.layout.start_time) {
            // It may have closed just before going.
            self.state = if self.view.atomic(OFF_CLOSED).load(Ordering::Acquire) != 0 {
                WriterState::Closed
            } else {
                WriterState::Dead
            };
            return;
        }
        if let (Some(mine), Some(now)) = (self.file_id, shm::file_id(&self.path)) {
            if mine != now {
                self.state = WriterState::Replaced;
            }
        }
    }

    /// Hands up to `limit` events to `f`, in order, and returns how many. Never waits.
    pub fn poll<F: FnMut(Event<'_>)>(&mut self, mut f: F, limit: usize) -> usize {
        let mut done = 0;
        while done < limit && !self.ended {
            let ix = self.view.indices();
            match self.index.next(&self.view, ix) {
                Next::Empty => {
                    if done > 0 {
                        break;
                    }
                    // The closed flag is stored after the last tail: look again once
                    // it is seen, so that nothing published before it is missed.
                    let was = self.state;
                    self.look();
                    if self.state == WriterState::Live {
                        break;
                    }
                    if was == WriterState::Live {
                        continue;
                    }
                    done += self.tell_end(&mut f);
                }
                Next::Lapped => self.on_lapped(),
                Next::Corrupt(why) => {
                    let before = self.index.cursor;
                    self.stats.discarded += 1;
                    tracing::warn!(path = %self.path.display(), why, "IPC ring record discarded");
                    self.on_lapped();
                    self.stats.lapped -= 1;
                    if self.index.cursor == before {
                        // Nowhere to go: the shared memory is garbage; stop for good.
                        self.state = WriterState::Dead;
                        self.text =
                            format!("the IPC ring {} is corrupt: {why}", self.path.display());
                        self.ended = true;
                        f(Event::Failure(&self.text));
                        self.stats.events += 1;
                        done += 1;
                    }
                }
                Next::Record(found) => {
                    if self.lapped && self.expected != u64::MAX {
                        if found.index < self.expected {
                            self.discard(&found);
                            continue;
                        }
                        let count = found.index - self.expected;
                        // This record is where it resumes, whether it is handed over in
                        // this poll or the next.
                        self.expected = found.index;
                        done += 1 + self.tell_lapped(&mut f, count, found.value);
                        if done >= limit {
                            break;
                        }
                    } else if !self.lapped
                        && self.expected != u64::MAX
                        && found.index != self.expected
                    {
                        self.discard(&found);
                        continue;
                    }
                    self.lapped = false;
                    self.expected = found.index;
                    if self.deliver(&found, &mut f) {
                        done += 1;
                    }
                }
            }
        }
        // Only while something is asked for: no system call per poll otherwise (a late
        // reply waits in the socket until then, and is counted as unasked).
        if let Some(recovery) = self.recovery.as_mut().filter(|r| !r.is_idle()) {
            let told = recovery.drive(&mut f);
            self.stats.events += told as u64;
            done += told;
            self.take_recovery_counts();
        }
        if self.stat.is_some() && self.cadence.due() {
            self.publish_stat();
        }
        done
    }

    fn take_recovery_counts(&mut self) {
        if let Some(recovery) = &self.recovery {
            let c = recovery.counts();
            let s = &mut self.stats;
            s.requests = c.requests;
            s.retries = c.retries;
            s.replies = c.replies;
            s.recovered = c.recovered;
            s.gaps_given_up = c.gaps_given_up;
            s.reply_foreign = c.reply_foreign;
            s.reply_unasked = c.reply_unasked;
        }
    }

    fn publish_stat(&self) {
        if let Some(entry) = &self.stat {
            self.stats.publish(entry);
        }
    }

    fn on_lapped(&mut self) {
        self.stats.lapped += 1;
        self.index.resync(self.view.indices());
        self.lapped = true;
    }

    fn discard(&mut self, found: &Found) {
        let _ = found;
        self.stats.discarded += 1;
        self.on_lapped();
        self.stats.lapped -= 1;
    }

    /// Tells a lap; returns the further events it handed over (a range recovery had
    /// no room for, given up at once).
    fn tell_lapped<F: FnMut(Event<'_>)>(
        &mut self,
        f: &mut F,
        count: u64,
        resume_sequence: u64,
    ) -> usize {
        self.stats.lost += count;
        self.stats.events += 1;
        self.lapped = false;
        f(Event::Lapped {
            count,
            first_sequence: self.next_sequence,
            resume_sequence,
        });
        match self.recovery.as_mut() {
            Some(recovery) => {
                let told = recovery.handle_lost(self.next_sequence, resume_sequence, f);
                self.stats.events += told as u64;
                told
            }
            None => 0,
        }
    }

    /// Once the writer is no longer live and everything was read: what was lost at the
    /// very end, and, for a writer that did not close, a failure.
    fn tell_end<F: FnMut(Event<'_>)>(&mut self, f: &mut F) -> usize {
        self.ended = true;
        let mut told = 0;
        if self.lapped && self.expected != u64::MAX {
            let records = self.view.atomic(OFF_RECORDS).load(Ordering::Relaxed);
            let count = records.saturating_sub(self.expected);
            let next = self.next_sequence;
            told += 1 + self.tell_lapped(f, count, next);
        }
        let reason = match self.state {
            WriterState::Dead => format!(
                "the IPC ring's writer (pid {}) is gone without closing it",
                self.layout.pid
            ),
            WriterState::Replaced => format!(
                "the IPC ring {} was replaced by a new writer: attach again",
                self.path.display()
            ),
            WriterState::Live | WriterState::Closed => return told,
        };
        self.text = reason;
        self.stats.events += 1;
        f(Event::Failure(&self.text));
        told + 1
    }

    /// Hands `found` over; returns whether an event was handed over.
    fn deliver<F: FnMut(Event<'_>)>(&mut self, found: &Found, f: &mut F) -> bool {
        let ix = self.view.indices();
        // SAFETY: `next` checked that the payload lies inside the ring.
        let payload = unsafe { self.view.bytes(found.payload, found.len) };
        match found.kind {
            MESSAGE | RECOVERED => {
                let sequence = found.value;
                let event = if found.kind == MESSAGE {
                    Event::Message {
                        sequence,
                        message: payload,
                    }
                } else {
                    Event::Recovered {
                        sequence,
                        message: payload,
                    }
                };
                f(event);
                self.stats.events += 1;
                if !self.index.intact(ix, found.position) {
                    // Overwritten while the handler read it: it counts as lost, told
                    // next from its own sequence number on.
                    self.stats.torn_during_read += 1;
                    if found.kind == MESSAGE {
                        self.next_sequence = sequence;
                    }
                    self.on_lapped();
                    return true;
                }
                self.stats.messages += 1;
                // A recovered message is an old one: the stream's next number is the
                // live messages' (as the writer keeps it).
                self.next_sequence = self.next_sequence.max(sequence.saturating_add(1));
                self.done_with(found);
                true
            }
            GAP | LINE | END | FAILURE => {
                let mut copy = [0u8; 16];
                let event_len = payload.len().min(16);
                copy[..event_len].copy_from_slice(&payload[..event_len]);
                if found.kind == FAILURE {
                    self.text.clear();
                    self.text.push_str(&String::from_utf8_lossy(payload));
                }
                if !self.index.intact(ix, found.position) {
                    self.on_lapped();
                    return false;
                }
                let word = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&copy[at..at + 8]);
                    u64::from_le_bytes(b)
                };
                let event = match found.kind {
                    GAP if found.len == 16 => Event::Gap(Gap {
                        first_missing: word(0),
                        count: word(8),
                    }),
                    LINE if found.len == 2 => Event::Line {
                        line: if copy[0] == 1 { Line::B } else { Line::A },
                        up: copy[1] == 1,
                    },
                    END => Event::EndOfSession,
                    FAILURE => Event::Failure(&self.text),
                    _ => {
                        self.stats.discarded += 1;
                        self.done_with(found);
                        return false;
                    }
                };
                f(event);
                self.stats.events += 1;
                self.next_sequence = self.next_sequence.max(found.value);
                self.done_with(found);
                true
            }
            _ => {
                // A kind this version does not know, well framed: skipped, counted.
                self.stats.discarded += 1;
                self.done_with(found);
                false
            }
        }
    }

    fn done_with(&mut self, found: &Found) {
        self.index.advance(found);
        self.expected = found.index + 1;
    }

    /// Polls up to `limit` events, first waiting up to `timeout` (with the idle strategy
    /// of [`IpcAttachConfig::idle`]) while there are none; returns 0 only once `timeout`
    /// passed or the ring is closed and read.
    pub fn poll_wait<F: FnMut(Event<'_>)>(
        &mut self,
        mut f: F,
        limit: usize,
        timeout: Duration,
    ) -> usize {
        let begun = Instant::now();
        let mut sleep = Duration::from_micros(50);
        loop {
            let n = self.poll(&mut f, limit);
            if n > 0 || self.is_closed() {
                return n;
            }
            let waited = begun.elapsed();
            if waited >= timeout {
                return 0;
            }
            match self.idle {
                IdleStrategy::Spin => std::hint::spin_loop(),
                IdleStrategy::Yield => std::thread::yield_now(),
                IdleStrategy::Backoff if waited < BACKOFF_SPIN => std::hint::spin_loop(),
                IdleStrategy::Block | IdleStrategy::Backoff => {
                    std::thread::sleep(sleep.min(timeout - waited));
                    sleep = (sleep * 2).min(Duration::from_millis(1));
                }
            }
        }
    }

    /// Bytes published and not yet read by this reader (a whole ring or more: lapped).
    pub fn pending_bytes(&self) -> u64 {
        self.view
            .indices()
            .tail
            .load(Ordering::Acquire)
            .saturating_sub(self.index.cursor)
    }
}

impl Drop for IpcSubscription {
    fn drop(&mut self) {
        self.publish_stat();
    }
}
