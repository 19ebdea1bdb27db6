//! Facts → finished spans. The current opentelemetry-rust API cannot set ids or end times on a span
//! builder, so each span is built as `SpanData` (deterministic ids, object-derived times) and handed, in
//! batches, to the retry buffer in front of the configured exporter.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanEvents, SpanLinks},
};

use super::buffer::BufferedExporter;

use crate::engine::{
    Emitted, Fact, Stamp, TimeSource, Ts,
    facts::{DeletionCause, JobInfo, Phase, RunInfo, RunOutcome, Ttl},
    ids,
};

pub const SCOPE_NAME: &str = "agentrun-lifecycle-exporter";

pub fn trace_id(run: &RunInfo) -> TraceId {
    TraceId::from_bytes(ids::trace_id(&run.uid).to_be_bytes())
}

pub fn root_span_id(run: &RunInfo) -> SpanId {
    SpanId::from_bytes(ids::span_id(&run.uid, "agentrun", &[]).to_be_bytes())
}

pub fn step_span_id(run: &RunInfo, index: u32) -> SpanId {
    SpanId::from_bytes(ids::span_id(&run.uid, "workflow.step", &[&index.to_string()]).to_be_bytes())
}

pub fn job_span_id(job: &JobInfo, name: &str) -> SpanId {
    let qualifiers: Vec<String> = match &job.step {
        Some(k) => {
            vec![
                k.index.to_string(),
                k.iteration.map(|i| i.to_string()).unwrap_or_default(),
                k.attempt.to_string(),
            ]
        }
        None => Vec::new(),
    };
    let q: Vec<&str> = qualifiers.iter().map(String::as_str).collect();
    SpanId::from_bytes(ids::span_id(&job.uid, name, &q).to_be_bytes())
}

fn job_parent(run: &RunInfo, job: &JobInfo) -> SpanId {
    match &job.step {
        Some(k) => step_span_id(run, k.index),
        None => root_span_id(run),
    }
}

fn kv_str(key: &'static str, value: &str) -> KeyValue {
    KeyValue::new(key, value.to_string())
}

fn run_attrs(run: &RunInfo) -> Vec<KeyValue> {
    let mut a = vec![
        kv_str("k8s.namespace.name", &run.namespace),
        kv_str("agentrun.name", &run.name),
        kv_str("agentrun.uid", &run.uid),
        kv_str("agentrun.runtime", run.runtime.as_str()),
    ];
    if let Some(agent) = &run.agent {
        a.push(kv_str("agentrun.agent", agent));
    }
    a
}

fn job_attrs(run: &RunInfo, job: &JobInfo) -> Vec<KeyValue> {
    let mut a = run_attrs(run);
    // Only on a Job's spans: the provider is known from Jobs' labels alone, and the Jobs of a run may be gone
    // when an exporter that (re)started sends its root span again.
    if let Some(provider) = &run.provider {
        a.push(kv_str("agentrun.provider", provider));
    }
    a.push(kv_str("k8s.job.name", &job.name));
    a.push(kv_str("k8s.job.uid", &job.uid));
    if let Some(k) = &job.step {
        if let Some(name) = &job.step_name {
            a.push(kv_str("agentrun.step", name));
        }
        a.push(KeyValue::new("agentrun.step.index", i64::from(k.index)));
        if let Some(it) = k.iteration {
            a.push(KeyValue::new("agentrun.iteration", i64::from(it)));
        }
        a.push(KeyValue::new("agentrun.attempt", i64::from(k.attempt)));
    }
    a
}

fn time_attrs(a: &mut Vec<KeyValue>, start: &Stamp, end: &Stamp) {
    if start.source != TimeSource::Object {
        a.push(kv_str("agentrun.time_source.start", start.source.as_str()));
    }
    if end.source != TimeSource::Object {
        a.push(kv_str("agentrun.time_source.end", end.source.as_str()));
    }
    if start.clamped || end.clamped {
        a.push(KeyValue::new("agentrun.clamped", true));
    }
}

fn ttl_attrs(a: &mut Vec<KeyValue>, ttl: &Ttl) {
    a.push(KeyValue::new("agentrun.job.ttl_seconds", ttl.seconds));
    a.push(kv_str("agentrun.job.ttl_applied", ttl.applied.as_str()));
}

fn rfc3339(t: Ts) -> String {
    t.to_string()
}

struct Draft {
    run: Arc<RunInfo>,
    name: &'static str,
    id: SpanId,
    parent: SpanId,
    start: Stamp,
    end: Stamp,
    attrs: Vec<KeyValue>,
    events: Vec<Event>,
    status: Status,
}

