//! `holmes`: the command line over the collector's HTTP API.

use clap::{Parser, Subcommand};
use holmes_api::{DEFAULT_INCIDENT_SINCE, DEFAULT_TOP_LIMIT};
use holmes_cli::api_client::{ApiClient, ClientOptions, DEFAULT_API};

mod control;
mod control_views;
mod debuginfo;
mod escape;
mod progress;
mod table;
mod terminal;
mod views;
mod when;

use escape::printable;
use progress::Download;
use terminal::Terminal;
use views::{
    print_incident, print_incidents, print_instances, print_metrics, print_profiles,
    print_services, print_top, print_triggers,
};

#[derive(Parser)]
#[command(
    name = "holmes",
    version,
    about = "Ask a Holmes collector what happened to your services",
    after_help = "Times are shown in the local time zone (TZ) with how long ago; colour only on a \
terminal and never with NO_COLOR; tables fit the terminal's width (or COLUMNS)."
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
    /// Download one profile: a gzip-compressed pprof file (re-encoded from what is
    /// stored, or byte for byte as captured where the collector keeps originals; open it
    /// with `go tool pprof` or `pprof`).
    Profile {
        /// Service the profile belongs to (profile ids are scoped to their service).
        #[arg(long)]
        service: String,
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
        #[arg(long, default_value = DEFAULT_INCIDENT_SINCE)]
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
    /// Asks every connected agent of a service (on every collector node), or those
    /// matching a label selector, or one instance, to capture profiles now; they arrive
    /// like any other capture, under a trigger event of reason `requested`. `holmes
    /// capture show ID` shows what each agent did and the profiles.
    Capture(control::CaptureCommand),
    /// Capture requests of a service, newest first, with how many agents captured,
    /// refused or have not answered.
    Captures {
        /// Service name.
        #[arg(long)]
        service: String,
        /// How far back: a duration (10m, 2h) or an RFC 3339 time (default 24h).
        #[arg(long)]
        since: Option<String>,
    },
    /// Central trigger rules of a service, pushed live to its agents: get, set, delete,
    /// history.
    Rules {
        #[command(subcommand)]
        command: control::RulesCommand,
    },
    /// Pauses captures of a service or of the fleet for a while (show, set, lift).
    Pause {
        #[command(subcommand)]
        command: control::PauseCommand,
    },
    /// Debug info of a build, for the collector to name its profiles' frames.
    Debuginfo {
        #[command(subcommand)]
        command: DebuginfoCommand,
    },
    /// A flame graph (SVG) of an incident (its profiles merged), of one profile (with
    /// `--service`), or of a service's profiles of one kind over a time range (with
    /// `--service` and `--since`, no id).
    Flamegraph {
        /// Incident id, or profile id with `--service`.
        id: Option<String>,
        /// The service of the profile, or whose profiles to merge.
        #[arg(long)]
        service: Option<String>,
        /// With `--service` and no id: how far back to merge (a duration or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// With `--service` and no id: which kind of profiles (cpu, heap, threads, tasks).
        #[arg(long, default_value = "cpu")]
        kind: String,
        /// File to write; `-` writes the SVG to standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: String,
        /// Color by growth: `--diff=controls` against the incident's healthy controls
        /// (the same moment on instances not in it), `--diff` or `--diff=baseline`
        /// against the service's profiles from before it.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "baseline", value_parser = ["controls", "baseline"])]
        diff: Option<String>,
    },
    /// The functions that cost the most in one profile, like `go tool pprof -top`: flat
    /// (the function is the leaf) and cumulative (anywhere on the stack).
    Top {
        /// Service the profile belongs to.
        #[arg(long)]
        service: String,
        /// Profile id, as `holmes profiles` shows it.
        id: String,
        /// Which value to rank by (cpu, samples, inuse_space, alloc_space, threads, ...);
        /// the profile's last sample type if left out.
        #[arg(long = "sample-type")]
        sample_type: Option<String>,
        /// How many functions.
        #[arg(long, default_value_t = DEFAULT_TOP_LIMIT)]
        limit: u64,
    },
}

