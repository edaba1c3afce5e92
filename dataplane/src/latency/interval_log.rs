//! HdrHistogram interval logs: one histogram per measurement interval.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, IntervalLogWriterError};
use hdrhistogram::serialization::{V2DeflateSerializeError, V2DeflateSerializer};

use super::LatencyHistogram;

/// The column legend the Java `HistogramLogWriter` writes, for tools that expect it.
const LEGEND: &str =
    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n";

/// Why an interval log could not be written.
#[derive(Debug, thiserror::Error)]
pub enum IntervalLogError {
    /// The underlying writer failed (disk full, closed pipe, ...).
    #[error("writing the latency interval log failed: {0}")]
    Io(#[from] io::Error),
    /// A histogram could not be encoded.
    #[error("encoding a histogram for the latency interval log failed: {0}")]
    Encode(#[source] V2DeflateSerializeError),
}

impl From<IntervalLogWriterError<V2DeflateSerializeError>> for IntervalLogError {
    fn from(error: IntervalLogWriterError<V2DeflateSerializeError>) -> Self {
        match error {
            IntervalLogWriterError::IoError(error) => Self::Io(error),
            IntervalLogWriterError::SerializeError(error) => Self::Encode(error),
        }
    }
}

/// A writer of the standard HdrHistogram interval log format, one compressed (V2 deflate)
/// histogram per line, as read by `HistogramLogProcessor`, HdrHistogram's log analyser and
/// [`hdrhistogram::serialization::interval_log::IntervalLogIterator`].
///
/// The header records the log's start as both `StartTime` and `BaseTime`, so interval
/// timestamps are seconds since that start. Values are nanoseconds, and so is the
/// `Interval_Max` column.
///
/// Writes go straight to `W`; wrap a file in a [`std::io::BufWriter`] and call
/// [`flush`](Self::flush) (or [`into_inner`](Self::into_inner)) when done. Each interval
/// allocates a little while it is encoded: this is not for the hot path.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use multipoint_dataplane::latency::{IntervalLog, LatencyHistogram};
///
/// let mut log = IntervalLog::new(Vec::new(), SystemTime::UNIX_EPOCH)?;
/// let mut histogram = LatencyHistogram::new();
/// histogram.record(12_345);
/// log.append(Duration::ZERO, Duration::from_secs(1), &histogram)?;
/// let text = String::from_utf8_lossy(log.get_ref()).into_owned();
/// assert!(text.starts_with("#[Histogram log format version 1.3]"));
/// # Ok::<(), multipoint_dataplane::latency::IntervalLogError>(())
/// ```
pub struct IntervalLog<W: Write> {
    writer: W,
    serializer: V2DeflateSerializer,
}

impl<W: Write + fmt::Debug> fmt::Debug for IntervalLog<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntervalLog")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl<W: Write> IntervalLog<W> {
    /// Starts a log on `writer` by writing its header; `start` is the wall-clock time the
    /// interval timestamps count from (read by the caller, so this type reads no clock).
    pub fn new(mut writer: W, start: SystemTime) -> Result<Self, IntervalLogError> {
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment("[Histogram log format version 1.3]")
            .add_comment("[Latencies in nanoseconds]")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut writer, &mut serializer)?;
        writer.write_all(LEGEND.as_bytes())?;
        Ok(Self { writer, serializer })
    }

    /// Appends one interval: the samples of `histogram`, collected from `start` (time
    /// since the start of the log) for `duration`.
    ///
    /// On error the log may end with a partial line.
    pub fn append(
        &mut self,
        start: Duration,
        duration: Duration,
        histogram: &LatencyHistogram,
    ) -> Result<(), IntervalLogError> {
        self.append_tagged(None, start, duration, histogram)
    }

