//! Facts → OpenTelemetry instruments. One meter provider feeds both `/metrics` and OTLP; instrument names
//! follow the OTel style (dots, unit in the unit field) so that both paths end up with the Prometheus names in
//! docs/telemetry.md.

use std::sync::{Arc, Mutex, atomic::Ordering};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

use super::spans::SpanStats;
use crate::engine::{
    Emitted, Fact, Kind, LiveGauges,
    facts::{CollectOutcome, DeletionCause, Phase, Runtime, TtlApplied},
    tracker::NamespaceGauges,
};

/// Delays and durations: 0.5 s to one day.
pub const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 43200.0, 86400.0,
];
/// Margins can be negative (collected after the TTL expired).
pub const MARGIN_BUCKETS: [f64; 21] = [
    -86400.0, -3600.0, -600.0, -60.0, -10.0, 0.0, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
];

/// What the sources report about their watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Relisted,
    Malformed,
}

impl WatchEventType {
    pub const ALL: [WatchEventType; 5] = [
        WatchEventType::Added,
        WatchEventType::Modified,
        WatchEventType::Deleted,
        WatchEventType::Relisted,
        WatchEventType::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "added",
            WatchEventType::Modified => "modified",
            WatchEventType::Deleted => "deleted",
            WatchEventType::Relisted => "relisted",
            WatchEventType::Malformed => "malformed",
        }
    }
}

pub struct LifecycleMetrics {
    collection_delay: Histogram<f64>,
    ttl_margin: Histogram<f64>,
    ttl_margin_exceeded: Counter<u64>,
    deleted_before_collection: Counter<u64>,
    deleted_with_run: Counter<u64>,
    job_missing: Counter<u64>,
    ttl_deletion_lag: Histogram<f64>,
    phase_duration: Histogram<f64>,
    runs: Counter<u64>,
    watch_events: Counter<u64>,
    watch_errors: Counter<u64>,
    live: Arc<Mutex<LiveGauges>>,
}

fn ns_runtime(namespace: &str, runtime: Runtime) -> [KeyValue; 2] {
    [KeyValue::new("namespace", namespace.to_string()), KeyValue::new("runtime", runtime.as_str())]
}

impl LifecycleMetrics {
    pub fn new(meter: &Meter, spans: Arc<SpanStats>) -> Self {
        let live: Arc<Mutex<LiveGauges>> = Arc::default();
        let hist = |name: &'static str, desc: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(desc)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let counter = |name: &'static str, unit: &'static str, desc: &'static str| {
            meter.u64_counter(name).with_unit(unit).with_description(desc).build()
        };
        let metrics = LifecycleMetrics {
            collection_delay: hist(
                "agentrun.job.collection_delay",
                "Job finished to the AgentRun/step status write that consumed it",
                &DURATION_BUCKETS,
            ),
            ttl_margin: hist("agentrun.job.ttl_margin", "Job TTL minus collection delay", &MARGIN_BUCKETS),
            ttl_margin_exceeded: counter(
                "agentrun.job.ttl_margin_exceeded",
                "{job}",
                "Jobs whose TTL margin was below zero",
            ),
            deleted_before_collection: counter(
                "agentrun.job.deleted_before_collection",
                "{job}",
                "Jobs that disappeared before their status was collected",
            ),
            deleted_with_run: counter(
                "agentrun.job.deleted_with_run",
                "{job}",
                "Jobs deleted because their AgentRun was deleted (reason cancel: it was running; retention: it had finished)",
            ),
            job_missing: counter(
                "agentrun.job.missing",
                "{run}",
                "Runs that ended JobMissing or WorkflowJobMissing",
            ),
            ttl_deletion_lag: hist(
                "agentrun.job.ttl_deletion_lag",
                "TTL expiry to the Job's deletion",
                &DURATION_BUCKETS,
            ),
            phase_duration: hist(
                "agentrun.job.phase_duration",
                "Duration of a Job's phases",
                &DURATION_BUCKETS,
            ),
            runs: counter("agentrun.runs", "{run}", "Runs that reached a terminal phase"),
            watch_events: counter("agentrun.exporter.watch_events", "{event}", "Watch events applied"),
            watch_errors: counter("agentrun.exporter.watch_errors", "{error}", "Failed list/watch calls"),
            live: live.clone(),
        };
        register_gauges(meter, live, spans);
        metrics
    }

