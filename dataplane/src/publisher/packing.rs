//! What both drivers of a packetizer — the [`Publisher`](super::Publisher) and the
//! [`Fanout`](crate::Fanout) root — do around it: offer (making room once when no buffer
//! is free), end a batch, flush and run the timers, each followed by sending what the
//! packetizer says is due. They differ only in how they send and how they make room.

use std::time::Instant;

use crate::core::packetizer::{OfferError, Packetizer, Slots};
use crate::core::SystemClock;

/// A packetizer's driver. See the module docs.
pub(crate) trait Packing {
    /// The buffers the packetizer packs into.
    type Slots: Slots;

    /// The packetizer and its buffers.
    fn packing(&mut self) -> (&mut Packetizer, &mut Self::Slots);

    /// Sends what the packetizer says is due (first collecting finished sends, when it
    /// asks for them: `Packetizer::wants_completions`).
    fn send_ready(&mut self);

    /// No buffer was free: make some (send what is due or held, collect finished sends).
    fn make_room(&mut self);

    /// An offer was refused for want of a buffer, even after making room.
    fn refused(&mut self);

    /// Packs `msg` and sends what is due; see `Publisher::offer`. A message that fits the
    /// open packet and changes nothing else (`Packetizer::offer_quiet`) is taken inline
    /// and nothing is looked at: packets a full sender left unsent wait for the next
    /// packet to close, the next 16th message outside a batch or the timers.
    #[inline(always)]
    fn offer_message(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
        let (core, slots) = self.packing();
        match core.offer_quiet(msg, slots) {
            Some(seq) => Ok(seq),
            None => self.offer_slow(msg),
        }
    }

    /// Every other offer: packs `msg` (making room once if no buffer is free) and sends
    /// what is due. Out of line.
    #[inline(never)]
    fn offer_slow(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
        let mut made_room = false;
        let taken = loop {
            let (core, slots) = self.packing();
            let taken = core.offer_slow_inline(msg, slots, &SystemClock);
            if !matches!(taken, Err(OfferError::Backpressure)) {
                break taken;
            }
            if made_room {
                self.refused();
                break taken;
            }
            self.make_room();
            made_room = true;
        };
        let core = self.packing().0;
        if core.poll_transmit().is_some() || core.wants_completions() {
            self.send_ready();
        }
        taken
    }

    /// Ends the batch and sends what it held.
    fn end_batch_now(&mut self) {
        self.packing().0.end_batch();
        self.send_ready();
    }

    /// Closes the open packet and sends everything.
    fn flush_now(&mut self) {
        let (core, slots) = self.packing();
        core.flush(slots);
        self.send_ready();
    }

    /// Runs the packetizer's timers (maximum delay, heartbeat) and sends what is due.
    fn run_timers(&mut self) {
        let (core, slots) = self.packing();
        core.handle_timeout(Instant::now(), slots);
        self.send_ready();
    }
}
