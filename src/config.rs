//! Command line: every flag has a long name, an environment fallback and a default.

use std::{ffi::OsStr, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::TypedValueParser, error::ErrorKind};

use crate::{
    engine::{TrackerConfig, Ts},
    sink::buffer::BufferConfig,
    telemetry,
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
    #[arg(long, env = "AGENTRUN_EXPORTER_SETTLE", value_parser = DurationParser, default_value = "10s")]
    pub settle: Duration,
    /// After collection, how long a Job may go without a TTL before it counts as without one.
    #[arg(long, env = "AGENTRUN_EXPORTER_TTL_GRACE", value_parser = DurationParser, default_value = "5m")]
    pub ttl_grace: Duration,
    /// Runs already finished longer than this before start-up export no spans.
    #[arg(long, env = "AGENTRUN_EXPORTER_BACKFILL_WINDOW", value_parser = DurationParser, default_value = "6h")]
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

/// Span export through a collector outage, and the size of the metric streams.
#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// Memory for spans waiting to be exported (kept and retried while the OTLP backend is unreachable);
    /// past it the oldest are dropped.
    #[arg(long, env = "AGENTRUN_EXPORTER_SPAN_BUFFER_SIZE", value_parser = NoEcho(parse_bytes), default_value = "64MiB")]
    pub span_buffer_size: u64,
    /// Spans not delivered this long after they were finished are dropped.
    #[arg(long, env = "AGENTRUN_EXPORTER_SPAN_BUFFER_MAX_AGE", value_parser = NoEcho(parse_positive_duration), default_value = "15m")]
    pub span_buffer_max_age: Duration,
    /// Timeout of one OTLP span export attempt.
    #[arg(long, env = "AGENTRUN_EXPORTER_EXPORT_TIMEOUT", value_parser = NoEcho(parse_positive_duration), default_value = "5s")]
    pub export_timeout: Duration,
    /// How long shutdown keeps sending held spans (keep it under the pod's termination grace period).
    #[arg(long, env = "AGENTRUN_EXPORTER_SHUTDOWN_TIMEOUT", value_parser = DurationParser, default_value = "15s")]
    pub shutdown_timeout: Duration,
    /// Namespaces every metric must hold series for; sets the cardinality limit (× 6 series each).
    #[arg(long, env = "AGENTRUN_EXPORTER_MAX_NAMESPACES", value_parser = clap::value_parser!(u64).range(1..), default_value_t = telemetry::DEFAULT_MAX_NAMESPACES as u64)]
    pub max_namespaces: u64,
}

