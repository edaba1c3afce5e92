//! Two redundant lines of one stream, A and B (sans-IO): what each line brought, when,
//! and what it lost, for the receive state that arbitrates between them.
//!
//! Exchanges publish a feed twice, on two groups (often over two networks), with the same
//! session and sequence numbers; a subscriber takes each packet from whichever line
//! brings it first, and a gap is real only when both lines lost it. The arbitration is
//! the receive state's ([`ReceiveConfig::lines`](crate::core::receive::ReceiveConfig)):
//! both lines' packets go into one stream, whose sequencing keeps the first copy and drops
//! the later one; a packet that one line brings ahead of a missing one waits for the
//! other line ([`LinesConfig::wait`]) before the gap is declared (and, with recovery,
//! asked for). This module keeps the per-line book:
//!
//! - **packets** each line brought, **wins** (copies that were first and delivered) and
//!   **duplicates** (copies that came second: the other line's loss-free duplicates);
//! - each line's own **gaps** and the messages in them (**losses**), and **gaps alone**:
//!   those of one line's gaps the other line did not have (judged once the other line has
//!   gone past them);
//! - **behind**: for each packet both lines brought, how long after the other line's copy
//!   this line's arrived (0 when it was first), in a histogram per line;
//! - **down** and **up**: a line that brings nothing for [`LinesConfig::silence`] while the
//!   other brings packets is down (counted once per outage, and the handler hears it);
//!   its next packet brings it up again.
//!
//! It owns no socket and reads no clock; everything is allocated up front.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::latency::LatencyHistogram;
use crate::stats::Counter;

/// One of the two lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Line {
    /// The first line: the subscription's own group and socket.
    A,
    /// The second line ([`LinesConfig`]).
    B,
}

impl Line {
    /// 0 for A, 1 for B.
    pub fn index(self) -> usize {
        match self {
            Line::A => 0,
            Line::B => 1,
        }
    }

    /// The other line.
    pub fn other(self) -> Line {
        match self {
            Line::A => Line::B,
            Line::B => Line::A,
        }
    }
}

/// How a receive state arbitrates between two lines (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinesConfig {
    /// How long a packet one line brings ahead of a missing one waits for the other line
    /// to bring the missing one, before the gap is declared (or, with recovery, asked
    /// for). Default 1 ms.
    pub wait: Duration,
    /// A line that brings nothing for this long while the other line brings packets is
    /// reported down. Default 50 ms.
    pub silence: Duration,
    /// Line B's sender (address and port; port 0: any port of the address, learned from
    /// its first packet). `None`: the source of the first packet of the stream's session
    /// on line B. Line A's sender is the stream's ([`ReceiveConfig::sender`]).
    ///
    /// [`ReceiveConfig::sender`]: crate::core::receive::ReceiveConfig::sender
    pub sender_b: Option<SocketAddr>,
}

impl Default for LinesConfig {
    fn default() -> LinesConfig {
        LinesConfig {
            wait: Duration::from_millis(1),
            silence: Duration::from_millis(50),
            sender_b: None,
        }
    }
}

/// A snapshot of one line's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Packets of the stream (data, heartbeats, end of session) the line brought from its
    /// sender.
    pub packets: u64,
    /// Data packets whose copy from this line was the first and was delivered.
    pub wins: u64,
    /// Data packets whose copy from this line came after the other line's, or again on
    /// this line (dropped; the handler never sees them).
    pub duplicates: u64,
    /// Gaps in what this line brought.
    pub gaps: u64,
    /// Messages in those gaps.
    pub losses: u64,
    /// Of those gaps, the ones the other line did not have (it brought every message of
    /// them); judged once the other line has gone past them.
    pub gaps_alone: u64,
    /// Times the line was reported down (silent while the other line brought packets).
    pub down_events: u64,
    /// 1 while the line is down.
    pub down: u64,
}

/// The live counters of one line (single writer: the shard).
#[derive(Debug, Default)]
pub(crate) struct LineCounters {
    packets: Counter,
    wins: Counter,
    duplicates: Counter,
    gaps: Counter,
    losses: Counter,
    gaps_alone: Counter,
    down_events: Counter,
    down: Counter,
}

impl LineCounters {
    pub(crate) fn snapshot(&self) -> LineStats {
        LineStats {
            packets: self.packets.get(),
            wins: self.wins.get(),
            duplicates: self.duplicates.get(),
            gaps: self.gaps.get(),
            losses: self.losses.get(),
            gaps_alone: self.gaps_alone.get(),
            down_events: self.down_events.get(),
            down: self.down.get(),
        }
    }
}

/// Both lines' live counters, as other threads read them.
pub(crate) type SharedLines = Arc<[LineCounters; 2]>;

