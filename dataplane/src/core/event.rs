//! Everything a subscription reports, as one enum: what a [`Handler`]'s methods hear one
//! by one, for closures ([`on_event`]) and for readers of a poll ring
//! ([`crate::subscribe::ring`]).
//!
//! ```
//! use multipoint_dataplane::core::event::{on_event, Event};
//! use multipoint_dataplane::Handler;
//!
//! let mut messages = 0u64;
//! let mut ended = false;
//! let mut handler = on_event(move |event: Event<'_>| match event {
//!     Event::Message { .. } | Event::Recovered { .. } => messages += 1,
//!     Event::EndOfSession => ended = true,
//!     _ => {}
//! });
//! handler.on_message(1, b"hello");
//! handler.on_end_of_session();
//! ```

use super::lines::Line;
use super::receive::Handler;
use super::sequence::Gap;

/// One thing a subscription reports. Message bytes borrow the receive buffer (or the
/// poll ring) and are valid only while the event is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A message with its sequence number, in its place in the stream.
    Message {
        /// Its MoldUDP64 sequence number.
        sequence: u64,
        /// Its bytes.
        message: &'a [u8],
    },
    /// A message that was missing and came late (by re-request, or straggling in after
    /// later ones), when recovery delivers messages as they come
    /// ([`Handler::on_recovered`]).
    Recovered {
        /// Its MoldUDP64 sequence number.
        sequence: u64,
        /// Its bytes.
        message: &'a [u8],
    },
    /// Messages `first_missing..end()` were lost for good ([`Handler::on_gap`]).
    Gap(Gap),
    /// The publisher ended the session ([`Handler::on_end_of_session`]).
    EndOfSession,
    /// With two lines, one went down or came up again ([`Handler::on_line`]).
    Line {
        /// Which line.
        line: Line,
        /// `true`: it came up; `false`: it went down.
        up: bool,
    },
    /// The shard serving the subscription failed and receives nothing more for it
    /// ([`Handler::on_failure`]).
    Failure(&'a str),
    /// Only from a poll ring: `count` events (messages, gaps, line changes...) did not
    /// fit in the ring because its reader was behind, and were dropped there, between the
    /// event before this one and the one after. The subscription's own counters still
    /// count them as received.
    Lost {
        /// How many events were dropped.
        count: u64,
    },
    /// Only from a shared-memory ring ([`crate::ipc::IpcSubscription`]): the writer
    /// overwrote `count` records (messages and other events) before this reader read
    /// them, between the event before this one and the one after. The messages among
    /// them have sequence numbers in `first_sequence..resume_sequence`: what to
    /// re-request.
    Lapped {
        /// How many records were lost, exactly.
        count: u64,
        /// The first sequence number that may be among them (the one after the last
        /// message read; 0 when the reader had read nothing yet).
        first_sequence: u64,
        /// The sequence number the stream resumes at.
        resume_sequence: u64,
    },
}