impl ExportArgs {
    pub fn settings(&self) -> telemetry::Settings {
        telemetry::Settings {
            buffer: BufferConfig {
                max_bytes: self.span_buffer_size,
                max_age: self.span_buffer_max_age,
                attempt_timeout: self.export_timeout,
                shutdown_timeout: self.shutdown_timeout,
                ..BufferConfig::default()
            },
            max_namespaces: usize::try_from(self.max_namespaces).unwrap_or(usize::MAX),
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
    pub http: HttpArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub export: ExportArgs,
    /// With two controller replicas, only the exporter whose pod holds the controller's Lease exports spans
    /// and counts; the other keeps the same state and takes over when the Lease moves. `auto`: follow when the
    /// controller's environment (which the chart gives the sidecar) enables leader election and names the pod
    /// (`HOSTNAME`, `AGENTS_POD_UID`); `off`: always lead (standalone).
    #[arg(long, env = "AGENTRUN_EXPORTER_FOLLOW_LEADER", value_enum, default_value_t = FollowLeader::Auto)]
    pub follow_leader: FollowLeader,
    /// On shutdown while leading, how long to keep exporting until the controller hands its Lease over.
    #[arg(long, env = "AGENTRUN_EXPORTER_HANDOVER_TIMEOUT", value_parser = DurationParser, default_value = "5s")]
    pub handover_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FollowLeader {
    Auto,
    Off,
}

/// Limits of the `/metrics` server: hostile or broken clients must not keep a scrape from being answered.
#[derive(Debug, Args, Clone)]
pub struct HttpArgs {
    /// A request's headers must arrive within this; it also closes a keep-alive connection that sends no
    /// next request for as long.
    #[arg(long, env = "AGENTRUN_EXPORTER_HTTP_HEADER_TIMEOUT", value_parser = DurationParser, default_value = "10s")]
    pub http_header_timeout: Duration,
    /// A connection on which nothing is read or written for this long is closed (a client that stops
    /// reading its response).
    #[arg(long, env = "AGENTRUN_EXPORTER_HTTP_IDLE_TIMEOUT", value_parser = DurationParser, default_value = "60s")]
    pub http_idle_timeout: Duration,
    /// Open connections at most; past it, the connection least recently active is closed for the new one.
    #[arg(long, env = "AGENTRUN_EXPORTER_HTTP_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,
}

impl Default for HttpArgs {
    fn default() -> Self {
        HttpArgs {
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            http_max_connections: 256,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this many runs have finished their whole lifecycle (default: until Ctrl-C).
    #[arg(long, env = "AGENTRUN_DEMO_RUNS")]
    pub runs: Option<u64>,
    /// Simulated seconds per real second.
    #[arg(long, env = "AGENTRUN_DEMO_SPEED", default_value_t = 50.0, value_parser = PositiveParser { max: MAX_SPEED })]
    pub speed: f64,
    /// Seed of the simulation (same seed, same runs).
    #[arg(long, env = "AGENTRUN_DEMO_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds between new runs.
    #[arg(long, default_value_t = 8.0, value_parser = PositiveParser { max: MAX_ARRIVAL_SECS })]
    pub arrival: f64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "AGENTRUN_EXPORTER_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub http: HttpArgs,
    /// Also write the simulated watch events as JSON Lines (what `record` writes).
    #[arg(long)]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub export: ExportArgs,
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
    #[command(flatten)]
    pub export: ExportArgs,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The JSON Lines file to write.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// The longest duration any flag accepts: every duration becomes milliseconds in an `i64` and times in
/// `Ts`, so an unbounded one would overflow; no wait of this exporter makes sense beyond a year.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);
/// Simulated seconds per real second, at most (a day per second).
pub const MAX_SPEED: f64 = 86_400.0;
/// Simulated seconds between runs, at most (a day).
pub const MAX_ARRIVAL_SECS: f64 = 86_400.0;

const DURATION_FORM: &str =
    "expected a duration such as 500ms, 10s, 5m, 6h or 1d (plain numbers are seconds), at most 366d";

/// `90s`, `5m`, `6h`, `1d`, or plain seconds; finite, not negative, at most [`MAX_DURATION`]. The error
/// never repeats the input (an environment value can be anything).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let value: f64 = num.parse().map_err(|_| DURATION_FORM.to_string())?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("unknown unit; {DURATION_FORM}")),
    };
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!("too long; {DURATION_FORM}")),
    }
}

/// The flag an error is about, as the user typed it.
fn flag_name(arg: Option<&clap::Arg>) -> String {
    arg.and_then(|a| a.get_long().map(|l| format!("--{l}")))
        .or_else(|| arg.map(|a| a.get_id().to_string()))
        .unwrap_or_else(|| "a value".into())
}

/// clap's own "invalid value" error repeats the value; these say the flag and the expected form only.
fn invalid(cmd: &clap::Command, arg: Option<&clap::Arg>, why: &str) -> clap::Error {
    clap::Error::raw(ErrorKind::InvalidValue, format!("invalid value for {}: {why}\n", flag_name(arg)))
        .with_cmd(cmd)
}

/// [`parse_duration`] as a clap value parser.
#[derive(Clone, Copy, Debug)]
pub struct DurationParser;

impl TypedValueParser for DurationParser {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let text = value.to_str().ok_or_else(|| invalid(cmd, arg, &format!("not UTF-8; {DURATION_FORM}")))?;
        parse_duration(text).map_err(|why| invalid(cmd, arg, &why))
    }
}

/// A finite number above zero and at most `max` (a simulated clock that can move).
#[derive(Clone, Copy, Debug)]
pub struct PositiveParser {
    pub max: f64,
}

impl TypedValueParser for PositiveParser {
    type Value = f64;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<f64, clap::Error> {
        let form = format!("expected a number above 0 and at most {}", self.max);
        match value.to_str().and_then(|t| t.trim().parse::<f64>().ok()) {
            Some(v) if v.is_finite() && v > 0.0 && v <= self.max => Ok(v),
            _ => Err(invalid(cmd, arg, &form)),
        }
    }
}

/// Any `fn(&str) -> Result<T, String>` as a clap value parser whose error names the flag and never repeats the
/// value (the parsers' own messages do not either).
#[derive(Clone, Copy)]
pub struct NoEcho<T>(pub fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for NoEcho<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_str().ok_or_else(|| invalid(cmd, arg, "not UTF-8"))?;
        (self.0)(text).map_err(|why| invalid(cmd, arg, &why))
    }
}

/// A duration above zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
        .and_then(|d| if d.is_zero() { Err(format!("must be above zero; {DURATION_FORM}")) } else { Ok(d) })
}

/// `64MiB`, `512KiB`, `1GiB`, `10MB`, or plain bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let value: u64 = num.parse().map_err(|_| "expected a size such as 64MiB".to_string())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err("unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)".into()),
    };
    let bytes = value.checked_mul(scale).ok_or("too large")?;
    if bytes == 0 {
        return Err("must be above zero".into());
    }
    Ok(bytes)
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
        assert_eq!(parse_duration("366d"), Ok(MAX_DURATION));
        for bad in ["367d", "18446744073709551616", "18446744073709551616s", "1e30", "NaN", "inf", "-5s", ""]
        {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("expected a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5TiB").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn export_defaults() {
        let cli = Cli::try_parse_from(["x", "watch"]).unwrap();
        let Command::Watch(w) = cli.command else { panic!() };
        let s = w.export.settings();
        assert_eq!(s.buffer.max_bytes, 64 << 20);
        assert_eq!(s.buffer.max_age, Duration::from_secs(900));
        assert_eq!(s.buffer.attempt_timeout, Duration::from_secs(5));
        // Spans flush for at most the shutdown timeout, then metrics for at most the OTLP timeout (10 s):
        // within Kubernetes' default grace period of 30 s.
        assert!(s.buffer.shutdown_timeout + Duration::from_secs(10) < Duration::from_secs(30));
        assert_eq!(s.cardinality_limit(), 6000);
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
