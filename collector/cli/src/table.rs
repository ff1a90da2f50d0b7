//! The API's answers as tables for a person at a terminal.

use holmes_api::{
    IncidentDetailJson, IncidentsJson, MetricsJson, ProfilesJson, ServiceJson, TopJson,
    TriggerJson, TriggersJson,
};
use holmes_proto::Metric;

pub(crate) fn print_incidents(list: &IncidentsJson) {
    if list.incidents.is_empty() {
        println!("no incidents from {} to {}", list.since, list.until);
        return;
    }
    println!(
        "{:<24}  {:<16}  {:<8}  {:<8}  {:<8}  {:>9}  INCIDENT",
        "FIRST EVENT", "SERVICE", "METRIC", "SEVERITY", "STATUS", "INSTANCES"
    );
    for i in &list.incidents {
        println!(
            "{:<24}  {:<16}  {:<8}  {:<8}  {:<8}  {:>9}  {}",
            i.first_event,
            i.service,
            i.metric,
            i.severity,
            i.status,
            i.instances.len(),
            i.incident_id
        );
    }
}

pub(crate) fn print_incident(d: &IncidentDetailJson) {
    let i = &d.incident;
    println!(
        "incident {}: {} {} {} incident, {}",
        i.incident_id, i.service, i.metric, i.severity, i.status
    );
    println!(
        "  from {} to {}{}",
        i.first_event,
        i.last_event,
        i.resolved
            .as_deref()
            .map(|r| format!(", resolved {r}"))
            .unwrap_or_default()
    );
    println!("  instances: {}", i.instances.join(", "));
    println!("  triggers:");
    for t in &d.triggers {
        println!(
            "    {}  {:<24}  {} {} {:.1}",
            t.ts,
            t.instance,
            t.metric.as_deref().unwrap_or("-"),
            t.reason,
            t.current
        );
    }
    println!("  profiles:");
    for p in &d.profiles {
        println!(
            "    {}  {:<24}  {:<7}  {}{}",
            p.started,
            p.instance,
            p.kind,
            p.profile_id,
            p.error
                .as_deref()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default()
        );
    }
    match &d.suspect_kind {
        Some(kind) => println!(
            "  suspects ({kind} profiles: {} of the incident, {} of the baseline):",
            d.merged_profiles, d.baseline_profiles
        ),
        None => println!("  suspects: none (no profiles of the kind that explains it)"),
    }
    for s in &d.suspects {
        println!(
            "    {:>5.1}%  (baseline {:>5.1}%)  {}",
            100.0 * s.share,
            100.0 * s.baseline_share,
            s.function
        );
    }
    for r in &d.related {
        println!(
            "  related: {} {} {} {} incident, {}",
            r.incident_id, r.service, r.metric, r.severity, r.status
        );
    }
}

pub(crate) fn print_top(top: &TopJson) {
    println!(
        "{} {}: {} {} in {} samples, {} distinct stacks",
        top.profile_id, top.sample_type, top.total, top.unit, top.samples, top.stacks
    );
    let pct = |v: i64| {
        if top.total == 0 {
            0.0
        } else {
            100.0 * v as f64 / top.total as f64
        }
    };
    println!(
        "{:>14} {:>6}  {:>14} {:>6}  FUNCTION",
        "FLAT", "FLAT%", "CUM", "CUM%"
    );
    for f in &top.functions {
        println!(
            "{:>14} {:>5.1}%  {:>14} {:>5.1}%  {}",
            f.flat,
            pct(f.flat),
            f.cum,
            pct(f.cum),
            f.function
        );
    }
}

pub(crate) fn print_services(list: &[ServiceJson]) {
    if list.is_empty() {
        println!(
            "no services yet: start an agent with HOLMES_COLLECTOR pointing at this collector"
        );
        return;
    }
    let width = list
        .iter()
        .map(|s| s.service.len())
        .max()
        .unwrap_or(7)
        .max(7);
    println!("{:<width$}  {:>9}  LAST SEEN", "SERVICE", "INSTANCES");
    for s in list {
        println!("{:<width$}  {:>9}  {}", s.service, s.instances, s.last_seen);
    }
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

pub(crate) fn print_metrics(m: &MetricsJson) {
    println!("{} {} ({}) since {}", m.service, m.metric, m.unit, m.since);
    if m.series.is_empty() {
        println!("no points in this range");
        return;
    }
    let width = m
        .series
        .iter()
        .map(|s| s.instance.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:<width$}  {:>6}  {:>10}  {:>10}  {:>10}  {:>10}  TREND",
        "INSTANCE", "POINTS", "MIN", "AVG", "MAX", "LAST"
    );
    for s in &m.series {
        let values: Vec<f64> = s.points.iter().map(|p| p.value).collect();
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let avg = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let last = values.last().copied().unwrap_or(0.0);
        println!(
            "{:<width$}  {:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {}",
            s.instance,
            values.len(),
            format_value(min, &m.unit),
            format_value(avg, &m.unit),
            format_value(max, &m.unit),
            format_value(last, &m.unit),
            sparkline(&values)
        );
    }
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

pub(crate) fn print_triggers(t: &TriggersJson) {
    println!("{} triggers since {}", t.service, t.since);
    if t.triggers.is_empty() {
        println!("no triggers in this range");
        return;
    }
    let width = t
        .triggers
        .iter()
        .map(|e| e.instance.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!(
        "{:<24}  {:<width$}  {:<13}  {:<9}  {:>10}  WINDOW",
        "TIME", "INSTANCE", "METRIC", "REASON", "CURRENT"
    );
    for e in &t.triggers {
        let metric = e.metric.as_deref().and_then(|m| m.parse::<Metric>().ok());
        let unit = metric.map_or("count", Metric::unit);
        let current = match metric {
            Some(_) => format_value(e.current, unit),
            None => "-".to_owned(),
        };
        println!(
            "{:<24}  {:<width$}  {:<13}  {:<9}  {:>10}  {}",
            e.ts,
            e.instance,
            e.metric.as_deref().unwrap_or("-"),
            e.reason,
            current,
            window_summary(e, unit)
        );
    }
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

pub(crate) fn print_profiles(p: &ProfilesJson) {
    println!("{} profiles since {}", p.service, p.since);
    if p.profiles.is_empty() {
        println!("no profiles in this range");
        return;
    }
    let width = p
        .profiles
        .iter()
        .map(|e| e.instance.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let event_width = p
        .profiles
        .iter()
        .map(|e| e.event_id.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<24}  {:<width$}  {:<7}  {:>8}  {:>9}  {:<32}  {:<event_width$}  ERROR",
        "TIME", "INSTANCE", "KIND", "DURATION", "SIZE", "PROFILE", "EVENT"
    );
    for e in &p.profiles {
        let size = match e.error {
            Some(_) => "-".to_owned(),
            None => format_size(e.size_bytes),
        };
        println!(
            "{:<24}  {:<width$}  {:<7}  {:>8}  {:>9}  {:<32}  {:<event_width$}  {}",
            e.started,
            e.instance,
            e.kind,
            format_duration_ms(e.duration_ms),
            size,
            e.profile_id,
            e.event_id,
            e.error.as_deref().unwrap_or("-")
        );
    }
}