/// A line came up or went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) line: Line,
    pub(crate) up: bool,
}

/// Gaps of a line remembered, for the other line's judging.
const HISTORY: usize = 1024;
/// Arrival times remembered per line, for the behind histogram (a power of two).
const ARRIVALS: usize = 4096;

/// One gap of a line: `first..end`.
#[derive(Debug, Clone, Copy)]
struct GapRec {
    first: u64,
    end: u64,
}

/// One line's book.
#[derive(Debug)]
struct LineBook {
    /// The sender the line is bound to, once known.
    source: Option<SocketAddr>,
    /// The sender named for it (port 0: any port of the address).
    want: Option<SocketAddr>,
    /// One past the highest number the line brought.
    next: Option<u64>,
    /// When it last brought a packet.
    last_at: Option<u64>,
    down: bool,
    /// Its recent gaps, by increasing number; the last `pending` are not judged yet.
    history: VecDeque<GapRec>,
    pending: usize,
    /// The recent data packets it brought first, in arrival order: (first number, when),
    /// a ring of [`ARRIVALS`]; `arrived` counts every one ever put in.
    arrivals: Box<[(u64, u64)]>,
    arrived: u64,
    /// Packets both lines brought whose copy from this line came first (0 behind, added
    /// to `behind` when it is read rather than recorded one by one).
    first: u64,
    /// How far into the other line's ring its copies have been looked for (an index
    /// counted as `arrived` is): both lines carry the same packets in the same order,
    /// so the copy of the next packet is at or after it.
    cursor: u64,
    behind: Box<LatencyHistogram>,
}

impl LineBook {
    fn new(want: Option<SocketAddr>) -> LineBook {
        LineBook {
            source: want.filter(|w| w.port() != 0),
            want,
            next: None,
            last_at: None,
            down: false,
            history: VecDeque::with_capacity(HISTORY),
            pending: 0,
            arrivals: vec![(0, 0); ARRIVALS].into_boxed_slice(),
            arrived: 0,
            first: 0,
            cursor: 0,
            behind: Box::new(LatencyHistogram::new()),
        }
    }

    /// Whether any of its gaps overlaps `first..end`.
    fn lost_any(&self, first: u64, end: u64) -> bool {
        let i = self.history.partition_point(|g| g.end <= first);
        self.history.get(i).is_some_and(|g| g.first < end)
    }
}