    /// Like [`append`](Self::append), with a tag (`Tag=NAME,` in the log) so that several
    /// histograms, e.g. one per subscriber, can share one log. A tag that the format
    /// cannot carry (one with a comma, space or newline) is left out.
    pub fn append_tagged(
        &mut self,
        tag: Option<&str>,
        start: Duration,
        duration: Duration,
        histogram: &LatencyHistogram,
    ) -> Result<(), IntervalLogError> {
        let tag = tag.and_then(hdrhistogram::serialization::interval_log::Tag::new);
        // A builder with no headers writes nothing: it only lends the line writer.
        IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.writer, &mut self.serializer)?
            .write_histogram(histogram.as_hdr(), start, duration, tag)?;
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), IntervalLogError> {
        Ok(self.writer.flush()?)
    }

    /// The underlying writer.
    #[must_use]
    pub fn get_ref(&self) -> &W {
        &self.writer
    }

    /// Ends the log, handing back the underlying writer (not flushed).
    #[must_use]
    pub fn into_inner(self) -> W {
        self.writer
    }
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::Histogram;

    use super::*;

    /// Decodes standard base64 (with padding), as written in interval logs.
    fn base64_decode(text: &str) -> Vec<u8> {
        fn sextet(c: u8) -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        }
        let digits = text.trim_end_matches('=').as_bytes();
        let mut bytes = Vec::with_capacity(digits.len() * 3 / 4);
        for chunk in digits.chunks(4) {
            let bits = chunk
                .iter()
                .enumerate()
                .fold(0_u32, |acc, (i, &c)| acc | sextet(c) << (18 - 6 * i));
            let decoded = bits.to_be_bytes();
            bytes.extend_from_slice(&decoded[1..chunk.len()]);
        }
        bytes
    }

    #[test]
    fn two_intervals_read_back_with_their_counts_and_maxima() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut log = IntervalLog::new(Vec::new(), start).expect("header");

        let mut first = LatencyHistogram::new();
        for ns in [1_000, 2_000, 3_000] {
            first.record(ns);
        }
        let mut second = LatencyHistogram::new();
        for ns in 1..=1_000 {
            second.record(ns * 1_000);
        }
        log.append(Duration::ZERO, Duration::from_secs(1), &first)
            .expect("first interval");
        log.append(Duration::from_secs(1), Duration::from_secs(1), &second)
            .expect("second interval");
        let bytes = log.into_inner();

        let mut entries = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            entries.push(entry.expect("a well-formed log entry"));
        }
        assert_eq!(
            entries[0],
            LogEntry::StartTime(Duration::from_secs(1_700_000_000))
        );
        assert_eq!(
            entries[1],
            LogEntry::BaseTime(Duration::from_secs(1_700_000_000))
        );

        let mut deserializer = Deserializer::new();
        let mut intervals = Vec::new();
        for entry in &entries[2..] {
            let LogEntry::Interval(interval) = entry else {
                panic!("expected an interval, got {entry:?}");
            };
            let encoded = base64_decode(interval.encoded_histogram());
            let histogram: Histogram<u64> = deserializer
                .deserialize(&mut encoded.as_slice())
                .expect("a decodable histogram");
            intervals.push((
                interval.start_timestamp(),
                interval.duration(),
                interval.max(),
                histogram,
            ));
        }
        assert_eq!(intervals.len(), 2);

        for ((start, duration, max, histogram), (expected_start, original)) in intervals
            .iter()
            .zip([(Duration::ZERO, &first), (Duration::from_secs(1), &second)])
        {
            assert_eq!(*start, expected_start);
            assert_eq!(*duration, Duration::from_secs(1));
            assert_eq!(histogram.len(), original.len());
            assert_eq!(histogram.max(), original.as_hdr().max());
            assert_eq!(*max, original.as_hdr().max() as f64);
            assert_eq!(histogram, original.as_hdr());
        }
    }

    #[test]
    fn a_failing_writer_is_reported_as_an_io_error() {
        #[derive(Debug)]
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let error = IntervalLog::new(Broken, SystemTime::UNIX_EPOCH).expect_err("must fail");
        assert!(matches!(error, IntervalLogError::Io(_)), "{error:?}");
        assert!(error.to_string().contains("disk on fire"));
    }
}
