//! Engine throughput: a simulated cluster's watch events through the upstream boundary, the tracker and the
//! span projection.
//! Prints figures; run with `cargo bench --bench throughput`.

use std::time::Instant;

use agentrun_lifecycle_exporter::{
    engine::{Fact, Tracker, TrackerConfig, Ts},
    sink::spans::spans_of,
    source::demo::{DemoConfig, Simulator},
    upstream::{self, UpstreamConfig},
};
use opentelemetry::InstrumentationScope;

fn main() {
    let runs = 5_000;
    let mut sim = Simulator::new(DemoConfig {
        runs: Some(runs),
        seed: 42,
        arrival_secs: 2.0,
        start: Ts(1_787_227_200_000),
    });
    let mut observations = Vec::new();
    while sim.next_at().is_some() {
        observations.extend(sim.step());
    }
    let scope = InstrumentationScope::builder("bench").build();
    let cfg = UpstreamConfig::default();
    for round in 0..3 {
        let mut tracker = Tracker::new(TrackerConfig { settle_ms: 5_000, ..TrackerConfig::default() });
        let started = Instant::now();
        let mut facts = 0usize;
        let mut spans = 0usize;
        for obs in &observations {
            let Some(input) = upstream::input(obs, &cfg) else { continue };
            for e in tracker.apply(input) {
                facts += 1;
                spans += spans_of(&e.fact, &scope).len();
            }
        }
        for e in tracker.flush() {
            facts += 1;
            spans += spans_of(&e.fact, &scope).len();
            let _ = matches!(e.fact, Fact::RunComplete { .. });
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "round {round}: {runs} runs, {} watch events, {facts} facts, {spans} spans in {:.3} s: {:.0} events/s, {:.0} spans/s",
            observations.len(),
            secs,
            observations.len() as f64 / secs,
            spans as f64 / secs
        );
    }
}
