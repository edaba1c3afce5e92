//! What both drivers of a packetizer — the [`Publisher`](super::Publisher) and the
//! [`Fanout`](crate::Fanout) root — do around it: offer (making room once when no buffer
//! is free), end a batch, flush and run the timers, each followed by sending what the
//! packetizer says is due. They differ only in how they send and how they make room.

use std::time::Instant;

use crate::core::packetizer::{OfferError, Packetizer, Slots};
use crate::core::SystemClock;

/// The public methods both drivers have the same way (the packetizer is `self.core`, the
/// re-request server `self.rerequest`), written into an `impl` block of each. `together`
/// says where a batch's packets go together, `hands` what `end_batch` does with them.
macro_rules! packing_methods {
    (together: $together:literal, hands: $hands:literal) => {
        /// The sequence number the next message will get.
        pub fn next_sequence(&self) -> u64 {
            self.core.next_sequence()
        }

        /// The longest message a packet can carry.
        pub fn max_message(&self) -> usize {
            self.core.max_message()
        }

        /// Where the re-request server listens (the bound address: with port 0 asked
        /// for, the port the kernel chose); `None` without one.
        pub fn rerequest_address(&self) -> Option<::std::net::SocketAddr> {
            self.rerequest
                .as_ref()
                .map($crate::publisher::rerequest::Rerequests::local_addr)
        }

        /// The re-request server's counters; `None` without one.
        pub fn rerequest_stats(&self) -> Option<$crate::core::server::ServerStats> {
            self.rerequest
                .as_ref()
                .map($crate::publisher::rerequest::Rerequests::stats)
        }

        /// The retransmission store the re-request server answers from (its stored range
        /// and counters: [`RetransmitStore::stats`](crate::core::store::RetransmitStore::stats));
        /// `None` without a server.
        pub fn store(&self) -> Option<&$crate::core::store::RetransmitStore> {
            self.core.store()
        }

        /// Whether [`end_session`](Self::end_session) was called.
        pub fn is_ended(&self) -> bool {
            self.core.is_ended()
        }

        /// Packs `msg` into the open packet and returns its sequence number.
        ///
        /// # Errors
        ///
        /// [`OfferError`](crate::OfferError); the message was not taken.
        pub fn offer(
            &mut self,
            msg: &[u8],
        ) -> ::std::result::Result<u64, $crate::core::packetizer::OfferError> {
            $crate::publisher::packing::Packing::offer_message(self, msg)
        }

        #[doc = concat!(
            "Holds full packets until [`end_batch`](Self::end_batch) (or until `max_batch` ",
            "of them wait), so that they ", $together, " together."
        )]
        pub fn begin_batch(&mut self) {
            self.core.begin_batch();
        }

        #[doc = concat!(
            $hands, " the packets held since [`begin_batch`](Self::begin_batch); the open ",
            "packet stays open (it leaves when full, on flush or after `max_delay`)."
        )]
        pub fn end_batch(&mut self) {
            $crate::publisher::packing::Packing::end_batch_now(self);
        }

        /// Sends the open packet and everything held, now.
        pub fn flush(&mut self) {
            $crate::publisher::packing::Packing::flush_now(self);
        }
    };
}

pub(crate) use packing_methods;

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
