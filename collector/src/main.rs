//! `holmes-collector`: the Holmes server.

use anyhow::Context;
use clap::{Parser, Subcommand};
use holmes_collector::config::{Config, Overrides};
use holmes_collector::Server;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "holmes-collector",
    version,
    about = "Holmes collector: gRPC ingest from agents, storage and the query API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Accept agents and serve the API until interrupted (Ctrl-C or SIGTERM).
    Serve(Overrides),
    /// Load the configuration (file, environment, flags), print it resolved, and exit.
    CheckConfig(Overrides),
    /// Print the HTTP API's OpenAPI document (what `GET /api/v1/openapi.json` serves).
    Openapi,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see holmes-collector --help)");
            std::process::exit(2);
        }
    };
    match cli.command {
        Command::Openapi => {
            println!(
                "{}",
                holmes_collector::query::routes::document().to_pretty_json()?
            );
            Ok(())
        }
        Command::CheckConfig(overrides) => {
            let config = Config::load(&overrides)?;
            println!("{config:#?}");
            Ok(())
        }
        Command::Serve(overrides) => {
            init_logging();
            let config = Config::load(&overrides)?;
            let server = Server::start(&config)
                .await
                .context("collector failed to start")?;
            wait_for_signal().await;
            tracing::info!("shutting down");
            server.shutdown().await;
            Ok(())
        }
    }
}
