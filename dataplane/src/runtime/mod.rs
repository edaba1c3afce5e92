//! One shard runtime for every kind of shard (receive shards, fan-out shards): the thread,
//! pinning it to a core, the idle strategy, the command link from the owner, and the
//! eventfd that wakes it (`wake`).
//!
//! # Contract
//!
//! - `spawn` starts a thread (pinned to a core when asked), builds the shard's
//!   `Worker` on it (so that its rings belong to that thread) and returns once the
//!   worker is set up, with the `Link` to it, or with the setup's error.
//! - The thread loops: it applies the commands waiting (`Worker::command`), ends when
//!   the worker is done (`Worker::done`), and otherwise gives the worker one
//!   turn (`Worker::turn`). A turn that found no work may block in the worker's backend for
//!   at most the wait the [`IdleStrategy`] allows: `Block` always (10 ms at a time),
//!   `Backoff` once `BACKOFF_SPIN` has passed since the last work, `Spin` and `Yield`
//!   never (they spin or yield between turns instead). A turn right after commands never
//!   blocks.
//! - `Link::send` queues a command and writes the shard's eventfd, so that a blocked
//!   shard takes the command at once, not when its wait runs out.
//! - When every `Link` is dropped the worker hears it (`Worker::orphaned`) and
//!   decides when to stop.
//! - A turn that panics fails the worker (`Worker::failed`, which tells whoever it
//!   served): it gets no more turns, only commands, until it is done, so that its
//!   owner can still close what it holds.

pub(crate) mod wake;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendError, Sender, TryRecvError};

use self::wake::Wake;
use crate::config::{IdleStrategy, BACKOFF_SPIN};
use crate::error::{Error, Result};

/// Longest a blocked shard sleeps before looking around anyway.
pub(crate) const BLOCK_WAIT: Duration = Duration::from_millis(10);

/// Commands a link queues before `send` waits for the shard to take some.
const COMMAND_QUEUE: usize = 64;

/// What a shard thread runs. See the module docs.
pub(crate) trait Worker {
    /// What the owner asks of the shard.
    type Command: Send + 'static;

    /// Applies a command from the owner (between two turns).
    fn command(&mut self, command: Self::Command);

    /// The owner is gone: every link was dropped.
    fn orphaned(&mut self);

    /// Whether the thread is to end now.
    fn done(&mut self) -> bool;

    /// One pass over the shard's work. With `wait`, a pass that finds nothing to do may
    /// block in the backend for at most that long; `commands_waiting` says whether the
    /// owner queued a command meanwhile (check it after announcing sleep, before
    /// blocking). Returns whether the pass made progress.
    fn turn(&mut self, wait: Option<Duration>, commands_waiting: &dyn Fn() -> bool) -> bool;

    /// A turn panicked (`reason` is the panic's message): the worker is given no more
    /// turns, only commands, until it is done. Tell whoever it served.
    fn failed(&mut self, reason: &str) {
        tracing::error!(reason, "a shard failed");
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// The way into a shard: its command queue, and the eventfd that wakes it when it blocks.
pub(crate) struct Link<C> {
    tx: Sender<C>,
    wake: Arc<Wake>,
}

impl<C> std::fmt::Debug for Link<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("queued", &self.tx.len())
            .finish()
    }
}

impl<C> Clone for Link<C> {
    fn clone(&self) -> Self {
        Link {
            tx: self.tx.clone(),
            wake: Arc::clone(&self.wake),
        }
    }
}

impl<C> Link<C> {
    /// Queues `command` and wakes the shard.
    ///
    /// # Errors
    ///
    /// The shard is gone; the command comes back.
    pub(crate) fn send(&self, command: C) -> std::result::Result<(), SendError<C>> {
        self.tx.send(command)?;
        self.wake.notify();
        Ok(())
    }

    /// The shard's wake-up, for handing it work by other ways than commands.
    pub(crate) fn wake(&self) -> &Wake {
        &self.wake
    }
}

/// How to start a shard thread.
#[derive(Debug, Clone)]
pub(crate) struct Spawn {
    /// The thread's name.
    pub(crate) name: String,
    /// The shard's number (for errors).
    pub(crate) index: usize,
    /// The core to pin the thread to, if any.
    pub(crate) pin: Option<usize>,
    /// What the thread does when a turn finds no work.
    pub(crate) idle: IdleStrategy,
}

/// Starts a shard thread whose worker `setup` builds on that thread (given the shard's
/// wake-up eventfd, which outlives the worker); returns once the worker is set up.
///
/// # Errors
///
/// [`Error::Io`] if the eventfd or the thread cannot be made; the setup's own error;
/// [`Error::ShardGone`] if the setup panicked.
pub(crate) fn spawn<W, F>(spec: Spawn, setup: F) -> Result<(Link<W::Command>, JoinHandle<()>)>
where
    W: Worker,
    F: FnOnce(&Arc<Wake>) -> Result<W> + Send + 'static,
{
    let started = start::<W, F>(spec, setup)?.wait()?;
    Ok((started.link, started.thread))
}

/// A shard thread that set itself up.
pub(crate) struct Started<C> {
    pub(crate) link: Link<C>,
    pub(crate) thread: JoinHandle<()>,
    /// Ends (with a value, or disconnected if the thread panicked) when the thread is
    /// about to exit: what an async owner awaits before joining it.
    pub(crate) exited: oneshot::Receiver<()>,
}

/// A shard thread setting itself up (see [`start`]).
pub(crate) struct Starting<C> {
    link: Link<C>,
    thread: JoinHandle<()>,
    index: usize,
    /// The setup's result, once it is known.
    ready: oneshot::Receiver<Result<()>>,
    exited: oneshot::Receiver<()>,
}

