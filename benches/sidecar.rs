//! The whole `watch` binary side by side with a typed-reflector anchor, against the same fake API server
//! serving the same full objects (managedFields, env, annotations; see `support/objects.rs`). The anchor is
//! this benchmark's own executable run as a child (`SIDECAR_ANCHOR=1`): a minimal kube-rs program keeping
//! reflector stores of typed Jobs and Pods and a `DynamicObject` store of AgentRuns, what a typical
//! controller or exporter holds. Both are measured from outside, through /proc, one at a time:
//!
//! - memory per run: resident memory with N runs tracked minus resident memory with none, over N;
//! - relist CPU: every watch ends with a 410 Expired, and the CPU from then until the relist is applied and
//!   the process is quiet again; peak resident memory over that relist (VmHWM, reset just before);
//! - idle CPU: CPU over a fixed window with nothing changing;
//! - CPU per watch event: MODIFIED events streamed at a fixed rate (each run's Pod terminates, its Job
//!   completes, its AgentRun succeeds, so the exporter emits and exports spans), all the process's CPU until
//!   it is quiet again, over the number of events;
//! - the span export path: `demo` at its top speed, exporting to an in-process OTLP/HTTP receiver.
//!
//! The exporter exports spans to that receiver throughout. Sizes and windows come from the environment
//! (`SIDECAR_QUICK=1` for a short run; see `Settings`). Run with `cargo bench --bench sidecar`.

#[allow(dead_code)]
#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[allow(dead_code)]
#[path = "support/objects.rs"]
mod objects;
#[allow(dead_code)]
#[path = "../tests/support/otlp.rs"]
mod otlp;

use std::{
    collections::{BTreeSet, VecDeque},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fake_apiserver::FakeApi;
use objects::{JOBS, PODS, RUNS};

const SELECTOR: &str = "agents.proompteng.ai/agent-run";

/// The anchor: typed reflector stores, nothing else.
mod anchor {
    use futures::{StreamExt, future};
    use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
    use kube::{
        Api, Client,
        api::{ApiResource, DynamicObject, GroupVersionKind},
        runtime::{WatchStreamExt, reflector, watcher},
    };

    pub fn main() {
        tokio::runtime::Runtime::new().expect("runtime").block_on(run());
    }

    async fn run() {
        let client = Client::try_default().await.expect("kubeconfig");
        let selector = super::SELECTOR;
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("agents.proompteng.ai", "v1alpha1", "AgentRun"),
            "agentruns",
        );
        let runs_api: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &ar);
        let jobs_api: Api<Job> = Api::default_namespaced(client.clone());
        let pods_api: Api<Pod> = Api::default_namespaced(client);
        let runs_w = reflector::store::Writer::new(ar);
        let (jobs, jobs_w) = reflector::store();
        let (pods, pods_w) = reflector::store();
        let runs = runs_w.as_reader();
        let cfg = || watcher::Config::default().labels(selector);
        let r = watcher(runs_api, watcher::Config::default()).default_backoff().reflect(runs_w);
        let j = watcher(jobs_api, cfg()).default_backoff().reflect(jobs_w);
        let p = watcher(pods_api, cfg()).default_backoff().reflect(pods_w);
        let drain = |s: futures::stream::BoxStream<'static, ()>| s.for_each(|_| future::ready(()));
        tokio::join!(
            drain(r.map(|_| ()).boxed()),
            drain(j.map(|_| ()).boxed()),
            drain(p.map(|_| ()).boxed())
        );
        // The stores are what the anchor exists to keep.
        drop((runs, jobs, pods));
    }
}

struct Settings {
    idle_runs: Vec<usize>,
    runs: usize,
    relist_runs: usize,
    idle_secs: f64,
    churn_secs: f64,
    churn_rates: Vec<f64>,
    demo_runs: usize,
    sides: Vec<Side>,
}

