//! Facts → OpenTelemetry instruments. One meter provider feeds both `/metrics` and OTLP; instrument names
//! follow the OTel style (dots, unit in the unit field) so that both paths end up with the Prometheus names in
//! docs/telemetry.md, rendered from the catalogue docs/telemetry.toml.

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter},
};

use super::spans::{DropReason, ExportFailure, SpanStats};
use crate::{
    catalogue,
    engine::{
        Emitted, Fact, Kind, LiveGauges,
        facts::{CollectOutcome, DeletionCause, Phase, Runtime, TtlApplied},
        tracker::NamespaceGauges,
    },
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

/// The most series one namespace adds to a metric: `runtime` (2) × `outcome` (3) on
/// `agentrun_runs_total`, `agentrun_job_collection_delay_seconds` and `agentrun_job_phase_duration_seconds`
/// (× `phase`). The cardinality limit is this times the namespaces configured.
pub const SERIES_PER_NAMESPACE: usize = 6;
/// The SDK's limit when no view sets one.
pub const SDK_DEFAULT_CARDINALITY_LIMIT: usize = 2000;

const COLLECTION_DELAY: &str = "job_collection_delay";
const TTL_MARGIN: &str = "job_ttl_margin";
const TTL_MARGIN_EXCEEDED: &str = "job_ttl_margin_exceeded";
const DELETED_BEFORE_COLLECTION: &str = "job_deleted_before_collection";
const DELETED_WITH_RUN: &str = "job_deleted_with_run";
const JOB_MISSING: &str = "job_missing";
const TTL_DELETION_LAG: &str = "job_ttl_deletion_lag";
const PHASE_DURATION: &str = "job_phase_duration";
const RUNS: &str = "runs";
const AWAITING: &str = "job_awaiting_collection";
const AWAITING_MAX_AGE: &str = "job_awaiting_collection_max_age";
const MARGIN_REMAINING: &str = "job_ttl_margin_remaining";
const JOB_TTL: &str = "job_ttl";
const RETENTION: &str = "retention";
const WITHOUT_TTL: &str = "jobs_without_ttl";

/// A metric's OTLP name, unit and description, from the catalogue (`docs/telemetry.toml`).
fn otel(id: &str) -> &'static str {
    catalogue::metric(id).otel.as_str()
}

fn unit(id: &str) -> &'static str {
    catalogue::metric(id).unit.as_str()
}

fn description(id: &str) -> &'static str {
    catalogue::metric(id).description.as_str()
}

/// The metrics whose series grow with namespaces: the ones the cardinality limit is about.
pub const NAMESPACED: [&str; 15] = [
    COLLECTION_DELAY,
    TTL_MARGIN,
    TTL_MARGIN_EXCEEDED,
    DELETED_BEFORE_COLLECTION,
    DELETED_WITH_RUN,
    JOB_MISSING,
    TTL_DELETION_LAG,
    PHASE_DURATION,
    RUNS,
    AWAITING,
    AWAITING_MAX_AGE,
    MARGIN_REMAINING,
    JOB_TTL,
    RETENTION,
    WITHOUT_TTL,
];

/// Counts the distinct attribute sets of each namespaced metric, as the SDK does, to tell when one passes
/// the cardinality limit: the SDK then folds the excess into an `otel_metric_overflow` series silently.
/// Synchronous instruments keep their series for the process' life (cumulative); an observable gauge has
/// the series of its last callback.
struct SeriesCount {
    limit: usize,
    sets: Mutex<HashMap<&'static str, HashSet<u64>>>,
    observed: Mutex<HashMap<&'static str, usize>>,
}

impl SeriesCount {
    fn new(limit: usize) -> Self {
        SeriesCount { limit, sets: Mutex::default(), observed: Mutex::default() }
    }

    fn note(&self, metric: &'static str, attrs: &[KeyValue]) {
        let mut h = DefaultHasher::new();
        for kv in attrs {
            kv.key.as_str().hash(&mut h);
            kv.value.as_str().hash(&mut h);
        }
        if let Ok(mut sets) = self.sets.lock() {
            sets.entry(metric).or_default().insert(h.finish());
        }
    }