/// Both lines' books. See the module docs.
#[derive(Debug)]
pub(crate) struct Lines {
    wait_ns: u64,
    silence_ns: u64,
    books: [LineBook; 2],
    counters: SharedLines,
    /// When the first packet of either line arrived.
    start: Option<u64>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Lines {
    /// The books for `config`, line A's sender named `sender_a` (if it is).
    pub(crate) fn new(config: &LinesConfig, sender_a: Option<SocketAddr>) -> Lines {
        Lines {
            wait_ns: ns(config.wait),
            silence_ns: ns(config.silence).max(1),
            books: [
                LineBook::new(sender_a),
                LineBook::new(config.sender_b.map(crate::io::canonical)),
            ],
            counters: Arc::new([LineCounters::default(), LineCounters::default()]),
            start: None,
        }
    }

    /// The live counters, to share.
    pub(crate) fn shared(&self) -> SharedLines {
        Arc::clone(&self.counters)
    }

    /// How long a packet ahead of a missing one waits for the other line (ns).
    pub(crate) fn wait_ns(&self) -> u64 {
        self.wait_ns
    }

    /// The behind histogram of `line` (see the module docs), its zeros included.
    pub(crate) fn behind(&self, line: Line) -> LatencyHistogram {
        let book = &self.books[line.index()];
        let mut behind = (*book.behind).clone();
        behind.record_n(0, book.first);
        behind
    }

    /// Whether `source` is `line`'s sender; the first one that matches what was named
    /// (or any, if nothing was) becomes it, once the stream is bound (`bound`).
    pub(crate) fn accepts(&mut self, line: Line, source: Option<SocketAddr>) -> bool {
        let book = &mut self.books[line.index()];
        match book.source {
            Some(s) => source == Some(s),
            None => {
                let Some(s) = source else {
                    return false;
                };
                let named = book
                    .want
                    .is_none_or(|w| s.ip() == w.ip() && (w.port() == 0 || s.port() == w.port()));
                if named {
                    book.source = Some(s);
                }
                named
            }
        }
    }

    /// A packet of the stream from `line`'s sender arrived at `now`: numbers
    /// `first..end` (`end == first` for a heartbeat or an end of session; `data`: a data
    /// packet). Counts it, finds the line's own gap before it, times it against the other
    /// line's copy, and judges what can be judged. Returns a line that came up or went
    /// down, if one did (at most one of each).
    pub(crate) fn arrival(
        &mut self,
        line: Line,
        first: u64,
        end: u64,
        data: bool,
        now: u64,
        window: u64,
    ) -> [Option<Change>; 2] {
        let (me, other) = (line.index(), line.other().index());
        self.counters[me].packets.add(1);
        let start = *self.start.get_or_insert(now);
        let mut changes = [None, None];
        let book = &mut self.books[me];
        book.last_at = Some(now);
        if std::mem::take(&mut book.down) {
            self.counters[me].down.set(0);
            changes[0] = Some(Change { line, up: true });
        }
        // The other line is silent while this one brings packets.
        let heard = self.books[other].last_at.unwrap_or(start);
        if !self.books[other].down && now.saturating_sub(heard) >= self.silence_ns {
            self.books[other].down = true;
            self.counters[other].down_events.add(1);
            self.counters[other].down.set(1);
            changes[1] = Some(Change {
                line: line.other(),
                up: false,
            });
            // What this line lost meanwhile, the silent one lost too.
            self.judge_pending(me, u64::MAX, true);
        }
        let book = &mut self.books[me];
        if let Some(n) = book.next {
            if first > n && first - n <= window {
                self.counters[me].gaps.add(1);
                self.counters[me].losses.add(first - n);
                if book.history.len() == HISTORY {
                    // Too far ahead of the other line to judge: not alone.
                    book.history.pop_front();
                    book.pending = book.pending.min(book.history.len());
                }
                book.history.push_back(GapRec {
                    first: n,
                    end: first,
                });
                book.pending += 1;
            }
        }
        if book
            .next
            .is_none_or(|n| end > n && (end - n <= window || first <= n))
        {
            book.next = Some(end);
        }
        if data {
            self.time(me, other, first, now);
        }
        // Judge what each line's progress lets be judged.
        let down = self.books[other].down;
        let other_next = self.books[other].next.unwrap_or(0);
        self.judge_pending(me, other_next, down);
        let my_next = self.books[me].next.unwrap_or(0);
        self.judge_pending(other, my_next, false);
        changes
    }

    /// Records the arrival of `first` on line `me` at `now`, or, if line `other` brought
    /// it already, how far behind `me` was. The copy is looked for from where the last
    /// look ended, so each entry of the other line's ring is passed once: constant time
    /// a packet, whatever the lines lose. (Packets reordered on a line may miss their
    /// sample; nothing else depends on it.)
    fn time(&mut self, me: usize, other: usize, first: u64, now: u64) {
        let [a, b] = &mut self.books;
        let (mine, theirs) = if me == 0 { (a, &*b) } else { (b, &*a) };
        let ring = ARRIVALS as u64;
        let mut at = mine.cursor.max(theirs.arrived.saturating_sub(ring));
        let entry = |i: u64| theirs.arrivals[(i % ring) as usize];
        while at < theirs.arrived && entry(at).0 < first {
            at += 1;
        }
        if at < theirs.arrived && entry(at).0 == first {
            let then = entry(at).1;
            mine.cursor = at + 1;
            mine.behind.record(now.saturating_sub(then));
            // The other line's copy was first: 0 behind for it.
            self.books[other].first += 1;
            return;
        }
        mine.cursor = at;
        let slot = (mine.arrived % ring) as usize;
        mine.arrivals[slot] = (first, now);
        mine.arrived += 1;
    }

    /// Judges line `me`'s pending gaps that end at or before `upto` (the other line has
    /// gone past them): alone if the other line lost none of it, unless `lost` (the
    /// other line is down: it lost them too).
    #[inline]
    fn judge_pending(&mut self, me: usize, upto: u64, lost: bool) {
        let other = 1 - me;
        while self.books[me].pending > 0 {
            let book = &self.books[me];
            let i = book.history.len() - book.pending;
            let g = book.history[i];
            if g.end > upto {
                break;
            }
            if !lost && !self.books[other].lost_any(g.first, g.end) {
                self.counters[me].gaps_alone.add(1);
            }
            self.books[me].pending -= 1;
        }
    }

    /// A data packet from `line` was the first copy and delivered messages.
    pub(crate) fn won(&self, line: Line) {
        self.counters[line.index()].wins.add(1);
    }

    /// A data packet from `line` came after the other line's copy and was dropped.
    pub(crate) fn second(&self, line: Line) {
        self.counters[line.index()].duplicates.add(1);
    }

    /// Snapshots of both lines' counters.
    pub(crate) fn stats(&self) -> [LineStats; 2] {
        [self.counters[0].snapshot(), self.counters[1].snapshot()]
    }

    /// The sender named for `line`, if one was (port 0: any port of the address).
    pub(crate) fn want(&self, line: Line) -> Option<SocketAddr> {
        self.books[line.index()].want
    }
}