impl Settings {
    fn from_env() -> Settings {
        let quick = std::env::var_os("SIDECAR_QUICK").is_some();
        let list = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name).unwrap_or_else(|_| default.into()).split(',').map(str::to_string).collect()
        };
        let num = |name: &str, default: f64| -> f64 {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let (idle, runs, relist, idle_s, churn_s, demo) = if quick {
            ("1000,5000", 2_000.0, 3_000.0, 3.0, 3.0, 1_000.0)
        } else {
            ("1000,10000,50000", 10_000.0, 16_700.0, 10.0, 10.0, 5_000.0)
        };
        Settings {
            idle_runs: list("SIDECAR_IDLE_RUNS", idle).iter().filter_map(|v| v.parse().ok()).collect(),
            runs: num("SIDECAR_RUNS", runs) as usize,
            relist_runs: num("SIDECAR_RELIST_RUNS", relist) as usize,
            idle_secs: num("SIDECAR_IDLE_SECS", idle_s),
            churn_secs: num("SIDECAR_CHURN_SECS", churn_s),
            churn_rates: list("SIDECAR_CHURN_RATES", "20,500")
                .iter()
                .filter_map(|v| v.parse().ok())
                .collect(),
            demo_runs: num("SIDECAR_DEMO_RUNS", demo) as usize,
            // Both unless told otherwise (`exporter` alone is for trying a change quickly; no ratios then).
            sides: match std::env::var("SIDECAR_SIDES").as_deref() {
                Ok("exporter") => vec![Side::Exporter],
                Ok("anchor") => vec![Side::Anchor],
                _ => vec![Side::Exporter, Side::Anchor],
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------------------

/// A CPU reading of one process: per-thread run time (ns, /proc/<pid>/task/*/schedstat) and, for when
/// threads came or went in between, the whole process's utime + stime (clock ticks, /proc/<pid>/stat).
#[derive(Clone)]
struct Cpu {
    threads: BTreeSet<u32>,
    sched_ns: u64,
    stat_ns: u64,
}

fn clock_tick_ns() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    let hz: u64 = out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100);
    1_000_000_000 / hz
}

fn cpu(pid: u32, tick_ns: u64) -> Cpu {
    let mut threads = BTreeSet::new();
    let mut sched_ns = 0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) else { continue };
            let s = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
                threads.insert(tid);
                sched_ns += ns;
            }
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    let stat_ns = (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) * tick_ns;
    Cpu { threads, sched_ns, stat_ns }
}

/// CPU seconds between two readings.
fn cpu_secs(a: &Cpu, b: &Cpu) -> f64 {
    let ns = if a.threads == b.threads && !a.threads.is_empty() {
        b.sched_ns.saturating_sub(a.sched_ns)
    } else {
        b.stat_ns.saturating_sub(a.stat_ns)
    };
    ns as f64 / 1e9
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------------
// The two processes
// ---------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Exporter = 0,
    Anchor = 1,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Exporter => "exporter watch",
            Side::Anchor => "typed reflector",
        }
    }
}

struct Proc {
    child: Child,
    pid: u32,
    tick_ns: u64,
}

