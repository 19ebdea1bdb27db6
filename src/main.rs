#![forbid(unsafe_code)]

use clap::Parser;

use agentrun_lifecycle_exporter::{
    config::{Cli, Command, LogFormat},
    run, telemetry,
};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_logging(cli.log_format == LogFormat::Json);
    // `watch` runs on one thread: its work is a stream of small events, which a second worker would only
    // hand back and forth (a cross-thread wake per event), and one thread keeps its allocations in one
    // malloc arena instead of one per worker (memory that a relist freed stays reusable). The other modes
    // keep a worker per core.
    let runtime = match cli.command {
        Command::Watch(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Watch(args) => run::watch(args).await,
            Command::Demo(args) => run::demo(args).await,
            Command::Replay(args) => run::replay(args).await,
            Command::Record(args) => run::record(args).await,
        }
    })
}