impl Draft {
    fn build(mut self, scope: &InstrumentationScope) -> SpanData {
        time_attrs(&mut self.attrs, &self.start, &self.end);
        let mut events = SpanEvents::default();
        events.events = self.events;
        SpanData {
            span_context: SpanContext::new(
                trace_id(&self.run),
                self.id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: self.parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(self.name),
            start_time: self.start.at.to_system_time(),
            end_time: self.end.at.to_system_time(),
            attributes: self.attrs,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: self.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

fn event(name: &'static str, at: Ts, attrs: Vec<KeyValue>) -> Event {
    Event::new(name, at.to_system_time(), attrs, 0)
}

/// The spans a fact completes (most facts complete one; metric-only facts none).
pub fn spans_of(fact: &Fact, scope: &InstrumentationScope) -> Vec<SpanData> {
    let draft = match fact {
        Fact::JobPhase { run, job, phase, start, end, failure } => {
            let mut attrs = job_attrs(run, job);
            let mut status = Status::Unset;
            if *phase == Phase::Run {
                match failure {
                    Some(reason) => {
                        attrs.push(kv_str("agentrun.job.outcome", "failed"));
                        if let Some(r) = reason {
                            attrs.push(kv_str("agentrun.job.condition_reason", r));
                        }
                        status = Status::error(reason.as_deref().unwrap_or("Failed").to_string());
                    }
                    None => attrs.push(kv_str("agentrun.job.outcome", "succeeded")),
                }
            }
            Draft {
                run: run.clone(),
                name: phase.span_name(),
                id: job_span_id(job, phase.span_name()),
                parent: job_parent(run, job),
                start: *start,
                end: *end,
                attrs,
                events: Vec::new(),
                status,
            }
        }
        Fact::PodRan { run, job, pod, start, end, exit_code, reason } => {
            let mut attrs = job_attrs(run, job);
            attrs.push(kv_str("k8s.pod.name", &pod.name));
            attrs.push(kv_str("k8s.pod.uid", &pod.uid));
            if let Some(node) = &pod.node {
                attrs.push(kv_str("k8s.node.name", node));
            }
            if let Some(code) = exit_code {
                attrs.push(KeyValue::new("agentrun.container.exit_code", *code));
            }
            if let Some(r) = reason {
                attrs.push(kv_str("agentrun.container.reason", r));
            }
            let status = match exit_code {
                Some(0) => Status::Unset,
                Some(code) => Status::error(format!("container exited with {code}")),
                None => Status::error("pod deleted before its container terminated"),
            };
            Draft {
                run: run.clone(),
                name: "pod.run",
                id: SpanId::from_bytes(ids::span_id(&pod.uid, "pod.run", &[]).to_be_bytes()),
                parent: job_span_id(job, "job.run"),
                start: *start,
                end: *end,
                attrs,
                events: Vec::new(),
                status,
            }
        }
        Fact::JobCollected { run, job, finished, collected, outcome, ttl } => {
            let mut attrs = job_attrs(run, job);
            let delay = collected.at.secs_since(finished.at);
            attrs.push(kv_str("agentrun.job.outcome", outcome.as_str()));
            let abandoned = *outcome == crate::engine::facts::CollectOutcome::Abandoned;
            if !abandoned {
                attrs.push(KeyValue::new("agentrun.job.collection_delay_seconds", delay));
            }
            if let Some(ttl) = ttl.as_ref().filter(|_| !abandoned) {
                ttl_attrs(&mut attrs, ttl);
                attrs.push(KeyValue::new("agentrun.job.ttl_margin_seconds", ttl.seconds as f64 - delay));
            }
            let status = if *outcome == crate::engine::facts::CollectOutcome::Missing {
                Status::error("the Job was gone when its status was collected")
            } else {
                Status::Unset
            };
            Draft {
                run: run.clone(),
                name: "job.collect",
                id: job_span_id(job, "job.collect"),
                parent: job_parent(run, job),
                start: *finished,
                end: *collected,
                attrs,
                events: Vec::new(),
                status,
            }
        }
        Fact::JobGone {
            run,
            job,
            started,
            finished,
            deleted,
            ttl,
            before_collection,
            cause,
            margin_seconds,
            ..
        } => {
            let mut attrs = job_attrs(run, job);
            attrs.push(kv_str("agentrun.job.deletion_cause", cause.as_str()));
            let mut events = Vec::new();
            // Deleted with its run (a cancel, retention): not an incident.
            let incident = *before_collection && *cause != DeletionCause::WithRun;
            if incident {
                events.push(event("job.deleted_before_collection", deleted.at, Vec::new()));
            }
            match finished {
                Some(fin) => {
                    attrs.push(KeyValue::new("agentrun.job.deleted_before_collection", incident));
                    if let Some(ttl) = ttl {
                        ttl_attrs(&mut attrs, ttl);
                        let deadline = fin.at.add_secs(ttl.seconds);
                        attrs.push(kv_str("agentrun.job.ttl_deadline", &rfc3339(deadline)));
                        if deadline <= deleted.at {
                            events.insert(0, event("job.ttl_expired", deadline, Vec::new()));
                        }
                        if *cause == DeletionCause::Ttl {
                            attrs.push(KeyValue::new(
                                "agentrun.job.deletion_lag_seconds",
                                deleted.at.secs_since(deadline).max(0.0),
                            ));
                        }
                    }
                    if let Some(m) = margin_seconds {
                        attrs.push(KeyValue::new("agentrun.job.ttl_margin_seconds", *m));
                    }
                    let status = if incident {
                        Status::error("the Job was deleted before its status was collected")
                    } else {
                        Status::Unset
                    };
                    Draft {
                        run: run.clone(),
                        name: "job.ttl",
                        id: job_span_id(job, "job.ttl"),
                        parent: job_parent(run, job),
                        start: *fin,
                        end: *deleted,
                        attrs,
                        events,
                        status,
                    }
                }
                // Never finished: its `job.run` ends at the deletion.
                None => {
                    let outcome = if *cause == DeletionCause::WithRun { "cancelled" } else { "deleted" };
                    attrs.push(kv_str("agentrun.job.outcome", outcome));
                    Draft {
                        run: run.clone(),
                        name: "job.run",
                        id: job_span_id(job, "job.run"),
                        parent: job_parent(run, job),
                        start: started.unwrap_or(*deleted),
                        end: *deleted,
                        attrs,
                        events,
                        status: if incident {
                            Status::error("the Job was deleted before it finished")
                        } else {
                            Status::Unset
                        },
                    }
                }
            }
        }
        Fact::StepFinished { run, index, name, start, end, failed, missing } => {
            let mut attrs = run_attrs(run);
            attrs.push(kv_str("agentrun.step", name));
            attrs.push(KeyValue::new("agentrun.step.index", i64::from(*index)));
            let events = missing
                .iter()
                .map(|m| event("agentrun.job_missing", m.at, vec![kv_str("agentrun.reason", &m.reason)]))
                .collect();
            Draft {
                run: run.clone(),
                name: "workflow.step",
                id: step_span_id(run, *index),
                parent: root_span_id(run),
                start: *start,
                end: *end,
                attrs,
                events,
                status: if *failed { Status::error("step failed") } else { Status::Unset },
            }
        }
        Fact::RunFinished { run, start, end, outcome, reason, missing } => {
            let mut attrs = run_attrs(run);
            match outcome {
                Some(o) => attrs.push(kv_str("agentrun.phase", o.phase())),
                None => attrs.push(kv_str("agentrun.phase", "Deleted")),
            }
            if let Some(r) = reason {
                attrs.push(kv_str("agentrun.reason", r));
            }
            let events = missing
                .iter()
                .map(|m| event("agentrun.job_missing", m.at, vec![kv_str("agentrun.reason", &m.reason)]))
                .collect();
            let status = match outcome {
                Some(RunOutcome::Succeeded) => Status::Ok,
                Some(RunOutcome::Failed) => Status::error(reason.as_deref().unwrap_or("Failed").to_string()),
                Some(RunOutcome::Cancelled) => Status::Unset,
                None => Status::error("the AgentRun was deleted before it finished"),
            };
            Draft {
                run: run.clone(),
                name: "agentrun",
                id: root_span_id(run),
                parent: SpanId::INVALID,
                start: *start,
                end: *end,
                attrs,
                events,
                status,
            }
        }
        Fact::SeriesSeen { .. } | Fact::TtlMargin { .. } | Fact::RunComplete { .. } => return Vec::new(),
    };
    vec![draft.build(scope)]
}

/// Why a span was lost (the `reason` label of `agentrun_exporter_spans_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Kept at zero: spans go straight from the pipeline to the retry buffer, through no queue that could
    /// fill (an SDK batch processor's queue did before); the series stays for dashboards and alerts.
    QueueFull,
    /// The retry buffer was full: the oldest spans made room for new ones.
    Evicted,
    /// Not delivered within the buffer's maximum age.
    Expired,
    /// Still held when shutdown's flush ran out of time.
    Shutdown,
    /// Refused by the backend for its content (gRPC `InvalidArgument`, HTTP 400 or 413): not retried.
    Rejected,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::Evicted,
        DropReason::Expired,
        DropReason::Shutdown,
        DropReason::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Evicted => "evicted",
            DropReason::Expired => "expired",
            DropReason::Shutdown => "shutdown",
            DropReason::Rejected => "rejected",
        }
    }
}

/// Why an export attempt failed (the spans stay in the buffer and are retried).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFailure {
    /// No answer within the attempt timeout.
    Timeout,
    /// Refused, unreachable, or an error status.
    Error,
}

