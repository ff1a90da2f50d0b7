//! A progress bar on standard error while a download runs (a profile, a flame graph the
//! collector renders first), when standard error is a terminal; nothing otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One download's bar.
pub(crate) struct Download {
    bar: Option<ProgressBar>,
}

impl Download {
    /// Starts a spinner saying what is fetched, until the first byte says how many come.
    pub(crate) fn start(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Download { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}: {bytes}") {
            bar.set_style(style);
        }
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Download { bar: Some(bar) }
    }

    /// `received` of `total` bytes (a spinner and a count while `total` is unknown).
    pub(crate) fn update(&mut self, received: u64, total: Option<u64>) {
        let Some(bar) = &self.bar else { return };
        if let (Some(total), None) = (total, bar.length()) {
            bar.set_length(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg}: [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
        }
        bar.set_position(received);
    }

    /// Leaves the bar, full, on the screen when the download worked; takes it off when
    /// it failed (the error says why).
    pub(crate) fn finish(self, worked: bool) {
        if let Some(bar) = self.bar {
            if worked {
                bar.finish();
            } else {
                bar.finish_and_clear();
            }
        }
    }
}
