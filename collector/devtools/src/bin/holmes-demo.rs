//! `holmes-demo`: a collector on the embedded store plus a demo service with the agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use holmes_collector::config::{DEFAULT_DATA_DIR, DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR};
use holmes_devtools::demo::{self, DemoOptions};

#[derive(Parser)]
#[command(
    name = "holmes-demo",
    version,
    about = "Run a Holmes collector and a demo service that feeds it"
)]
struct Cli {
    /// Instances of the demo service.
    #[arg(long, default_value_t = 2)]
    instances: u32,
    /// Folder for the embedded store.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// gRPC address of the collector.
    #[arg(long, default_value_t = DEFAULT_GRPC_ADDR)]
    grpc_addr: SocketAddr,
    /// HTTP API address of the collector.
    #[arg(long, default_value_t = DEFAULT_HTTP_ADDR)]
    http_addr: SocketAddr,
    /// Stop after this long (e.g. 30s) instead of waiting for Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Time between two CPU bursts in each instance.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    burst_every: Duration,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// (internal) run one instance of the demo service.
    #[command(hide = true)]
    Service {
        #[arg(long)]
        collector: String,
        #[arg(long)]
        instance: String,
        #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
        burst_every: Duration,
    },
}

fn main() -> anyhow::Result<()> {
    // Logs go to stdout, between what it prints: the one stream a user watches (and
    // the tests read an instance's agent lines there).
    holmes_devtools::init_logging(std::io::stdout);
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Service {
            collector,
            instance,
            burst_every,
        }) => return demo::run_service(&collector, &instance, burst_every),
        None => {}
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(demo::run(DemoOptions {
        instances: cli.instances,
        data_dir: cli.data_dir,
        grpc_addr: cli.grpc_addr,
        http_addr: cli.http_addr,
        duration: cli.duration,
        burst_every: cli.burst_every,
    }))
}
