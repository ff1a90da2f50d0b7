//! `holmes rules`, `holmes pause`, `holmes capture` and `holmes captures`: the control
//! plane from the command line, each answer as a table (or the API's JSON with `--json`).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use holmes_api::control::{RulesEditJson, DEFAULT_CAPTURE_SINCE, DEFAULT_HISTORY_LIMIT};
use holmes_cli::api_client::control::CaptureTarget;
use holmes_cli::api_client::ApiClient;

use crate::control_views::{
    print_asked, print_capture, print_captures, print_history, print_pauses, print_rules,
};
use crate::terminal::Terminal;

/// Who the CLI says makes a change: `--by`, else `$USER`, else `cli`.
fn author(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "cli".to_owned())
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `holmes rules ...`.
#[derive(Subcommand)]
pub(crate) enum RulesCommand {
    /// The central rules of a service: every layer (all agents, or those matching a
    /// label selector), its version, and any pause.
    Get {
        /// Service name.
        #[arg(long)]
        service: String,
    },
    /// Sets one central rule, in the agents' `HOLMES_RULE_*` form
    /// (`min=..,diff=..,abs=..,max=..,cooldown=..,window=..`, or `off`); every connected
    /// agent of the service (or of the selector) gets it within seconds.
    Set {
        /// Service name.
        #[arg(long)]
        service: String,
        /// Only agents whose labels match, e.g. `zone=a` or `version=1.4.2,zone=a`.
        #[arg(long, default_value = "")]
        selector: String,
        /// Who sets it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// Why (kept in the history).
        #[arg(long, default_value = "")]
        note: String,
        /// cpu, memory, threads, tasks or heap.
        metric: String,
        /// The rule, e.g. `abs=90,cooldown=2m`.
        text: String,
    },
    /// Deletes a central rule (or every rule of a layer): agents get their own back.
    Delete {
        /// Service name.
        #[arg(long)]
        service: String,
        /// The layer of agents matching this selector; the service-wide one by default.
        #[arg(long, default_value = "")]
        selector: String,
        /// Who deletes it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// The metric; every rule of the layer when left out.
        metric: Option<String>,
    },
    /// Who changed which rule when, newest first.
    History {
        /// Service name.
        #[arg(long)]
        service: String,
        /// How many changes.
        #[arg(long, default_value_t = DEFAULT_HISTORY_LIMIT)]
        limit: u64,
    },
}

/// `holmes pause ...`.
#[derive(Subcommand)]
pub(crate) enum PauseCommand {
    /// The pauses in force: a service's and the fleet's.
    Show {
        /// Service name; the fleet's pause only when left out.
        #[arg(long)]
        service: Option<String>,
    },
    /// Pauses captures for a while (rules stay; triggers and incidents still come).
    Set {
        #[command(flatten)]
        scope: PauseScope,
        /// How long, e.g. 30m or 2h.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (operators see it; agents log it).
        #[arg(long, default_value = "")]
        reason: String,
        /// Who pauses (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Lifts a pause: captures resume.
    Lift {
        #[command(flatten)]
        scope: PauseScope,
        /// Who lifts it (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

/// A service, or the whole fleet.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PauseScope {
    /// Service name.
    #[arg(long)]
    service: Option<String>,
    /// Every service.
    #[arg(long)]
    fleet: bool,
}

/// `holmes capture ...`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct CaptureCommand {
    #[command(subcommand)]
    show: Option<CaptureShow>,
    /// Service name.
    #[arg(long, required = true)]
    service: Option<String>,
    /// cpu, heap, threads or tasks; repeat for several.
    #[arg(long = "kind", required = true)]
    kinds: Vec<String>,
    /// Only agents whose labels match, e.g. `zone=a`.
    #[arg(long, default_value = "")]
    selector: String,
    /// Only this instance.
    #[arg(long)]
    instance: Option<String>,
    /// Length of a new CPU profile, e.g. 5s (the agents' default otherwise).
    #[arg(long)]
    cpu_duration: Option<String>,
    /// Who asks (default: $USER).
    #[arg(long)]
    by: Option<String>,
    /// Wait up to this long for every agent asked to answer, then show the answers.
    #[arg(long, value_name = "DURATION")]
    wait: Option<String>,
}

#[derive(Subcommand)]
enum CaptureShow {
    /// One capture request: each instance's answer and the profiles it brought.
    Show {
        /// Request id, as `holmes capture` or `holmes captures` shows it.
        id: String,
    },
}

pub(crate) async fn rules(
    client: &ApiClient,
    term: &Terminal,
    command: RulesCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        RulesCommand::Get { service } => {
            let r = client.rules(&service).await?;
            if json {
                return print_json(&r);
            }
            print_rules(term, &r);
        }
        RulesCommand::Set {
            service,
            selector,
            by,
            note,
            metric,
            text,
        } => {
            let edit = RulesEditJson {
                selector,
                rules: [(metric, text)].into(),
                by: author(by),
                note,
            };
            let r = client.set_rules(&service, &edit).await?;
            if json {
                return print_json(&r);
            }
            print_rules(term, &r);
        }
        RulesCommand::Delete {
            service,
            selector,
            by,
            metric,
        } => {
            let r = client
                .delete_rules(&service, &selector, metric.as_deref(), &author(by))
                .await?;
            if json {
                return print_json(&r);
            }
            print_rules(term, &r);
        }
        RulesCommand::History { service, limit } => {
            let h = client.rule_history(&service, limit).await?;
            if json {
                return print_json(&h);
            }
            print_history(term, &h);
        }
    }
    Ok(())
}

