//! The publisher's async twins (feature `tokio`): [`Publisher::offer_async`] waits for
//! room and [`Publisher::close_async`] for the sends in flight without blocking the
//! executor's thread.
//!
//! How a task learns that a send completed, per backend:
//!
//! - io_uring: an eventfd registered with the send rings for completions that come after
//!   their submission (`IORING_REGISTER_EVENTFD_ASYNC`: a send that waited for room in the
//!   socket buffer), watched by tokio's reactor ([`AsyncFd`]). The task sleeps until the
//!   kernel completes a send; nothing polls. Registered the first time a task has to wait,
//!   so that a publisher never awaited costs nothing.
//! - mmsg: from the first async call on, sends go with `MSG_DONTWAIT`; what a full socket
//!   buffer refuses stays queued, in flight, and the task looks again every millisecond
//!   (`tokio::time::sleep`), sending it once there is room. Nothing on this path waits
//!   in the kernel.
//! - a simulated network: no descriptor signals its deferred completions; the task looks
//!   again every millisecond (`tokio::time::sleep`).
//!
//! The runtime must have its I/O driver and timer enabled (`Builder::enable_all`, as
//! `#[tokio::main]` does).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{LineSendStats, Publisher, CLOSE_TIMEOUT};
use crate::core::packetizer::OfferError;
use crate::publisher::packing::Packing;
use crate::stats::PublisherStats;

/// How often a task looks again for completions no descriptor signals (the sim).
const RETRY: Duration = Duration::from_millis(1);

/// The eventfd the kernel writes when a send completes late, as tokio's reactor watches
/// it. See the module docs.
pub(crate) struct CompletionFd {
    fd: AsyncFd<OwnedFd>,
}

/// Whether the publisher has an eventfd its rings signal: not tried yet, none (a backend
/// that cannot signal, or setting it up failed), or this one.
#[derive(Default)]
pub(crate) enum Notifier {
    /// Set up at the first wait.
    #[default]
    Untried,
    /// No descriptor signals completions: look again every [`RETRY`].
    Polling,
    /// Await this one.
    Fd(CompletionFd),
}

/// A non-blocking eventfd.
fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Publisher {
    /// Like [`offer`](Self::offer), but when every buffer is in flight it awaits room
    /// (see the module docs of `publisher::async_wait` for how, per backend) instead of
    /// refusing: the executor's thread is never blocked waiting for a completion. A wait
    /// counts once in [`PublisherStats::backpressure`].
    ///
    /// # Errors
    ///
    /// [`OfferError`] but `Backpressure`, at once, as `offer` gives them; the message was
    /// not taken.
    pub async fn offer_async(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
        self.never_wait_in_a_send();
        match self.offer_message(msg) {
            Err(OfferError::Backpressure) => {}
            taken => return taken,
        }
        loop {
            self.make_room();
            match self.offer_again(msg) {
                Err(OfferError::Backpressure) => {}
                taken => return taken,
            }
            self.completion(None).await;
        }
    }

    /// The async twin of [`close`](Self::close): ends the session (if not done yet) and
    /// awaits the sends in flight (at most 2 s, as `close`) without blocking the thread,
    /// then returns the final counters.
    pub async fn close_async(self) -> PublisherStats {
        self.close_lines_async().await.0
    }

    /// The async twin of [`close_lines`](Self::close_lines).
    pub async fn close_lines_async(mut self) -> (PublisherStats, Option<LineSendStats>) {
        self.never_wait_in_a_send();
        if !self.closed {
            self.end_session_async().await;
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            while self.in_flight() > 0 && Instant::now() < deadline {
                self.completion(Some(deadline)).await;
            }
            if self.in_flight() > 0 {
                tracing::warn!(
                    in_flight = self.in_flight(),
                    "closing with sends still in flight"
                );
            }
            // Dropping it now waits for nothing more.
            self.closed = true;
        }
        (self.stats(), self.line_b_stats())
    }

    /// [`end_session`](Self::end_session), awaiting a buffer for the end rather than
    /// blocking for it (without one after 2 s, no end is sent, as there).
    async fn end_session_async(&mut self) {
        if self.core.is_ended() {
            return;
        }
        self.flush();
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while !self.has_room() && self.in_flight() > 0 && Instant::now() < deadline {
            self.completion(Some(deadline)).await;
        }
        if !self.core.end_session(&mut self.buffers) {
            self.stats.backpressure += 1;
        }
        self.transmit();
    }

    /// Collects finished sends, and if some are still in flight awaits one's completion
    /// (until `deadline` at most), then collects again. With nothing in flight it only
    /// yields to the executor.
    async fn completion(&mut self, deadline: Option<Instant>) {
        let _ = self.reap(false);
        if self.in_flight() == 0 {
            tokio::task::yield_now().await;
            return;
        }
        if matches!(self.notifier, Notifier::Untried) {
            self.notifier = self.set_up_notifier();
        }
        let wait = match deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::MAX,
        };
        match &self.notifier {
            Notifier::Fd(notify) => {
                let readable = notify.fd.readable();
                let guard = if wait == Duration::MAX {
                    readable.await.ok()
                } else {
                    tokio::time::timeout(wait, readable)
                        .await
                        .ok()
                        .and_then(Result::ok)
                };
                if let Some(mut guard) = guard {
                    crate::io::drain_eventfd(notify.fd.get_ref().as_raw_fd());
                    guard.clear_ready();
                }
            }
            Notifier::Polling | Notifier::Untried => tokio::time::sleep(RETRY.min(wait)).await,
        }
        let _ = self.reap(false);
    }

    /// From the first async call on, no send waits for room in the kernel: on mmsg what
    /// a full socket refuses stays queued, in flight, and goes when completions are next
    /// collected (see `io::mmsg::send`).
    fn never_wait_in_a_send(&mut self) {
        self.sender.defer_when_full();
        if let Some(line) = self.line_b.as_mut() {
            line.sender.defer_when_full();
        }
    }

    /// An eventfd both lines' rings signal, watched by the reactor; [`Notifier::Polling`]
    /// where the backend cannot signal or setting it up fails.
    fn set_up_notifier(&mut self) -> Notifier {
        let mut set_up = || -> std::io::Result<Option<CompletionFd>> {
            let fd = eventfd()?;
            let raw = fd.as_raw_fd();
            if !self.sender.notify_completions(raw)? {
                return Ok(None);
            }
            if let Some(line) = self.line_b.as_mut() {
                line.sender.notify_completions(raw)?;
            }
            // SAFETY: an `OwnedFd` stays open, and is the same descriptor, until the
            // `AsyncFd` that owns it drops it.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
            Ok(Some(CompletionFd { fd }))
        };
        match set_up() {
            Ok(Some(fd)) => Notifier::Fd(fd),
            Ok(None) => Notifier::Polling,
            Err(e) => {
                tracing::warn!(error = %e, "no completion eventfd: awaiting by looking again");
                Notifier::Polling
            }
        }
    }
}
