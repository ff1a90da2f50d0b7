//! `holmes`: the command line over the collector's HTTP API.

use clap::{Parser, Subcommand};
use holmes_collector::api_client::{ApiClient, ClientOptions, DEFAULT_API};
use holmes_collector::query::{MetricsJson, ProfilesJson, ServiceJson, TriggerJson, TriggersJson};
use holmes_proto::Metric;

#[derive(Parser)]
#[command(
    name = "holmes",
    version,
    about = "Ask a Holmes collector what happened to your services"
)]
struct Cli {
    /// The collector's HTTP API (http:// or https://).
    #[arg(long, global = true, env = "HOLMES_API", default_value = DEFAULT_API)]
    api: String,
    /// The API's bearer token, when the collector requires one.
    #[arg(
        long,
        global = true,
        env = "HOLMES_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// PEM CA certificate that signs the API's certificate (https:// only; default: the
    /// system's trust store).
    #[arg(long, global = true, env = "HOLMES_CA_FILE", value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Services the collector knows, with their active instances.
    Services,
    /// Instances of one service.
    Instances {
        /// Service name.
        #[arg(long)]
        service: String,
    },
    /// One metric of one service, per instance.
    Metrics {
        /// Service name.
        #[arg(long)]
        service: String,
        /// cpu, memory, rss, threads, tasks, heap, heap_bytes, fds or cpu_throttled.
        #[arg(long, default_value = "cpu")]
        metric: String,
        /// How far back: a duration (10m, 2h) or an RFC 3339 time.
        #[arg(long, default_value = "10m")]
        since: String,
    },
    /// Trigger events of one service (rules that fired, captures requested), oldest first.
    Triggers {
        /// Service name.
        #[arg(long)]
        service: String,
        /// How far back: a duration (10m, 2h) or an RFC 3339 time.
        #[arg(long, default_value = "1h")]
        since: String,
    },
    /// Profiles captured in one service, oldest first (download one with `holmes profile`).
    Profiles {
        /// Service name.
        #[arg(long)]
        service: String,
        /// How far back: a duration (10m, 2h) or an RFC 3339 time.
        #[arg(long, default_value = "1h")]
        since: String,
    },
    /// Download one profile: the gzip-compressed pprof file, byte for byte as captured
    /// (open it with `go tool pprof` or `pprof`).
    Profile {
        /// Profile id, as `holmes profiles` shows it.
        id: String,
        /// File to write; `-` writes the bytes to standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: String,
    },
    /// Incidents, newest first: of one service, or of every service.
    Incidents {
        /// Service name; all services if left out.
        #[arg(long)]
        service: Option<String>,
        /// How far back: a duration (10m, 2h) or an RFC 3339 time.
        #[arg(long, default_value = holmes_collector::query::DEFAULT_INCIDENT_SINCE)]
        since: String,
        /// Only `open` or only `resolved` ones.
        #[arg(long)]
        status: Option<String>,
    },
    /// One incident: its instances, triggers, profiles, suspect functions and related
    /// incidents.
    Incident {
        /// Incident id, as `holmes incidents` shows it.
        id: String,
    },
    /// Asks every connected agent of a service to capture profiles now; they arrive like
    /// any other capture (`holmes profiles`), with a trigger event of reason `requested`.
    Capture {
        /// Service name.
        #[arg(long)]
        service: String,
        /// cpu, heap, threads or tasks; repeat for several.
        #[arg(long = "kind", required = true)]
        kinds: Vec<String>,
    },
    /// A flame graph (SVG) of an incident (its profiles merged) or of one profile.
    Flamegraph {
        /// Incident id or profile id.
        id: String,
        /// File to write; `-` writes the SVG to standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: String,
        /// Color by growth against the profiles from before the incident.
        #[arg(long)]
        diff: bool,
    },
    /// The functions that cost the most in one profile, like `go tool pprof -top`: flat
    /// (the function is the leaf) and cumulative (anywhere on the stack).
    Top {
        /// Profile id, as `holmes profiles` shows it.
        id: String,
        /// Which value to rank by (cpu, samples, inuse_space, alloc_space, threads, ...);
        /// the profile's last sample type if left out.
        #[arg(long = "sample-type")]
        sample_type: Option<String>,
        /// How many functions.
        #[arg(long, default_value_t = holmes_collector::query::DEFAULT_TOP_LIMIT)]
        limit: u64,
    },
}

