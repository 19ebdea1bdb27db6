//! The tracker joins AgentRun ↔ Job ↔ Pod, keeps a compact state of each, and turns state changes into
//! lifecycle facts. It is pure: updates in, facts out, no clock of its own (`now` comes with each update and
//! each tick), so every case is a plain unit test.
//!
//! Evaluation is level-triggered, like a controller's reconcile: an update only changes state and marks the
//! run dirty; `evaluate` then emits every fact whose inputs are now known and that was not emitted yet. That
//! makes the result independent of the order in which the three watches deliver their events.
//!
//! Parts: [`index`] (per-namespace state, `apply`/`reset` per kind), [`status`] (folding an AgentRun status),
//! [`evaluate`] (one function per fact), [`gauges`], [`deadlines`] (when to look again), [`relist`] (resets in
//! progress), [`state`] (what is remembered of each object).

mod deadlines;
mod evaluate;
mod gauges;
mod index;
mod relist;
mod small;
mod state;
mod status;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use super::{
    facts::{Emitted, Fact, Runtime},
    model::{Input, Kind, ObjectId, Update},
    time::{Stamp, TimeSource, Ts},
};
use deadlines::Deadlines;
use index::Namespace;
use relist::Relists;

#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// The TTL the controller patches onto Jobs when a run sets none: the gauge's value for a namespace with
    /// no live Job.
    pub default_job_ttl: i64,
    /// How long a verdict waits for a late event from another watch (a Job deletion for the AgentRun write
    /// that consumed it; a collection for the TTL patch that follows it).
    pub settle_ms: i64,
    /// How long after collection a Job may go without a TTL before it counts in `agentrun_jobs_without_ttl`.
    pub ttl_grace_ms: i64,
    /// Facts that lie before this time are exported as spans but not counted in metrics.
    pub count_since: Ts,
    /// Runs found already finished longer than this before `count_since` export no spans at all.
    pub backfill_window_ms: Option<i64>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            // The agents controller's own default.
            default_job_ttl: 600,
            settle_ms: 10_000,
            ttl_grace_ms: 300_000,
            count_since: Ts(i64::MIN),
            backfill_window_ms: None,
        }
    }
}

/// Live values for the gauges, computed on demand.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveGauges {
    pub namespaces: BTreeMap<Arc<str>, NamespaceGauges>,
    pub tracked_runs: usize,
    pub tracked_jobs: usize,
    pub tracked_pods: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceGauges {
    pub awaiting_collection: u64,
    pub awaiting_collection_max_age: f64,
    pub ttl_margin_remaining: Option<f64>,
    pub job_ttl: Option<(i64, i64)>,
    pub retention: Option<(i64, i64)>,
    pub jobs_without_ttl: u64,
}

/// Interned low-cardinality strings (agent, provider, step, node, reason names), shared by all runs.
#[derive(Debug, Default)]
struct Strings(HashSet<Arc<str>>);

/// What evaluation needs besides a namespace's state.
struct Ctx<'a> {
    cfg: &'a TrackerConfig,
    now: Ts,
    out: &'a mut Vec<Emitted>,
    deadlines: &'a mut Deadlines,
    strings: &'a mut Strings,
}