    fn observed(&self, metric: &'static str, series: usize) {
        if let Ok(mut o) = self.observed.lock() {
            o.insert(metric, series);
        }
    }

    fn series(&self, metric: &str) -> usize {
        let sync = self.sets.lock().ok().and_then(|s| s.get(metric).map(HashSet::len)).unwrap_or(0);
        let observed = self.observed.lock().ok().and_then(|o| o.get(metric).copied()).unwrap_or(0);
        sync.max(observed)
    }
}

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
    series: Arc<SeriesCount>,
    leadership: Arc<Leadership>,
}

/// Whether this exporter leads (exports and counts), and what a standby holds back.
#[derive(Debug)]
struct Leadership {
    leads: AtomicBool,
    held: AtomicU64,
}

fn ns_runtime(namespace: &str, runtime: Runtime) -> [KeyValue; 2] {
    [KeyValue::new("namespace", namespace.to_string()), KeyValue::new("runtime", runtime.as_str())]
}

impl LifecycleMetrics {
    /// With the SDK's default cardinality limit (a meter provider without a cardinality view).
    pub fn new(meter: &Meter, spans: Arc<SpanStats>) -> Self {
        Self::with_series_limit(meter, spans, SDK_DEFAULT_CARDINALITY_LIMIT)
    }

