//! `--plot FILE.svg`: the latency percentile distribution as a hand-written SVG, drawn the
//! way HdrHistogram's plotter draws it.
//!
//! The x axis is the percentile on a log scale: a step at quantile `q` sits at
//! `log10(1 / (1 - q))`, so 0 %, 90 %, 99 %, 99.9 %, ... are evenly spaced ticks, and the
//! tail gets as much room as the body. The y axis is latency on a log scale too, one tick
//! per decade (100 ns, 1 µs, 10 µs, ...; fainter lines at 2 and 5 times each), from the
//! decade below the smallest value to the one above the largest, so that a 70 µs median
//! and a 5 ms maximum are both readable. Each series (a subscriber, the round trip) is one
//! polyline with one point per percentile step of HdrHistogram's percentile iteration
//! (five steps per halving of the distance to 100 %, as its percentile output prints),
//! dashed lines across the plot at its p50, p99, p99.9 and max with their values in the
//! right margin, and its sample count in the legend.
//!
//! [`svg`] is plain string building: no I/O, no clock; only [`PlotFile`] touches a file.
//! Nothing here panics.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use multipoint_dataplane::latency::{format_ns, LatencyHistogram};

use crate::error::{Error, Result};
use crate::report::Grouped;

/// HdrHistogram's usual resolution of a percentile distribution.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The x axis always reaches this many decades of `1 / (1 - q)` (99.9999 %), more if
/// the data goes further.
const MIN_DECADES: u32 = 6;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 90.0;
/// The right margin holds the marks' labels.
const RIGHT: f64 = WIDTH - 150.0;
/// The least distance between two marks' labels.
const LABEL_GAP: f64 = 13.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = HEIGHT - 70.0;
const COLOURS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"];

/// One step of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The quantile, `0.0 <= quantile < 1.0`.
    pub quantile: f64,
    /// The latency at that quantile, in nanoseconds.
    pub ns: u64,
}

/// One line of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend.
    pub label: String,
    /// The steps, in increasing quantile.
    pub steps: Vec<Step>,
    /// The values marked across the plot: p50, p99, p99.9 and max, in that order (empty for
    /// an empty histogram).
    pub marks: Vec<Mark>,
    /// The number of samples.
    pub count: u64,
}

/// A value marked on the latency axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// What it is: `p50`, `p99`, `p99.9`, `max`.
    pub name: &'static str,
    /// Its latency in nanoseconds.
    pub ns: u64,
}

impl Series {
    /// The percentile distribution of `histogram`, labelled `label`.
    pub fn new(label: impl Into<String>, histogram: &LatencyHistogram) -> Series {
        let p = histogram.percentiles();
        let marks = if p.count == 0 {
            Vec::new()
        } else {
            [
                ("p50", p.p50),
                ("p99", p.p99),
                ("p99.9", p.p999),
                ("max", p.max),
            ]
            .into_iter()
            .map(|(name, ns)| Mark { name, ns })
            .collect()
        };
        Series {
            label: label.into(),
            steps: steps(histogram),
            marks,
            count: p.count,
        }
    }
}

/// The percentile steps of `histogram`, as HdrHistogram iterates them; empty for an empty
/// histogram.
///
/// The iteration ends at quantile 1.0 (the maximum), which has no place on a log axis: that
/// last step is put at `1 - 1/n` for `n` samples (no further than the resolution of `n`
/// samples), or at the previous step's quantile if that is further.
pub fn steps(histogram: &LatencyHistogram) -> Vec<Step> {
    let hdr = histogram.as_hdr();
    let n = hdr.len();
    if n == 0 {
        return Vec::new();
    }
    let resolution = 1.0 - 1.0 / n as f64;
    let mut steps: Vec<Step> = Vec::new();
    for value in hdr.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        let mut quantile = value.quantile_iterated_to();
        if quantile >= 1.0 {
            let previous = steps.last().map_or(0.0, |s| s.quantile);
            quantile = resolution.max(previous);
        }
        steps.push(Step {
            quantile,
            ns: value.value_iterated_to(),
        });
    }
    steps
}

