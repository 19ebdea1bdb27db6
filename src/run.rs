//! Wiring of the four modes: a source, the pipeline, the HTTP endpoints, and shutdown. This is an edge:
//! errors become `anyhow` here.

use std::{
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{DemoArgs, FollowLeader, RecordArgs, ReplayArgs, ScopeArgs, SummaryFormat, WatchArgs},
    engine::{Tracker, TrackerConfig, Ts},
    http::{self, AlwaysReady},
    leader::{Follower, LeaseState},
    pipeline::Pipeline,
    sink::{metrics::LifecycleMetrics, spans::SpanStats, summary::RunSummary},
    source::{
        Observation,
        demo::{DemoConfig, Simulator},
        kube::{Readiness, WatchScope, spawn_watches},
        lease::spawn_lease_watch,
        replay,
    },
    telemetry::{self, TracesDefault},
    upstream::{self, UpstreamConfig, lease::LeaderElection},
};

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn scope(client: &kube::Client, args: &ScopeArgs) -> WatchScope {
    let namespaces: Vec<String> =
        args.namespaces.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
    let namespaces = if namespaces.iter().any(|n| n == "*") {
        Vec::new()
    } else if namespaces.is_empty() {
        vec![client.default_namespace().to_string()]
    } else {
        namespaces
    };
    WatchScope { namespaces, job_selector: args.job_selector.clone() }
}

/// Flushing exporters blocks; keep it off the async worker threads.
async fn finish(pipeline: Pipeline) -> Option<crate::sink::summary::Summary> {
    tokio::task::spawn_blocking(move || pipeline.finish()).await.unwrap_or_default()
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let telemetry = telemetry::init(
        TracesDefault::OtlpIfConfigured,
        Box::new(std::io::stdout()),
        &args.export.settings(),
    )?;
    telemetry.metrics.zero_watch_series();
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let scope = scope(&client, &args.scope).await;
    info!(
        namespaces = %if scope.namespaces.is_empty() { "*".to_string() } else { scope.namespaces.join(",") },
        job_selector = %scope.job_selector,
        metrics_addr = %args.metrics_addr,
        "watching"
    );
    let ready = Readiness::new(scope.watch_count());
    let listener =
        http::bind(args.metrics_addr).await.with_context(|| format!("binding {}", args.metrics_addr))?;
    let router = http::router(telemetry.registry.clone(), ready.clone());
    // Served until the Lease is handed over, so a last scrape sees the final counts.
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, router, (&args.http).into(), async {
        let _ = server_stopped.await;
    }));

    // Room for the start-up relist markers of every watch and a few list pages: more would only hold decoded
    // objects waiting for the engine, a relist's transient memory (8192 added ~17 MiB to the peak resident
    // memory of a 50,100-object relist).
    let (tx, mut rx) = mpsc::channel::<Observation>(128 + 2 * scope.watch_count());
    let (lease_tx, mut lease_rx) = mpsc::channel::<LeaseState>(64);
    let election = follow_leader(&args);
    let mut tasks = spawn_watches(client.clone(), &scope, tx, telemetry.metrics.clone(), ready);
    let tracker = Tracker::new(args.engine.tracker_config(Ts::now()));
    let mut pipeline = Pipeline::new(tracker, args.engine.upstream_config(), telemetry);
    if let Some((election, identity)) = election {
        info!(lease = %format!("{}/{}", election.namespace, election.name), %identity, "following the controller's leader");
        tasks.push(spawn_lease_watch(client, &election.namespace, &election.name, lease_tx.clone()));
        pipeline = pipeline.following(Follower::new(identity, Ts::now()));
    }
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    // Ticks only while they can change something (see `Pipeline::wants_tick`): idle, the loop sleeps until
    // the next observation, and the first tick after it comes at once.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let ticking = pipeline.wants_tick(Ts::now());
        tokio::select! {
            Some(obs) = rx.recv() => pipeline.observe(obs),
            Some(lease) = lease_rx.recv() => pipeline.lease(Ts::now(), lease),
            _ = ticker.tick(), if ticking => pipeline.tick(Ts::now()),
            _ = &mut stop => break,
        }
    }
    if pipeline.holds_lease() {
        // The controller next to us releases the Lease as it stops; until the Lease is seen to move, this
        // exporter is still the one sending, so nothing falls between it and the next leader.
        info!(timeout = ?args.handover_timeout, "waiting for the controller to hand its Lease over");
        let handover = tokio::time::sleep(args.handover_timeout);
        tokio::pin!(handover);
        while pipeline.holds_lease() {
            tokio::select! {
                Some(obs) = rx.recv() => pipeline.observe(obs),
                Some(lease) = lease_rx.recv() => pipeline.lease(Ts::now(), lease),
                _ = ticker.tick() => pipeline.tick(Ts::now()),
                _ = &mut handover => {
                    warn!("the Lease was not handed over in time; stopping anyway");
                    break;
                }
            }
        }
    }
    drop(lease_tx);
    let _ = server_stop.send(());
    info!("shutting down: flushing spans, then metrics");
    for t in tasks {
        t.abort();
    }
    finish(pipeline).await;
    let _ = server.await;
    Ok(())
}