#[derive(Debug, Default)]
pub struct Tracker {
    cfg: TrackerConfig,
    now: Ts,
    namespaces: HashMap<Arc<str>, Namespace>,
    strings: Strings,
    series_seen: HashSet<(Arc<str>, Runtime)>,
    relists: Relists,
    deadlines: Deadlines,
    out: Vec<Emitted>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Tracker { cfg, ..Tracker::default() }
    }

    pub fn now(&self) -> Ts {
        self.now
    }

    /// Applies one update and returns the facts it made known.
    pub fn apply(&mut self, input: Input) -> Vec<Emitted> {
        self.advance(input.at);
        match input.update {
            Update::Run(o) => {
                let ns = self.noted(Kind::AgentRun, &o.id);
                let (ctx, namespace) = self.split(&ns);
                if let Some((uid, new)) = namespace.apply_run(&o, &mut { ctx }) {
                    if new && self.series_seen.insert((ns.clone(), o.runtime)) {
                        self.out.push(Emitted {
                            fact: Fact::SeriesSeen { namespace: ns.clone(), runtime: o.runtime },
                            counted: true,
                            exported: false,
                        });
                    }
                    self.evaluate(&ns, &uid);
                }
            }
            Update::Job(o) => {
                let ns = self.noted(Kind::Job, &o.id);
                let (ctx, namespace) = self.split(&ns);
                let run = namespace.apply_job(&o, &mut { ctx });
                run.into_iter().for_each(|uid| self.evaluate(&ns, &uid));
            }
            Update::Pod(o) => {
                let ns = self.noted(Kind::Pod, &o.id);
                let (ctx, namespace) = self.split(&ns);
                let run = namespace.apply_pod(&o, &mut { ctx });
                run.into_iter().for_each(|uid| self.evaluate(&ns, &uid));
            }
            Update::RelistBegin { kind, namespace } => {
                let scope = namespace.map(|n| self.namespace_key(&n));
                self.relists.begin(kind, scope);
            }
            Update::RelistEnd { kind, namespace } => {
                let scope = namespace.map(|n| self.namespace_key(&n));
                self.relist_end(kind, scope);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Advances time to `now` and returns the facts whose wait has elapsed.
    pub fn tick(&mut self, now: Ts) -> Vec<Emitted> {
        self.advance(now);
        std::mem::take(&mut self.out)
    }

    /// Whether time alone, with no update, can still change something: a deadline is pending, or a gauge
    /// depends on the time it is read at. When it cannot, a caller may stop ticking until the next update.
    pub fn time_driven(&self, now: Ts) -> bool {
        self.deadlines.first().is_some() || self.namespaces.values().any(|ns| ns.gauges.time_driven(now))
    }

    /// Settles every pending verdict as if all waits had elapsed (end of a replay or a demo).
    pub fn flush(&mut self) -> Vec<Emitted> {
        let far = self.deadlines.last().unwrap_or(self.now).max(self.now);
        self.tick(far.add_millis(1))
    }

    fn advance(&mut self, now: Ts) {
        if now > self.now {
            self.now = now;
        }
        while let Some(due) = self.deadlines.pop_due(self.now) {
            for (ns, uid) in due {
                self.evaluate(&ns, &uid);
            }
        }
    }

    /// The object's namespace key; the object counts as seen by any relist of its scope in progress.
    fn noted(&mut self, kind: Kind, id: &ObjectId) -> Arc<str> {
        let ns = self.namespace_key(&id.namespace);
        if self.relists.open(kind, &ns) {
            // A relist holds every uid it lists: share the tracked object's key rather than copy it.
            let namespace = &self.namespaces[&ns];
            let uid = id.uid.as_str();
            let tracked = match kind {
                Kind::AgentRun => namespace
                    .runs
                    .get_key_value(uid)
                    .map(|(k, _)| k)
                    .or_else(|| namespace.done.get_key_value(uid).map(|(k, _)| k)),
                Kind::Job => namespace.jobs.get_key_value(uid).map(|(k, _)| k),
                Kind::Pod => namespace.pods.get_key_value(uid).map(|(k, _)| k),
            };
            let uid = tracked.cloned().unwrap_or_else(|| uid.into());
            self.relists.note(kind, &ns, uid);
        }
        ns
    }

    /// The shared key of a namespace, creating its state.
    fn namespace_key(&mut self, ns: &str) -> Arc<str> {
        if let Some((k, _)) = self.namespaces.get_key_value(ns) {
            return k.clone();
        }
        let key: Arc<str> = ns.into();
        self.namespaces.insert(key.clone(), Namespace::new(key.clone()));
        key
    }

    /// The evaluation context and one namespace's state, borrowed together.
    fn split<'a>(&'a mut self, ns: &Arc<str>) -> (Ctx<'a>, &'a mut Namespace) {
        let namespace = self.namespaces.get_mut(ns).expect("namespace_key created it");
        let ctx = Ctx {
            cfg: &self.cfg,
            now: self.now,
            out: &mut self.out,
            deadlines: &mut self.deadlines,
            strings: &mut self.strings,
        };
        (ctx, namespace)
    }

    fn evaluate(&mut self, ns: &Arc<str>, run_uid: &str) {
        // While its namespace's Jobs or Pods are being (re)listed, more of the run's objects may still come:
        // it is not completed (after a restart the three lists arrive in any order).
        let listing = self.relists.listing_jobs_or_pods(ns);
        let Some(namespace) = self.namespaces.get_mut(ns) else { return };
        let mut ctx = Ctx {
            cfg: &self.cfg,
            now: self.now,
            out: &mut self.out,
            deadlines: &mut self.deadlines,
            strings: &mut self.strings,
        };
        namespace.evaluate(run_uid, &mut ctx, listing);
    }

    /// A relist ended: a reset of that kind in its scope. What it did not contain vanished during the gap, at
    /// an unknown time.
    fn relist_end(&mut self, kind: Kind, scope: Option<Arc<str>>) {
        let Some(seen) = self.relists.end(kind, &scope) else { return };
        let gap = Stamp { at: self.now, source: TimeSource::UnknownGap, clamped: false };
        let names: Vec<Arc<str>> = match &scope {
            Some(ns) => vec![ns.clone()],
            None => self.namespaces.keys().cloned().collect(),
        };
        for ns in names {
            let Some(namespace) = self.namespaces.get_mut(&ns) else { continue };
            let mut dirty = match kind {
                Kind::AgentRun => namespace.reset_runs(&seen, gap),
                Kind::Job => namespace.reset_jobs(&seen, gap),
                Kind::Pod => namespace.reset_pods(&seen, gap),
            };
            if matches!(kind, Kind::Job | Kind::Pod) {
                // Runs that waited for this list to complete: their step and root spans, or their completion.
                dirty.extend(
                    namespace
                        .runs
                        .iter()
                        .filter(|(_, r)| {
                            r.root_emitted
                                || r.terminal.is_some()
                                || r.deleted.is_some()
                                || r.steps.iter().any(|s| s.terminal.is_some() && !s.emitted)
                        })
                        .map(|(u, _)| u.clone()),
                );
            }
            dirty.sort();
            dirty.dedup();
            for uid in dirty {
                self.evaluate(&ns, &uid);
            }
        }
    }

    /// The gauges by walking every object, for tests: the incremental ones must always equal them.
    #[cfg(test)]
    pub(crate) fn gauges_by_walking(&self, now: Ts) -> BTreeMap<Arc<str>, NamespaceGauges> {
        let mut g = BTreeMap::new();
        for (name, ns) in &self.namespaces {
            let has_series = self.series_seen.iter().any(|(n, _)| n == name);
            if let Some(gauges) = ns.gauges_by_walking(&self.cfg, now, has_series) {
                g.insert(name.clone(), gauges);
            }
        }
        g
    }

    /// Gauge values at `now`: as many steps as namespaces, whatever is tracked.
    pub fn gauges(&mut self, now: Ts) -> LiveGauges {
        let mut g = LiveGauges::default();
        for (name, ns) in self.namespaces.iter_mut() {
            ns.sweep_orphans();
            g.tracked_runs += ns.runs.len() + ns.done.len();
            g.tracked_jobs += ns.jobs.len();
            g.tracked_pods += ns.pods.len();
            let has_series = self.series_seen.iter().any(|(n, _)| n == name);
            if let Some(gauges) = ns.gauges(&self.cfg, now, has_series) {
                g.namespaces.insert(name.clone(), gauges);
            }
        }
        g
    }
}