fn print_incidents(list: &holmes_collector::query::IncidentsJson) {
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

fn print_incident(d: &holmes_collector::query::IncidentDetailJson) {
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

fn print_top(top: &holmes_collector::query::TopJson) {
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

fn print_services(list: &[ServiceJson]) {
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

fn print_metrics(m: &MetricsJson) {
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

fn print_triggers(t: &TriggersJson) {
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

fn print_profiles(p: &ProfilesJson) {
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

/// Writes a downloaded profile to `output` (`-`: standard output, and nothing else
/// there).
fn write_profile(output: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if output == "-" {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}"))?;
        return Ok(());
    }
    std::fs::write(output, bytes).map_err(|e| anyhow::anyhow!("cannot write {output}: {e}"))?;
    println!("wrote {} bytes to {output}", bytes.len());
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let options = ClientOptions {
        token: cli.token.clone(),
        ca_file: cli.ca_file.clone(),
    };
    let client = ApiClient::with_options(&cli.api, &options)?;
    match cli.command {
        Command::Services => {
            let list = client.services().await?;
            if cli.json {
                print_json(&list)?;
            } else {
                print_services(&list);
            }
        }
        Command::Instances { service } => {
            let list = client.instances(&service).await?;
            if cli.json {
                print_json(&list)?;
            } else {
                println!(
                    "{:<24}  {:<16}  {:>7}  {:<24}  LABELS",
                    "INSTANCE", "HOST", "PID", "LAST SEEN"
                );
                for i in list {
                    let labels: Vec<String> =
                        i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{:<24}  {:<16}  {:>7}  {:<24}  {}",
                        i.instance,
                        i.host,
                        i.pid,
                        i.last_seen,
                        labels.join(",")
                    );
                }
            }
        }
        Command::Metrics {
            service,
            metric,
            since,
        } => {
            let m = client.metrics(&service, &metric, &since).await?;
            if cli.json {
                print_json(&m)?;
            } else {
                print_metrics(&m);
            }
        }
        Command::Triggers { service, since } => {
            let t = client.triggers(&service, &since).await?;
            if cli.json {
                print_json(&t)?;
            } else {
                print_triggers(&t);
            }
        }
        Command::Profiles { service, since } => {
            let p = client.profiles(&service, &since).await?;
            if cli.json {
                print_json(&p)?;
            } else {
                print_profiles(&p);
            }
        }
        Command::Profile { id, output } => {
            let bytes = client.download_profile(&id).await?;
            write_profile(&output, &bytes)?;
        }
        Command::Incidents {
            service,
            since,
            status,
        } => {
            let list = client
                .incidents(service.as_deref(), &since, status.as_deref())
                .await?;
            if cli.json {
                print_json(&list)?;
            } else {
                print_incidents(&list);
            }
        }
        Command::Capture { service, kinds } => {
            let asked = client.capture(&service, &kinds).await?;
            if cli.json {
                print_json(&asked)?;
            } else {
                println!(
                    "asked {} instance(s) of {} for {} (request {}): {}",
                    asked.instances.len(),
                    asked.service,
                    asked.kinds.join(", "),
                    asked.request_id,
                    asked.instances.join(", ")
                );
            }
        }
        Command::Flamegraph { id, output, diff } => {
            let svg = client.flamegraph(&id, diff).await?;
            write_profile(&output, &svg)?;
        }
        Command::Incident { id } => {
            let detail = client.incident(&id).await?;
            if cli.json {
                print_json(&detail)?;
            } else {
                print_incident(&detail);
            }
        }
        Command::Top {
            id,
            sample_type,
            limit,
        } => {
            let top = client.top(&id, sample_type.as_deref(), limit).await?;
            if cli.json {
                print_json(&top)?;
            } else {
                print_top(&top);
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see holmes --help)");
            std::process::exit(2);
        }
    };
    if let Err(err) = run(cli).await {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}
