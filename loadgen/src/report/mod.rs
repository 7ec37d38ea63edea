//! `--out DIR`: `result.json` (everything measured, for machines and later comparison) and
//! a self-contained `report.html` (inline CSS and SVG) a person reads at a glance.

mod html;
mod network_change;
mod outage;
mod presence;
pub mod svg;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use html::{calls_page, signup_page};
pub use outage::outage_page;
pub use presence::presence_page;

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serialising the result: {0}")]
    Json(#[from] serde_json::Error),
}

/// The two files written.
#[derive(Debug, Clone)]
pub struct Written {
    pub json: PathBuf,
    pub html: PathBuf,
}

/// Writes `result.json` and `report.html` into `dir` (created if needed).
pub fn write(dir: &Path, result: &impl Serialize, html: &str) -> Result<Written, ReportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json_path = dir.join("result.json");
    let html_path = dir.join("report.html");
    let json = serde_json::to_vec_pretty(result)?;
    std::fs::write(&json_path, json).map_err(io(&json_path))?;
    std::fs::write(&html_path, html).map_err(io(&html_path))?;
    Ok(Written {
        json: json_path,
        html: html_path,
    })
}