/// The controller's Lease and this pod's identity, when the exporter follows the leader.
fn follow_leader(args: &WatchArgs) -> Option<(LeaderElection, String)> {
    if args.follow_leader == FollowLeader::Off {
        return None;
    }
    let Some(election) = upstream::lease::leader_election(&|name| std::env::var(name).ok()) else {
        info!("the controller's leader election is off: this exporter leads");
        return None;
    };
    let Some(identity) = election.identity.clone() else {
        info!(
            "no AGENTS_POD_UID: not in a controller pod (or the controller holds its Lease under a random identity); this exporter leads"
        );
        return None;
    };
    Some((election, identity))
}

pub async fn record(args: RecordArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let scope = scope(&client, &args.scope).await;
    let file =
        std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    // Self-metrics have nowhere to go in this mode.
    let metrics = Arc::new(LifecycleMetrics::new(
        &opentelemetry::global::meter("record"),
        Arc::new(SpanStats::default()),
    ));
    let (tx, mut rx) = mpsc::channel::<Observation>(8192);
    let tasks = spawn_watches(client, &scope, tx, metrics, Readiness::new(scope.watch_count()));
    info!(out = %args.out.display(), "recording watch events");
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut written = 0u64;
    loop {
        tokio::select! {
            Some(obs) = rx.recv() => {
                if let Some(line) = replay::to_json_line(&obs) {
                    writeln!(out, "{line}").context("writing the capture")?;
                    written += 1;
                }
            }
            _ = ticker.tick() => out.flush().context("writing the capture")?,
            _ = &mut stop => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    out.flush()?;
    info!(events = written, "capture written");
    Ok(())
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let mut merged = replay::Merged::open(&args.files)?;
    let telemetry = telemetry::init(
        TracesDefault::OtlpIfConfigured,
        Box::new(std::io::stderr()),
        &args.export.settings(),
    )?;
    let mut cfg = args.engine.tracker_config(Ts(i64::MIN));
    cfg.backfill_window_ms = None;
    let mut pipeline =
        Pipeline::new(Tracker::new(cfg), args.engine.upstream_config(), telemetry).with_summary();
    let (mut events, mut skipped, mut warnings) = (0u64, 0u64, 0u64);
    // Streamed: one event in memory at a time, besides the merge's reorder windows.
    for item in merged.by_ref() {
        match item {
            replay::Replayed::Observation(obs) => {
                events += 1;
                pipeline.advance(obs.at);
                pipeline.observe(obs);
            }
            replay::Replayed::Skipped(s) => {
                skipped += 1;
                warn!("{s}");
            }
            replay::Replayed::Warning(w) => {
                warnings += 1;
                warn!("{w}");
            }
        }
    }
    if let Some(e) = merged.take_error() {
        warn!("{e}; the events read before it are replayed");
    }
    pipeline.flush();
    let summary = finish(pipeline).await.unwrap_or_default();
    let text = match args.format {
        SummaryFormat::Table => summary.to_table(),
        SummaryFormat::Json => summary.to_json_lines(),
    };
    print!("{text}");
    info!(events, skipped, warnings, runs = summary.len(), "replayed");
    Ok(())
}

fn demo_line(done: u64, total: Option<u64>, r: &RunSummary) -> String {
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.1}s")).unwrap_or_else(|| "-".into());
    let of = total.map(|t| format!("/{t}")).unwrap_or_default();
    format!(
        "run {done}{of}  {}/{}  {:<8} {:<9} {:<18} jobs={} collect={} margin={}{}",
        r.namespace,
        r.name,
        r.runtime,
        r.outcome,
        r.reason.as_deref().unwrap_or("-"),
        r.jobs,
        opt(r.collection_delay_seconds),
        opt(r.ttl_margin_seconds),
        if r.deleted_before_collection > 0 { "  DELETED BEFORE COLLECTION" } else { "" }
    )
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let telemetry = telemetry::init(
        TracesDefault::OtlpElseConsole,
        Box::new(std::io::stdout()),
        &args.export.settings(),
    )?;
    let listener =
        http::bind(args.metrics_addr).await.with_context(|| format!("binding {}", args.metrics_addr))?;
    let router = http::router(telemetry.registry.clone(), Arc::new(AlwaysReady));
    let server = tokio::spawn(http::serve(listener, router, (&args.http).into(), shutdown_signal()));
    println!(
        "demo: simulated cluster at {}x real time; metrics on http://{}/metrics",
        args.speed, args.metrics_addr
    );

    // The simulated clock is back-dated so that it never runs ahead of the wall clock.
    // Bounded: `--runs` is any u64, and a clock back-dated past a year only makes times absurd.
    let backdate = match args.runs {
        Some(n) => Simulator::expected_span_secs(n, args.arrival).min(366.0 * 86_400.0),
        None => 6.0 * 3600.0,
    };
    let start = Ts::now().add_millis(-(backdate * 1000.0) as i64);
    let mut sim =
        Simulator::new(DemoConfig { runs: args.runs, seed: args.seed, arrival_secs: args.arrival, start });
    let cfg = TrackerConfig { settle_ms: 5_000, ttl_grace_ms: 120_000, ..TrackerConfig::default() };
    let mut pipeline = Pipeline::new(Tracker::new(cfg), UpstreamConfig::default(), telemetry).with_summary();
    let mut record = match &args.record {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let began = Instant::now();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut totals = std::collections::BTreeMap::<String, u64>::new();
    let mut shown = 0u64;
    loop {
        let sim_now =
            Ts::now().min(start.add_millis((began.elapsed().as_secs_f64() * args.speed * 1000.0) as i64));
        while sim.next_at().is_some_and(|t| t <= sim_now) {
            for obs in sim.step() {
                if let (Some(w), Some(line)) = (record.as_mut(), replay::to_json_line(&obs)) {
                    writeln!(w, "{line}")?;
                }
                pipeline.observe(obs);
            }
        }
        pipeline.tick(sim_now);
        for r in pipeline.take_completed() {
            *totals.entry(format!("{}/{}", r.outcome, r.reason.as_deref().unwrap_or("-"))).or_default() += 1;
            shown += 1;
            println!("{}", demo_line(shown, args.runs, &r));
        }
        if sim.next_at().is_none() || args.runs.is_some_and(|n| pipeline.completed_runs() >= n) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = &mut stop => break,
        }
    }
    pipeline.flush();
    for r in pipeline.take_completed() {
        *totals.entry(format!("{}/{}", r.outcome, r.reason.as_deref().unwrap_or("-"))).or_default() += 1;
        shown += 1;
        println!("{}", demo_line(shown, args.runs, &r));
    }
    if let Some(mut w) = record {
        w.flush()?;
    }
    let completed = pipeline.completed_runs();
    let stats = pipeline.telemetry().spans.stats();
    finish(pipeline).await;
    let spans = stats.exported.load(std::sync::atomic::Ordering::Relaxed);
    let dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
    println!("demo: {completed} runs completed, {spans} spans exported, {dropped} dropped");
    for (k, v) in totals {
        println!("  {v:>4}  {k}");
    }
    server.abort();
    Ok(())
}