    /// `limit`: the cardinality limit the meter provider applies (its view), for the overflow self-metric.
    pub fn with_series_limit(meter: &Meter, spans: Arc<SpanStats>, limit: usize) -> Self {
        let live: Arc<Mutex<LiveGauges>> = Arc::default();
        let series = Arc::new(SeriesCount::new(limit));
        let leadership = Arc::new(Leadership { leads: AtomicBool::new(true), held: AtomicU64::new(0) });
        let hist = |id: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(otel(id))
                .with_unit(unit(id))
                .with_description(description(id))
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let counter = |id: &'static str| {
            meter.u64_counter(otel(id)).with_unit(unit(id)).with_description(description(id)).build()
        };
        let metrics = LifecycleMetrics {
            collection_delay: hist(COLLECTION_DELAY, &DURATION_BUCKETS),
            ttl_margin: hist(TTL_MARGIN, &MARGIN_BUCKETS),
            ttl_margin_exceeded: counter(TTL_MARGIN_EXCEEDED),
            deleted_before_collection: counter(DELETED_BEFORE_COLLECTION),
            deleted_with_run: counter(DELETED_WITH_RUN),
            job_missing: counter(JOB_MISSING),
            ttl_deletion_lag: hist(TTL_DELETION_LAG, &DURATION_BUCKETS),
            phase_duration: hist(PHASE_DURATION, &DURATION_BUCKETS),
            runs: counter(RUNS),
            watch_events: counter("exporter_watch_events"),
            watch_errors: counter("exporter_watch_errors"),
            live: live.clone(),
            series: series.clone(),
            leadership: leadership.clone(),
        };
        register_gauges(meter, live, spans, series);
        register_leadership(meter, leadership);
        metrics
    }

    fn add(&self, counter: &Counter<u64>, name: &'static str, value: u64, attrs: &[KeyValue]) {
        self.series.note(name, attrs);
        counter.add(value, attrs);
    }

    fn observe(&self, hist: &Histogram<f64>, name: &'static str, value: f64, attrs: &[KeyValue]) {
        self.series.note(name, attrs);
        hist.record(value, attrs);
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
                self.observe(&self.phase_duration, PHASE_DURATION, end.at.secs_since(start.at), &attrs);
            }
            // An abandoned Job was never read: there is no collection delay to record.
            Fact::JobCollected { outcome: CollectOutcome::Abandoned, .. } => {}
            Fact::JobCollected { run, finished, collected, outcome, .. } => {
                let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                let attrs = [ns, rt, KeyValue::new("outcome", outcome.as_str())];
                self.observe(
                    &self.collection_delay,
                    COLLECTION_DELAY,
                    collected.at.secs_since(finished.at),
                    &attrs,
                );
            }
            Fact::TtlMargin { run, ttl, margin_seconds, exceeded, .. } => {
                let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                let attrs = [ns, rt, KeyValue::new("ttl_applied", ttl.applied.as_str())];
                self.observe(&self.ttl_margin, TTL_MARGIN, *margin_seconds, &attrs);
                if *exceeded {
                    self.add(&self.ttl_margin_exceeded, TTL_MARGIN_EXCEEDED, 1, &attrs);
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
                    self.add(
                        &self.deleted_with_run,
                        DELETED_WITH_RUN,
                        1,
                        &[ns, rt, KeyValue::new("reason", reason)],
                    );
                } else if *before_collection {
                    self.add(
                        &self.deleted_before_collection,
                        DELETED_BEFORE_COLLECTION,
                        1,
                        &ns_runtime(&run.namespace, run.runtime),
                    );
                }
                let by_ttl = *cause == DeletionCause::Ttl;
                if let (Some(ttl), true) = (ttl, *exceeded) {
                    let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                    let attrs = [ns, rt, KeyValue::new("ttl_applied", ttl.applied.as_str())];
                    self.add(&self.ttl_margin_exceeded, TTL_MARGIN_EXCEEDED, 1, &attrs);
                }
                if let (true, Some(fin), Some(ttl)) = (by_ttl, finished, ttl) {
                    let lag = deleted.at.secs_since(fin.at.add_secs(ttl.seconds)).max(0.0);
                    let attrs = [KeyValue::new("namespace", run.namespace.to_string())];
                    self.observe(&self.ttl_deletion_lag, TTL_DELETION_LAG, lag, &attrs);
                }
            }
            Fact::RunFinished { run, outcome, reason, .. } => {
                if let Some(o) = outcome {
                    let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                    self.add(&self.runs, RUNS, 1, &[ns, rt, KeyValue::new("outcome", o.as_str())]);
                }
                if let Some(r) =
                    reason.as_deref().filter(|r| *r == "JobMissing" || *r == "WorkflowJobMissing")
                {
                    let [ns, rt] = ns_runtime(&run.namespace, run.runtime);
                    self.add(
                        &self.job_missing,
                        JOB_MISSING,
                        1,
                        &[ns, rt, KeyValue::new("reason", r.to_string())],
                    );
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
        self.add(&self.deleted_before_collection, DELETED_BEFORE_COLLECTION, 0, &[ns.clone(), rt.clone()]);
        for reason in ["cancel", "retention"] {
            let attrs = [ns.clone(), rt.clone(), KeyValue::new("reason", reason)];
            self.add(&self.deleted_with_run, DELETED_WITH_RUN, 0, &attrs);
        }
        let reason = match runtime {
            Runtime::Job => "JobMissing",
            Runtime::Workflow => "WorkflowJobMissing",
        };
        self.add(
            &self.job_missing,
            JOB_MISSING,
            0,
            &[ns.clone(), rt.clone(), KeyValue::new("reason", reason)],
        );
        for applied in [TtlApplied::AtCreation, TtlApplied::AfterCollection] {
            let attrs = [ns.clone(), rt.clone(), KeyValue::new("ttl_applied", applied.as_str())];
            self.add(&self.ttl_margin_exceeded, TTL_MARGIN_EXCEEDED, 0, &attrs);
        }
        for outcome in ["succeeded", "failed", "cancelled"] {
            self.add(&self.runs, RUNS, 0, &[ns.clone(), rt.clone(), KeyValue::new("outcome", outcome)]);
        }
    }

    pub fn set_live(&self, gauges: LiveGauges) {
        if let Ok(mut live) = self.live.lock() {
            *live = gauges;
        }
    }

    /// A standby exports no lifecycle gauges: only the leader's are the cluster's.
    pub fn set_leadership(&self, leads: bool, held: usize) {
        self.leadership.leads.store(leads, Ordering::Relaxed);
        self.leadership.held.store(held as u64, Ordering::Relaxed);
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

fn register_leadership(meter: &Meter, leadership: Arc<Leadership>) {
    let l = leadership.clone();
    meter
        .u64_observable_gauge(otel("exporter_leader"))
        .with_unit(unit("exporter_leader"))
        .with_description(description("exporter_leader"))
        .with_callback(move |o| o.observe(u64::from(l.leads.load(Ordering::Relaxed)), &[]))
        .build();
    meter
        .u64_observable_gauge(otel("exporter_standby_held_facts"))
        .with_unit(unit("exporter_standby_held_facts"))
        .with_description(description("exporter_standby_held_facts"))
        .with_callback(move |o| o.observe(leadership.held.load(Ordering::Relaxed), &[]))
        .build();
}

/// A gauge in seconds with a `stat` = `min`/`max` pair per namespace.
fn min_max_gauge(
    meter: &Meter,
    name: &'static str,
    live: Arc<Mutex<LiveGauges>>,
    series: Arc<SeriesCount>,
    pick: fn(&NamespaceGauges) -> Option<(i64, i64)>,
) {
    meter
        .i64_observable_gauge(otel(name))
        .with_unit(unit(name))
        .with_description(description(name))
        .with_callback(move |o| {
            if let Ok(g) = live.lock() {
                let mut n = 0;
                for (ns, v) in &g.namespaces {
                    if let Some((lo, hi)) = pick(v) {
                        let ns = KeyValue::new("namespace", ns.to_string());
                        o.observe(lo, &[ns.clone(), KeyValue::new("stat", "min")]);
                        o.observe(hi, &[ns, KeyValue::new("stat", "max")]);
                        n += 2;
                    }
                }
                series.observed(name, n);
            }
        })
        .build();
}

/// A gauge with one series per namespace.
fn namespace_gauge<T: Copy + Send + Sync + 'static>(
    live: Arc<Mutex<LiveGauges>>,
    series: Arc<SeriesCount>,
    name: &'static str,
    pick: fn(&NamespaceGauges) -> Option<T>,
) -> impl Fn(&dyn opentelemetry::metrics::AsyncInstrument<T>) + Send + Sync + 'static {
    move |o| {
        if let Ok(g) = live.lock() {
            let mut n = 0;
            for (ns, v) in &g.namespaces {
                if let Some(value) = pick(v) {
                    o.observe(value, &[KeyValue::new("namespace", ns.to_string())]);
                    n += 1;
                }
            }
            series.observed(name, n);
        }
    }
}

