//! The agents controller's writes in a capture, in the order etcd applied them, with names, uids and times
//! taken out: what the stand-in must reproduce of the real controller's recordings.

use std::collections::BTreeMap;

use agentrun_lifecycle_exporter::{
    source::{Change, Observation, replay},
    upstream::objects::{AgentRun, Job, Object},
};

/// A Job's place in its run, from its name: `job`, or `step-<i>[-iter-<k>]-attempt-<n>`.
fn role(job: &Job) -> String {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    if let Some(i) = name.find("-step-") {
        return name[i + 1..].to_owned();
    }
    if name.ends_with("-job") { "job".into() } else { name.into() }
}

fn run_state(run: &AgentRun, roles: &BTreeMap<String, String>) -> Option<String> {
    let status = run.status.as_ref()?;
    let phase = status.phase.clone()?;
    let steps: Vec<String> = status
        .workflow
        .as_ref()
        .map(|w| w.steps.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let job = s.job_ref.as_ref().and_then(|r| r.name.as_ref()).and_then(|n| roles.get(n));
            format!("{}:{}:{}", i + 1, s.phase.as_deref().unwrap_or("-"), job.map_or("-", |j| j.as_str()))
        })
        .collect();
    Some(format!("status {phase} [{}]", steps.join(" ")))
}

/// The sequence of controller writes: `create <role>` (with ` ttl` when created with one), `ttl <role>` (a TTL
/// patched onto an existing Job), `status <phase> [<step>:<phase>:<job role> …]` when that changed. Job and
/// Pod writes of the Job controller, the kubelet and the TTL controller are left out.
pub fn write_sequence(observations: &[Observation]) -> Vec<String> {
    let mut events: Vec<(u64, &Object)> = observations
        .iter()
        .filter_map(|o| match &o.change {
            Change::Upsert(obj) => {
                let rv = obj.metadata().resource_version.as_deref()?.parse().ok()?;
                Some((rv, obj))
            }
            _ => None,
        })
        .collect();
    // etcd's revision orders writes to every resource; the watches deliver them in any order between kinds.
    events.sort_by_key(|(rv, _)| *rv);
    events.dedup_by_key(|(rv, _)| *rv);
    let mut roles: BTreeMap<String, String> = BTreeMap::new();
    let mut ttls: BTreeMap<String, Option<i64>> = BTreeMap::new();
    let mut last_state: Option<String> = None;
    let mut out = Vec::new();
    for (_, obj) in events {
        match obj {
            Object::Job(job) => {
                let name = job.metadata.name.clone().unwrap_or_default();
                let r = role(job);
                let ttl = job.spec.ttl_seconds_after_finished;
                match ttls.get(&name) {
                    None => {
                        out.push(format!("create {r}{}", if ttl.is_some() { " ttl" } else { "" }));
                    }
                    Some(None) if ttl.is_some() => out.push(format!("ttl {r}")),
                    _ => {}
                }
                ttls.insert(name.clone(), ttl);
                roles.insert(name, r);
            }
            Object::AgentRun(run) => {
                if let Some(state) = run_state(run, &roles)
                    && last_state.as_ref() != Some(&state)
                {
                    out.push(state.clone());
                    last_state = Some(state);
                }
            }
            Object::Pod(_) => {}
        }
    }
    out
}

/// The writes of one run (`run` in `namespace`: the AgentRun and the Jobs named after it) in a capture that
/// holds others too.
pub fn write_sequence_of_run(observations: &[Observation], namespace: &str, run: &str) -> Vec<String> {
    let prefix = format!("{run}-");
    let mine: Vec<Observation> = observations
        .iter()
        .filter(|o| match &o.change {
            Change::Upsert(obj) | Change::Delete(obj) => {
                let m = obj.metadata();
                let name = m.name.as_deref().unwrap_or_default();
                m.namespace.as_deref() == Some(namespace)
                    && match obj {
                        Object::AgentRun(_) => name == run,
                        Object::Job(_) => name.starts_with(&prefix),
                        Object::Pod(_) => false,
                    }
            }
            _ => false,
        })
        .cloned()
        .collect();
    write_sequence(&mine)
}

pub fn write_sequence_of_file(path: &str) -> Vec<String> {
    let capture = replay::read_files(&[path]).unwrap_or_else(|e| panic!("{path}: {e}"));
    write_sequence(&capture.observations)
}
