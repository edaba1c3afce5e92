//! The latency histogram and its percentile summary.

use std::fmt;

use hdrhistogram::Histogram;

/// The lowest latency a [`LatencyHistogram`] tells apart from zero: 1 ns.
pub const LOWEST_NS: u64 = 1;

/// The highest latency a [`LatencyHistogram`] records: 60 s. Longer ones are clamped.
pub const HIGHEST_NS: u64 = 60_000_000_000;

/// The precision of a [`LatencyHistogram`]: values are kept to three significant digits
/// (a relative error below 0.1 %).
pub const SIGNIFICANT_DIGITS: u8 = 3;

// What `Histogram::new_with_bounds` checks, checked at compile time.
const _: () = assert!(LOWEST_NS >= 1 && HIGHEST_NS >= 2 * LOWEST_NS && SIGNIFICANT_DIGITS <= 5);

/// A histogram of latencies in nanoseconds, 1 ns ..= 60 s at three significant digits.
///
/// All storage is allocated by [`new`](Self::new); [`record`](Self::record) and
/// [`record_since`](Self::record_since) never allocate and never panic. Latencies above
/// [`HIGHEST_NS`] are recorded as `HIGHEST_NS` and counted by [`clamped`](Self::clamped);
/// stamps from the future are not recorded but counted by [`skewed`](Self::skewed).
///
/// With a [mirror](Self::mirror_to), every latency recorded is also counted in a
/// histogram of the counters file (`multipoint stat --hist`).
#[derive(Debug)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
    clamped: u64,
    skewed: u64,
    mirror: Option<crate::stat::Histogram>,
}

/// A clone has no mirror: a histogram of the counters file has one writer.
impl Clone for LatencyHistogram {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            clamped: self.clamped,
            skewed: self.skewed,
            mirror: None,
        }
    }
}

