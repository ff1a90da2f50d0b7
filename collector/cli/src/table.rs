//! Tables for a terminal: a header and rows, columns two spaces apart, numbers on the
//! right; on a terminal (or with `COLUMNS`) the widest columns are wrapped until the
//! table fits its width. Every cell's text is made printable on the way in.

use anstyle::Style;
use tabled::builder::Builder;
use tabled::settings::object::Columns;
use tabled::settings::peaker::PriorityMax;
use tabled::settings::{Alignment, Modify, Padding, Style as TableStyle, Width};

use crate::terminal::{Terminal, HEADER};

/// One cell: printable text, maybe coloured.
pub(crate) struct Cell(String);

/// A table being filled.
pub(crate) struct Table<'t> {
    term: &'t Terminal,
    header: Vec<&'static str>,
    right: Vec<usize>,
    indent: usize,
    rows: Vec<Vec<String>>,
}

impl<'t> Table<'t> {
    /// An empty table with these columns (none: no header line).
    pub(crate) fn new(term: &'t Terminal, header: &[&'static str]) -> Self {
        Table {
            term,
            header: header.to_vec(),
            right: Vec::new(),
            indent: 0,
            rows: Vec::new(),
        }
    }

    /// Aligns these columns (by index) to the right: numbers.
    pub(crate) fn right_aligned(mut self, columns: &[usize]) -> Self {
        self.right.extend_from_slice(columns);
        self
    }

    /// Shifts the table right by `spaces` (within the same width).
    pub(crate) fn indented(mut self, spaces: usize) -> Self {
        self.indent = spaces;
        self
    }

    /// A cell of plain text.
    pub(crate) fn text(&self, text: &str) -> Cell {
        self.styled(text, Style::new())
    }

    /// A cell in `style` (when colour is on).
    pub(crate) fn styled(&self, text: &str, style: Style) -> Cell {
        Cell(self.term.paint(text, style))
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells.into_iter().map(|c| c.0).collect());
    }

    /// The table as lines, without trailing spaces.
    fn render(self) -> String {
        let mut builder = Builder::default();
        if !self.header.is_empty() {
            builder.push_record(self.header.iter().map(|h| self.term.paint(h, HEADER)));
        }
        for row in self.rows {
            builder.push_record(row);
        }
        let mut table = builder.build();
        table
            .with(TableStyle::empty())
            .with(Padding::new(0, 2, 0, 0));
        for &column in &self.right {
            table.with(Modify::new(Columns::one(column)).with(Alignment::right()));
        }
        if let Some(width) = self.term.width {
            // The padding after the last column is trimmed below.
            table.with(
                Width::wrap(width.saturating_sub(self.indent).max(1) + 2)
                    .priority(PriorityMax::right())
                    .keep_words(true),
            );
        }
        let mut out = String::new();
        for line in table.to_string().lines() {
            out.extend(std::iter::repeat_n(' ', self.indent));
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on standard output.
    pub(crate) fn print(self) {
        print!("{}", self.render());
    }
}
