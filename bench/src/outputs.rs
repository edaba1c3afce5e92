//! The files a run writes besides its report (`--hlog`, `--plot`), created before the run
//! opens a socket or sends a message: a path that cannot be written fails the run at once,
//! naming the path, instead of losing the results at the end.

use crate::cli::ReportArgs;
use crate::error::Result;
use crate::hlog::Hlog;
use crate::plot::PlotFile;

/// The output files of a run, open and empty (the interval log has its header).
#[derive(Debug)]
pub struct Outputs {
    /// The interval log (`--hlog`).
    pub log: Option<Hlog>,
    /// The latency plot (`--plot`).
    pub plot: Option<PlotFile>,
}

impl Outputs {
    /// Creates the files `report` asks for.
    ///
    /// # Errors
    ///
    /// [`crate::Error::CreateLog`], [`crate::Error::WriteLog`] (the log's header) and
    /// [`crate::Error::CreatePlot`], each naming the path.
    pub fn create(report: &ReportArgs) -> Result<Outputs> {
        Ok(Outputs {
            log: Hlog::create_if(report.hlog.as_deref())?,
            plot: PlotFile::create_if(report.plot.as_deref())?,
        })
    }
}