impl LatencyHistogram {
    /// An empty histogram covering 1 ns ..= 60 s at three significant digits.
    ///
    /// Allocates its counts array (about 200 KiB) once, here.
    #[must_use]
    #[expect(
        clippy::expect_used,
        reason = "the bounds are constants, valid by the compile-time assertion above; \
                  new_with_bounds fails only on invalid bounds"
    )]
    pub fn new() -> Self {
        let inner = Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Self {
            inner,
            clamped: 0,
            skewed: 0,
            mirror: None,
        }
    }

    /// From now on, also counts every latency recorded in `mirror`, a histogram of this
    /// process's counters file ([`crate::stat`]), which other processes read live.
    /// [`merge`](Self::merge) and [`reset`](Self::reset) do not touch it: it holds every
    /// latency recorded since it was attached.
    pub fn mirror_to(&mut self, mirror: crate::stat::Histogram) {
        self.mirror = Some(mirror);
    }

    /// Takes the mirror off (to attach it to another histogram).
    pub fn take_mirror(&mut self) -> Option<crate::stat::Histogram> {
        self.mirror.take()
    }

    /// Records one latency of `ns` nanoseconds. Never allocates, never panics; a value
    /// above [`HIGHEST_NS`] is recorded as `HIGHEST_NS` and counted as clamped.
    pub fn record(&mut self, ns: u64) {
        if let Some(mirror) = &self.mirror {
            mirror.record(ns);
        }
        if ns > HIGHEST_NS {
            self.clamped = self.clamped.saturating_add(1);
            self.inner.saturating_record(HIGHEST_NS);
        } else {
            self.inner.saturating_record(ns);
        }
    }

    /// Records `n` latencies of `ns` nanoseconds each (as [`record`](Self::record)).
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(mirror) = &self.mirror {
            mirror.record_n(ns, n);
        }
        if ns > HIGHEST_NS {
            self.clamped = self.clamped.saturating_add(n);
            self.inner.saturating_record_n(HIGHEST_NS, n);
        } else {
            self.inner.saturating_record_n(ns, n);
        }
    }

    /// Records the latency from `stamp_ns` to `now_ns`, both [`now_ns`](super::now_ns)
    /// readings.
    ///
    /// A stamp later than `now_ns` (another host's clock, or a corrupt payload) is not a
    /// latency: it is not recorded, since a made-up 0 would drag the low percentiles down,
    /// but counted by [`skewed`](Self::skewed) so that it does not go unnoticed.
    pub fn record_since(&mut self, stamp_ns: u64, now_ns: u64) {
        match now_ns.checked_sub(stamp_ns) {
            Some(latency) => self.record(latency),
            None => self.skewed = self.skewed.saturating_add(1),
        }
    }

    /// Adds all the samples (and the clamped and skewed counts) of `other` to this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.inner.add(&other.inner).is_err() {
            // Unreachable in practice: both histograms have the same bounds, so every
            // value of `other` fits. Add what fits anyway rather than lose it.
            for value in other.inner.iter_recorded() {
                self.inner
                    .saturating_record_n(value.value_iterated_to(), value.count_at_value());
            }
        }
        self.clamped = self.clamped.saturating_add(other.clamped);
        self.skewed = self.skewed.saturating_add(other.skewed);
    }

    /// How many latencies were recorded, clamped ones included.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether no latency was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// How many recorded latencies were above [`HIGHEST_NS`] and recorded as `HIGHEST_NS`.
    #[must_use]
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// How many stamps passed to [`record_since`](Self::record_since) were in the future,
    /// and so not recorded.
    #[must_use]
    pub fn skewed(&self) -> u64 {
        self.skewed
    }

    /// Empties the histogram, keeping its storage, and zeroes the clamped and skewed
    /// counts.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.clamped = 0;
        self.skewed = 0;
    }

    /// The usual percentiles, in nanoseconds; all zero when empty.
    ///
    /// Each percentile is the highest value equivalent to the recorded ones at three
    /// significant digits (so it may exceed the true value by up to 0.1 %).
    #[must_use]
    pub fn percentiles(&self) -> Percentiles {
        if self.inner.is_empty() {
            return Percentiles::default();
        }
        let at = |quantile: f64| self.inner.value_at_quantile(quantile);
        Percentiles {
            count: self.inner.len(),
            min: self.inner.min(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p999: at(0.999),
            p9999: at(0.9999),
            max: self.inner.max(),
            // Saturating float-to-integer conversion; the mean is at most HIGHEST_NS.
            mean: self.inner.mean().round() as u64,
        }
    }

    /// The HdrHistogram inside, for everything else (iteration, serialization).
    #[must_use]
    pub fn as_hdr(&self) -> &Histogram<u64> {
        &self.inner
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A summary of a [`LatencyHistogram`], every value in nanoseconds; all zero when empty.
///
/// `Display` prints one compact line with units, e.g.
/// `min 1.00µs p50 10.2µs p90 15.0µs p99 20.1µs p99.9 85.0µs p99.99 1.20ms max 1.30ms mean 10.6µs (n=1000000)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Percentiles {
    /// The number of latencies recorded.
    pub count: u64,
    /// The lowest latency.
    pub min: u64,
    /// The median.
    pub p50: u64,
    /// The 90th percentile.
    pub p90: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The 99.9th percentile.
    pub p999: u64,
    /// The 99.99th percentile.
    pub p9999: u64,
    /// The highest latency.
    pub max: u64,
    /// The mean, rounded to the nanosecond.
    pub mean: u64,
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("no samples (n=0)");
        }
        write!(
            f,
            "min {} p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {} mean {} (n={})",
            Nanos(self.min),
            Nanos(self.p50),
            Nanos(self.p90),
            Nanos(self.p99),
            Nanos(self.p999),
            Nanos(self.p9999),
            Nanos(self.max),
            Nanos(self.mean),
            self.count
        )
    }
}

/// Formats a duration in nanoseconds with a readable unit and three significant digits:
/// `850ns`, `1.00µs`, `10.2µs`, `153µs`, `1.30ms`, `2.50s`; from 1000 s on, whole seconds.
///
/// ```
/// use multipoint_dataplane::latency::format_ns;
///
/// assert_eq!(format_ns(999), "999ns");
/// assert_eq!(format_ns(10_240), "10.2µs");
/// assert_eq!(format_ns(1_300_000), "1.30ms");
/// ```
#[must_use]
pub fn format_ns(ns: u64) -> String {
    Nanos(ns).to_string()
}

