//! The loop every mode shares: observations into the tracker, facts out to the span and metric sinks.

use crate::{
    engine::{Emitted, Fact, Tracker, Ts},
    sink::summary::{RunSummary, Summary},
    source::Observation,
    telemetry::Telemetry,
    upstream::{self, UpstreamConfig},
};

pub struct Pipeline {
    tracker: Tracker,
    upstream: UpstreamConfig,
    telemetry: Telemetry,
    summary: Option<Summary>,
    completed_runs: u64,
    just_completed: Vec<RunSummary>,
}

impl Pipeline {
    pub fn new(tracker: Tracker, upstream: UpstreamConfig, telemetry: Telemetry) -> Self {
        Pipeline {
            tracker,
            upstream,
            telemetry,
            summary: None,
            completed_runs: 0,
            just_completed: Vec::new(),
        }
    }

    /// Also keep a per-run summary (replay prints it).
    pub fn with_summary(mut self) -> Self {
        self.summary = Some(Summary::default());
        self
    }

    pub fn observe(&mut self, obs: Observation) {
        if let Some(input) = upstream::input(&obs, &self.upstream) {
            let facts = self.tracker.apply(input);
            self.dispatch(facts);
        }
    }

    /// Advances time: settles waiting verdicts and refreshes the live gauges.
    pub fn tick(&mut self, now: Ts) {
        let facts = self.tracker.tick(now);
        self.dispatch(facts);
        let gauges = self.tracker.gauges(now);
        self.telemetry.metrics.set_live(gauges);
    }

    /// Settles everything still waiting (end of a replay or a demo).
    pub fn flush(&mut self) {
        let facts = self.tracker.flush();
        self.dispatch(facts);
        let now = self.tracker.now();
        let gauges = self.tracker.gauges(now);
        self.telemetry.metrics.set_live(gauges);
    }

    fn dispatch(&mut self, facts: Vec<Emitted>) {
        for e in &facts {
            self.telemetry.metrics.record(e);
            self.telemetry.spans.handle(e);
            if let Some(s) = self.summary.as_mut() {
                s.record(e);
            }
            if let Fact::RunComplete { run } = &e.fact {
                self.completed_runs += 1;
                if let Some(done) = self.summary.as_ref().and_then(|s| s.get(&run.uid)) {
                    self.just_completed.push(done.clone());
                }
            }
        }
    }

    /// Runs whose whole lifecycle (through the deletion of their Jobs) has been reported.
    pub fn completed_runs(&self) -> u64 {
        self.completed_runs
    }

    /// Summaries of the runs completed since the last call (with a summary).
    pub fn take_completed(&mut self) -> Vec<RunSummary> {
        std::mem::take(&mut self.just_completed)
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Flushes spans, then metrics, and returns the summary. Blocking.
    pub fn finish(self) -> Option<Summary> {
        self.telemetry.shutdown();
        self.summary
    }
}
