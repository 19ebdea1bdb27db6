//! Replay: Kubernetes watch events from files, through the same engine. Accepts JSON Lines of WatchEvents
//! (what `record` writes, with `observedAt`) and the concatenated pretty-printed output of
//! `kubectl get <kind> --watch --output-watch-events -o json`. A malformed line or object is reported with
//! its file and line and skipped.

use std::path::Path;

use serde_json::Value;

use crate::{
    engine::Ts,
    source::{Change, Observation},
    upstream::objects::Object,
};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A problem with one event; the event is skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

/// One decoded event, before merging.
#[derive(Clone, Debug)]
pub struct Event {
    pub observed_at: Option<Ts>,
    pub resource_version: Option<u64>,
    pub change: Change,
    pub file: usize,
    pub seq: usize,
}

/// Everything read from the files, in replay order.
#[derive(Debug, Default)]
pub struct Capture {
    pub observations: Vec<Observation>,
    pub skipped: Vec<Skipped>,
}

pub fn read_files<P: AsRef<Path>>(paths: &[P]) -> Result<Capture, ReplayError> {
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ReplayError::Read { path: path.display().to_string(), source })?;
        let (e, s) = parse(&text, &path.display().to_string(), i);
        events.extend(e);
        skipped.extend(s);
    }
    Ok(Capture { observations: merge(events), skipped })
}

/// Parses one file's text (either form).
pub fn parse(text: &str, file: &str, file_index: usize) -> (Vec<Event>, Vec<Skipped>) {
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    let push = |value: Value, line: usize, events: &mut Vec<Event>, skipped: &mut Vec<Skipped>| {
        let seq = events.len();
        match decode(value, file_index, seq) {
            Ok(Some(e)) => events.push(e),
            Ok(None) => {}
            Err(reason) => skipped.push(Skipped { file: file.into(), line, reason }),
        }
    };
    if is_json_lines(text) {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(line) {
                Ok(v) => push(v, n + 1, &mut events, &mut skipped),
                Err(e) => {
                    skipped.push(Skipped { file: file.into(), line: n + 1, reason: format!("not JSON: {e}") })
                }
            }
        }
        return (events, skipped);
    }
    // Concatenated (pretty-printed) JSON values; after a syntax error, resume at the next line that opens an
    // object in column 0, which is where kubectl starts each event.
    let mut offset = 0;
    while offset < text.len() {
        let rest = &text[offset..];
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match stream.next() {
            None => break,
            Some(Ok(v)) => {
                let start = offset + rest.len() - rest.trim_start().len();
                let line = line_of(text, start);
                offset += stream.byte_offset();
                push(v, line, &mut events, &mut skipped);
            }
            Some(Err(e)) => {
                let err_at = offset + rest.len() - rest.trim_start().len();
                let line = line_of(text, err_at);
                skipped.push(Skipped { file: file.into(), line, reason: format!("not JSON: {e}") });
                match next_object_start(text, err_at + 1) {
                    Some(next) => offset = next,
                    None => break,
                }
            }
        }
    }
    (events, skipped)
}

fn is_json_lines(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|first| serde_json::from_str::<Value>(first).map(|v| v.is_object()).unwrap_or(false))
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

fn next_object_start(text: &str, from: usize) -> Option<usize> {
    let mut pos = from;
    while pos < text.len() {
        let nl = text[pos..].find('\n')? + pos + 1;
        if text[nl..].starts_with('{') {
            return Some(nl);
        }
        pos = nl;
    }
    None
}

/// One JSON value → an event. `Ok(None)` for events that carry no object change (BOOKMARK).
fn decode(value: Value, file: usize, seq: usize) -> Result<Option<Event>, String> {
    let Value::Object(mut map) = value else {
        return Err("not a JSON object".into());
    };
    let observed_at = match map.remove("observedAt") {
        Some(Value::String(s)) => {
            Some(Ts::parse(&s).ok_or_else(|| format!("observedAt {s:?} is not an RFC 3339 time"))?)
        }
        Some(other) => return Err(format!("observedAt {other} is not a string")),
        None => None,
    };
    let (kind, object) = match (map.remove("type"), map.remove("object")) {
        (Some(Value::String(t)), Some(obj)) => (t, obj),
        (Some(_), None) | (None, Some(_)) => {
            return Err("a watch event needs both \"type\" and \"object\"".into());
        }
        (Some(t), Some(_)) => return Err(format!("event type {t} is not a string")),
        (None, None) => return Err("neither a watch event ({\"type\",\"object\"}) nor an object".into()),
    };
    let change = |o: Object| match kind.as_str() {
        "ADDED" | "MODIFIED" => Ok(Change::Upsert(o)),
        "DELETED" => Ok(Change::Delete(o)),
        other => Err(format!("unsupported event type {other:?}")),
    };
    match kind.as_str() {
        "BOOKMARK" => return Ok(None),
        "ERROR" => {
            return Err(format!("watch error event: {}", object.get("message").unwrap_or(&Value::Null)));
        }
        _ => {}
    }
    let object = Object::from_json(object).map_err(|e| e.to_string())?;
    let resource_version =
        object.metadata().resource_version.as_deref().and_then(|rv| rv.parse::<u64>().ok());
    Ok(Some(Event { observed_at, resource_version, change: change(object)?, file, seq }))
}

