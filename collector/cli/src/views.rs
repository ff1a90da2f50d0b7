//! What each command shows a person: the API's answers as tables and short reports, with
//! times local and relative, severity and status in colour on a terminal, and every
//! text that comes from agents made printable.

use holmes_api::{
    IncidentDetailJson, IncidentJson, IncidentsJson, InstanceJson, MetricsJson, ProfilesJson,
    ServiceJson, TopJson, TriggerJson, TriggersJson,
};
use holmes_proto::Metric;

use crate::escape::printable;
use crate::table::Table;
use crate::terminal::{Terminal, ALARM};
use crate::when::when;

impl Terminal {
    /// A time as [`when`] shows it.
    pub(crate) fn when(&self, rfc3339: &str) -> String {
        when(rfc3339, self.now, &self.zone)
    }
}

pub(crate) fn print_services(term: &Terminal, list: &[ServiceJson]) {
    if list.is_empty() {
        println!(
            "no services yet: start an agent with HOLMES_COLLECTOR pointing at this collector"
        );
        return;
    }
    let mut table = Table::new(term, &["SERVICE", "INSTANCES", "LAST SEEN"]).right_aligned(&[1]);
    for s in list {
        let row = vec![
            table.text(&s.service),
            table.text(&s.instances.to_string()),
            table.text(&term.when(&s.last_seen)),
        ];
        table.row(row);
    }
    table.print();
}

pub(crate) fn print_instances(term: &Terminal, list: &[InstanceJson]) {
    let mut table = Table::new(
        term,
        &["INSTANCE", "HOST", "PID", "LAST SEEN", "RULES", "LABELS"],
    )
    .right_aligned(&[2]);
    for i in list {
        let labels: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let rules = match (i.rules_version, i.connected) {
            (None, _) => "-".to_owned(),
            (Some(v), Some(false)) => format!("v{v} gone"),
            (Some(v), _) if i.rules_pending => format!("v{v} pending"),
            (Some(v), _) => format!("v{v}"),
        };
        let row = vec![
            table.text(&i.instance),
            table.text(&i.host),
            table.text(&i.pid.to_string()),
            table.text(&term.when(&i.last_seen)),
            table.text(&rules),
            table.text(&labels.join(",")),
        ];
        table.row(row);
    }
    table.print();
    for i in list {
        for r in &i.rules_refused {
            println!(
                "{} refused its {} rule: {}",
                printable(&i.instance),
                printable(&r.metric),
                printable(&r.reason)
            );
        }
    }
}

pub(crate) fn print_incidents(term: &Terminal, list: &IncidentsJson) {
    if list.incidents.is_empty() {
        println!(
            "no incidents from {} to {}",
            term.when(&list.since),
            term.when(&list.until)
        );
        return;
    }
    let mut table = Table::new(
        term,
        &[
            "FIRST EVENT",
            "SERVICE",
            "METRIC",
            "SEVERITY",
            "STATUS",
            "INSTANCES",
            "INCIDENT",
        ],
    )
    .right_aligned(&[5]);
    for i in &list.incidents {
        let row = vec![
            table.text(&term.when(&i.first_event)),
            table.text(&i.service),
            table.text(&i.metric),
            table.styled(&i.severity, Terminal::severity_style(&i.severity)),
            table.styled(&i.status, Terminal::status_style(&i.status)),
            table.text(&i.instances.len().to_string()),
            table.text(&i.incident_id),
        ];
        table.row(row);
    }
    table.print();
}

/// `807789e5...: checkout cpu fleet incident, open`, coloured.
fn incident_line(term: &Terminal, i: &IncidentJson) -> String {
    format!(
        "{} {} {} {} incident, {}",
        printable(&i.incident_id),
        printable(&i.service),
        printable(&i.metric),
        term.paint(&i.severity, Terminal::severity_style(&i.severity)),
        term.paint(&i.status, Terminal::status_style(&i.status)),
    )
}