    pub fn record(&self, e: &Emitted) {
        if let Fact::SeriesSeen { namespace, runtime } = &e.fact {
            self.zero_series(namespace, *runtime);
            return;
        }
        if !e.counted {
            return;
        }
        match &e.fact {
            Fact::JobPhase { run, phase, start, end, failure, .. } => {
                // A Job that failed before it started has no meaningful run phase.
                if *phase == Phase::Run && failure.is_some() && start.at == end.at {
                    return;
                }
                let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                let attrs = [ns, rt, KeyValue::new("phase", phase.as_str())];
                self.phase_duration.record(end.at.secs_since(start.at), &attrs);
            }
            // An abandoned Job was never read: there is no collection delay to record.
            Fact::JobCollected { outcome: CollectOutcome::Abandoned, .. } => {}
            Fact::JobCollected { run, finished, collected, outcome, .. } => {
                let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                let attrs = [ns, rt, KeyValue::new("outcome", outcome.as_str())];
                self.collection_delay.record(collected.at.secs_since(finished.at), &attrs);
            }
            Fact::TtlMargin { run, ttl, margin_seconds, exceeded, .. } => {
                let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                let attrs = [ns, rt, KeyValue::new("ttl_applied", ttl.applied.as_str())];
                self.ttl_margin.record(*margin_seconds, &attrs);
                if *exceeded {
                    self.ttl_margin_exceeded.add(1, &attrs);
                }
            }
            Fact::JobGone {
                run,
                finished,
                deleted,
                ttl,
                before_collection,
                cause,
                run_finished,
                exceeded,
                ..
            } => {
                if *cause == DeletionCause::WithRun {
                    let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                    let reason = if *run_finished { "retention" } else { "cancel" };
                    self.deleted_with_run.add(1, &[ns, rt, KeyValue::new("reason", reason)]);
                } else if *before_collection {
                    self.deleted_before_collection.add(1, &ns_runtime(&run.namespace, run.runtime));
                }
                let by_ttl = *cause == DeletionCause::Ttl;
                if let (Some(ttl), true) = (ttl, *exceeded) {
                    let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                    self.ttl_margin_exceeded
                        .add(1, &[ns, rt, KeyValue::new("ttl_applied", ttl.applied.as_str())]);
                }
                if let (true, Some(fin), Some(ttl)) = (by_ttl, finished, ttl) {
                    let lag = deleted.at.secs_since(fin.at.add_secs(ttl.seconds)).max(0.0);
                    self.ttl_deletion_lag
                        .record(lag, &[KeyValue::new("namespace", run.namespace.to_string())]);
                }
            }
            Fact::RunFinished { run, outcome, reason, .. } => {
                if let Some(o) = outcome {
                    let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                    self.runs.add(1, &[ns, rt, KeyValue::new("outcome", o.as_str())]);
                }
                if let Some(r) =
                    reason.as_deref().filter(|r| *r == "JobMissing" || *r == "WorkflowJobMissing")
                {
                    let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                    self.job_missing.add(1, &[ns, rt, KeyValue::new("reason", r.to_string())]);
                }
            }
            Fact::PodRan { .. }
            | Fact::StepFinished { .. }
            | Fact::RunComplete { .. }
            | Fact::SeriesSeen { .. } => {}
        }
    }

    /// Creates the counters of a new namespace/runtime pair at zero, so the first real increment is an
    /// increase that `increase()` and `rate()` can see.
    fn zero_series(&self, namespace: &str, runtime: Runtime) {
        let [ns, rt] = ns_runtime(namespace, runtime);
        self.deleted_before_collection.add(0, &[ns.clone(), rt.clone()]);
        for reason in ["cancel", "retention"] {
            self.deleted_with_run.add(0, &[ns.clone(), rt.clone(), KeyValue::new("reason", reason)]);
        }
        let reason = match runtime {
            Runtime::Job => "JobMissing",
            Runtime::Workflow => "WorkflowJobMissing",
        };
        self.job_missing.add(0, &[ns.clone(), rt.clone(), KeyValue::new("reason", reason)]);
        for applied in [TtlApplied::AtCreation, TtlApplied::AfterCollection] {
            self.ttl_margin_exceeded
                .add(0, &[ns.clone(), rt.clone(), KeyValue::new("ttl_applied", applied.as_str())]);
        }
        for outcome in ["succeeded", "failed", "cancelled"] {
            self.runs.add(0, &[ns.clone(), rt.clone(), KeyValue::new("outcome", outcome)]);
        }
    }

    pub fn set_live(&self, gauges: LiveGauges) {
        if let Ok(mut live) = self.live.lock() {
            *live = gauges;
        }
    }

    pub fn watch_event(&self, kind: Kind, event: WatchEventType) {
        self.watch_events
            .add(1, &[KeyValue::new("resource", kind.resource()), KeyValue::new("type", event.as_str())]);
    }

    pub fn watch_error(&self, kind: Kind) {
        self.watch_errors.add(1, &[KeyValue::new("resource", kind.resource())]);
    }

    /// Creates the self-metric series of every resource (and event type) at zero.
    pub fn zero_watch_series(&self) {
        for kind in Kind::ALL {
            self.watch_errors.add(0, &[KeyValue::new("resource", kind.resource())]);
            for t in WatchEventType::ALL {
                self.watch_events
                    .add(0, &[KeyValue::new("resource", kind.resource()), KeyValue::new("type", t.as_str())]);
            }
        }
    }
}

