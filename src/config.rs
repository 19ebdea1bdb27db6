//! Command line: every flag has a long name, an environment fallback and a default.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    engine::{TrackerConfig, Ts},
    upstream::{UpstreamConfig, controller_job_ttl, retention_env, zero_ttl_retention_env},
};

#[derive(Debug, Parser)]
#[command(
    name = "agentrun-lifecycle-exporter",
    version,
    about = "The lifecycle of every Job behind an AgentRun, as OpenTelemetry traces and metrics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, env = "AGENTRUN_EXPORTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch AgentRuns, Jobs and Pods and export their lifecycle (the sidecar).
    Watch(WatchArgs),
    /// Run the whole pipeline on an embedded simulated cluster.
    Demo(DemoArgs),
    /// Turn recorded watch events into the same traces and metrics, offline.
    Replay(ReplayArgs),
    /// Watch like `watch` and write every event as JSON Lines, for `replay`.
    Record(RecordArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ScopeArgs {
    /// Namespaces to watch, comma-separated; `*` for all. Default: the pod's own namespace.
    #[arg(long, env = "AGENTRUN_EXPORTER_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Label selector for the Jobs (and their Pods) to watch.
    #[arg(long, env = "AGENTRUN_EXPORTER_JOB_SELECTOR", default_value = "agents.proompteng.ai/agent-run")]
    pub job_selector: String,
}

#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// The Job TTL the agents controller patches on when a run sets none (it reads the same variable).
    #[arg(long, env = "AGENTS_AGENT_RUNNER_JOB_TTL_SECONDS")]
    pub default_job_ttl: Option<String>,
    /// Retention of AgentRuns without `spec.ttlSecondsAfterFinished` (unset: 30 days; 0 disables), read as
    /// the controller reads it (`parseInt`).
    #[arg(long, env = "AGENTS_CONTROLLER_AGENTRUN_RETENTION_SECONDS")]
    pub default_retention: Option<String>,
    /// Retention of AgentRuns with `spec.ttlSecondsAfterFinished: 0` (unset or 0: kept forever).
    #[arg(long, env = "AGENTS_CONTROLLER_AGENTRUN_RETENTION_ZERO_TTL_MAX_SECONDS")]
    pub zero_ttl_retention: Option<String>,
    /// How long a verdict waits for a late event from another watch.
    #[arg(long, env = "AGENTRUN_EXPORTER_SETTLE", value_parser = parse_duration, default_value = "10s")]
    pub settle: Duration,
    /// After collection, how long a Job may go without a TTL before it counts as without one.
    #[arg(long, env = "AGENTRUN_EXPORTER_TTL_GRACE", value_parser = parse_duration, default_value = "5m")]
    pub ttl_grace: Duration,
    /// Runs already finished longer than this before start-up export no spans.
    #[arg(long, env = "AGENTRUN_EXPORTER_BACKFILL_WINDOW", value_parser = parse_duration, default_value = "6h")]
    pub backfill_window: Duration,
}

impl EngineArgs {
    pub fn upstream_config(&self) -> UpstreamConfig {
        UpstreamConfig {
            default_job_ttl: controller_job_ttl(self.default_job_ttl.as_deref()),
            default_retention: retention_env(self.default_retention.as_deref()),
            zero_ttl_retention: zero_ttl_retention_env(self.zero_ttl_retention.as_deref()),
        }
    }

    pub fn tracker_config(&self, count_since: Ts) -> TrackerConfig {
        TrackerConfig {
            default_job_ttl: controller_job_ttl(self.default_job_ttl.as_deref()),
            settle_ms: self.settle.as_millis() as i64,
            ttl_grace_ms: self.ttl_grace.as_millis() as i64,
            count_since,
            backfill_window_ms: Some(self.backfill_window.as_millis() as i64),
        }
    }
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "AGENTRUN_EXPORTER_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many runs have finished their whole lifecycle (default: until Ctrl-C).
    #[arg(long, env = "AGENTRUN_DEMO_RUNS")]
    pub runs: Option<u64>,
    /// Simulated seconds per real second.
    #[arg(long, env = "AGENTRUN_DEMO_SPEED", default_value_t = 50.0)]
    pub speed: f64,
    /// Seed of the simulation (same seed, same runs).
    #[arg(long, env = "AGENTRUN_DEMO_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds between new runs.
    #[arg(long, default_value_t = 8.0)]
    pub arrival: f64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "AGENTRUN_EXPORTER_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Also write the simulated watch events as JSON Lines (what `record` writes).
    #[arg(long)]
    pub record: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SummaryFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Files of watch events: JSON Lines (`record`'s output) or `kubectl get --watch --output-watch-events -o json`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The per-run summary: a table, or one JSON object per run.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Table)]
    pub format: SummaryFormat,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The JSON Lines file to write.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// `90s`, `5m`, `6h`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 5m, 6h)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn cli_parses_every_subcommand() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "x",
            "watch",
            "--namespaces",
            "agents,synthesis",
            "--metrics-addr",
            "127.0.0.1:1",
        ])
        .unwrap();
        match cli.command {
            Command::Watch(w) => {
                assert_eq!(w.scope.namespaces, vec!["agents", "synthesis"]);
                assert_eq!(w.scope.job_selector, "agents.proompteng.ai/agent-run");
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["x", "replay"]).is_err(), "replay needs files");
    }
}