#[derive(Subcommand)]
enum DebuginfoCommand {
    /// Sends a binary's debug info (symbol tables and DWARF) to the collector, matched
    /// to profiles by the binary's build id: run it in CI for binaries shipped stripped.
    Upload {
        /// The binary as it runs (its build id names the upload).
        binary: std::path::PathBuf,
        /// Its separate debug file (`objcopy --only-keep-debug`), when the binary is
        /// stripped.
        #[arg(long = "debug-file", value_name = "FILE")]
        debug_file: Option<std::path::PathBuf>,
    },
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
    std::fs::write(output, bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", printable(output)))?;
    println!("wrote {} bytes to {}", bytes.len(), printable(output));
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
    let term = Terminal::detect();
    match cli.command {
        Command::Services => {
            let list = client.services().await?;
            if cli.json {
                print_json(&list)?;
            } else {
                print_services(&term, &list);
            }
        }
        Command::Instances { service } => {
            let list = client.instances(&service).await?;
            if cli.json {
                print_json(&list)?;
            } else {
                print_instances(&term, &list);
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
                print_metrics(&term, &m);
            }
        }
        Command::Triggers { service, since } => {
            let t = client.triggers(&service, &since).await?;
            if cli.json {
                print_json(&t)?;
            } else {
                print_triggers(&term, &t);
            }
        }
        Command::Profiles { service, since } => {
            let p = client.profiles(&service, &since).await?;
            if cli.json {
                print_json(&p)?;
            } else {
                print_profiles(&term, &p);
            }
        }
        Command::Profile {
            service,
            id,
            output,
        } => {
            let mut bar = Download::start(&format!("profile {}", printable(&id)));
            let bytes = client
                .download_profile_with_progress(&service, &id, &mut |got, total| {
                    bar.update(got, total)
                })
                .await;
            bar.finish(bytes.is_ok());
            write_profile(&output, &bytes?)?;
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
                print_incidents(&term, &list);
            }
        }
        Command::Capture(command) => control::capture(&client, &term, command, cli.json).await?,
        Command::Captures { service, since } => {
            control::captures(&client, &term, &service, since.as_deref(), cli.json).await?
        }
        Command::Rules { command } => control::rules(&client, &term, command, cli.json).await?,
        Command::Pause { command } => control::pause(&client, &term, command, cli.json).await?,
        Command::Debuginfo {
            command: DebuginfoCommand::Upload { binary, debug_file },
        } => {
            let (build_id, blob) = debuginfo::extract(&binary, debug_file.as_deref())?;
            let answer = client.upload_debuginfo(&build_id, blob).await?;
            if cli.json {
                print_json(&answer)?;
            } else if answer.stored {
                println!(
                    "uploaded {} bytes of debug info of build {}",
                    answer.bytes,
                    printable(&answer.build_id)
                );
            } else {
                println!(
                    "the collector has the debug info of build {} already ({} bytes)",
                    printable(&answer.build_id),
                    answer.bytes
                );
            }
        }
        Command::Flamegraph {
            id,
            service,
            since,
            kind,
            output,
            diff,
        } => {
            if id.is_none() && service.is_none() {
                anyhow::bail!(
                    "name an incident id, a profile id with --service, or a service with --service"
                );
            }
            let what = printable(id.as_deref().or(service.as_deref()).unwrap_or_default());
            let mut bar = Download::start(&format!("flame graph of {what}"));
            let mut progress = |got, total| bar.update(got, total);
            let svg = match (id, service) {
                (Some(id), None) => {
                    client
                        .flamegraph_with_progress(&id, diff.as_deref(), &mut progress)
                        .await
                }
                (Some(id), Some(service)) => {
                    client
                        .profile_flamegraph_with_progress(&service, &id, &mut progress)
                        .await
                }
                (None, service) => {
                    let since = since.as_deref().unwrap_or("24h");
                    let service = service.unwrap_or_default();
                    client
                        .service_flamegraph_with_progress(&service, &kind, since, &mut progress)
                        .await
                }
            };
            bar.finish(svg.is_ok());
            write_profile(&output, &svg?)?;
        }
        Command::Incident { id } => {
            let detail = client.incident(&id).await?;
            if cli.json {
                print_json(&detail)?;
            } else {
                print_incident(&term, &detail);
            }
        }
        Command::Top {
            service,
            id,
            sample_type,
            limit,
        } => {
            let top = client
                .top(&service, &id, sample_type.as_deref(), limit)
                .await?;
            if cli.json {
                print_json(&top)?;
            } else {
                print_top(&term, &top);
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
        // The API's messages quote what agents sent (a failed capture's error, ...).
        eprintln!("error: {}", printable(&err.to_string()));
        std::process::exit(1);
    }
}
