//! Where the output goes: whether it gets colour, how wide it may be, and the clock and
//! time zone times are shown against — decided once per run.

use std::io::IsTerminal;

use anstyle::{AnsiColor, Style};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::escape::printable;

/// The output's facts.
pub(crate) struct Terminal {
    /// Colour and bold: only on a terminal that takes colour, never with `NO_COLOR`
    /// (anstream's rules, which also honour `CLICOLOR` and `CLICOLOR_FORCE`).
    pub(crate) color: bool,
    /// Columns a table may take: `COLUMNS` when set, else the terminal's width; `None`
    /// (no limit) when standard output is not a terminal.
    pub(crate) width: Option<usize>,
    /// Now, for "4 min ago".
    pub(crate) now: Timestamp,
    /// The zone times are shown in: the system's (`TZ`, else `/etc/localtime`).
    pub(crate) zone: TimeZone,
}

/// Severity `fleet`, status `open` and errors.
pub(crate) const ALARM: Style = AnsiColor::Red.on_default().bold();
/// Severity `instance`.
pub(crate) const WARN: Style = AnsiColor::Yellow.on_default();
/// Status `resolved`.
pub(crate) const GOOD: Style = AnsiColor::Green.on_default();
/// Column names.
pub(crate) const HEADER: Style = Style::new().bold();

impl Terminal {
    /// The facts of this process's standard output.
    pub(crate) fn detect() -> Self {
        let stdout = std::io::stdout();
        let color = anstream::AutoStream::choice(&stdout) != anstream::ColorChoice::Never;
        let columns = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .filter(|c| *c > 0);
        let width = columns.or_else(|| {
            stdout
                .is_terminal()
                .then(|| terminal_size::terminal_size_of(&stdout))
                .flatten()
                .map(|(w, _)| usize::from(w.0))
        });
        Terminal {
            color,
            width,
            now: Timestamp::now(),
            zone: TimeZone::system(),
        }
    }

    /// `text` made printable ([`printable`]), in `style` when colour is on.
    pub(crate) fn paint(&self, text: &str, style: Style) -> String {
        let text = printable(text);
        if self.color {
            format!("{style}{text}{style:#}")
        } else {
            text.into_owned()
        }
    }

    /// The style of a severity (`fleet`, `instance`).
    pub(crate) fn severity_style(severity: &str) -> Style {
        match severity {
            "fleet" => ALARM,
            "instance" => WARN,
            _ => Style::new(),
        }
    }

    /// The style of a status (`open`, `resolved`).
    pub(crate) fn status_style(status: &str) -> Style {
        match status {
            "open" => ALARM,
            "resolved" => GOOD,
            _ => Style::new(),
        }
    }
}