/// The SVG document of `series` under `title`.
pub fn svg(title: &str, series: &[Series]) -> String {
    let values = || {
        series.iter().flat_map(|s| {
            s.steps
                .iter()
                .map(|step| step.ns)
                .chain(s.marks.iter().map(|m| m.ns))
        })
    };
    let axis = LogAxis::new(
        values().min().unwrap_or(1_000),
        values().max().unwrap_or(1_000),
    );
    let decades = series
        .iter()
        .flat_map(|s| s.steps.iter().map(|step| decades_of(step.quantile)))
        .fold(f64::from(MIN_DECADES), f64::max)
        .ceil();
    let x_of = |quantile: f64| LEFT + (RIGHT - LEFT) * decades_of(quantile).min(decades) / decades;

    let mut out = String::with_capacity(4096 + series.len() * 16 * 1024);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"30\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        (LEFT + RIGHT) / 2.0,
        escape(title)
    );

    // Grid: percentile decades along x; latency decades along y, fainter at 2 and 5 times.
    let _ = writeln!(out, "<g stroke=\"#dddddd\" stroke-width=\"1\">");
    for k in 0..=decades as u32 {
        let x = LEFT + (RIGHT - LEFT) * f64::from(k) / decades;
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{BOTTOM}\"/>"
        );
    }
    for ns in axis.decades() {
        let y = axis.y_of(ns as f64);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{RIGHT}\" y2=\"{y:.1}\"/>"
        );
    }
    let _ = writeln!(out, "</g>");
    let _ = writeln!(out, "<g stroke=\"#f0f0f0\" stroke-width=\"1\">");
    for ns in axis.minor() {
        let y = axis.y_of(ns);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{RIGHT}\" y2=\"{y:.1}\"/>"
        );
    }
    let _ = writeln!(out, "</g>");
    let _ = writeln!(
        out,
        "<g stroke=\"black\" stroke-width=\"1\">\n\
         <line x1=\"{LEFT}\" y1=\"{BOTTOM}\" x2=\"{RIGHT}\" y2=\"{BOTTOM}\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{BOTTOM}\"/>\n</g>"
    );
    for k in 0..=decades as u32 {
        let x = LEFT + (RIGHT - LEFT) * f64::from(k) / decades;
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            BOTTOM + 18.0,
            percentile_label(k)
        );
    }
    for ns in axis.decades() {
        let y = axis.y_of(ns as f64);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 8.0,
            y + 4.0,
            decade_label(ns)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>",
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 45.0
    );
    let (ly, lx) = ((TOP + BOTTOM) / 2.0, 25.0);
    let _ = writeln!(
        out,
        "<text x=\"{lx}\" y=\"{ly}\" text-anchor=\"middle\" transform=\"rotate(-90 {lx} {ly})\">\
         latency (log scale)</text>"
    );

    // The marks under the lines, the lines, then the legend on top of them.
    let mut labels: Vec<(f64, &'static str, String)> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for mark in &s.marks {
            let y = axis.y_of(mark.ns as f64);
            let _ = writeln!(
                out,
                "<line class=\"mark\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{RIGHT}\" y2=\"{y:.1}\" \
                 stroke=\"{colour}\" stroke-width=\"1\" stroke-dasharray=\"4 3\" \
                 stroke-opacity=\"0.6\"/>"
            );
            labels.push((y, colour, format!("{} {}", mark.name, format_ns(mark.ns))));
        }
    }
    for (y, colour, text) in spread(labels) {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
            RIGHT + 6.0,
            y + 4.0,
            escape(&text)
        );
    }
    let mut drawn = 0;
    for (i, s) in series.iter().enumerate() {
        if s.steps.is_empty() {
            continue;
        }
        let colour = COLOURS[i % COLOURS.len()];
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\""
        );
        for (j, step) in s.steps.iter().enumerate() {
            let sep = if j == 0 { "" } else { " " };
            let _ = write!(
                out,
                "{sep}{:.1},{:.1}",
                x_of(step.quantile),
                axis.y_of(step.ns as f64)
            );
        }
        let _ = writeln!(out, "\"/>");
        let y = TOP + 18.0 + 18.0 * f64::from(drawn);
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" \
             stroke-width=\"3\"/>\n<text x=\"{}\" y=\"{}\">{} (n={})</text>",
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            y + 4.0,
            escape(&s.label),
            Grouped(s.count),
        );
        drawn += 1;
    }
    if drawn == 0 {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#777777\">no latency \
             samples</text>",
            (LEFT + RIGHT) / 2.0,
            (TOP + BOTTOM) / 2.0
        );
    }
    out.push_str("</svg>\n");
    out
}

