//! Latency measurement: the clock, timestamps carried in benchmark payloads, histograms
//! and HdrHistogram interval logs.
//!
//! - [`now_ns`] reads `CLOCK_MONOTONIC`. It is the only clock read in the data plane's
//!   measurement path; protocol logic never calls it but is handed a `now`.
//! - [`write_stamp`] / [`read_stamp`] put that reading into the first [`STAMP_LEN`] bytes
//!   of a benchmark message, little-endian, so a receiver on the same host (the monotonic
//!   clock is shared by all processes of a host) can measure one-way latency.
//! - [`LatencyHistogram`] records latencies in nanoseconds, from 1 ns to 60 s at three
//!   significant digits. Its storage is allocated once, at construction; recording never
//!   allocates and never panics, out-of-range values are clamped and counted.
//! - [`IntervalLog`] writes a sequence of histograms in the standard HdrHistogram interval
//!   log format, readable by the Java and Rust HdrHistogram tools.
//!
//! Nothing in this module panics. A histogram is meant to be owned by one thread (one per
//! shard); totals are made by [`LatencyHistogram::merge`].
//!
//! # Example
//!
//! ```
//! use multipoint_dataplane::latency::{self, LatencyHistogram};
//!
//! let mut message = [0u8; 32];
//! assert!(latency::write_stamp(&mut message, latency::now_ns()));
//!
//! // ... on the receiving side:
//! let mut histogram = LatencyHistogram::new();
//! if let Some(stamp) = latency::read_stamp(&message) {
//!     histogram.record_since(stamp, latency::now_ns());
//! }
//! assert_eq!(histogram.len(), 1);
//! println!("{}", histogram.percentiles());
//! ```

mod histogram;
mod interval_log;

pub use histogram::{
    format_ns, LatencyHistogram, Percentiles, HIGHEST_NS, LOWEST_NS, SIGNIFICANT_DIGITS,
};
pub use interval_log::{IntervalLog, IntervalLogError};

/// The length of a payload timestamp: a little-endian `u64` of nanoseconds.
pub const STAMP_LEN: usize = 8;

/// Reads `CLOCK_MONOTONIC`, in nanoseconds.
///
/// Served by the vDSO, without a system call. Only differences between two readings on the
/// same host are meaningful. Returns 0 in the (impossible on Linux) case where the clock
/// cannot be read, rather than panicking.
#[must_use]
pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Reads `CLOCK_REALTIME`, in nanoseconds since 1970: the clock of the kernel's software
/// packet timestamps (`SO_TIMESTAMPING`, see [`crate::core::stamps`]), and so the one
/// they are compared with. Served by the vDSO. Returns 0 if it cannot be read (or reads
/// before 1970).
#[must_use]
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Reads `clock` (a clock id every Linux kernel has), in nanoseconds; 0 if it cannot be
/// read.
#[inline]
pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec` that outlives the call, which is all
    // clock_gettime writes to; the callers pass CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE
    // or CLOCK_REALTIME, valid clock ids on every Linux kernel this crate supports.
    let rc = unsafe { libc::clock_gettime(clock, &mut now) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Writes the timestamp `ns` into the first [`STAMP_LEN`] bytes of `msg`, little-endian.
///
/// Returns `false`, leaving `msg` untouched, if the message is shorter than that.
pub fn write_stamp(msg: &mut [u8], ns: u64) -> bool {
    match msg.first_chunk_mut::<STAMP_LEN>() {
        Some(stamp) => {
            *stamp = ns.to_le_bytes();
            true
        }
        None => false,
    }
}

/// Reads the timestamp written by [`write_stamp`]; `None` if the message is shorter than
/// [`STAMP_LEN`].
#[must_use]
pub fn read_stamp(msg: &[u8]) -> Option<u64> {
    msg.first_chunk::<STAMP_LEN>()
        .map(|stamp| u64::from_le_bytes(*stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_round_trip() {
        let mut msg = [0xAAu8; 20];
        assert!(write_stamp(&mut msg, 0x0102_0304_0506_0708));
        assert_eq!(read_stamp(&msg), Some(0x0102_0304_0506_0708));
        assert_eq!(&msg[..STAMP_LEN], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&msg[STAMP_LEN..], &[0xAA; 12]);
    }

    #[test]
    fn a_stamp_fits_a_message_of_exactly_its_length() {
        let mut msg = [0u8; STAMP_LEN];
        assert!(write_stamp(&mut msg, u64::MAX));
        assert_eq!(read_stamp(&msg), Some(u64::MAX));
    }

    #[test]
    fn a_message_too_short_for_a_stamp_is_left_alone() {
        let mut msg = [9u8; STAMP_LEN - 1];
        assert!(!write_stamp(&mut msg, 42));
        assert_eq!(msg, [9u8; STAMP_LEN - 1]);
        assert_eq!(read_stamp(&msg), None);
        assert_eq!(read_stamp(&[]), None);
    }

    #[test]
    fn the_realtime_clock_reads_after_2020() {
        assert!(realtime_ns() > 1_577_836_800 * 1_000_000_000);
    }

    #[test]
    fn the_monotonic_clock_never_goes_backwards() {
        let first = now_ns();
        let second = now_ns();
        assert!(first > 0);
        assert!(second >= first);
    }
}
