//! A one-line progress bar on stderr, drawn only when stderr is a terminal (pod logs and CI get
//! the periodic `tracing` lines alone).
use std::io::{IsTerminal, Write};

/// Width of the bar in characters.
const WIDTH: usize = 30;

/// The bar; inert when stderr is not a terminal.
pub struct ProgressBar {
    enabled: bool,
    total: u64,
    drawn: bool,
}

impl ProgressBar {
    /// A bar for `total` steps, drawn if `visible` (rank 0) and stderr is a terminal.
    pub fn new(total: u64, visible: bool) -> Self {
        Self {
            enabled: visible && std::io::stderr().is_terminal(),
            total: total.max(1),
            drawn: false,
        }
    }

    /// Redraws the bar at `step` with a short status text.
    pub fn draw(&mut self, step: u64, status: &str) {
        if !self.enabled {
            return;
        }
        let done = ((step.min(self.total) as f64 / self.total as f64) * WIDTH as f64) as usize;
        let bar = format!("{}{}", "█".repeat(done), "·".repeat(WIDTH - done));
        let mut err = std::io::stderr().lock();
        // A failed write to a terminal is not worth stopping training for.
        let _ = write!(err, "\r\x1b[2K{bar} {step}/{} {status}", self.total);
        let _ = err.flush();
        self.drawn = true;
    }

    /// Erases the bar so a log line can take its place.
    pub fn clear(&mut self) {
        if self.enabled && self.drawn {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.clear();
    }
}