pub(crate) fn print_incident(term: &Terminal, d: &IncidentDetailJson) {
    let i = &d.incident;
    println!("incident {}", incident_line(term, i));
    println!(
        "  from {} to {}{}",
        term.when(&i.first_event),
        term.when(&i.last_event),
        i.resolved
            .as_deref()
            .map(|r| format!(", resolved {}", term.when(r)))
            .unwrap_or_default()
    );
    println!("  instances: {}", printable(&i.instances.join(", ")));
    println!("  triggers:");
    let mut triggers = Table::new(term, &["TIME", "INSTANCE", "METRIC", "REASON", "CURRENT"])
        .right_aligned(&[4])
        .indented(4);
    for t in &d.triggers {
        let (_, current) = trigger_value(t);
        let row = vec![
            triggers.text(&term.when(&t.ts)),
            triggers.text(&t.instance),
            triggers.text(t.metric.as_deref().unwrap_or("-")),
            triggers.text(&t.reason),
            triggers.text(&current),
        ];
        triggers.row(row);
    }
    triggers.print();
    println!("  profiles:");
    let mut profiles =
        Table::new(term, &["STARTED", "INSTANCE", "KIND", "PROFILE", "ERROR"]).indented(4);
    for p in &d.profiles {
        let error = match &p.error {
            Some(e) => profiles.styled(e, ALARM),
            None => profiles.text("-"),
        };
        let row = vec![
            profiles.text(&term.when(&p.started)),
            profiles.text(&p.instance),
            profiles.text(&p.kind),
            profiles.text(&p.profile_id),
            error,
        ];
        profiles.row(row);
    }
    profiles.print();
    if d.incident.skipped_captures > 0 {
        println!(
            "  {} captures skipped by the budget (max_profiles_per_incident of each kind kept)",
            d.incident.skipped_captures
        );
    }
    let comparison = d.comparison.as_deref().unwrap_or("none");
    let against = match comparison {
        "controls" => "healthy",
        "baselines" => "before",
        _ => "",
    };
    match &d.suspect_kind {
        Some(kind) => println!(
            "  suspects ({} profiles: {} of the sick instances, {} {}):",
            printable(kind),
            d.sick_profiles,
            d.comparison_profiles,
            match comparison {
                "controls" => "of healthy controls at the same moment",
                "baselines" => "baselines from before it (no controls)",
                _ => "to compare with: none",
            }
        ),
        None => println!("  suspects: not computed yet (no profiles of the kind that explains it)"),
    }
    // Most suspect first: its share of the sick instances' profiles (with what it
    // calls), and of the comparison's.
    let mut suspects = Table::new(term, &[]).right_aligned(&[0, 1]).indented(4);
    for s in &d.suspects {
        let other = if against.is_empty() {
            String::new()
        } else {
            format!("({against} {:.1}%)", 100.0 * s.comparison_share)
        };
        let row = vec![
            suspects.text(&format!("{:.1}%", 100.0 * s.sick_share)),
            suspects.text(&other),
            suspects.text(&s.function),
        ];
        suspects.row(row);
    }
    if !d.suspects.is_empty() {
        suspects.print();
    }
    if let Some(first) = d.earlier.last() {
        // "seen 3 times since version 1.4.2": this incident and the earlier ones with
        // the same top suspects.
        let since = if first.versions.is_empty() {
            String::new()
        } else {
            format!(" since version {}", printable(&first.versions.join(", ")))
        };
        println!(
            "  seen {} times{since} (the same top suspects; first {}, last {}):",
            d.earlier.len() + 1,
            term.when(&first.first_event),
            term.when(&d.incident.first_event)
        );
        for e in &d.earlier {
            let versions = if e.versions.is_empty() {
                "-".to_owned()
            } else {
                e.versions.join(", ")
            };
            println!(
                "    {}  {}  versions {}",
                term.when(&e.first_event),
                printable(&e.incident_id),
                printable(&versions)
            );
        }
        if !d.versions.is_empty() {
            println!("    now: versions {}", printable(&d.versions.join(", ")));
        }
    }
    for r in &d.related {
        println!("  related: {}", incident_line(term, r));
    }
}

pub(crate) fn print_top(term: &Terminal, top: &TopJson) {
    println!(
        "{} {}: {} {} in {} samples, {} distinct stacks",
        printable(&top.profile_id),
        printable(&top.sample_type),
        top.total,
        printable(&top.unit),
        top.samples,
        top.stacks
    );
    let pct = |v: i64| {
        if top.total == 0 {
            0.0
        } else {
            100.0 * v as f64 / top.total as f64
        }
    };
    let mut table = Table::new(term, &["FLAT", "FLAT%", "CUM", "CUM%", "FUNCTION"])
        .right_aligned(&[0, 1, 2, 3]);
    for f in &top.functions {
        let row = vec![
            table.text(&f.flat.to_string()),
            table.text(&format!("{:.1}%", pct(f.flat))),
            table.text(&f.cum.to_string()),
            table.text(&format!("{:.1}%", pct(f.cum))),
            table.text(&f.function),
        ];
        table.row(row);
    }
    table.print();
}

fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "percent" => format!("{value:.1}%"),
        "bytes" => {
            let mut v = value;
            let mut unit = "B";
            for next in ["KiB", "MiB", "GiB", "TiB"] {
                if v < 1024.0 {
                    break;
                }
                v /= 1024.0;
                unit = next;
            }
            format!("{v:.1} {unit}")
        }
        _ => format!("{value:.0}"),
    }
}

fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(40)..];
    let (lo, hi) = tail
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    tail.iter()
        .map(|v| {
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
            BARS[((t * 7.0).round() as usize).min(7)]
        })
        .collect()
}

pub(crate) fn print_metrics(term: &Terminal, m: &MetricsJson) {
    println!(
        "{} {} ({}) since {}",
        printable(&m.service),
        printable(&m.metric),
        printable(&m.unit),
        term.when(&m.since)
    );
    if m.series.is_empty() {
        println!("no points in this range");
        return;
    }
    let mut table = Table::new(
        term,
        &["INSTANCE", "POINTS", "MIN", "AVG", "MAX", "LAST", "TREND"],
    )
    .right_aligned(&[1, 2, 3, 4, 5]);
    for s in &m.series {
        let values: Vec<f64> = s.points.iter().map(|p| p.value).collect();
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let avg = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let last = values.last().copied().unwrap_or(0.0);
        let row = vec![
            table.text(&s.instance),
            table.text(&values.len().to_string()),
            table.text(&format_value(min, &m.unit)),
            table.text(&format_value(avg, &m.unit)),
            table.text(&format_value(max, &m.unit)),
            table.text(&format_value(last, &m.unit)),
            table.text(&sparkline(&values)),
        ];
        table.row(row);
    }
    table.print();
}

/// A trigger's metric unit and its value as shown (`-` for a requested capture).
fn trigger_value(t: &TriggerJson) -> (&'static str, String) {
    let metric = t.metric.as_deref().and_then(|m| m.parse::<Metric>().ok());
    let unit = metric.map_or("count", Metric::unit);
    let current = match metric {
        Some(_) => format_value(t.current, unit),
        None => "-".to_owned(),
    };
    (unit, current)
}

/// `20.5%→91.3% ▁▄█`: the window's range and shape, or `-` when it is empty.
fn window_summary(t: &TriggerJson, unit: &str) -> String {
    let values: Vec<f64> = t.window.iter().map(|p| p.value).collect();
    if values.is_empty() {
        return "-".to_owned();
    }
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    format!(
        "{}→{} {}",
        format_value(min, unit),
        format_value(max, unit),
        sparkline(&values)
    )
}

pub(crate) fn print_triggers(term: &Terminal, t: &TriggersJson) {
    println!(
        "{} triggers since {}",
        printable(&t.service),
        term.when(&t.since)
    );
    if t.triggers.is_empty() {
        println!("no triggers in this range");
        return;
    }
    let mut table = Table::new(
        term,
        &["TIME", "INSTANCE", "METRIC", "REASON", "CURRENT", "WINDOW"],
    )
    .right_aligned(&[4]);
    for e in &t.triggers {
        let (unit, current) = trigger_value(e);
        let row = vec![
            table.text(&term.when(&e.ts)),
            table.text(&e.instance),
            table.text(e.metric.as_deref().unwrap_or("-")),
            table.text(&e.reason),
            table.text(&current),
            table.text(&window_summary(e, unit)),
        ];
        table.row(row);
    }
    table.print();
}

/// `2.5 MiB` / `812 B`.
fn format_size(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    format_value(bytes as f64, "bytes")
}

/// `30s`, `1.5s`, `250ms`.
fn format_duration_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{:.1}s", ms as f64 / 1_000.0)
    }
}

pub(crate) fn print_profiles(term: &Terminal, p: &ProfilesJson) {
    println!(
        "{} profiles since {}",
        printable(&p.service),
        term.when(&p.since)
    );
    if p.profiles.is_empty() {
        println!("no profiles in this range");
        return;
    }
    let mut table = Table::new(
        term,
        &[
            "TIME", "INSTANCE", "KIND", "DURATION", "SIZE", "PROFILE", "EVENT", "ERROR",
        ],
    )
    .right_aligned(&[3, 4]);
    for e in &p.profiles {
        let (size, error) = match &e.error {
            Some(error) => (table.text("-"), table.styled(error, ALARM)),
            None => (table.text(&format_size(e.size_bytes)), table.text("-")),
        };
        let row = vec![
            table.text(&term.when(&e.started)),
            table.text(&e.instance),
            table.text(&e.kind),
            table.text(&format_duration_ms(e.duration_ms)),
            size,
            table.text(&e.profile_id),
            table.text(&e.event_id),
            error,
        ];
        table.row(row);
    }
    table.print();
}