impl ExportFailure {
    pub const ALL: [ExportFailure; 2] = [ExportFailure::Timeout, ExportFailure::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportFailure::Timeout => "timeout",
            ExportFailure::Error => "error",
        }
    }
}

/// Counts of spans handed over, accepted by the backend, and lost. Once shutdown returned,
/// `submitted = exported + dropped` (with an exporter configured).
#[derive(Debug, Default)]
pub struct SpanStats {
    pub submitted: AtomicU64,
    /// Handed to the retry buffer.
    pub buffered: AtomicU64,
    pub exported: AtomicU64,
    /// All reasons together.
    pub dropped: AtomicU64,
    dropped_by: [AtomicU64; 5],
    failures: [AtomicU64; 2],
    /// Held by the retry buffer now.
    pub buffer_spans: AtomicU64,
    pub buffer_bytes: AtomicU64,
}

impl SpanStats {
    pub fn drop_spans(&self, reason: DropReason, n: u64) {
        self.dropped_by[reason as usize].fetch_add(n, Ordering::Relaxed);
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped_by[reason as usize].load(Ordering::Relaxed)
    }

    pub fn export_failure(&self, why: ExportFailure) {
        self.failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn export_failures(&self, why: ExportFailure) -> u64 {
        self.failures[why as usize].load(Ordering::Relaxed)
    }
}

/// Spans handed to the retry buffer at once: the OTLP request size the SDK's batch processor used.
pub const BATCH_SPANS: usize = 512;

/// Where finished spans go.
pub enum SpanOutput {
    /// The retry buffer in front of the OTLP exporter, fed in batches of [`BATCH_SPANS`] spans or of one tick
    /// (a second in `watch`), whichever is smaller.
    Buffer(BufferedExporter),
    /// The compact console view of finished traces.
    Console(ConsoleView),
    None,
}

pub struct SpanSink {
    output: SpanOutput,
    stats: Arc<SpanStats>,
    scope: InstrumentationScope,
    /// Spans built since the last handover to the buffer.
    batch: Vec<SpanData>,
}

impl SpanSink {
    pub fn new(output: SpanOutput, stats: Arc<SpanStats>) -> Self {
        let scope = InstrumentationScope::builder(SCOPE_NAME).with_version(env!("CARGO_PKG_VERSION")).build();
        SpanSink { output, stats, scope, batch: Vec::new() }
    }

