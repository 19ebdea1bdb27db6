//! Resident memory of the real `watch` binary with 1,000 AgentRuns tracked (each with its running Job and
//! Pod, as full objects with managedFields, env and annotations), served by the fake API server. Prints the
//! baseline, the figure with the runs, and the cost per run. Run with `cargo bench --bench memory`.

#[allow(dead_code)]
#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[allow(dead_code)]
#[path = "support/objects.rs"]
mod objects;

use std::time::Duration;

use fake_apiserver::FakeApi;
use objects::{JOBS, PODS, RUNS, objects};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn measure(rt: &tokio::runtime::Runtime, n: usize) -> (u64, String) {
    let api = FakeApi::default();
    let (runs, jobs, pods) = objects(n);
    let addr = rt.block_on(async {
        api.set(RUNS, runs, 200, vec![]);
        api.set(JOBS, jobs, 200, vec![]);
        api.set(PODS, pods, 200, vec![]);
        api.start().await
    });
    let dir = std::env::temp_dir().join(format!("agentrun-mem-{}-{n}", std::process::id()));
    let kubeconfig = fake_apiserver::kubeconfig(addr, &dir, "agents");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter"))
        .args(["watch", "--metrics-addr", &metrics_addr])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .spawn()
        .unwrap();
    let want = format!("agentrun_exporter_tracked_objects{{resource=\"agentruns\"}} {n}");
    let mut tracked = String::new();
    for _ in 0..300 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(body) = get(&metrics_addr, "/metrics")
            && body.contains(&want)
        {
            tracked = body
                .lines()
                .filter(|l| l.starts_with("agentrun_exporter_tracked_objects"))
                .collect::<Vec<_>>()
                .join(", ");
            break;
        }
    }
    // Let the relist's transient buffers be released and the allocator settle.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    (rss, tracked)
}

fn get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// The engine's own state per run, in this process: AgentRun, Job and Pod applied, nothing else retained.
fn engine_per_run(n: usize) -> f64 {
    use agentrun_lifecycle_exporter::{
        engine::{Tracker, TrackerConfig, Ts},
        source::{Change, Observation},
        upstream::{self, RunSpec, UpstreamConfig, objects::Object},
    };
    let t0 = Ts(1_787_227_200_000);
    let before = rss_kib(std::process::id());
    let mut tracker = Tracker::new(TrackerConfig::default());
    for i in 0..n {
        let spec =
            RunSpec::job("agents", &format!("codex-run-{i:05}"), &format!("6f1c2a9e-3b7d-4c1e-9a55-{i:012}"));
        let mut run = upstream::agentrun(&spec, t0);
        let mut job = upstream::job(&run, &format!("9b3e7f42-1c6a-4d8e-b2f0-{i:012}"), None, None, t0);
        upstream::submitted(&mut run, &job, t0);
        upstream::job_started(&mut job, t0);
        let pod = upstream::pod(&job, "7xq2m", &format!("2d4f6a8c-0e1a-4b3c-9d5e-{i:012}"), "worker-3", t0);
        for o in [Object::AgentRun(run), Object::Job(job), Object::Pod(pod)] {
            let obs = Observation { at: t0, change: Change::Upsert(o) };
            if let Some(input) = upstream::input(&obs, &UpstreamConfig::default()) {
                tracker.apply(input);
            }
        }
    }
    let after = rss_kib(std::process::id());
    assert_eq!(tracker.gauges(t0).tracked_jobs, n);
    (after.saturating_sub(before)) as f64 / n as f64
}

fn main() {
    println!(
        "engine state, 10000 runs applied in-process: {:.2} KiB per run (AgentRun + Job + Pod)",
        engine_per_run(10_000)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (base, _) = measure(&rt, 0);
    println!("watch, 0 runs tracked: VmRSS {base} KiB");
    for n in [1_000, 10_000] {
        let (rss, tracked) = measure(&rt, n);
        println!("watch, {n} runs tracked ({tracked}): VmRSS {rss} KiB");
        println!(
            "  per tracked run (AgentRun + Job + Pod): {:.2} KiB above the baseline",
            (rss.saturating_sub(base)) as f64 / n as f64
        );
    }
}
