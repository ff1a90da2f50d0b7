//! Flame graphs as SVG: one profile's (or several merged) stacks, root at the bottom,
//! each frame as wide as its share of the samples; optionally colored by how much each
//! frame grew against a baseline (a diff flame graph: red grew, blue shrank).
//!
//! Self-contained SVG (no script), readable in any browser and embeddable in a page:
//! every frame has a `<title>` with its function, value and share.

use std::collections::HashMap;
use std::fmt::Write;
use std::rc::Rc;

use holmes_storage::ProfileContents;

/// Width of the drawing, in pixels.
pub const WIDTH: f64 = 1200.0;
/// Height of one frame.
const ROW: f64 = 16.0;
/// Frames narrower than this many pixels are left out (with their children).
const MIN_WIDTH: f64 = 0.3;
/// Deepest level drawn.
const MAX_DEPTH: usize = 256;

/// The call tree: its nodes in one arena (the root first), each node's child of a name
/// found through one index, every name stored once. A profile naming one long function
/// at every depth of many distinct stacks costs a few dozen bytes per node, never the
/// name per node; and levels deeper than [`MAX_DEPTH`] (never drawn) are not kept.
#[derive(Debug)]
struct Tree {
    nodes: Vec<Node>,
    names: Vec<Rc<str>>,
    name_ids: HashMap<Rc<str>, u32>,
    /// (parent, name) → child.
    index: HashMap<(u32, u32), u32>,
}

#[derive(Debug)]
struct Node {
    name: u32,
    value: i64,
    children: Vec<u32>,
}

impl Tree {
    fn new() -> Self {
        Tree {
            nodes: vec![Node {
                name: u32::MAX,
                value: 0,
                children: Vec::new(),
            }],
            names: Vec::new(),
            name_ids: HashMap::new(),
            index: HashMap::new(),
        }
    }

    fn name_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        let shared: Rc<str> = Rc::from(name);
        self.names.push(Rc::clone(&shared));
        self.name_ids.insert(shared, id);
        id
    }

    /// Adds `value` along `path` (names' numbers, root first).
    fn add(&mut self, path: impl Iterator<Item = u32>, value: i64) {
        let mut at = 0u32;
        self.nodes[0].value = self.nodes[0].value.saturating_add(value);
        for id in path.take(MAX_DEPTH) {
            let next = match self.index.get(&(at, id)) {
                Some(&n) => n,
                None => {
                    let n = self.nodes.len() as u32;
                    self.nodes.push(Node {
                        name: id,
                        value: 0,
                        children: Vec::new(),
                    });
                    self.nodes[at as usize].children.push(n);
                    self.index.insert((at, id), n);
                    n
                }
            };
            let node = &mut self.nodes[next as usize];
            node.value = node.value.saturating_add(value);
            at = next;
        }
    }

    fn value(&self, node: u32) -> i64 {
        self.nodes[node as usize].value
    }

    fn name(&self, node: u32) -> &str {
        let id = self.nodes[node as usize].name;
        self.names.get(id as usize).map_or("all", |n| n)
    }

    /// The children of `node`, by name (as flame graphs sort them).
    fn children(&self, node: u32) -> Vec<u32> {
        let mut c = self.nodes[node as usize].children.clone();
        c.sort_by(|a, b| self.name(*a).cmp(self.name(*b)));
        c
    }

    /// The value at `path` (root first), 0 if the tree has no such path.
    fn find(&self, path: &[&str]) -> i64 {
        let mut at = 0u32;
        for name in path {
            let Some(&id) = self.name_ids.get(*name) else {
                return 0;
            };
            match self.index.get(&(at, id)) {
                Some(&n) => at = n,
                None => return 0,
            }
        }
        self.value(at)
    }
}

