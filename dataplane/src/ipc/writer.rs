//! The writer of a broadcast ring (see the [module docs](super)).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering};

use memmap2::MmapMut;

use super::layout::{
    self, Layout, END, FAILURE, GAP, HEADER_LEN, LINE, MESSAGE, OFF_CLOSED, OFF_HEARTBEAT,
    OFF_INTENT, OFF_MESSAGES, OFF_RECORDS, RECOVERED,
};
use super::protocol::WriterIndex;
use super::shm::{self, View};
use super::{ring_path, IpcConfig};
use crate::core::lines::Line;
use crate::core::receive::Handler;
use crate::core::sequence::Gap;
use crate::error::{Error, Result};
use crate::latency::now_ns;
use crate::stat::kinds::Counters as _;

/// A writer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpcWriterStats {
    /// The ring's size in bytes.
    pub capacity: usize,
    /// Records written (messages and the other events).
    pub records: u64,
    /// Messages written.
    pub messages: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Times the writer went round the ring (whole laps of its bytes).
    pub laps: u64,
    /// Messages a handler-fed ring could not take (larger than a quarter of the ring).
    pub too_large: u64,
}

/// The one writer of a broadcast ring in `/dev/shm` (see the [module docs](super)).
///
/// ```no_run
/// use multipoint_dataplane::ipc::{IpcConfig, IpcWriter};
///
/// let mut writer = IpcWriter::create("feed-a", IpcConfig::default())?;
/// for sequence in 1..=1000 {
///     writer.offer(sequence, b"hello")?;
/// }
/// writer.flush(); // publishes the batch
/// writer.close(); // readers read the rest, then see the end
/// # Ok::<(), multipoint_dataplane::Error>(())
/// ```
pub struct IpcWriter {
    map: MmapMut,
    view: View,
    index: WriterIndex,
    path: PathBuf,
    file_id: Option<(u64, u64)>,
    capacity: usize,
    max_payload: usize,
    /// The sequence number the stream expects next (0: not known yet).
    next_sequence: u64,
    stats: IpcWriterStats,
    closed: bool,
    /// Its entry in the counters file (`multipoint stat`), written at most once per
    /// coarse clock tick from [`flush`](Self::flush) and at close.
    stat: Option<crate::stat::Entry>,
    cadence: crate::stat::Cadence,
}

// SAFETY: the raw pointers in `view` point into `map`, which the writer owns and which
// moves with it (a mapping's address does not change when the MmapMut moves); nothing
// else in this process holds them, and the writer is used by one thread at a time.
unsafe impl Send for IpcWriter {}

impl std::fmt::Debug for IpcWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpcWriter")
            .field("path", &self.path)
            .field("stats", &self.stats)
            .finish()
    }
}

