//! The loop every mode shares: observations into the tracker, facts out to the span and metric sinks.

use crate::{
    engine::{Emitted, Fact, Tracker, Ts},
    leader::{Follower, LeaseState},
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
    /// Following the controller's leader (watch mode with two replicas); `None`: always lead.
    follower: Option<Follower>,
    completed_runs: u64,
    just_completed: Vec<RunSummary>,
    gauge_refreshes: u64,
    /// The simulated second of the last gauge refresh, the events since, and its cost (objects walked).
    gauge_second: i64,
    events_since_gauges: usize,
    gauge_cost: usize,
    /// An observation came since the last tick: the next tick has gauges to refresh or spans to hand over.
    changed: bool,
}

impl Pipeline {
    pub fn new(tracker: Tracker, upstream: UpstreamConfig, telemetry: Telemetry) -> Self {
        Pipeline {
            tracker,
            upstream,
            telemetry,
            summary: None,
            follower: None,
            completed_runs: 0,
            just_completed: Vec::new(),
            gauge_refreshes: 0,
            gauge_second: i64::MIN,
            events_since_gauges: 0,
            gauge_cost: 0,
            changed: false,
        }
    }

    /// Also keep a per-run summary (replay prints it).
    pub fn with_summary(mut self) -> Self {
        self.summary = Some(Summary::default());
        self
    }

    /// Export and count only while this pod holds the controller's Lease.
    pub fn following(mut self, follower: Follower) -> Self {
        self.telemetry.metrics.set_leadership(false, 0);
        self.follower = Some(follower);
        self
    }

    /// Whether this exporter leads: it exports spans and counts.
    pub fn leads(&self) -> bool {
        self.follower.as_ref().is_none_or(Follower::leads)
    }

    /// This pod holds the controller's Lease.
    pub fn holds_lease(&self) -> bool {
        self.follower.as_ref().is_some_and(Follower::holds)
    }

    /// The controller's Lease was observed at `now`; when the Lease moved to this pod, sends what was held back.
    pub fn lease(&mut self, now: Ts, lease: LeaseState) {
        let Some(follower) = self.follower.as_mut() else { return };
        self.changed = true;
        let led = follower.leads();
        let held = follower.observe(now, lease);
        let leads = follower.leads();
        if led != leads {
            tracing::info!(identity = follower.identity(), leads, sent = held.len(), "leadership changed");
        }
        self.send(held);
        self.refresh_leadership();
        if led != leads {
            self.refresh_gauges(self.tracker.now());
        }
    }

    fn refresh_leadership(&self) {
        if let Some(f) = &self.follower {
            self.telemetry.metrics.set_leadership(f.leads(), f.held().0);
        }
    }

    pub fn observe(&mut self, obs: Observation) {
        self.changed = true;
        if let Some(input) = upstream::input(&obs, &self.upstream) {
            let facts = self.tracker.apply(input);
            self.dispatch(facts);
        }
    }

    /// Advances time: settles waiting verdicts and refreshes the live gauges.
    pub fn tick(&mut self, now: Ts) {
        let facts = self.tracker.tick(now);
        self.dispatch(facts);
        self.telemetry.spans.tick();
        self.refresh_gauges(now);
        self.changed = false;
    }

    /// Whether a tick at `now` could change anything: an observation came since the last one, or time alone
    /// moves a verdict or a gauge. Otherwise ticking can wait for the next observation.
    pub fn wants_tick(&self, now: Ts) -> bool {
        self.changed || self.tracker.time_driven(now)
    }

    /// A replay's clock, before each event: verdicts settle at once (cheap, timer-driven), but the gauges,
    /// which walk all state, are refreshed only when the clock enters a new second and at least
    /// `state / 64` events have passed since the last refresh, so their cost stays linear in events however
    /// many runs are open. `flush` refreshes them at the end.
    pub fn advance(&mut self, now: Ts) {
        let facts = self.tracker.tick(now);
        self.dispatch(facts);
        self.events_since_gauges += 1;
        let second = now.0.div_euclid(1000);
        if second != self.gauge_second && self.events_since_gauges.saturating_mul(64) >= self.gauge_cost {
            self.refresh_gauges(now);
        }
    }

    fn refresh_gauges(&mut self, now: Ts) {
        let mut gauges = self.tracker.gauges(now);
        self.gauge_cost = gauges.tracked_runs + gauges.tracked_jobs + gauges.tracked_pods;
        if !self.leads() {
            // The leader's are the cluster's; a standby's would be a second copy.
            gauges.namespaces.clear();
        }
        self.telemetry.metrics.set_live(gauges);
        self.refresh_leadership();
        self.gauge_refreshes += 1;
        self.gauge_second = now.0.div_euclid(1000);
        self.events_since_gauges = 0;
    }

    /// How often the gauges were computed (each walks all state).
    pub fn gauge_refreshes(&self) -> u64 {
        self.gauge_refreshes
    }

    /// Settles everything still waiting (end of a replay or a demo).
    pub fn flush(&mut self) {
        let facts = self.tracker.flush();
        self.dispatch(facts);
        let now = self.tracker.now();
        self.refresh_gauges(now);
    }

    fn dispatch(&mut self, facts: Vec<Emitted>) {
        let facts = match self.follower.as_mut() {
            Some(f) => f.gate(self.tracker.now(), facts),
            None => facts,
        };
        self.send(facts);
    }

    fn send(&mut self, facts: Vec<Emitted>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        engine::TrackerConfig,
        source::demo::{DemoConfig, Simulator},
        telemetry::{self, TracesDefault},
    };

    /// A replay refreshes the gauges (a walk of all state) at most once per simulated second, and less
    /// often when the state is large, so its cost stays linear in events.
    #[test]
    fn replay_refreshes_gauges_per_simulated_second_not_per_event() {
        let mut sim =
            Simulator::new(DemoConfig { runs: Some(300), seed: 3, arrival_secs: 0.01, start: Ts(0) });
        let mut observations = Vec::new();
        while sim.next_at().is_some() {
            observations.extend(sim.step());
        }
        let telemetry = telemetry::init(
            TracesDefault::OtlpIfConfigured,
            Box::new(std::io::sink()),
            &telemetry::Settings::default(),
        )
        .unwrap();
        let mut pipeline =
            Pipeline::new(Tracker::new(TrackerConfig::default()), UpstreamConfig::default(), telemetry);
        let (first, last) = (observations[0].at, observations[observations.len() - 1].at);
        let seconds = (last.0 / 1000 - first.0 / 1000 + 1) as u64;
        let events = observations.len() as u64;
        assert!(events > 4 * seconds, "the test needs several events per second: {events} in {seconds} s");
        for obs in observations {
            pipeline.advance(obs.at);
            pipeline.observe(obs);
        }
        pipeline.flush();
        assert!(
            pipeline.gauge_refreshes() <= seconds + 1,
            "{} gauge refreshes for {events} events over {seconds} simulated seconds",
            pipeline.gauge_refreshes()
        );
    }
}