/// The call tree of `profiles`, summing each profile's last sample type (pprof's
/// default: cpu nanoseconds, in-use bytes, thread counts).
fn tree(profiles: &[ProfileContents]) -> (Tree, String) {
    let mut root = Tree::new();
    let mut unit = String::new();
    for p in profiles {
        let Some(index) = p.value_index(None) else {
            continue;
        };
        if unit.is_empty() {
            let t = &p.header.sample_types[index];
            unit = format!("{} {}", t.name, t.unit);
        }
        // Each location's frames once (inlined frames expanded, native locations named
        // by their symbols or as `module+0xoffset`), their names numbered once; stacks
        // are walked by number.
        let functions: Vec<Vec<u32>> = p
            .frames_by_location()
            .iter()
            .map(|frames| frames.iter().map(|f| root.name_id(&f.function)).collect())
            .collect();
        for sample in &p.samples {
            let v = sample.values.get(index).copied().unwrap_or(0).max(0);
            if let Some(locations) = p.stacks.get(sample.stack as usize) {
                let path = locations.iter().rev().flat_map(|&l| {
                    functions
                        .get(l as usize)
                        .map_or(&[][..], |f| &f[..])
                        .iter()
                        .rev()
                        .copied()
                });
                root.add(path, v);
            }
        }
    }
    (root, unit)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Characters XML 1.0 forbids (controls but tab, newline and carriage
            // return; U+FFFE and U+FFFF) would make the SVG unreadable to a parser;
            // surrogates cannot occur in a `str`.
            c if !is_xml_char(c) || c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Whether XML 1.0 allows `c` in a document (its `Char` production).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A warm color from the name (stable across renders), as flame graphs use.
fn warm(name: &str) -> String {
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let r = 205 + (h % 50);
    let g = 80 + ((h >> 8) % 130);
    let b = 40 + ((h >> 16) % 40);
    format!("rgb({r},{g},{b})")
}

/// Red for growth, blue for shrinkage, white for none; `delta` is a share change.
fn diff_color(delta: f64) -> String {
    let t = (delta.abs() * 4.0).min(1.0);
    let fade = (255.0 * (1.0 - t)) as u8;
    if delta >= 0.0 {
        format!("rgb(255,{fade},{fade})")
    } else {
        format!("rgb({fade},{fade},255)")
    }
}

/// Renders `profiles` merged; with `baseline`, colors each frame by the change of its
/// share against the baseline's. `title` heads the drawing.
pub fn render(
    title: &str,
    profiles: &[ProfileContents],
    baseline: Option<&[ProfileContents]>,
) -> String {
    let (root, unit) = tree(profiles);
    let base = baseline.map(tree);
    let total = root.value(0).max(1) as f64;
    let scale = WIDTH / total;
    let mut body = String::new();
    let mut path: Vec<&str> = Vec::new();
    // Depth-first, children left to right by name (as flame graphs sort them).
    fn walk<'a>(
        tree: &'a Tree,
        node: u32,
        x: f64,
        level: usize,
        path: &mut Vec<&'a str>,
        out: &mut Vec<(Vec<&'a str>, u32, f64, usize)>,
        scale: f64,
    ) {
        if level > MAX_DEPTH || tree.value(node) as f64 * scale < MIN_WIDTH {
            return;
        }
        if level > 0 {
            path.push(tree.name(node));
        }
        out.push((path.clone(), node, x, level));
        let mut cx = x;
        for child in tree.children(node) {
            walk(tree, child, cx, level + 1, path, out, scale);
            cx += tree.value(child) as f64 * scale;
        }
        if level > 0 {
            path.pop();
        }
    }
    let mut frames = Vec::new();
    walk(&root, 0, 0.0, 0, &mut path, &mut frames, scale);
    let depth = frames.iter().map(|f| f.3).max().unwrap_or(0);
    let height = (depth + 1) as f64 * ROW + 40.0;
    for (p, node, x, level) in &frames {
        let name = p.last().copied().unwrap_or("all");
        let value = root.value(*node);
        let w = value as f64 * scale;
        let y = height - ROW * (*level as f64 + 1.0) - 4.0;
        let share = value as f64 / total;
        let (fill, extra) = match &base {
            Some((b, _)) => {
                let before = b.find(p) as f64 / b.value(0).max(1) as f64;
                let delta = share - before;
                (
                    diff_color(delta),
                    format!(", {:+.1} points vs baseline", 100.0 * delta),
                )
            }
            None => (warm(name), String::new()),
        };
        let label = if w > 30.0 {
            let chars = ((w - 6.0) / 7.0) as usize;
            let text: String = if name.chars().count() > chars {
                let mut t: String = name.chars().take(chars.saturating_sub(2)).collect();
                t.push_str("..");
                t
            } else {
                name.to_owned()
            };
            format!(
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x + 3.0,
                y + ROW - 4.0,
                escape(&text)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            body,
            r#"<g class="frame"><title>{} ({} {}, {:.2}%{})</title><rect x="{:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}" rx="2"/>{}</g>"#,
            escape(name),
            value,
            escape(&unit),
            100.0 * share,
            extra,
            x,
            y,
            w.max(0.1),
            ROW - 1.0,
            fill,
            label
        );
    }
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="monospace" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{:.0}" y="20" text-anchor="middle" font-size="14">{}</text>
{body}</svg>
"#,
        WIDTH / 2.0,
        escape(title),
    );
    svg
}

#[cfg(test)]
mod tests {
    use holmes_storage::{Location, ProfileHeader, ProfileSample, StackFrame, ValueType};

    use super::*;

    fn contents(samples: &[(&[&str], i64)]) -> ProfileContents {
        let mut c = ProfileContents {
            header: ProfileHeader {
                sample_types: vec![ValueType::new("cpu", "nanoseconds")],
                ..ProfileHeader::default()
            },
            label_sets: vec![vec![]],
            ..ProfileContents::default()
        };
        for (names, v) in samples {
            let mut stack = Vec::new();
            for n in names.iter() {
                stack.push(c.locations.len() as u32);
                c.locations
                    .push(Location::Symbolic(vec![StackFrame::new(*n, "", 0)]));
            }
            c.samples.push(ProfileSample {
                stack: c.stacks.len() as u32,
                values: vec![*v],
                labels: 0,
            });
            c.stacks.push(stack);
        }
        c
    }

    #[test]
    fn frames_are_as_wide_as_their_share_and_names_are_escaped() {
        let p = contents(&[(&["burn<T>", "main"], 75), (&["idle", "main"], 25)]);
        let svg = render("cpu & more", &[p], None);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(
            svg.contains("<title>burn&lt;T&gt; (75 cpu nanoseconds, 75.00%)</title>"),
            "{svg}"
        );
        assert!(svg.contains("cpu &amp; more"));
        // main spans the whole width, burn three quarters of it.
        assert!(
            svg.contains(r#"<title>main (100 cpu nanoseconds, 100.00%)</title><rect x="0.00""#),
            "{svg}"
        );
        assert!(svg.contains(r#"width="900.00""#), "{svg}");
        assert!(svg.contains(r#"width="300.00""#), "{svg}");
    }

    #[test]
    fn names_with_characters_xml_forbids_still_make_a_well_formed_svg() {
        // Agent data: a noncharacter, terminal escapes, a C1 control, NUL.
        let hostile = "evil\u{FFFE}\u{FFFF}\u{1b}[31m\u{85}\u{7f}\0::f";
        let p = contents(&[(&[hostile, "main"], 10)]);
        let svg = render("cpu", &[p], None);
        assert!(svg.contains("evil\u{FFFD}\u{FFFD}\u{FFFD}[31m"), "{svg}");
        // A real XML parser (expat, through Python's standard library) reads it.
        let mut parser = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, xml.dom.minidom; xml.dom.minidom.parseString(sys.stdin.buffer.read())",
            ])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (deploy/dev/test.sh installs it)");
        {
            use std::io::Write;
            let mut stdin = parser.stdin.take().unwrap();
            stdin.write_all(svg.as_bytes()).unwrap();
        }
        assert!(
            parser.wait().unwrap().success(),
            "expat refused the SVG:\n{svg}"
        );
    }

    #[test]
    fn a_diff_colors_growth_red_and_shrinkage_blue() {
        let now = contents(&[(&["burn", "main"], 90), (&["idle", "main"], 10)]);
        let before = contents(&[(&["burn", "main"], 10), (&["idle", "main"], 90)]);
        let svg = render("diff", &[now], Some(&[before]));
        let frame = |name: &str| {
            svg.lines()
                .find(|l| l.contains(&format!("<title>{name} (")))
                .unwrap()
                .to_owned()
        };
        assert!(frame("burn").contains("+80.0 points vs baseline"), "{svg}");
        assert!(frame("burn").contains("fill=\"rgb(255,0,0)\""), "{svg}");
        assert!(frame("idle").contains("fill=\"rgb(0,0,255)\""), "{svg}");
        assert!(frame("main").contains("+0.0 points"), "{svg}");
    }
}
