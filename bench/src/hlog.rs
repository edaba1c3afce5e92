//! The `--hlog` file: an HdrHistogram interval log of latency, one tagged interval per
//! second per series (`sub1`, `sub2`, `rtt`, ...), readable by HdrHistogram's
//! `HistogramLogProcessor` and plotting tools.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use multipoint_dataplane::latency::{IntervalLog, LatencyHistogram};
use multipoint_dataplane::{Handler, Subscription};

use crate::error::{Error, Result};

/// An open interval log.
#[derive(Debug)]
pub struct Hlog {
    path: PathBuf,
    log: IntervalLog<BufWriter<File>>,
}

impl Hlog {
    /// Creates `path` and writes the log's header, with `start` as the base time.
    ///
    /// # Errors
    ///
    /// [`Error::CreateLog`] and [`Error::WriteLog`].
    pub fn create(path: &Path, start: SystemTime) -> Result<Hlog> {
        let file = File::create(path).map_err(|source| Error::CreateLog {
            path: path.to_owned(),
            source,
        })?;
        let log =
            IntervalLog::new(BufWriter::new(file), start).map_err(|source| Error::WriteLog {
                path: path.to_owned(),
                source,
            })?;
        Ok(Hlog {
            path: path.to_owned(),
            log,
        })
    }

    /// Opens the log asked for, if any.
    ///
    /// # Errors
    ///
    /// As [`Hlog::create`].
    pub fn create_if(path: Option<&Path>) -> Result<Option<Hlog>> {
        path.map(|p| Hlog::create(p, SystemTime::now())).transpose()
    }

    /// Appends one interval of the series `tag`, starting `start` after the base time.
    ///
    /// # Errors
    ///
    /// [`Error::WriteLog`].
    pub fn append(
        &mut self,
        tag: &str,
        start: Duration,
        duration: Duration,
        histogram: &LatencyHistogram,
    ) -> Result<()> {
        self.log
            .append_tagged(Some(tag), start, duration, histogram)
            .map_err(|source| Error::WriteLog {
                path: self.path.clone(),
                source,
            })
    }

    /// Takes what `sub` recorded since it was last taken from, appends it as the interval
    /// `(start, duration)` of the series `tag`, and adds it to `total`.
    ///
    /// # Errors
    ///
    /// The data plane's error if the subscription's shard is gone; [`Error::WriteLog`].
    pub fn take<H: Handler>(
        &mut self,
        tag: &str,
        (start, duration): (Duration, Duration),
        sub: &Subscription<H>,
        total: &mut LatencyHistogram,
    ) -> Result<()> {
        let interval = sub.take_latency()?;
        self.append(tag, start, duration, &interval)?;
        total.merge(&interval);
        Ok(())
    }

    /// Flushes the file.
    ///
    /// # Errors
    ///
    /// [`Error::WriteLog`].
    pub fn finish(mut self) -> Result<()> {
        self.log.flush().map_err(|source| Error::WriteLog {
            path: self.path,
            source,
        })
    }
}
