//! `replay` as a whole process on a large capture: generates JSON Lines from the demo simulator (what
//! `demo --record` writes), then runs the release binary on it and prints events, seconds and peak RSS.
//!
//! `cargo bench --bench replay` (10^6 events); `REPLAY_EVENTS=N` for another size, `REPLAY_KEEP=1` to keep
//! the captures (for a profiler). Two shapes: `steady`
//! (a run every 8 simulated seconds, a few dozen open at a time) and `crowded` (a run every 10 ms: tens of
//! thousands open at once, which made the per-event gauge refresh quadratic).

use std::{
    io::{BufWriter, Write},
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use agentrun_lifecycle_exporter::{
    engine::Ts,
    source::{
        demo::{DemoConfig, Simulator},
        replay::to_json_line,
    },
};

const BIN: &str = env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter");

/// Writes at least `events` events of a simulated cluster; returns how many.
fn generate(path: &Path, events: usize, arrival_secs: f64) -> usize {
    let mut out = BufWriter::new(std::fs::File::create(path).expect("creating the capture"));
    let mut sim =
        Simulator::new(DemoConfig { runs: None, seed: 7, arrival_secs, start: Ts(1_787_227_200_000) });
    let mut written = 0;
    while written < events {
        for obs in sim.step() {
            if let Some(line) = to_json_line(&obs) {
                writeln!(out, "{line}").expect("writing the capture");
                written += 1;
            }
        }
    }
    out.flush().expect("writing the capture");
    written
}

/// Peak resident set of a finished child, from GNU time's report.
fn peak_rss_kib(report: &str) -> Option<u64> {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.trim().parse().ok())
}

fn main() {
    let events: usize = std::env::var("REPLAY_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("agentrun-replay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    for (shape, arrival) in [("steady", 8.0), ("crowded", 0.01)] {
        let path = dir.join(format!("{shape}.jsonl"));
        let started = Instant::now();
        let written = generate(&path, events, arrival);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "{shape}: generated {written} events ({:.0} MiB) in {:.1} s",
            bytes as f64 / 1048576.0,
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let out = Command::new("/usr/bin/time")
            .arg("-v")
            .arg(BIN)
            .args(["replay", "--format", "json"])
            .arg(&path)
            .env("OTEL_TRACES_EXPORTER", "none")
            .env("OTEL_METRICS_EXPORTER", "none")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("running /usr/bin/time -v (GNU time)");
        let secs = started.elapsed().as_secs_f64();
        let report = String::from_utf8_lossy(&out.stderr);
        let rss = peak_rss_kib(&report).map(|k| format!("{:.0} MiB", k as f64 / 1024.0));
        println!(
            "{shape}: replay of {written} events: {secs:.1} s ({:.0} events/s), peak RSS {}, exit {}",
            written as f64 / secs,
            rss.as_deref().unwrap_or("unknown"),
            out.status
        );
        if std::env::var_os("REPLAY_KEEP").is_some() {
            println!("{shape}: kept {}", path.display());
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    let _ = std::fs::remove_dir(&dir);
}