impl<C> Starting<C> {
    /// Waits for the setup: the thread once it succeeded.
    pub(crate) fn wait(self) -> Result<Started<C>> {
        let (started, index, ready) = self.split();
        finish(started, index, ready.recv().map_err(|_| ()))
    }

    /// [`wait`](Self::wait) without blocking the caller's thread.
    pub(crate) async fn wait_async(self) -> Result<Started<C>> {
        let (started, index, ready) = self.split();
        finish(started, index, ready.await.map_err(|_| ()))
    }

    /// The thread, its number, and the receiver its setup answers on.
    fn split(self) -> (Started<C>, usize, oneshot::Receiver<Result<()>>) {
        let Starting {
            link,
            thread,
            index,
            ready,
            exited,
        } = self;
        let started = Started {
            link,
            thread,
            exited,
        };
        (started, index, ready)
    }
}

/// The thread once the setup said `ready` (`Err`: it said nothing, it panicked).
fn finish<C>(
    started: Started<C>,
    index: usize,
    ready: std::result::Result<Result<()>, ()>,
) -> Result<Started<C>> {
    match ready {
        Ok(Ok(())) => Ok(started),
        Ok(Err(e)) => {
            // The thread ends right after its setup failed.
            let _ = started.thread.join();
            Err(e)
        }
        Err(()) => {
            let _ = started.thread.join();
            Err(Error::ShardGone(index))
        }
    }
}

/// [`spawn`] without waiting: the thread is started and sets up its worker; the
/// [`Starting`] says when it is done.
///
/// # Errors
///
/// [`Error::Io`] if the eventfd or the thread cannot be made.
pub(crate) fn start<W, F>(spec: Spawn, setup: F) -> Result<Starting<W::Command>>
where
    W: Worker,
    F: FnOnce(&Arc<Wake>) -> Result<W> + Send + 'static,
{
    let (tx, rx) = bounded::<W::Command>(COMMAND_QUEUE);
    let wake = Arc::new(Wake::new().map_err(Error::io("creating a shard's eventfd"))?);
    let shard_wake = Arc::clone(&wake);
    let (ready_tx, ready) = oneshot::channel::<Result<()>>();
    let (exit_tx, exited) = oneshot::channel::<()>();
    let Spawn {
        name,
        index,
        pin,
        idle,
    } = spec;
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(cpu) = pin {
                pin_to(cpu);
            }
            let worker = match setup(&shard_wake) {
                Ok(worker) => {
                    let _ = ready_tx.send(Ok(()));
                    worker
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            run(worker, &rx, idle);
            // The worker (and the backend that watched the eventfd) is gone by now; the
            // eventfd goes last.
            drop(shard_wake);
            let _ = exit_tx.send(());
        })
        .map_err(Error::io("spawning a shard thread"))?;
    Ok(Starting {
        link: Link { tx, wake },
        thread,
        index,
        ready,
        exited,
    })
}

/// The shard loop. See the module docs.
fn run<W: Worker>(mut worker: W, rx: &Receiver<W::Command>, idle: IdleStrategy) {
    let mut last_work = Instant::now();
    let mut failed = false;
    loop {
        if failed {
            // No more turns: commands only (closing subscriptions still gives their
            // handlers back), until the worker is done.
            match rx.recv_timeout(BLOCK_WAIT) {
                Ok(command) => worker.command(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => worker.orphaned(),
            }
            if worker.done() {
                return;
            }
            continue;
        }
        let mut progress = false;
        loop {
            match rx.try_recv() {
                Ok(command) => {
                    worker.command(command);
                    progress = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    worker.orphaned();
                    break;
                }
            }
        }
        if worker.done() {
            return;
        }
        let wait = if progress {
            None
        } else {
            match idle {
                IdleStrategy::Block => Some(BLOCK_WAIT),
                IdleStrategy::Backoff if last_work.elapsed() >= BACKOFF_SPIN => Some(BLOCK_WAIT),
                IdleStrategy::Spin | IdleStrategy::Yield | IdleStrategy::Backoff => None,
            }
        };
        let turn =
            std::panic::catch_unwind(AssertUnwindSafe(|| worker.turn(wait, &|| !rx.is_empty())));
        match turn {
            Ok(made) => progress |= made,
            Err(payload) => {
                let reason = format!("the shard's thread panicked: {}", panic_message(&*payload));
                let told = std::panic::catch_unwind(AssertUnwindSafe(|| worker.failed(&reason)));
                if told.is_err() {
                    tracing::error!(reason, "a failed shard could not tell its subscriptions");
                }
                failed = true;
                continue;
            }
        }
        if progress {
            if idle == IdleStrategy::Backoff {
                last_work = Instant::now();
            }
        } else if wait.is_none() {
            match idle {
                IdleStrategy::Spin | IdleStrategy::Backoff => std::hint::spin_loop(),
                IdleStrategy::Yield | IdleStrategy::Block => std::thread::yield_now(),
            }
        }
    }
}

/// Pins the calling thread to core `cpu`.
///
/// # Errors
///
/// The core does not exist or is not in this process's CPU set (`sched_setaffinity`
/// refused).
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(std::io::Error::from)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(std::io::Error::from)
}

/// Pins the calling shard thread to `cpu`, or says why it could not.
fn pin_to(cpu: usize) {
    if let Err(e) = pin_current_thread(cpu) {
        tracing::warn!(cpu, error = %e, "could not pin a shard thread");
    }
}

/// The number of cores this process may run on.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