/// A gauge in seconds with a `stat` = `min`/`max` pair per namespace.
fn min_max_gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    live: Arc<Mutex<LiveGauges>>,
    pick: fn(&NamespaceGauges) -> Option<(i64, i64)>,
) {
    meter
        .i64_observable_gauge(name)
        .with_unit("s")
        .with_description(description)
        .with_callback(move |o| {
            if let Ok(g) = live.lock() {
                for (n, v) in &g.namespaces {
                    if let Some((lo, hi)) = pick(v) {
                        let ns = KeyValue::new("namespace", n.to_string());
                        o.observe(lo, &[ns.clone(), KeyValue::new("stat", "min")]);
                        o.observe(hi, &[ns, KeyValue::new("stat", "max")]);
                    }
                }
            }
        })
        .build();
}

fn register_gauges(meter: &Meter, live: Arc<Mutex<LiveGauges>>, spans: Arc<SpanStats>) {
    fn each<F>(live: &Arc<Mutex<LiveGauges>>, f: F)
    where
        F: FnOnce(&LiveGauges),
    {
        if let Ok(g) = live.lock() {
            f(&g);
        }
    }
    let ns = |n: &str| KeyValue::new("namespace", n.to_string());
    let l = live.clone();
    meter
        .u64_observable_gauge("agentrun.job.awaiting_collection")
        .with_unit("{job}")
        .with_description("Finished Jobs whose status was not collected yet")
        .with_callback(move |o| {
            each(&l, |g| g.namespaces.iter().for_each(|(n, v)| o.observe(v.awaiting_collection, &[ns(n)])))
        })
        .build();
    let l = live.clone();
    meter
        .f64_observable_gauge("agentrun.job.awaiting_collection.max_age")
        .with_unit("s")
        .with_description("Age of the oldest finished Job awaiting collection")
        .with_callback(move |o| {
            each(&l, |g| {
                g.namespaces.iter().for_each(|(n, v)| o.observe(v.awaiting_collection_max_age, &[ns(n)]))
            })
        })
        .build();
    let l = live.clone();
    meter
        .f64_observable_gauge("agentrun.job.ttl_margin.remaining")
        .with_unit("s")
        .with_description("Smallest finish + TTL - now over finished, uncollected Jobs")
        .with_callback(move |o| {
            each(&l, |g| {
                for (n, v) in &g.namespaces {
                    if let Some(r) = v.ttl_margin_remaining {
                        o.observe(r, &[ns(n)]);
                    }
                }
            })
        })
        .build();
    min_max_gauge(meter, "agentrun.job.ttl", "Job TTL in force over live Jobs", live.clone(), |v| v.job_ttl);
    min_max_gauge(
        meter,
        "agentrun.retention",
        "AgentRun retention in force over live AgentRuns",
        live.clone(),
        |v| v.retention,
    );
    let l = live.clone();
    meter
        .u64_observable_gauge("agentrun.jobs_without_ttl")
        .with_unit("{job}")
        .with_description("Collected Jobs that still have no TTL after the grace period")
        .with_callback(move |o| {
            each(&l, |g| g.namespaces.iter().for_each(|(n, v)| o.observe(v.jobs_without_ttl, &[ns(n)])))
        })
        .build();
    let l = live;
    meter
        .u64_observable_gauge("agentrun.exporter.tracked_objects")
        .with_unit("{object}")
        .with_description("Objects held in memory")
        .with_callback(move |o| {
            each(&l, |g| {
                o.observe(g.tracked_runs as u64, &[KeyValue::new("resource", Kind::AgentRun.resource())]);
                o.observe(g.tracked_jobs as u64, &[KeyValue::new("resource", Kind::Job.resource())]);
                o.observe(g.tracked_pods as u64, &[KeyValue::new("resource", Kind::Pod.resource())]);
            })
        })
        .build();
    let s = spans.clone();
    meter
        .u64_observable_counter("agentrun.exporter.spans_exported")
        .with_unit("{span}")
        .with_description("Spans the exporter accepted")
        .with_callback(move |o| o.observe(s.exported.load(Ordering::Relaxed), &[]))
        .build();
    let s = spans;
    meter
        .u64_observable_counter("agentrun.exporter.spans_dropped")
        .with_unit("{span}")
        .with_description("Spans lost: export failed after retries, or the queue was full")
        .with_callback(move |o| o.observe(s.dropped.load(Ordering::Relaxed), &[]))
        .build();
    meter
        .u64_observable_gauge("agentrun.exporter.build_info")
        .with_description("The running version")
        .with_callback(|o| o.observe(1, &[KeyValue::new("version", env!("CARGO_PKG_VERSION"))]))
        .build();
}