/// Merges the events of all files: by `observedAt` when every event has one, else by numeric
/// `resourceVersion` (ties keep file order). The observation time of an event without `observedAt` is the
/// latest time its object carries, never earlier than the event before it.
pub fn merge(mut events: Vec<Event>) -> Vec<Observation> {
    let all_observed = events.iter().all(|e| e.observed_at.is_some());
    if all_observed {
        events.sort_by_key(|e| (e.observed_at, e.resource_version, e.file, e.seq));
    } else {
        events.sort_by_key(|e| (e.resource_version.unwrap_or(u64::MAX), e.file, e.seq));
    }
    let mut last = Ts(i64::MIN);
    events
        .into_iter()
        .map(|e| {
            let at = e.observed_at.or_else(|| latest_time(&e.change)).unwrap_or(last).max(last);
            last = at;
            Observation { at, change: e.change }
        })
        .collect()
}

fn latest_time(change: &Change) -> Option<Ts> {
    let object = match change {
        Change::Upsert(o) | Change::Delete(o) => o,
        _ => return None,
    };
    let mut times: Vec<Ts> = Vec::new();
    let meta = object.metadata();
    times.extend(meta.creation_timestamp.iter().map(crate::upstream::ts));
    times.extend(meta.deletion_timestamp.iter().map(crate::upstream::ts));
    match object {
        Object::AgentRun(r) => {
            if let Some(s) = &r.status {
                times.extend(s.updated_at.iter().copied());
                times.extend(s.conditions.iter().filter_map(|c| c.last_transition_time));
            }
        }
        Object::Job(j) => {
            times.extend(j.status.start_time.iter().copied());
            times.extend(j.status.conditions.iter().filter_map(|c| c.last_transition_time));
        }
        Object::Pod(p) => {
            for c in &p.status.container_statuses {
                if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    times.extend(t.finished_at.iter().copied());
                }
            }
        }
    }
    times.into_iter().max()
}

/// One event in the JSON Lines form `record` writes and `replay` reads.
pub fn to_json_line(obs: &Observation) -> Option<String> {
    let (kind, object) = match &obs.change {
        Change::Upsert(o) => ("MODIFIED", o),
        Change::Delete(o) => ("DELETED", o),
        _ => return None,
    };
    let line =
        serde_json::json!({ "type": kind, "object": object.to_json(), "observedAt": obs.at.to_string() });
    Some(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"r-job","namespace":"agents","uid":"j1","resourceVersion":"12","creationTimestamp":"2026-08-20T12:00:01Z","labels":{"agents.proompteng.ai/agent-run":"r"}}}"#;

    #[test]
    fn reads_json_lines_and_reports_bad_lines() {
        let text = format!(
            "{{\"type\":\"ADDED\",\"object\":{JOB},\"observedAt\":\"2026-08-20T12:00:02Z\"}}\n\
             this is not json\n\
             {{\"type\":\"ADDED\",\"object\":{{\"kind\":\"Job\",\"status\":{{\"startTime\":\"never\"}}}}}}\n\
             {{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Job\",\"metadata\":{{\"resourceVersion\":\"20\"}}}}}}\n\
             {{\"type\":\"DELETED\",\"object\":{JOB},\"observedAt\":\"2026-08-20T12:00:09Z\"}}\n"
        );
        let (events, skipped) = parse(&text, "cap.jsonl", 0);
        assert_eq!(events.len(), 2);
        assert_eq!(skipped.iter().map(|s| s.line).collect::<Vec<_>>(), vec![2, 3]);
        assert!(skipped[0].to_string().starts_with("cap.jsonl:2: not JSON"), "{}", skipped[0]);
        assert!(skipped[1].reason.starts_with("malformed object"), "{}", skipped[1]);
        let obs = merge(events);
        assert_eq!(obs[0].at, Ts::parse("2026-08-20T12:00:02Z").unwrap());
        assert!(matches!(obs[1].change, Change::Delete(_)));
    }

    #[test]
    fn reads_kubectl_pretty_output_and_resyncs_after_garbage() {
        let pretty = serde_json::to_string_pretty(&serde_json::json!({
            "type": "ADDED", "object": serde_json::from_str::<Value>(JOB).unwrap()
        }))
        .unwrap();
        let text = format!("{pretty}\n{{\n  \"type\": \"ADDED\",\n  oops\n}}\n{pretty}\n");
        let (events, skipped) = parse(&text, "jobs.json", 0);
        assert_eq!(events.len(), 2);
        assert_eq!(skipped.len(), 1);
        let first_event_lines = pretty.lines().count();
        assert_eq!(skipped[0].line, first_event_lines + 1);
        // No observedAt: time comes from the object itself.
        let obs = merge(events);
        assert_eq!(obs[0].at, Ts::parse("2026-08-20T12:00:01Z").unwrap());
    }

    #[test]
    fn merges_files_by_resource_version_without_observed_times() {
        let a = r#"{"type":"ADDED","object":{"kind":"Job","metadata":{"uid":"a","resourceVersion":"30"}}}"#;
        let b = r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"uid":"b","resourceVersion":"7"}}}"#;
        let (mut ea, _) = parse(a, "jobs", 0);
        let (eb, _) = parse(b, "pods", 1);
        ea.extend(eb);
        let obs = merge(ea);
        let uids: Vec<_> = obs
            .iter()
            .map(|o| match &o.change {
                Change::Upsert(o) => o.metadata().uid.clone().unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(uids, vec!["b", "a"]);
    }

    #[test]
    fn what_record_writes_replay_reads() {
        let (events, _) = parse(&format!("{{\"type\":\"ADDED\",\"object\":{JOB}}}"), "x", 0);
        let obs = Observation { at: Ts(1_787_227_205_000), change: events[0].change.clone() };
        let line = to_json_line(&obs).unwrap();
        let (again, skipped) = parse(&line, "y", 0);
        assert!(skipped.is_empty());
        assert_eq!(merge(again), vec![obs]);
    }
}
