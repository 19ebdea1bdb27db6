//! Live gauge values, per namespace, kept up to date as objects change: each Job and run remembers what it
//! contributes (a [`JobGauge`], its retention) and the namespace keeps ordered counts, so reading the gauges
//! costs the number of namespaces, not the number of tracked objects, and idle time costs nothing.

use std::collections::BTreeMap;

use super::{TrackerConfig, index::Namespace, state::*};
use crate::engine::{
    ids::name_key, model::Consumption as ConsumptionKind, time::Ts, tracker::NamespaceGauges,
};

/// A multiset of ordered values.
#[derive(Debug, Default)]
pub(super) struct Counts<K: Ord> {
    counts: BTreeMap<K, u32>,
    len: u64,
}

impl<K: Ord + Copy> Counts<K> {
    fn add(&mut self, k: K) {
        *self.counts.entry(k).or_default() += 1;
        self.len += 1;
    }

    fn remove(&mut self, k: K) {
        if let Some(n) = self.counts.get_mut(&k) {
            *n -= 1;
            self.len -= 1;
            if *n == 0 {
                self.counts.remove(&k);
            }
        }
    }

    fn replace(&mut self, old: Option<K>, new: Option<K>) {
        if old != new {
            old.into_iter().for_each(|k| self.remove(k));
            new.into_iter().for_each(|k| self.add(k));
        }
    }

    fn min_max(&self) -> Option<(K, K)> {
        Some((*self.counts.first_key_value()?.0, *self.counts.last_key_value()?.0))
    }

    fn first(&self) -> Option<K> {
        self.counts.first_key_value().map(|(k, _)| *k)
    }

    fn last(&self) -> Option<K> {
        self.counts.last_key_value().map(|(k, _)| *k)
    }

    /// How many values lie before `k` (the jobs-without-TTL set is an anomaly, so this stays short).
    fn count_before(&self, k: K) -> u64 {
        self.counts.range(..k).map(|(_, n)| u64::from(*n)).sum()
    }
}

/// The namespace's gauges, as ordered counts of what each object contributes.
#[derive(Debug, Default)]
pub(super) struct GaugeIndex {
    /// Retention of live runs and of done runs kept as tombstones.
    retention: Counts<i64>,
    /// TTL in force of live Jobs (their own, or the one the controller will patch on).
    job_ttl: Counts<i64>,
    /// Finish times of finished Jobs awaiting collection.
    awaiting: Counts<Ts>,
    /// `finish + TTL` of those that have a TTL.
    margin_deadline: Counts<Ts>,
    /// When collected Jobs without a TTL start to count (collection + grace).
    without_ttl_from: Counts<Ts>,
    /// Jobs whose run is known.
    jobs_with_run: u64,
}

/// What a Job contributes to its namespace's gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct JobGauge {
    with_run: bool,
    ttl: Option<i64>,
    finished: FinishedGauge,
}

/// What a finished Job contributes: awaiting collection (with its margin deadline when it has a TTL), or
/// collected without a TTL (counted from then on); never both.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum FinishedGauge {
    #[default]
    None,
    Awaiting {
        finished: Ts,
        margin_deadline: Option<Ts>,
    },
    WithoutTtlFrom(Ts),
}

impl JobGauge {
    fn awaiting(self) -> Option<Ts> {
        match self.finished {
            FinishedGauge::Awaiting { finished, .. } => Some(finished),
            _ => None,
        }
    }

    fn margin_deadline(self) -> Option<Ts> {
        match self.finished {
            FinishedGauge::Awaiting { margin_deadline, .. } => margin_deadline,
            _ => None,
        }
    }

    fn without_ttl_from(self) -> Option<Ts> {
        match self.finished {
            FinishedGauge::WithoutTtlFrom(t) => Some(t),
            _ => None,
        }
    }
}

impl GaugeIndex {
    fn apply(&mut self, old: JobGauge, new: JobGauge) {
        if old == new {
            return;
        }
        match (old.with_run, new.with_run) {
            (false, true) => self.jobs_with_run += 1,
            (true, false) => self.jobs_with_run -= 1,
            _ => {}
        }
        self.job_ttl.replace(old.ttl, new.ttl);
        self.awaiting.replace(old.awaiting(), new.awaiting());
        self.margin_deadline.replace(old.margin_deadline(), new.margin_deadline());
        self.without_ttl_from.replace(old.without_ttl_from(), new.without_ttl_from());
    }

    pub fn replace_retention(&mut self, old: Option<i64>, new: Option<i64>) {
        self.retention.replace(old, new);
    }