impl Event<'_> {
    /// The sequence number of a message or recovered message.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            Event::Message { sequence, .. } | Event::Recovered { sequence, .. } => Some(*sequence),
            _ => None,
        }
    }

    /// The bytes of a message or recovered message.
    pub fn message(&self) -> Option<&[u8]> {
        match self {
            Event::Message { message, .. } | Event::Recovered { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// An [`Event`] that owns its bytes: what a stream of events yields
/// ([`RingReader`](crate::RingReader) as a `futures_core::Stream`, with the `tokio`
/// feature). Making one copies a message's bytes (one allocation); a reader that needs
/// no copy polls the [`Event`]s in place.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnedEvent {
    /// See [`Event::Message`].
    Message {
        /// Its MoldUDP64 sequence number.
        sequence: u64,
        /// Its bytes.
        message: Vec<u8>,
    },
    /// See [`Event::Recovered`].
    Recovered {
        /// Its MoldUDP64 sequence number.
        sequence: u64,
        /// Its bytes.
        message: Vec<u8>,
    },
    /// See [`Event::Gap`].
    Gap(Gap),
    /// See [`Event::EndOfSession`].
    EndOfSession,
    /// See [`Event::Line`].
    Line {
        /// Which line.
        line: Line,
        /// `true`: it came up; `false`: it went down.
        up: bool,
    },
    /// See [`Event::Failure`].
    Failure(String),
    /// See [`Event::Lost`].
    Lost {
        /// How many events were dropped.
        count: u64,
    },
    /// See [`Event::Lapped`].
    Lapped {
        /// How many records were lost.
        count: u64,
        /// The first sequence number that may be among them.
        first_sequence: u64,
        /// The sequence number the stream resumes at.
        resume_sequence: u64,
    },
}

impl From<Event<'_>> for OwnedEvent {
    fn from(event: Event<'_>) -> OwnedEvent {
        match event {
            Event::Message { sequence, message } => OwnedEvent::Message {
                sequence,
                message: message.to_vec(),
            },
            Event::Recovered { sequence, message } => OwnedEvent::Recovered {
                sequence,
                message: message.to_vec(),
            },
            Event::Gap(gap) => OwnedEvent::Gap(gap),
            Event::EndOfSession => OwnedEvent::EndOfSession,
            Event::Line { line, up } => OwnedEvent::Line { line, up },
            Event::Failure(reason) => OwnedEvent::Failure(reason.to_owned()),
            Event::Lost { count } => OwnedEvent::Lost { count },
            Event::Lapped {
                count,
                first_sequence,
                resume_sequence,
            } => OwnedEvent::Lapped {
                count,
                first_sequence,
                resume_sequence,
            },
        }
    }
}

/// A [`Handler`] that hands every event to one closure (see [`on_event`]).
#[derive(Debug, Clone)]
pub struct OnEvent<F>(pub F);

/// A handler from a closure that takes every [`Event`], not only messages:
/// `shards.subscribe(config, on_event(|event| ...))`. (A closure of `(u64, &[u8])` is a
/// handler too, and sees messages only.)
pub fn on_event<F: FnMut(Event<'_>) + Send + 'static>(f: F) -> OnEvent<F> {
    OnEvent(f)
}

impl<F: FnMut(Event<'_>) + Send + 'static> Handler for OnEvent<F> {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        (self.0)(Event::Message { sequence, message })
    }
    fn on_recovered(&mut self, sequence: u64, message: &[u8]) {
        (self.0)(Event::Recovered { sequence, message })
    }
    fn on_gap(&mut self, gap: Gap) {
        (self.0)(Event::Gap(gap))
    }
    fn on_end_of_session(&mut self) {
        (self.0)(Event::EndOfSession)
    }
    fn on_line(&mut self, line: Line, up: bool) {
        (self.0)(Event::Line { line, up })
    }
    fn on_failure(&mut self, reason: &str) {
        (self.0)(Event::Failure(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closure_handler_hears_every_kind_of_event_in_order() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        let mut handler = on_event(move |event: Event<'_>| {
            let text = match event {
                Event::Message { sequence, message } => {
                    format!("m{sequence}:{}", String::from_utf8_lossy(message))
                }
                Event::Recovered { sequence, .. } => format!("r{sequence}"),
                Event::Gap(gap) => format!("g{}+{}", gap.first_missing, gap.count),
                Event::EndOfSession => "end".into(),
                Event::Line { line, up } => format!("{line:?}{up}"),
                Event::Failure(why) => format!("fail:{why}"),
                Event::Lost { count } => format!("lost{count}"),
                Event::Lapped { count, .. } => format!("lapped{count}"),
            };
            log.lock().map(|mut l| l.push(text)).ok();
        });
        handler.on_message(1, b"a");
        handler.on_gap(Gap {
            first_missing: 2,
            count: 3,
        });
        handler.on_recovered(2, b"b");
        handler.on_line(Line::B, false);
        handler.on_failure("gone");
        handler.on_end_of_session();
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen, ["m1:a", "g2+3", "r2", "Bfalse", "fail:gone", "end"]);
    }

    #[test]
    fn an_event_gives_its_sequence_and_bytes_only_for_messages() {
        let m = Event::Recovered {
            sequence: 9,
            message: b"x",
        };
        assert_eq!((m.sequence(), m.message()), (Some(9), Some(&b"x"[..])));
        assert_eq!(Event::EndOfSession.sequence(), None);
        assert_eq!(Event::Lost { count: 2 }.message(), None);
    }
}
