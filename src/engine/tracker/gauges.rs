//! Live gauge values, per namespace.

use super::{TrackerConfig, index::Namespace};
use crate::engine::{
    ids::name_key, model::Consumption as ConsumptionKind, time::Ts, tracker::NamespaceGauges,
};

fn minmax(cur: Option<(i64, i64)>, v: i64) -> Option<(i64, i64)> {
    Some(cur.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
}

impl Namespace {
    /// The namespace's gauges at `now`; `None` when it has nothing to report (`has_series`: counters of it
    /// exist, so its gauges do too).
    pub fn gauges(&self, cfg: &TrackerConfig, now: Ts, has_series: bool) -> Option<NamespaceGauges> {
        let mut g = NamespaceGauges::default();
        let mut present = has_series || !self.runs.is_empty();
        for run in self.runs.values() {
            if !run.gone
                && let Some(r) = run.retention
            {
                g.retention = minmax(g.retention, r);
            }
        }
        for r in self.done.values().filter_map(|d| d.retention) {
            present = true;
            g.retention = minmax(g.retention, r);
        }
        for job in self.jobs.values() {
            let Some(run) = self.run_of_job(&job.info.uid).and_then(|u| self.runs.get(&u)) else { continue };
            present = true;
            if job.deletion.is_some() {
                continue;
            }
            let effective_ttl = job.ttl.map(|t| t.seconds).or(run.job_ttl);
            if let Some(t) = effective_ttl {
                g.job_ttl = minmax(g.job_ttl, t);
            }
            let Some(finish) = &job.finish else { continue };
            match run.consumption_of(name_key(&job.info.name)) {
                Some(c)
                    if c.kind == ConsumptionKind::Collected
                        && job.ttl.is_none()
                        && run.job_ttl.is_some()
                        && now.0.saturating_sub(c.at.at.0) > cfg.ttl_grace_ms =>
                {
                    g.jobs_without_ttl += 1;
                }
                Some(_) => {}
                None if run.terminal.is_none() && !run.gone => {
                    g.awaiting_collection += 1;
                    let age = now.secs_since(finish.at).max(0.0);
                    g.awaiting_collection_max_age = g.awaiting_collection_max_age.max(age);
                    if let Some(t) = effective_ttl {
                        let remaining = finish.at.add_secs(t).secs_since(now);
                        g.ttl_margin_remaining =
                            Some(g.ttl_margin_remaining.map_or(remaining, |r| r.min(remaining)));
                    }
                }
                None => {}
            }
        }
        // With no live Job, the TTL in force is the one the next Job will get: the controller's default.
        if g.job_ttl.is_none() {
            g.job_ttl = Some((cfg.default_job_ttl, cfg.default_job_ttl));
        }
        present.then_some(g)
    }
}