    pub fn stats(&self) -> Arc<SpanStats> {
        self.stats.clone()
    }

    pub fn handle(&mut self, e: &Emitted) {
        if !e.exported {
            return;
        }
        for span in spans_of(&e.fact, &self.scope) {
            self.submit(span);
        }
        if let (Fact::RunComplete { run }, SpanOutput::Console(view)) = (&e.fact, &mut self.output) {
            view.finish(run);
        }
    }

    /// Hands the spans built since the last call to the buffer (the pipeline calls it on each tick).
    pub fn tick(&mut self) {
        if let SpanOutput::Buffer(buffer) = &self.output
            && !self.batch.is_empty()
        {
            buffer.hand_over(std::mem::take(&mut self.batch));
        }
    }

    fn submit(&mut self, span: SpanData) {
        let stats = &self.stats;
        match &mut self.output {
            SpanOutput::Buffer(buffer) => {
                stats.submitted.fetch_add(1, Ordering::Relaxed);
                self.batch.push(span);
                if self.batch.len() >= BATCH_SPANS {
                    buffer.hand_over(std::mem::take(&mut self.batch));
                }
            }
            SpanOutput::Console(view) => {
                stats.submitted.fetch_add(1, Ordering::Relaxed);
                stats.exported.fetch_add(1, Ordering::Relaxed);
                view.add(span);
            }
            SpanOutput::None => {}
        }
    }