    /// Whether a value read at a later time could differ from one read at `now` with nothing else changing:
    /// an age or margin is running, or a collected Job without a TTL has yet to start counting.
    pub fn time_driven(&self, now: Ts) -> bool {
        self.awaiting.len > 0
            || self.margin_deadline.len > 0
            || self.without_ttl_from.last().is_some_and(|t| t > now)
    }

    pub fn read(&self, cfg: &TrackerConfig, now: Ts, present: bool) -> Option<NamespaceGauges> {
        if !(present || self.jobs_with_run > 0 || self.retention.len > 0) {
            return None;
        }
        let oldest = self.awaiting.first();
        Some(NamespaceGauges {
            awaiting_collection: self.awaiting.len,
            awaiting_collection_max_age: oldest.map_or(0.0, |f| now.secs_since(f).max(0.0)),
            ttl_margin_remaining: self.margin_deadline.first().map(|d| d.secs_since(now)),
            // With no live Job, the TTL in force is the one the next Job will get: the controller's default.
            job_ttl: self.job_ttl.min_max().or(Some((cfg.default_job_ttl, cfg.default_job_ttl))),
            retention: self.retention.min_max(),
            jobs_without_ttl: self.without_ttl_from.count_before(now),
        })
    }
}

/// What `job` contributes, given its run.
fn job_gauge(job: &JobTrack, run: Option<&Run>, cfg: &TrackerConfig) -> JobGauge {
    let Some(run) = run else { return JobGauge::default() };
    let mut g = JobGauge { with_run: true, ..JobGauge::default() };
    if job.deletion.is_some() {
        return g;
    }
    let effective_ttl = job.ttl.map(|t| t.seconds).or(run.job_ttl);
    g.ttl = effective_ttl;
    let Some(finish) = &job.finish else { return g };
    match run.consumption_of(name_key(&job.info.name)) {
        Some(c) if c.kind == ConsumptionKind::Collected && job.ttl.is_none() && run.job_ttl.is_some() => {
            // Counted once `now - collection > grace`.
            g.finished = FinishedGauge::WithoutTtlFrom(c.at.at.add_millis(cfg.ttl_grace_ms));
        }
        Some(_) => {}
        None if run.terminal.is_none() && !run.gone => {
            g.finished = FinishedGauge::Awaiting {
                finished: finish.at,
                margin_deadline: effective_ttl.map(|t| finish.at.add_secs(t)),
            };
        }
        None => {}
    }
    g
}

impl Namespace {
    /// Brings a Job's contribution up to date (after any change to it or to its run).
    pub fn refresh_job_gauge(&mut self, job_uid: &str, cfg: &TrackerConfig) {
        let run = self.run_of_job(job_uid).and_then(|u| self.runs.get(&u));
        let Some(job) = self.jobs.get(job_uid) else { return };
        let new = job_gauge(job, run.map(|r| &**r), cfg);
        let Some(job) = self.jobs.get_mut(job_uid) else { return };
        let old = std::mem::replace(&mut job.gauge, new);
        self.gauges.apply(old, new);
    }

    /// Takes a forgotten Job's contribution out.
    pub fn drop_job_gauge(&mut self, job: &JobTrack) {
        self.gauges.apply(job.gauge, JobGauge::default());
    }

    /// Brings a run's contribution (its retention, while it is live) up to date.
    pub fn refresh_run_gauge(&mut self, run_uid: &str) {
        let Some(run) = self.runs.get_mut(run_uid) else { return };
        let new = if run.gone { None } else { run.retention };
        let old = std::mem::replace(&mut run.retention_counted, new);
        self.gauges.replace_retention(old, new);
    }

    /// The namespace's gauges at `now`; `None` when it has nothing to report (`has_series`: counters of it
    /// exist, so its gauges do too).
    pub fn gauges(&self, cfg: &TrackerConfig, now: Ts, has_series: bool) -> Option<NamespaceGauges> {
        self.gauges.read(cfg, now, has_series || !self.runs.is_empty())
    }

    /// The same figures by walking every object: what the incremental gauges must always equal.
    #[cfg(test)]
    pub fn gauges_by_walking(
        &self,
        cfg: &TrackerConfig,
        now: Ts,
        has_series: bool,
    ) -> Option<NamespaceGauges> {
        let mut index = GaugeIndex::default();
        for run in self.runs.values().filter(|r| !r.gone) {
            index.replace_retention(None, run.retention);
        }
        for d in self.done.values() {
            index.replace_retention(None, d.retention);
        }
        for (uid, job) in &self.jobs {
            let run = self.run_of_job(uid).and_then(|u| self.runs.get(&u));
            index.apply(JobGauge::default(), job_gauge(job, run.map(|r| &**r), cfg));
        }
        index.read(cfg, now, has_series || !self.runs.is_empty())
    }
}