/// The marks' labels `(y, colour, text)`, moved apart where they would overlap: in order of
/// height, each at least [`LABEL_GAP`] below the one above it, and the whole column moved
/// up if that pushed the last below the plot.
fn spread(mut labels: Vec<(f64, &'static str, String)>) -> Vec<(f64, &'static str, String)> {
    labels.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut floor = f64::NEG_INFINITY;
    for label in &mut labels {
        label.0 = label.0.max(floor);
        floor = label.0 + LABEL_GAP;
    }
    if let Some(last) = labels.last().map(|l| l.0) {
        let over = (last - BOTTOM).max(0.0);
        for label in &mut labels {
            label.0 -= over;
        }
    }
    labels
}

/// The file of a plot: created (empty) before the run, so that a path that cannot be
/// written is found before anything runs; the plot is written into it at the end.
#[derive(Debug)]
pub struct PlotFile {
    path: PathBuf,
    file: File,
}

impl PlotFile {
    /// Creates (or truncates) `path`.
    ///
    /// # Errors
    ///
    /// [`Error::CreatePlot`], naming the path.
    pub fn create(path: &Path) -> Result<PlotFile> {
        let file = File::create(path).map_err(|source| Error::CreatePlot {
            path: path.to_owned(),
            source,
        })?;
        Ok(PlotFile {
            path: path.to_owned(),
            file,
        })
    }

    /// Creates the file asked for, if any.
    ///
    /// # Errors
    ///
    /// As [`PlotFile::create`].
    pub fn create_if(path: Option<&Path>) -> Result<Option<PlotFile>> {
        path.map(PlotFile::create).transpose()
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes [`svg`] of `series` under `title` into the file.
    ///
    /// # Errors
    ///
    /// [`Error::WritePlot`] when the file cannot be written.
    pub fn write(mut self, title: &str, series: &[Series]) -> Result<()> {
        let svg = svg(title, series);
        self.file
            .write_all(svg.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| Error::WritePlot {
                path: self.path,
                source,
            })
    }
}

/// `log10(1 / (1 - q))`: 0 at 0 %, 1 at 90 %, 2 at 99 %, ...; a quantile of 1 or more
/// (no place on the axis) counts as 16 decades, about the resolution of an `f64`.
fn decades_of(quantile: f64) -> f64 {
    let x = 1.0 / (1.0 - quantile.max(0.0));
    if x.is_finite() {
        x.log10().clamp(0.0, 16.0)
    } else {
        16.0
    }
}

/// The tick label of decade `k`: 0%, 90%, 99%, 99.9%, ...
fn percentile_label(k: u32) -> String {
    match k {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        2 => "99%".to_owned(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
}

/// The latency axis: log10 of nanoseconds, from the decade at or below the smallest value
/// to the decade above the largest (at least one decade).
#[derive(Debug, Clone, Copy, PartialEq)]
struct LogAxis {
    /// The lowest decade's exponent: the axis starts at 10^low ns.
    low: u32,
    /// The highest decade's exponent.
    high: u32,
}

impl LogAxis {
    /// An axis that holds `min_ns` to `max_ns` (0 counts as 1 ns).
    fn new(min_ns: u64, max_ns: u64) -> LogAxis {
        let exponent = |ns: u64| ns.max(1).ilog10();
        let low = exponent(min_ns);
        let max_ns = max_ns.max(min_ns).max(1);
        let mut high = exponent(max_ns);
        if 10u64.checked_pow(high) != Some(max_ns) || high == low {
            high += 1;
        }
        LogAxis { low, high }
    }

    /// The height of `ns` nanoseconds.
    fn y_of(&self, ns: f64) -> f64 {
        let span = f64::from(self.high - self.low);
        let at = (ns.max(1.0).log10() - f64::from(self.low)) / span;
        BOTTOM - (BOTTOM - TOP) * at.clamp(0.0, 1.0)
    }

    /// The decades on the axis, in nanoseconds: 10^low to 10^high.
    fn decades(&self) -> impl Iterator<Item = u64> {
        (self.low..=self.high).filter_map(|k| 10u64.checked_pow(k))
    }

    /// The values between decades that get a fainter line: 2 and 5 times each.
    fn minor(&self) -> impl Iterator<Item = f64> {
        (self.low..self.high).flat_map(|k| [2.0, 5.0].map(|m| m * 10f64.powi(k as i32)))
    }
}

/// The tick label of the decade `ns` (a power of ten): `100 ns`, `1 µs`, `10 ms`, `1 s`.
fn decade_label(ns: u64) -> String {
    let (value, unit) = match ns {
        0..1_000 => (ns, "ns"),
        1_000..1_000_000 => (ns / 1_000, "µs"),
        1_000_000..1_000_000_000 => (ns / 1_000_000, "ms"),
        _ => (ns / 1_000_000_000, "s"),
    };
    format!("{value} {unit}")
}

/// `s` with the characters XML gives meaning to escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> LatencyHistogram {
        let mut h = LatencyHistogram::new();
        for i in 1..=10_000u64 {
            h.record(10_000 + i);
        }
        h.record(2_000_000);
        h
    }

    fn points(svg: &str) -> Vec<usize> {
        svg.split("points=\"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().split_whitespace().count())
            .collect()
    }

    #[test]
    fn the_plot_is_an_svg_with_percentile_ticks_and_a_point_per_step() {
        let series = Series::new("one-way <sub1>", &histogram());
        let svg = svg("multipoint & friends", std::slice::from_ref(&series));
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        for tick in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "no tick {tick}");
        }
        assert_eq!(points(&svg), vec![series.steps.len()]);
        assert!(series.steps.len() > 20, "{}", series.steps.len());
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
        assert!(svg.contains("one-way &lt;sub1&gt; (n=10,001)"), "{svg}");
        assert!(svg.contains("multipoint &amp; friends"));
        assert!(svg.contains("latency (log scale)"));
    }

    #[test]
    fn the_latency_axis_has_a_tick_per_decade_around_the_values() {
        // 10 µs to 2 ms: decades 10 µs, 100 µs, 1 ms, 10 ms.
        let svg = svg("t", &[Series::new("a", &histogram())]);
        for tick in ["10 µs", "100 µs", "1 ms", "10 ms"] {
            assert!(
                svg.contains(&format!(">{tick}</text>")),
                "no tick {tick}: {svg}"
            );
        }
        assert!(!svg.contains(">1 µs</text>") && !svg.contains(">100 ms</text>"));
        let axis = LogAxis::new(10_001, 2_000_000);
        assert_eq!((axis.low, axis.high), (4, 7));
        // Each decade is the same height: a 73 µs median is not on the baseline.
        let decade = axis.y_of(1e4) - axis.y_of(1e5);
        assert!((decade - (axis.y_of(1e6) - axis.y_of(1e7))).abs() < 1e-9);
        assert!(axis.y_of(73_000.0) < BOTTOM - decade / 2.0);
        assert_eq!(LogAxis::new(1_000, 1_000), LogAxis { low: 3, high: 4 });
        assert_eq!(LogAxis::new(0, 0), LogAxis { low: 0, high: 1 });
        assert_eq!(LogAxis::new(900, 1_000), LogAxis { low: 2, high: 3 });
        assert_eq!(decade_label(100), "100 ns");
        assert_eq!(decade_label(1_000_000_000), "1 s");
    }

    #[test]
    fn p50_p99_p999_and_max_are_marked_with_their_values() {
        let h = histogram();
        let p = h.percentiles();
        let series = Series::new("a", &h);
        let names: Vec<&str> = series.marks.iter().map(|m| m.name).collect();
        assert_eq!(names, ["p50", "p99", "p99.9", "max"]);
        let svg = svg("t", &[series]);
        assert_eq!(svg.matches("class=\"mark\"").count(), 4);
        for (name, ns) in [
            ("p50", p.p50),
            ("p99", p.p99),
            ("p99.9", p.p999),
            ("max", p.max),
        ] {
            let label = format!(">{name} {}</text>", format_ns(ns));
            assert!(svg.contains(&label), "no {label}: {svg}");
        }
    }

    #[test]
    fn labels_that_would_overlap_are_moved_apart() {
        let labels = spread(vec![
            (100.0, "a", "x".into()),
            (101.0, "a", "y".into()),
            (BOTTOM, "a", "z".into()),
        ]);
        let ys: Vec<f64> = labels.iter().map(|l| l.0).collect();
        assert!(
            ys.windows(2).all(|w| w[1] - w[0] >= LABEL_GAP - 1e-9),
            "{ys:?}"
        );
        assert!(ys[2] <= BOTTOM);
    }

    #[test]
    fn steps_rise_in_quantile_and_end_at_the_maximum() {
        let steps = steps(&histogram());
        assert!(steps.windows(2).all(|w| w[0].quantile <= w[1].quantile));
        assert!(steps.iter().all(|s| s.quantile < 1.0));
        assert_eq!(steps.first().map(|s| s.quantile), Some(0.0));
        let last = steps.last().unwrap();
        assert!((1_999_000..=2_001_000).contains(&last.ns), "{last:?}");
    }

    #[test]
    fn each_series_is_a_line_and_an_empty_plot_says_so() {
        let mut h = LatencyHistogram::new();
        h.record(900);
        let two = [Series::new("a", &histogram()), Series::new("b", &h)];
        assert_eq!(points(&svg("t", &two)).len(), 2);

        let empty = svg("t", &[Series::new("a", &LatencyHistogram::new())]);
        assert!(empty.starts_with("<svg"));
        assert!(points(&empty).is_empty());
        assert!(empty.contains("no latency samples"));
        assert!(empty.contains(">99.999%</text>"));
        assert!(!empty.contains("class=\"mark\""));
    }

    #[test]
    fn percentiles_are_labelled_by_their_nines() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(3), "99.9%");
        assert_eq!(percentile_label(6), "99.9999%");
    }
}