/// Displays nanoseconds as [`format_ns`] does, without allocating.
struct Nanos(u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u128, &str); 3] = [(1_000, "µs"), (1_000_000, "ms"), (1_000_000_000, "s")];
        if self.0 < 1_000 {
            return write!(f, "{}ns", self.0);
        }
        let ns = u128::from(self.0);
        for (divisor, unit) in UNITS {
            // Three significant digits in this unit (x.yz, xy.z or xyz), rounded half up;
            // if rounding reaches 1000, the next unit up takes over.
            for decimals in [2_u32, 1, 0] {
                let scale = 10_u128.pow(decimals);
                let scaled = (ns * scale + divisor / 2) / divisor;
                if scaled < 1_000 {
                    return match decimals {
                        0 => write!(f, "{scaled}{unit}"),
                        1 => write!(f, "{}.{}{unit}", scaled / 10, scaled % 10),
                        _ => write!(f, "{}.{:02}{unit}", scaled / 100, scaled % 100),
                    };
                }
            }
        }
        write!(f, "{}s", (ns + 500_000_000) / 1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `value` is within the histogram's 0.1 % precision of `expected`.
    fn close(value: u64, expected: u64) -> bool {
        value.abs_diff(expected) <= expected / 1_000 + 1
    }

    #[test]
    fn percentiles_of_a_uniform_distribution_are_where_expected() {
        let mut h = LatencyHistogram::new();
        for ns in 1..=10_000 {
            h.record(ns);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 10_000);
        assert_eq!(p.min, 1);
        assert!(close(p.p50, 5_000), "{p:?}");
        assert!(close(p.p90, 9_000), "{p:?}");
        assert!(close(p.p99, 9_900), "{p:?}");
        assert!(close(p.p999, 9_990), "{p:?}");
        assert!(close(p.p9999, 9_999), "{p:?}");
        assert!(close(p.max, 10_000), "{p:?}");
        assert!(close(p.mean, 5_000), "{p:?}");
    }

    #[test]
    fn an_empty_histogram_has_all_percentiles_zero() {
        let h = LatencyHistogram::new();
        assert!(h.is_empty());
        assert_eq!(h.percentiles(), Percentiles::default());
        assert_eq!(h.percentiles().to_string(), "no samples (n=0)");
    }

    #[test]
    fn merging_adds_the_counts_of_both() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(100);
        a.record(200);
        b.record(300);
        b.record(u64::MAX);
        b.record_since(10, 5);
        a.merge(&b);
        assert_eq!(a.len(), 4);
        assert_eq!(a.clamped(), 1);
        assert_eq!(a.skewed(), 1);
        assert_eq!(a.percentiles().min, 100);
        assert!(close(a.percentiles().max, HIGHEST_NS));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn latencies_beyond_the_range_are_clamped_and_counted() {
        let mut h = LatencyHistogram::new();
        h.record(HIGHEST_NS);
        assert_eq!(h.clamped(), 0);
        h.record(HIGHEST_NS + 1);
        h.record(u64::MAX);
        assert_eq!(h.len(), 3);
        assert_eq!(h.clamped(), 2);
        assert!(close(h.percentiles().max, HIGHEST_NS));
    }

    /// A histogram with `values` recorded, then a latency for each `(sent, received)`.
    fn filled(values: &[u64], stamps: &[(u64, u64)]) -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        values.iter().for_each(|&v| h.record(v));
        stamps
            .iter()
            .for_each(|&(sent, now)| h.record_since(sent, now));
        h
    }

    #[test]
    fn a_zero_latency_is_recorded() {
        let h = filled(&[0], &[(7, 7)]);
        assert_eq!(h.len(), 2);
        assert_eq!(h.percentiles().max, 0);
    }

    #[test]
    fn a_stamp_from_the_future_is_counted_as_skew_not_recorded() {
        let mut h = filled(&[], &[(1_000, 400)]);
        assert!(h.is_empty());
        assert_eq!(h.skewed(), 1);
        h.record_since(400, 1_000);
        assert_eq!(h.len(), 1);
        assert_eq!(h.percentiles().min, 600);
    }

    #[test]
    fn reset_empties_the_histogram_and_its_counts() {
        let mut h = filled(&[5, u64::MAX], &[(2, 1)]);
        h.reset();
        assert!(h.is_empty());
        assert_eq!((h.clamped(), h.skewed()), (0, 0));
        assert_eq!(h.percentiles(), Percentiles::default());
    }

    #[test]
    fn nanoseconds_are_shown_with_three_significant_digits_and_a_unit() {
        let cases = [
            (0, "0ns"),
            (999, "999ns"),
            (1_000, "1.00µs"),
            (1_234, "1.23µs"),
            (1_235, "1.24µs"),
            (10_240, "10.2µs"),
            (153_000, "153µs"),
            (999_499, "999µs"),
            (999_500, "1.00ms"),
            (999_999, "1.00ms"),
            (1_300_000, "1.30ms"),
            (59_960_000, "60.0ms"),
            (2_500_000_000, "2.50s"),
            (60_000_000_000, "60.0s"),
            (999_000_000_000, "999s"),
            (999_600_000_000, "1000s"),
            (u64::MAX, "18446744074s"),
        ];
        for (ns, shown) in cases {
            assert_eq!(format_ns(ns), shown, "{ns} ns");
        }
    }

    #[test]
    fn the_summary_is_one_line_with_units() {
        let p = Percentiles {
            count: 3,
            min: 900,
            p50: 10_240,
            p90: 20_000,
            p99: 30_000,
            p999: 40_000,
            p9999: 50_000,
            max: 1_300_000,
            mean: 12_000,
        };
        assert_eq!(
            p.to_string(),
            "min 900ns p50 10.2µs p90 20.0µs p99 30.0µs p99.9 40.0µs p99.99 50.0µs \
             max 1.30ms mean 12.0µs (n=3)"
        );
    }
}