impl Proc {
    fn spawn(side: Side, kubeconfig: &Path, otlp: SocketAddr, tick_ns: u64) -> Proc {
        let mut cmd = match side {
            Side::Exporter => {
                let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let mut c = Command::new(env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter"));
                c.args(["watch", "--metrics-addr", &format!("127.0.0.1:{port}")])
                    .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
                    .env("OTEL_METRICS_EXPORTER", "prometheus");
                c
            }
            Side::Anchor => {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.env("SIDECAR_ANCHOR", "1");
                c
            }
        };
        for (k, _) in std::env::vars() {
            if k.starts_with("AGENTRUN_") || k.starts_with("AGENTS_") || k == "OTEL_TRACES_EXPORTER" {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .env("KUBECONFIG", kubeconfig)
            // The relists' "watch failed; retrying" warnings are expected here.
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        Proc { child, pid, tick_ns }
    }

    fn cpu(&self) -> Cpu {
        cpu(self.pid, self.tick_ns)
    }

    /// Waits until the process has used under 10 % of a core for a whole second (a list or a backlog
    /// keeps it near a whole core); returns the reading at the start of that quiet second.
    fn quiet(&self, timeout: Duration) -> Cpu {
        let started = Instant::now();
        let mut window: VecDeque<Cpu> = VecDeque::new();
        loop {
            window.push_back(self.cpu());
            if window.len() > 5 {
                window.pop_front();
            }
            if window.len() == 5 && cpu_secs(&window[0], &window[4]) < 0.1 {
                return window[0].clone();
            }
            if started.elapsed() > timeout {
                eprintln!("  (still busy after {timeout:?})");
                return window[0].clone();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every collection has had a watch request beyond `before` (its list is done), then until
/// the process is quiet.
fn settled(api: &FakeApi, p: &Proc, before: [usize; 3]) -> Cpu {
    let started = Instant::now();
    while [RUNS, JOBS, PODS].iter().zip(before).any(|(c, b)| api.watch_requests(c) <= b) {
        assert!(started.elapsed() < Duration::from_secs(600), "lists not done in 10 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    p.quiet(Duration::from_secs(300))
}

fn watches(api: &FakeApi) -> [usize; 3] {
    [api.watch_requests(RUNS), api.watch_requests(JOBS), api.watch_requests(PODS)]
}

struct Bed {
    rt: tokio::runtime::Runtime,
    tick_ns: u64,
    otlp: SocketAddr,
    received: otlp::Received,
    dir: PathBuf,
}

impl Bed {
    /// A fake API server holding `n` runs.
    fn server(&self, n: usize) -> (FakeApi, PathBuf) {
        let api = FakeApi::default();
        let (runs, jobs, pods) = objects::objects_raw(n);
        api.set_raw(RUNS, runs, 1_000);
        api.set_raw(JOBS, jobs, 1_000);
        api.set_raw(PODS, pods, 1_000);
        let addr = self.rt.block_on(api.start());
        let kubeconfig = fake_apiserver::kubeconfig(addr, &self.dir.join(format!("{n}")), "agents");
        (api, kubeconfig)
    }

    fn spans_received(&self) -> usize {
        let traces = self.received.traces.lock().unwrap();
        traces
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }
}

fn idle(p: &Proc, secs: f64) -> f64 {
    let a = p.cpu();
    std::thread::sleep(Duration::from_secs_f64(secs));
    cpu_secs(&a, &p.cpu()) * 1e3 / secs
}

/// Streams `rate` events/s for `secs` seconds, each run's three finishing events in turn from run
/// `*next`; returns µs of CPU per event and the number of events.
fn churn(bed: &Bed, api: &FakeApi, p: &Proc, rate: f64, secs: f64, next: &mut usize) -> (f64, usize) {
    let count = (rate * secs).round() as usize;
    let mut events = Vec::with_capacity(count + 2);
    while events.len() < count {
        events.extend(objects::finish_events(*next));
        *next += 1;
    }
    events.truncate(count);
    let a = p.cpu();
    bed.rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for (path, e) in &events {
            tick.tick().await;
            api.publish(path, e);
        }
    });
    let b = p.quiet(Duration::from_secs(120));
    (cpu_secs(&a, &b) * 1e6 / count as f64, count)
}

#[derive(Default, Clone)]
struct Figures {
    base_kib: u64,
    per_run_kib: f64,
    relist_s: f64,
    relist_peak_mib: f64,
    idle: Vec<(usize, f64)>,
    churn: Vec<(f64, f64)>,
}

fn main() {
    if std::env::var_os("SIDECAR_ANCHOR").is_some() {
        anchor::main();
        return;
    }
    let s = Settings::from_env();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let received = otlp::Received::default();
    let otlp = rt.block_on(otlp::http(received.clone()));
    let bed = Bed {
        rt,
        tick_ns: clock_tick_ns(),
        otlp,
        received,
        dir: std::env::temp_dir().join(format!("agentrun-sidecar-{}", std::process::id())),
    };
    let mut fig = [Figures::default(), Figures::default()];
    let mut churn_next = 0usize;
    let mut sizes: BTreeSet<usize> = s.idle_runs.iter().copied().collect();
    sizes.insert(0);
    sizes.insert(s.runs);
    sizes.insert(s.relist_runs);
    let t0 = Instant::now();
    for n in sizes {
        let made = Instant::now();
        let (api, kubeconfig) = bed.server(n);
        if n >= 10_000 {
            println!("({n} runs served; objects made in {:.1} s)", made.elapsed().as_secs_f64());
        }
        for side in &s.sides {
            let f = &mut fig[*side as usize];
            let before = watches(&api);
            let p = Proc::spawn(*side, &kubeconfig, bed.otlp, bed.tick_ns);
            let loaded = Instant::now();
            settled(&api, &p, before);
            let load_s = loaded.elapsed().as_secs_f64();
            if n == 0 || n == s.runs {
                // Let the allocator settle after the list, as the memory benchmark does.
                std::thread::sleep(Duration::from_secs(2));
                let rss = status_kib(p.pid, "VmRSS:");
                if n == 0 {
                    f.base_kib = rss;
                } else {
                    f.per_run_kib = rss.saturating_sub(f.base_kib) as f64 / n as f64;
                }
                println!("{:<16} {n:>6} runs: loaded in {load_s:.1} s, VmRSS {rss} KiB", side.name());
            }
            if s.idle_runs.contains(&n) {
                let ms = idle(&p, s.idle_secs);
                f.idle.push((n, ms));
                println!("{:<16} {n:>6} runs: idle {ms:.3} ms CPU/s over {} s", side.name(), s.idle_secs);
            }
            if n == s.runs {
                for &rate in &s.churn_rates {
                    let spans = bed.spans_received();
                    let (us, count) = churn(&bed, &api, &p, rate, s.churn_secs, &mut churn_next);
                    f.churn.push((rate, us));
                    println!(
                        "{:<16} {n:>6} runs: {count} events at {rate}/s: {us:.0} µs CPU per event ({} spans exported)",
                        side.name(),
                        bed.spans_received() - spans
                    );
                }
            }
            if n == s.relist_runs {
                // Peak resident memory from here on: VmHWM reset to the current RSS.
                let _ = std::fs::write(format!("/proc/{}/clear_refs", p.pid), "5");
                let before = watches(&api);
                let a = p.cpu();
                for c in [RUNS, JOBS, PODS] {
                    api.expire_watches(c);
                }
                let b = settled(&api, &p, before);
                f.relist_s = cpu_secs(&a, &b);
                f.relist_peak_mib = status_kib(p.pid, "VmHWM:") as f64 / 1024.0;
                println!(
                    "{:<16} {n:>6} runs: relist of {} objects: {:.2} s CPU, peak VmHWM {:.1} MiB",
                    side.name(),
                    3 * n,
                    f.relist_s,
                    f.relist_peak_mib
                );
            }
        }
    }
    let demo = demo(&bed, s.demo_runs);
    println!("(bench ran {:.0} s)", t0.elapsed().as_secs_f64());
    table(&s, &fig, demo);
}

/// `demo` at its top speed (a simulated day per second), exporting to the receiver: (spans, spans/s, µs CPU per span).
fn demo(bed: &Bed, runs: usize) -> (usize, f64, f64) {
    let before = bed.spans_received();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter"))
        .args(["demo", "--runs", &runs.to_string(), "--speed", "86400", "--metrics-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", bed.otlp))
        .env("OTEL_METRICS_EXPORTER", "prometheus")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let pid = child.id();
    // Read the CPU of the exited process before reaping it.
    let mut last = cpu(pid, bed.tick_ns);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).unwrap_or("Z");
        if state == "Z" || state == "X" {
            break;
        }
        last = cpu(pid, bed.tick_ns);
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited = cpu(pid, bed.tick_ns);
    let wall = started.elapsed().as_secs_f64();
    let _ = child.wait();
    let secs = if exited.stat_ns > 0 { exited.stat_ns as f64 / 1e9 } else { last.stat_ns as f64 / 1e9 };
    let spans = bed.spans_received() - before;
    println!("demo, {runs} runs: {spans} spans received in {wall:.2} s wall, {secs:.2} s CPU");
    (spans, spans as f64 / wall, secs * 1e6 / spans.max(1) as f64)
}

/// `x / y`, or what it cannot be when the reflector used no measurable CPU.
fn ratio(x: f64, y: f64) -> String {
    match (x < 0.005, y < 0.005) {
        (true, true) => "neither woke".into(),
        (false, true) => "reflector never woke".into(),
        _ => format!("{:.1}×", x / y),
    }
}

fn table(s: &Settings, fig: &[Figures; 2], demo: (usize, f64, f64)) {
    let [e, a] = fig;
    println!();
    println!("| measure | exporter `watch` | typed reflector | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| memory per run at {} runs | {:.2} KiB | {:.1} KiB | 1/{:.1} |",
        s.runs,
        e.per_run_kib,
        a.per_run_kib,
        a.per_run_kib / e.per_run_kib
    );
    println!(
        "| relist CPU, {} runs ({} objects) | {:.2} s | {:.2} s | {:.2}× |",
        s.relist_runs,
        3 * s.relist_runs,
        e.relist_s,
        a.relist_s,
        e.relist_s / a.relist_s
    );
    println!(
        "| peak RSS during that relist | {:.1} MiB | {:.1} MiB | {:.2}× |",
        e.relist_peak_mib,
        a.relist_peak_mib,
        e.relist_peak_mib / a.relist_peak_mib
    );
    let join = |v: Vec<String>| v.join(" / ");
    println!(
        "| idle CPU at {} runs | {} ms/s | {} ms/s | {} |",
        join(e.idle.iter().map(|(n, _)| format!("{}k", n / 1000)).collect()),
        join(e.idle.iter().map(|(_, v)| format!("{v:.2}")).collect()),
        join(a.idle.iter().map(|(_, v)| format!("{v:.2}")).collect()),
        join(e.idle.iter().zip(&a.idle).map(|((_, x), (_, y))| ratio(*x, *y)).collect()),
    );
    for ((rate, x), (_, y)) in e.churn.iter().zip(&a.churn) {
        println!(
            "| CPU per watch event ({rate} events/s, {} runs, spans exported) | {x:.0} µs | {y:.0} µs | {:.2}× |",
            s.runs,
            x / y
        );
    }
    println!(
        "| span export (`demo`, {} spans to a local OTLP/HTTP receiver) | {:.0} spans/s, {:.1} µs CPU per span | – | – |",
        demo.0, demo.1, demo.2
    );
    println!();
    let goal = |ok: bool| if ok { "met" } else { "NOT met" };
    let idle_last = e.idle.last().zip(a.idle.last());
    println!("goals:");
    println!(
        "  relist CPU ≤ 0.7× the reflector: {:.2}× — {}",
        e.relist_s / a.relist_s,
        goal(e.relist_s <= 0.7 * a.relist_s)
    );
    if let Some(((n, x), (_, y))) = idle_last {
        println!("  idle CPU at {n} runs ≤ 2× the reflector: {} — {}", ratio(*x, *y), goal(*x <= 2.0 * y));
    }
    for ((rate, x), (_, y)) in e.churn.iter().zip(&a.churn) {
        println!("  CPU per event at {rate}/s ≤ 1.0× the reflector: {:.2}× — {}", x / y, goal(x <= y));
    }
    println!("  memory per run ≤ 2 KiB: {:.2} KiB — {}", e.per_run_kib, goal(e.per_run_kib <= 2.0));
    println!(
        "  peak RSS during the {}-object relist ≤ 64 MiB: {:.1} MiB — {}",
        3 * s.relist_runs,
        e.relist_peak_mib,
        goal(e.relist_peak_mib <= 64.0)
    );
}