impl IpcWriter {
    /// Makes the ring `name` (`/dev/shm/multipoint-ipc-NAME`): a new file, replacing any
    /// file of that name whose writer is gone (its readers see it replaced).
    ///
    /// # Errors
    ///
    /// [`Error::IpcName`] for a bad name, [`Error::Config`] for a capacity out of range,
    /// [`Error::IpcInUse`] when a live process writes that ring, [`Error::IpcIo`] when
    /// the file cannot be made or mapped (`/dev/shm` full or not writable).
    pub fn create(name: &str, config: IpcConfig) -> Result<IpcWriter> {
        let path = ring_path(name)?;
        let capacity = config.capacity;
        if !capacity.is_power_of_two()
            || !(IpcConfig::MIN_CAPACITY..=IpcConfig::MAX_CAPACITY).contains(&capacity)
        {
            return Err(Error::Config(format!(
                "an IPC ring's capacity must be a power of two from {} to {} bytes, not {capacity}",
                IpcConfig::MIN_CAPACITY,
                IpcConfig::MAX_CAPACITY
            )));
        }
        if let Some(pid) = live_writer(&path) {
            return Err(Error::IpcInUse { path, pid });
        }
        let pid = std::process::id();
        let start_time = shm::start_time(None).unwrap_or(0);
        let temporary = temporary_path(&path, pid);
        let io = |op| {
            let path = temporary.clone();
            move |source| Error::IpcIo { op, path, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(config.mode)
            .open(&temporary)
            .map_err(io("creating"))?;
        let made = (|| {
            file.set_len((HEADER_LEN + capacity) as u64)
                .map_err(io("sizing"))?;
            // SAFETY: the file was just created by this process under a name nobody else
            // uses (pid and counter); the only other mappers are readers, which map it
            // read-only after the rename, so nothing truncates it under the mapping.
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .len(HEADER_LEN + capacity)
                    .populate()
                    .map_mut(&file)
            }
            .map_err(io("mapping"))?;
            Ok::<_, Error>(map)
        })();
        let mut map = match made {
            Ok(map) => map,
            Err(e) => {
                let _ = std::fs::remove_file(&temporary);
                return Err(e);
            }
        };
        let layout = Layout {
            capacity,
            pid,
            start_time,
            session: config.session.map(|s| *s.as_bytes()),
            rerequest: config.rerequest,
        };
        map[..OFF_INTENT].copy_from_slice(&layout.encode());
        // SAFETY: the mapping is page-aligned, HEADER_LEN + capacity long, writable, and
        // owned by the writer, which keeps it as long as the view.
        let view = unsafe { View::new(map.as_mut_ptr(), capacity) };
        view.atomic(OFF_HEARTBEAT)
            .store(now_ns(), Ordering::Release);
        let file_id = shm::open_file_id(&file);
        if let Err(source) = std::fs::rename(&temporary, &path) {
            let _ = std::fs::remove_file(&temporary);
            return Err(Error::IpcIo {
                op: "publishing (rename)",
                path,
                source,
            });
        }
        let stat =
            IpcWriterStats::register(name, &format!("{} ({capacity} bytes)", path.display()));
        Ok(IpcWriter {
            map,
            view,
            index: WriterIndex::new(capacity as u64, layout::BLOCKS),
            path,
            file_id,
            capacity,
            max_payload: layout::max_payload(capacity),
            next_sequence: 0,
            stats: IpcWriterStats {
                capacity,
                ..IpcWriterStats::default()
            },
            closed: false,
            stat,
            cadence: crate::stat::Cadence::default(),
        })
    }

    /// The ring's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's counters.
    pub fn stats(&self) -> IpcWriterStats {
        IpcWriterStats {
            laps: self.index.tail / self.capacity as u64,
            ..self.stats
        }
    }

    /// Writes message `sequence` (not yet published: see [`flush`](Self::flush); a batch
    /// of an eighth of the ring is published on its own). Never waits.
    ///
    /// # Errors
    ///
    /// [`Error::IpcMessageTooLarge`] for a message over a quarter of the ring.
    pub fn offer(&mut self, sequence: u64, message: &[u8]) -> Result<()> {
        if message.len() > self.max_payload {
            return Err(Error::IpcMessageTooLarge {
                len: message.len(),
                capacity: self.capacity,
                limit: self.max_payload,
            });
        }
        self.message(MESSAGE, sequence, message);
        Ok(())
    }

    /// Writes a message into the ring (the caller checked its length).
    fn message(&mut self, kind: u32, sequence: u64, message: &[u8]) {
        self.next_sequence = self.next_sequence.max(sequence.saturating_add(1));
        self.record(kind, sequence, message);
        self.stats.messages += 1;
        self.stats.bytes += message.len() as u64;
    }

    /// Writes one record of at most `max_payload` bytes.
    fn record(&mut self, kind: u32, value: u64, payload: &[u8]) {
        let at = self
            .index
            .write(&self.view, self.view.indices(), kind, payload.len(), value);
        // SAFETY: `write` claimed [at, at + len) inside the ring (the record fits before
        // the end: it padded otherwise) and published the intent to overwrite it; the
        // payload is another buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                self.view.ring().add(at),
                payload.len(),
            );
        }
        self.stats.records += 1;
        if self.index.unpublished() >= (self.capacity / 8) as u64 {
            self.publish();
        }
    }

    fn publish(&mut self) {
        if self.index.publish(self.view.indices()) {
            self.view
                .atomic(OFF_RECORDS)
                .store(self.index.index, Ordering::Relaxed);
            self.view
                .atomic(OFF_MESSAGES)
                .store(self.stats.messages, Ordering::Relaxed);
        }
    }

    /// Publishes what was written since the last flush (one store) and beats the
    /// heartbeat. Call it once per batch; an idle writer should call
    /// [`heartbeat`](Self::heartbeat) every few milliseconds.
    pub fn flush(&mut self) {
        self.publish();
        self.heartbeat();
        if self.stat.is_some() && self.cadence.due() {
            self.publish_stat();
        }
    }

    fn publish_stat(&self) {
        if let Some(entry) = &self.stat {
            self.stats().publish(entry);
        }
    }

    /// Stamps the heartbeat (`CLOCK_MONOTONIC` now), so that readers see the writer
    /// alive.
    pub fn heartbeat(&mut self) {
        self.view
            .atomic(OFF_HEARTBEAT)
            .store(now_ns(), Ordering::Release);
    }

    /// Writes an end of session (the stream's, not the ring's: see
    /// [`close`](Self::close)) and publishes it.
    pub fn end_of_session(&mut self) {
        self.record(END, self.next_sequence, &[]);
        self.flush();
    }

    /// Publishes the rest, marks the ring closed (readers read what is left, then see
    /// the end) and removes its file, if its name still names it. Dropping the writer
    /// does the same.
    pub fn close(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.flush();
        self.publish_stat();
        // The name goes before the ring is marked closed: a new writer takes a name only
        // once its writer closed or died, so it cannot have put its ring there yet.
        if self.file_id.is_some() && shm::file_id(&self.path) == self.file_id {
            let _ = std::fs::remove_file(&self.path);
        }
        self.view.atomic(OFF_CLOSED).store(1, Ordering::Release);
        let _ = self.map.flush_async();
    }
}

