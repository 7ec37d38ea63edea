//! Live progress: an indicatif bar on a terminal, a plain line every few seconds otherwise
//! (CI logs and pipes stay readable).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain_every: Duration,
    last_plain: Option<Duration>,
    total: Duration,
}

impl Progress {
    /// A bar if stderr is a terminal and `quiet` is off; plain lines otherwise (none if quiet).
    pub fn new(total: Duration, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total.as_millis().max(1) as u64);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar:.cyan/blue} {percent:>3}% {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Self {
            bar,
            plain_every: if quiet {
                Duration::MAX
            } else {
                Duration::from_secs(5)
            },
            last_plain: None,
            total,
        }
    }

    /// Reports `elapsed` into the run with a one-line status.
    pub fn update(&mut self, elapsed: Duration, status: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(elapsed.min(self.total).as_millis() as u64);
            bar.set_message(status.to_owned());
            return;
        }
        let due = self
            .last_plain
            .is_none_or(|last| elapsed.saturating_sub(last) >= self.plain_every);
        if due && self.plain_every != Duration::MAX {
            self.last_plain = Some(elapsed);
            eprintln!(
                "[{:>7.1}s / {:.1}s] {status}",
                elapsed.as_secs_f64(),
                self.total.as_secs_f64()
            );
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
