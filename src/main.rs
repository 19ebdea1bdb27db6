#![forbid(unsafe_code)]

use clap::Parser;

use agentrun_lifecycle_exporter::{
    config::{Cli, Command, LogFormat},
    run, telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format == LogFormat::Json);
    match cli.command {
        Command::Watch(args) => run::watch(args).await,
        Command::Demo(args) => run::demo(args).await,
        Command::Replay(args) => run::replay(args).await,
        Command::Record(args) => run::record(args).await,
    }
}
