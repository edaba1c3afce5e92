//! The handler of the fuzz targets that drive recovery: a message is checked the same way
//! whether it came live or recovered, so a target writes one `take` for both and
//! [`Recorder`] makes that the `Handler` the state under test calls.

use std::ops::{Deref, DerefMut};

use multipoint_dataplane::core::lines::Line;
use multipoint_dataplane::core::receive::Handler;
use multipoint_dataplane::core::sequence::Gap;

/// What a target checks and records of each event a `ReceiveState` hands its handler.
pub trait Record: Send + 'static {
    /// A message handed over: live (`on_message`), or `recovered` (`on_recovered`).
    fn take(&mut self, sequence: u64, message: &[u8], recovered: bool);
    /// Messages declared lost (`on_gap`).
    fn gap(&mut self, gap: Gap);
    /// The end of session (`on_end_of_session`).
    fn end_of_session(&mut self);
    /// A line went down or came up again (`on_line`, with two lines only).
    fn line(&mut self, line: Line, up: bool) {
        let _ = (line, up);
    }
}

/// A [`Record`] as a `Handler`. It reads as the record itself (`Deref`), so that the
/// target's checks look at its fields directly.
pub struct Recorder<R>(pub R);

impl<R: Record> Handler for Recorder<R> {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        self.0.take(sequence, message, false);
    }
    fn on_recovered(&mut self, sequence: u64, message: &[u8]) {
        self.0.take(sequence, message, true);
    }
    fn on_gap(&mut self, gap: Gap) {
        self.0.gap(gap);
    }
    fn on_end_of_session(&mut self) {
        self.0.end_of_session();
    }
    fn on_line(&mut self, line: Line, up: bool) {
        self.0.line(line, up);
    }
}

impl<R> Deref for Recorder<R> {
    type Target = R;
    fn deref(&self) -> &R {
        &self.0
    }
}

impl<R> DerefMut for Recorder<R> {
    fn deref_mut(&mut self) -> &mut R {
        &mut self.0
    }
}
