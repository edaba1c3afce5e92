//! `--plot FILE.svg`: the latency percentile distribution as a hand-written SVG, drawn the
//! way HdrHistogram's plotter draws it.
//!
//! The x axis is the percentile on a log scale: a step at quantile `q` sits at
//! `log10(1 / (1 - q))`, so 0 %, 90 %, 99 %, 99.9 %, ... are evenly spaced ticks, and the
//! tail gets as much room as the body. The y axis is latency, linear from zero, in the
//! unit that suits the largest value. Each series (a subscriber, the round trip) is one
//! polyline with one point per percentile step of HdrHistogram's percentile iteration
//! (five steps per halving of the distance to 100 %, as its percentile output prints).
//!
//! [`svg`] is plain string building: no I/O, no clock; only [`PlotFile`] touches a file.
//! Nothing here panics.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use multipoint_dataplane::latency::LatencyHistogram;

use crate::error::{Error, Result};

/// HdrHistogram's usual resolution of a percentile distribution.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The x axis always reaches this many decades of `1 / (1 - q)` (99.9999 %), more if
/// the data goes further.
const MIN_DECADES: u32 = 6;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = WIDTH - 45.0;
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
}

impl Series {
    /// The percentile distribution of `histogram`, labelled `label`.
    pub fn new(label: impl Into<String>, histogram: &LatencyHistogram) -> Series {
        Series {
            label: label.into(),
            steps: steps(histogram),
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
    let max_ns = series
        .iter()
        .flat_map(|s| s.steps.iter().map(|step| step.ns))
        .max();
    let axis = YAxis::new(max_ns.unwrap_or(1_000));
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
        WIDTH / 2.0,
        escape(title)
    );

    // Grid and tick labels: percentiles along x, latency along y.
    let _ = writeln!(out, "<g stroke=\"#dddddd\" stroke-width=\"1\">");
    for k in 0..=decades as u32 {
        let x = LEFT + (RIGHT - LEFT) * f64::from(k) / decades;
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{BOTTOM}\"/>"
        );
    }
    for i in 0..=axis.ticks {
        let y = axis.y_of(i * axis.step);
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
    for i in 0..=axis.ticks {
        let y = axis.y_of(i * axis.step);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 8.0,
            y + 4.0,
            axis.label(i * axis.step)
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
         latency ({})</text>",
        axis.unit
    );

    // The lines, then the legend on top of them.
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
                axis.y_of(step.ns)
            );
        }
        let _ = writeln!(out, "\"/>");
        let y = TOP + 18.0 + 18.0 * f64::from(drawn);
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" \
             stroke-width=\"3\"/>\n<text x=\"{}\" y=\"{}\">{}</text>",
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            y + 4.0,
            escape(&s.label)
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

/// The latency axis: from 0 to `ticks * step` nanoseconds, labelled in `unit`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct YAxis {
    step: u64,
    ticks: u64,
    unit: &'static str,
    divisor: f64,
    decimals: usize,
}

impl YAxis {
    /// Ticks at a round step (1, 2 or 5 times a power of ten), about five of them, the
    /// last at or above `max_ns`.
    fn new(max_ns: u64) -> YAxis {
        let max_ns = max_ns.max(1);
        let raw = (max_ns as f64 / 5.0).max(1.0);
        let magnitude = 10f64.powi(raw.log10().floor() as i32);
        let step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(10.0 * magnitude)
            .round()
            .max(1.0) as u64;
        let ticks = max_ns.div_ceil(step).max(1);
        let top = ticks.saturating_mul(step);
        let (unit, divisor) = match top {
            0..1_000 => ("ns", 1.0),
            1_000..1_000_000 => ("µs", 1e3),
            1_000_000..1_000_000_000 => ("ms", 1e6),
            _ => ("s", 1e9),
        };
        // The step in the unit is 1, 2 or 5 times a power of ten: as many decimals as that
        // power is below zero.
        let in_unit = step as f64 / divisor;
        let decimals = (-in_unit.log10().floor()).max(0.0) as usize;
        YAxis {
            step,
            ticks,
            unit,
            divisor,
            decimals,
        }
    }

    fn y_of(&self, ns: u64) -> f64 {
        let top = (self.ticks * self.step) as f64;
        BOTTOM - (BOTTOM - TOP) * (ns as f64 / top).min(1.0)
    }

    fn label(&self, ns: u64) -> String {
        format!("{:.*}", self.decimals, ns as f64 / self.divisor)
    }
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
        assert!(svg.contains("one-way &lt;sub1&gt;") && svg.contains("multipoint &amp; friends"));
        assert!(svg.contains("latency (ms)"), "2 ms is the largest value");
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
    }

    #[test]
    fn the_latency_axis_has_round_steps_in_a_fitting_unit() {
        let axis = YAxis::new(2_000_000);
        assert_eq!((axis.step, axis.ticks, axis.unit), (500_000, 4, "ms"));
        assert_eq!(axis.label(500_000), "0.5");
        let axis = YAxis::new(12_345);
        assert_eq!((axis.step, axis.ticks, axis.unit), (5_000, 3, "µs"));
        assert_eq!(axis.label(10_000), "10");
        let axis = YAxis::new(0);
        assert_eq!((axis.step, axis.ticks, axis.unit), (1, 1, "ns"));
    }

    #[test]
    fn percentiles_are_labelled_by_their_nines() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(3), "99.9%");
        assert_eq!(percentile_label(6), "99.9999%");
    }
}