impl Drop for IpcWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A writer fed by a subscription: each event becomes a record, published at each of
/// the shard's turns (`flush`).
impl Handler for IpcWriter {
    fn on_message(&mut self, sequence: u64, message: &[u8]) {
        if message.len() > self.max_payload {
            self.stats.too_large += 1;
            return;
        }
        self.message(MESSAGE, sequence, message);
    }
    fn on_recovered(&mut self, sequence: u64, message: &[u8]) {
        if message.len() > self.max_payload {
            self.stats.too_large += 1;
            return;
        }
        self.message(RECOVERED, sequence, message);
    }
    fn on_gap(&mut self, gap: Gap) {
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&gap.first_missing.to_le_bytes());
        payload[8..].copy_from_slice(&gap.count.to_le_bytes());
        self.next_sequence = self.next_sequence.max(gap.end());
        self.record(GAP, self.next_sequence, &payload);
    }
    fn on_end_of_session(&mut self) {
        self.end_of_session();
    }
    fn on_line(&mut self, line: Line, up: bool) {
        let payload = [u8::from(line == Line::B), u8::from(up)];
        self.record(LINE, self.next_sequence, &payload);
    }
    fn on_failure(&mut self, reason: &str) {
        let bytes = reason.as_bytes();
        let cut = bytes.len().min(self.max_payload.min(4096));
        let reason = match std::str::from_utf8(&bytes[..cut]) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        };
        self.record(FAILURE, self.next_sequence, reason.as_bytes());
        self.flush();
    }
    fn flush(&mut self) {
        IpcWriter::flush(self);
    }
}

/// The pid of a live process that writes the ring at `path`, if any.
fn live_writer(path: &Path) -> Option<u32> {
    let bytes = std::fs::File::open(path).ok().and_then(|mut f| {
        use std::io::Read;
        let mut header = vec![0u8; HEADER_LEN];
        f.read_exact(&mut header).ok()?;
        Some(header)
    })?;
    let len = std::fs::metadata(path).ok()?.len();
    let layout = Layout::check(&bytes[..OFF_INTENT], len).ok()?;
    let mut closed = [0u8; 8];
    closed.copy_from_slice(&bytes[OFF_CLOSED..OFF_CLOSED + 8]);
    let closed = StdAtomicU64::new(u64::from_le_bytes(closed));
    let me = std::process::id();
    (closed.load(Ordering::Relaxed) == 0
        && layout.pid != me
        && shm::alive(layout.pid, layout.start_time))
    .then_some(layout.pid)
}

/// A name nobody else uses, beside `path`, for the file while it is made.
fn temporary_path(path: &Path, pid: u32) -> PathBuf {
    static COUNTER: StdAtomicU64 = StdAtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{pid}.{n}.tmp"));
    PathBuf::from(name)
}