    /// Hands what is left to the retry buffer, sends what the buffer holds (bounded by its shutdown timeout)
    /// and stops. Every span not exported by then is counted as dropped.
    pub fn shutdown(&mut self) -> OTelSdkResult {
        self.tick();
        match &mut self.output {
            SpanOutput::Buffer(buffer) => {
                buffer.close();
                Ok(())
            }
            SpanOutput::Console(view) => {
                view.flush_all();
                Ok(())
            }
            SpanOutput::None => Ok(()),
        }
    }
}

/// Prints each trace as a small tree once its run's lifecycle is complete.
pub struct ConsoleView {
    out: Box<dyn std::io::Write + Send>,
    pending: std::collections::HashMap<TraceId, Vec<SpanData>>,
}

impl ConsoleView {
    pub fn new(out: Box<dyn std::io::Write + Send>) -> Self {
        ConsoleView { out, pending: Default::default() }
    }

    fn add(&mut self, span: SpanData) {
        self.pending.entry(span.span_context.trace_id()).or_default().push(span);
    }

    fn finish(&mut self, run: &RunInfo) {
        if let Some(spans) = self.pending.remove(&trace_id(run)) {
            let text = render_trace(&spans);
            let _ = self.out.write_all(text.as_bytes());
            let _ = self.out.flush();
        }
    }

    fn flush_all(&mut self) {
        let mut traces: Vec<_> = self.pending.drain().map(|(_, v)| v).collect();
        traces.sort_by_key(|v| v.iter().map(|s| s.start_time).min());
        for spans in traces {
            let text = render_trace(&spans);
            let _ = self.out.write_all(text.as_bytes());
        }
        let _ = self.out.flush();
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn secs(span: &SpanData) -> f64 {
    span.end_time.duration_since(span.start_time).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn clock(t: SystemTime) -> String {
    let ms = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let s = Ts(ms).to_string();
    // 2026-08-20T12:00:01.412Z → 12:00:01.412
    s.split('T').nth(1).unwrap_or(&s).trim_end_matches('Z').to_string()
}

/// A compact text rendering of one trace: the root, then children indented under their parents.
pub fn render_trace(spans: &[SpanData]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let root = spans.iter().find(|s| s.parent_span_id == SpanId::INVALID);
    let title = match root.or(spans.first()) {
        Some(s) => format!(
            "{}/{} ({}) {}",
            attr(s, "k8s.namespace.name").map(|v| v.to_string()).unwrap_or_default(),
            attr(s, "agentrun.name").map(|v| v.to_string()).unwrap_or_default(),
            attr(s, "agentrun.runtime").map(|v| v.to_string()).unwrap_or_default(),
            attr(s, "agentrun.phase").map(|v| v.to_string()).unwrap_or_else(|| "in progress".into()),
        ),
        None => return out,
    };
    let _ = writeln!(out, "trace {} {}", spans[0].span_context.trace_id(), title);
    let ids: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut stack: Vec<(SpanId, usize)> = Vec::new();
    let mut ordered: Vec<&SpanData> = spans.iter().collect();
    ordered.sort_by_key(|s| (s.start_time, s.end_time));
    // Roots of this view: the real root plus any span whose parent was not exported in this trace.
    let mut tops: Vec<&SpanData> =
        ordered.iter().copied().filter(|s| !ids.contains(&s.parent_span_id)).collect();
    tops.reverse();
    for t in tops {
        stack.push((t.span_context.span_id(), 0));
    }
    while let Some((id, depth)) = stack.pop() {
        let Some(s) = spans.iter().find(|s| s.span_context.span_id() == id) else {
            continue;
        };
        let mut line = format!(
            "  {:indent$}{:<14} {} → {} {:>9.1}s",
            "",
            s.name,
            clock(s.start_time),
            clock(s.end_time),
            secs(s),
            indent = depth * 2
        );
        for (key, label) in [
            ("agentrun.step", "step"),
            ("agentrun.attempt", "attempt"),
            ("agentrun.job.outcome", "outcome"),
            ("agentrun.job.ttl_seconds", "ttl"),
            ("agentrun.job.ttl_margin_seconds", "margin"),
            ("agentrun.job.deleted_before_collection", "deleted_before_collection"),
            ("agentrun.reason", "reason"),
        ] {
            if let Some(v) = attr(s, key) {
                let v = match v {
                    opentelemetry::Value::F64(f) => format!("{f:.1}"),
                    other => other.to_string(),
                };
                let _ = write!(line, " {label}={v}");
            }
        }
        if let Status::Error { description } = &s.status {
            let _ = write!(line, " ERROR({description})");
        }
        let _ = writeln!(out, "{line}");
        let mut children: Vec<&SpanData> = ordered
            .iter()
            .copied()
            .filter(|c| c.parent_span_id == id && c.span_context.span_id() != id)
            .collect();
        children.reverse();
        for c in children {
            stack.push((c.span_context.span_id(), depth + 1));
        }
    }
    out
}
