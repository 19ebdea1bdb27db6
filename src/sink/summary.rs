//! The per-run summary `replay` prints: one row (or JSON object) per AgentRun.

use std::{collections::BTreeMap, fmt::Write};

use serde::Serialize;

use crate::engine::{
    Emitted, Fact,
    facts::{DeletionCause, Phase},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub runtime: String,
    /// Terminal phase, lower-case; `deleted` when the AgentRun went before finishing; `running` when the
    /// capture ended first.
    pub outcome: String,
    pub reason: Option<String>,
    pub jobs: u32,
    /// The longest Job finish → status collected, in seconds.
    pub collection_delay_seconds: Option<f64>,
    /// The smallest TTL minus collection delay, in seconds.
    pub ttl_margin_seconds: Option<f64>,
    /// Jobs deleted before collection, not counting those deleted with their run.
    pub deleted_before_collection: u32,
    pub job_missing: bool,
    #[serde(skip)]
    created: i64,
}

#[derive(Default)]
pub struct Summary {
    runs: BTreeMap<String, RunSummary>,
}

impl Summary {
    pub fn record(&mut self, e: &Emitted) {
        let Some(run) = e.fact.run() else { return };
        let s = self.runs.entry(run.uid.to_string()).or_insert_with(|| RunSummary {
            namespace: run.namespace.to_string(),
            name: run.name.to_string(),
            uid: run.uid.to_string(),
            runtime: run.runtime.as_str().into(),
            outcome: "running".into(),
            created: i64::MAX,
            ..RunSummary::default()
        });
        match &e.fact {
            Fact::JobPhase { start, phase: Phase::Submit, .. } => {
                s.jobs += 1;
                s.created = s.created.min(start.at.0);
            }
            Fact::JobCollected { finished, collected, .. } => {
                let d = collected.at.secs_since(finished.at);
                s.collection_delay_seconds = Some(s.collection_delay_seconds.map_or(d, |c| c.max(d)));
            }
            Fact::TtlMargin { margin_seconds, .. } => {
                let m = *margin_seconds;
                s.ttl_margin_seconds = Some(s.ttl_margin_seconds.map_or(m, |c| c.min(m)));
            }
            // Deleted with its run (a cancel, retention) is not an incident.
            Fact::JobGone { before_collection: true, cause, .. } if *cause != DeletionCause::WithRun => {
                s.deleted_before_collection += 1
            }
            Fact::RunFinished { start, outcome, reason, .. } => {
                s.created = s.created.min(start.at.0);
                s.outcome = outcome.map(|o| o.as_str()).unwrap_or("deleted").into();
                s.reason = reason.as_deref().map(Into::into);
                s.job_missing = matches!(s.reason.as_deref(), Some("JobMissing" | "WorkflowJobMissing"));
            }
            _ => {}
        }
    }

    /// Runs in creation order.
    pub fn runs(&self) -> Vec<&RunSummary> {
        let mut v: Vec<&RunSummary> = self.runs.values().collect();
        v.sort_by(|a, b| (a.created, &a.namespace, &a.name).cmp(&(b.created, &b.namespace, &b.name)));
        v
    }

    pub fn to_json_lines(&self) -> String {
        let ms = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        let mut out = String::new();
        for r in self.runs() {
            let r = RunSummary {
                collection_delay_seconds: ms(r.collection_delay_seconds),
                ttl_margin_seconds: ms(r.ttl_margin_seconds),
                ..r.clone()
            };
            let _ = writeln!(out, "{}", serde_json::to_string(&r).unwrap_or_default());
        }
        out
    }

    pub fn to_table(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
        let rows: Vec<[String; 9]> = self
            .runs()
            .into_iter()
            .map(|r| {
                [
                    r.namespace.clone(),
                    r.name.clone(),
                    r.runtime.clone(),
                    r.outcome.clone(),
                    r.reason.clone().unwrap_or_else(|| "-".into()),
                    r.jobs.to_string(),
                    opt(r.collection_delay_seconds),
                    opt(r.ttl_margin_seconds),
                    r.deleted_before_collection.to_string(),
                ]
            })
            .collect();
        let header = [
            "NAMESPACE",
            "NAME",
            "RUNTIME",
            "OUTCOME",
            "REASON",
            "JOBS",
            "COLLECT_S",
            "MARGIN_S",
            "DELETED_EARLY",
        ];
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        let line = |cells: Vec<&str>, out: &mut String| {
            let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            let _ = writeln!(out, "{}", parts.join("  ").trim_end());
        };
        line(header.to_vec(), &mut out);
        for row in &rows {
            line(row.iter().map(String::as_str).collect(), &mut out);
        }
        out
    }

    pub fn get(&self, uid: &str) -> Option<&RunSummary> {
        self.runs.get(uid)
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}