fn scope(s: &PauseScope) -> Option<&str> {
    if s.fleet {
        None
    } else {
        s.service.as_deref()
    }
}

pub(crate) async fn pause(
    client: &ApiClient,
    term: &Terminal,
    command: PauseCommand,
    json: bool,
) -> anyhow::Result<()> {
    let p = match &command {
        PauseCommand::Show { service } => client.pauses(service.as_deref()).await?,
        PauseCommand::Set {
            scope: s,
            duration,
            reason,
            by,
        } => {
            client
                .pause(scope(s), duration, reason, &author(by.clone()))
                .await?
        }
        PauseCommand::Lift { scope: s, by } => client.resume(scope(s), &author(by.clone())).await?,
    };
    if json {
        return print_json(&p);
    }
    print_pauses(term, &p);
    Ok(())
}

pub(crate) async fn capture(
    client: &ApiClient,
    term: &Terminal,
    command: CaptureCommand,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(CaptureShow::Show { id }) = command.show {
        let d = client.capture_detail(&id).await?;
        if json {
            return print_json(&d);
        }
        print_capture(term, &d);
        return Ok(());
    }
    let service = command
        .service
        .ok_or_else(|| anyhow::anyhow!("--service is required"))?;
    let wait = command
        .wait
        .as_deref()
        .map(|w| {
            humantime::parse_duration(w)
                .map_err(|e| anyhow::anyhow!("--wait {w:?}: {e}; write e.g. 30s"))
        })
        .transpose()?;
    let target = CaptureTarget {
        kinds: command.kinds,
        selector: command.selector,
        instance: command.instance,
        cpu_duration: command.cpu_duration,
        by: author(command.by),
    };
    let asked = client.capture(&service, &target).await?;
    let Some(wait) = wait else {
        if json {
            return print_json(&asked);
        }
        print_asked(&asked);
        return Ok(());
    };
    if !json {
        print_asked(&asked);
    }
    let deadline = Instant::now() + wait;
    let detail = loop {
        let d = client.capture_detail(&asked.request_id).await?;
        if d.request.pending == 0 || Instant::now() >= deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if json {
        return print_json(&detail);
    }
    print_capture(term, &detail);
    Ok(())
}

pub(crate) async fn captures(
    client: &ApiClient,
    term: &Terminal,
    service: &str,
    since: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let list = client
        .captures(service, since.unwrap_or(DEFAULT_CAPTURE_SINCE))
        .await?;
    if json {
        return print_json(&list);
    }
    print_captures(term, &list);
    Ok(())
}