fn register_gauges(
    meter: &Meter,
    live: Arc<Mutex<LiveGauges>>,
    spans: Arc<SpanStats>,
    series: Arc<SeriesCount>,
) {
    meter
        .u64_observable_gauge(otel(AWAITING))
        .with_unit(unit(AWAITING))
        .with_description(description(AWAITING))
        .with_callback(namespace_gauge(live.clone(), series.clone(), AWAITING, |v| {
            Some(v.awaiting_collection)
        }))
        .build();
    meter
        .f64_observable_gauge(otel(AWAITING_MAX_AGE))
        .with_unit(unit(AWAITING_MAX_AGE))
        .with_description(description(AWAITING_MAX_AGE))
        .with_callback(namespace_gauge(live.clone(), series.clone(), AWAITING_MAX_AGE, |v| {
            Some(v.awaiting_collection_max_age)
        }))
        .build();
    meter
        .f64_observable_gauge(otel(MARGIN_REMAINING))
        .with_unit(unit(MARGIN_REMAINING))
        .with_description(description(MARGIN_REMAINING))
        .with_callback(namespace_gauge(live.clone(), series.clone(), MARGIN_REMAINING, |v| {
            v.ttl_margin_remaining
        }))
        .build();
    min_max_gauge(meter, JOB_TTL, live.clone(), series.clone(), |v| v.job_ttl);
    min_max_gauge(meter, RETENTION, live.clone(), series.clone(), |v| v.retention);
    meter
        .u64_observable_gauge(otel(WITHOUT_TTL))
        .with_unit(unit(WITHOUT_TTL))
        .with_description(description(WITHOUT_TTL))
        .with_callback(namespace_gauge(live.clone(), series.clone(), WITHOUT_TTL, |v| {
            Some(v.jobs_without_ttl)
        }))
        .build();
    let l = live;
    meter
        .u64_observable_gauge(otel("exporter_tracked_objects"))
        .with_unit(unit("exporter_tracked_objects"))
        .with_description(description("exporter_tracked_objects"))
        .with_callback(move |o| {
            if let Ok(g) = l.lock() {
                o.observe(g.tracked_runs as u64, &[KeyValue::new("resource", Kind::AgentRun.resource())]);
                o.observe(g.tracked_jobs as u64, &[KeyValue::new("resource", Kind::Job.resource())]);
                o.observe(g.tracked_pods as u64, &[KeyValue::new("resource", Kind::Pod.resource())]);
            }
        })
        .build();
    let s = spans.clone();
    meter
        .u64_observable_counter(otel("exporter_spans_exported"))
        .with_unit(unit("exporter_spans_exported"))
        .with_description(description("exporter_spans_exported"))
        .with_callback(move |o| o.observe(s.exported.load(Ordering::Relaxed), &[]))
        .build();
    let s = spans.clone();
    meter
        .u64_observable_counter(otel("exporter_spans_dropped"))
        .with_unit(unit("exporter_spans_dropped"))
        .with_description(description("exporter_spans_dropped"))
        .with_callback(move |o| {
            for r in DropReason::ALL {
                o.observe(s.dropped(r), &[KeyValue::new("reason", r.as_str())]);
            }
        })
        .build();
    let s = spans.clone();
    meter
        .u64_observable_counter(otel("exporter_span_export_failures"))
        .with_unit(unit("exporter_span_export_failures"))
        .with_description(description("exporter_span_export_failures"))
        .with_callback(move |o| {
            for r in ExportFailure::ALL {
                o.observe(s.export_failures(r), &[KeyValue::new("reason", r.as_str())]);
            }
        })
        .build();
    let s = spans.clone();
    meter
        .u64_observable_gauge(otel("exporter_span_buffer_spans"))
        .with_unit(unit("exporter_span_buffer_spans"))
        .with_description(description("exporter_span_buffer_spans"))
        .with_callback(move |o| o.observe(s.buffer_spans.load(Ordering::Relaxed), &[]))
        .build();
    let s = spans;
    meter
        .u64_observable_gauge(otel("exporter_span_buffer_size"))
        .with_unit(unit("exporter_span_buffer_size"))
        .with_description(description("exporter_span_buffer_size"))
        .with_callback(move |o| o.observe(s.buffer_bytes.load(Ordering::Relaxed), &[]))
        .build();
    let c = series.clone();
    meter
        .u64_observable_gauge(otel("exporter_metric_series"))
        .with_unit(unit("exporter_metric_series"))
        .with_description(description("exporter_metric_series"))
        .with_callback(move |o| {
            for m in NAMESPACED {
                o.observe(c.series(m) as u64, &[KeyValue::new("metric", otel(m))]);
            }
        })
        .build();
    let c = series;
    meter
        .u64_observable_gauge(otel("exporter_metric_overflow"))
        .with_unit(unit("exporter_metric_overflow"))
        .with_description(description("exporter_metric_overflow"))
        .with_callback(move |o| {
            for m in NAMESPACED {
                o.observe(u64::from(c.series(m) > c.limit), &[KeyValue::new("metric", otel(m))]);
            }
        })
        .build();
    meter
        .u64_observable_gauge(otel("exporter_build_info"))
        .with_unit(unit("exporter_build_info"))
        .with_description(description("exporter_build_info"))
        .with_callback(|o| o.observe(1, &[KeyValue::new("version", env!("CARGO_PKG_VERSION"))]))
        .build();
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    use super::*;
    use crate::telemetry::{Settings, cardinality_view};

    /// The metrics as `telemetry::init` builds them, read through the Prometheus registry.
    fn metrics(settings: &Settings) -> (LifecycleMetrics, prometheus::Registry, SdkMeterProvider) {
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .scope_info_enabled(false)
            .build()
            .unwrap();
        let limit = settings.cardinality_limit();
        let provider =
            SdkMeterProvider::builder().with_reader(reader).with_view(cardinality_view(limit)).build();
        let m = LifecycleMetrics::with_series_limit(
            &provider.meter("test"),
            Arc::new(SpanStats::default()),
            limit,
        );
        (m, registry, provider)
    }

    fn namespaces(m: &LifecycleMetrics, n: usize) {
        for i in 0..n {
            for runtime in [Runtime::Job, Runtime::Workflow] {
                let namespace: Arc<str> = format!("team-{i:04}").into();
                m.record(&Emitted {
                    fact: Fact::SeriesSeen { namespace, runtime },
                    counted: true,
                    exported: true,
                });
            }
        }
    }

    /// (series of `agentrun_runs_total`, whether it has an overflow series, the self-metric's value for it)
    fn read(registry: &prometheus::Registry) -> (usize, bool, Option<f64>, Option<f64>) {
        let families = registry.gather();
        let family =
            |name: &str| families.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("{name}"));
        let runs = family("agentrun_runs_total");
        let overflowed = runs
            .get_metric()
            .iter()
            .any(|m| m.get_label().iter().any(|l| l.name() == "otel_metric_overflow" && l.value() == "true"));
        let of_runs = |f: &prometheus::proto::MetricFamily| {
            f.get_metric()
                .iter()
                .find(|m| m.get_label().iter().any(|l| l.name() == "metric" && l.value() == otel(RUNS)))
                .map(|m| m.get_gauge().get_value())
        };
        (
            runs.get_metric().len(),
            overflowed,
            of_runs(family("agentrun_exporter_metric_overflow")),
            of_runs(family("agentrun_exporter_metric_series")),
        )
    }

    #[test]
    fn the_widest_metric_has_series_per_namespace_series_for_one_namespace() {
        let (m, _registry, _provider) = metrics(&Settings::default());
        namespaces(&m, 1);
        let widest = NAMESPACED.iter().map(|n| m.series.series(n)).max();
        assert_eq!(widest, Some(SERIES_PER_NAMESPACE));
    }

    /// Past ~333 namespaces (6 series each), the SDK's default of 2,000 series folded `agentrun_runs_total`
    /// into one overflow series; the default limit now holds 1,000 namespaces.
    #[test]
    fn a_thousand_namespaces_do_not_overflow_with_the_default_limit() {
        let (m, registry, _provider) = metrics(&Settings::default());
        namespaces(&m, 1000);
        let (series, overflowed, overflow, count) = read(&registry);
        assert!(!overflowed, "agentrun_runs_total has an otel_metric_overflow series");
        assert_eq!(series, 6000);
        assert_eq!(overflow, Some(0.0));
        assert_eq!(count, Some(6000.0));
        let text = crate::telemetry::Telemetry::render_metrics(&registry);
        assert!(!text.contains("otel_metric_overflow"), "no metric overflows");
    }

    /// The self-metric agrees with the SDK exactly: at the limit nothing overflows, one namespace more
    /// and both show it.
    #[test]
    fn overflow_shows_in_the_self_metric_when_the_limit_is_passed() {
        let settings = Settings { max_namespaces: 10, ..Settings::default() };
        let (m, registry, _provider) = metrics(&settings);
        namespaces(&m, 10);
        let (series, overflowed, overflow, _) = read(&registry);
        assert_eq!((series, overflowed, overflow), (60, false, Some(0.0)));
        namespaces(&m, 11);
        let (_, overflowed, overflow, count) = read(&registry);
        assert!(overflowed, "the SDK folded the 11th namespace into otel_metric_overflow");
        assert_eq!(overflow, Some(1.0));
        assert_eq!(count, Some(66.0));
    }
}
