//! Spans flattened from OTLP requests, and the structural checks every exported trace must pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, any_value::Value},
};

/// The span names of the telemetry catalogue (`docs/telemetry.toml`).
pub fn span_names() -> Vec<&'static str> {
    agentrun_lifecycle_exporter::catalogue::catalogue().span.iter().map(|s| s.name.as_str()).collect()
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlatSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: BTreeMap<String, String>,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub events: Vec<(String, u64)>,
    pub service: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn value_str(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => format!("{d}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

pub fn flatten(requests: &[ExportTraceServiceRequest]) -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for req in requests {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .map(|kv| value_str(&kv.value))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(FlatSpan {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        name: s.name.clone(),
                        start_ns: s.start_time_unix_nano,
                        end_ns: s.end_time_unix_nano,
                        attrs: s.attributes.iter().map(|kv| (kv.key.clone(), value_str(&kv.value))).collect(),
                        status: s.status.as_ref().map(|st| st.code).unwrap_or(0),
                        events: s.events.iter().map(|e| (e.name.clone(), e.time_unix_nano)).collect(),
                        service: service.clone(),
                    });
                }
            }
        }
    }
    out.sort();
    out
}

/// Checks what every exported trace must satisfy: names from the catalogue; one root per trace whose id
/// derives from the AgentRun uid; every parent present in the same trace; no child starting before its
/// parent; no negative span; the Job chain in causal order. Returns the number of traces.
pub fn check_traces(spans: &[FlatSpan]) -> Result<usize, String> {
    let mut by_trace: HashMap<&str, Vec<&FlatSpan>> = HashMap::new();
    let catalogued = span_names();
    for s in spans {
        if !catalogued.contains(&s.name.as_str()) {
            return Err(format!("unexpected span name {:?}", s.name));
        }
        if s.end_ns < s.start_ns {
            return Err(format!("{} {} ends before it starts", s.name, s.span_id));
        }
        by_trace.entry(&s.trace_id).or_default().push(s);
    }
    for (trace, spans) in &by_trace {
        let roots: Vec<_> = spans.iter().filter(|s| s.name == "agentrun").collect();
        if roots.len() != 1 {
            return Err(format!("trace {trace} has {} root spans", roots.len()));
        }
        let root = roots[0];
        if root.parent != "0000000000000000" && !root.parent.is_empty() {
            return Err(format!("root of {trace} has a parent"));
        }
        let uid = root.attrs.get("agentrun.uid").ok_or("root without agentrun.uid")?;
        let expected = format!("{:032x}", agentrun_lifecycle_exporter::engine::ids::trace_id(uid));
        if &expected != trace {
            return Err(format!("trace id {trace} is not derived from uid {uid}"));
        }
        let by_id: HashMap<&str, &&FlatSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
        for s in spans.iter().filter(|s| s.name != "agentrun") {
            let parent = by_id
                .get(s.parent.as_str())
                .ok_or_else(|| format!("{} {} has no parent in {trace}", s.name, s.span_id))?;
            let want = match s.name.as_str() {
                "workflow.step" => vec!["agentrun"],
                "pod.run" => vec!["job.run"],
                _ => vec!["agentrun", "workflow.step"],
            };
            if !want.contains(&parent.name.as_str()) {
                return Err(format!("{} hangs under {}", s.name, parent.name));
            }
            if s.start_ns < parent.start_ns {
                return Err(format!("{} starts before its parent {}", s.name, parent.name));
            }
            if s.attrs.get("k8s.namespace.name") != root.attrs.get("k8s.namespace.name") {
                return Err(format!("{} in another namespace than its root", s.name));
            }
        }
        // The chain of each Job: submit → pending → run → collect/ttl.
        let mut jobs: BTreeMap<&str, BTreeMap<&str, &FlatSpan>> = BTreeMap::new();
        for s in spans.iter().filter(|s| s.name.starts_with("job.")) {
            jobs.entry(s.attrs.get("k8s.job.uid").map(String::as_str).unwrap_or(""))
                .or_default()
                .insert(&s.name, s);
        }
        for (job, chain) in jobs {
            let order = ["job.submit", "job.pending", "job.run"];
            for w in order.windows(2) {
                let Some((a, b)) = chain.get(w[0]).zip(chain.get(w[1])) else { continue };
                // A submit start (a write) later than the second-truncated creation raises only the submit's end,
                // and says so; job.pending keeps the creation.
                let raised = a.name == "job.submit"
                    && a.attrs.get("agentrun.clamped").is_some_and(|v| v == "true")
                    && a.end_ns > b.start_ns;
                if a.end_ns != b.start_ns && !raised {
                    return Err(format!("job {job}: {} does not end where {} starts", w[0], w[1]));
                }
            }
            if let (Some(run), Some(c)) = (chain.get("job.run"), chain.get("job.collect"))
                && c.start_ns != run.end_ns
            {
                return Err(format!("job {job}: job.collect does not start at the finish"));
            }
        }
    }
    Ok(by_trace.len())
}

pub fn names(spans: &[FlatSpan]) -> BTreeSet<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}

/// A readable difference between two span sets: what only one side has, at most a few of each.
pub fn diff(left: &[FlatSpan], right: &[FlatSpan]) -> String {
    use std::fmt::Write;
    let key = |s: &FlatSpan| (s.trace_id.clone(), s.span_id.clone());
    let l: BTreeMap<_, _> = left.iter().map(|s| (key(s), s)).collect();
    let r: BTreeMap<_, _> = right.iter().map(|s| (key(s), s)).collect();
    let mut out = format!("{} vs {} spans\n", left.len(), right.len());
    let mut shown = 0;
    for (k, a) in &l {
        match r.get(k) {
            None => {
                let _ =
                    writeln!(out, "only left: {} {} {:?}", a.name, a.span_id, a.attrs.get("k8s.job.name"));
            }
            Some(b) if a != b => {
                let _ = writeln!(out, "differs: {} {} {:?}", a.name, a.span_id, a.attrs.get("k8s.job.name"));
                if a.start_ns != b.start_ns || a.end_ns != b.end_ns {
                    let _ = writeln!(
                        out,
                        "   times {}..{} vs {}..{}",
                        a.start_ns, a.end_ns, b.start_ns, b.end_ns
                    );
                }
                for (ak, av) in &a.attrs {
                    if b.attrs.get(ak) != Some(av) {
                        let _ = writeln!(out, "   {ak}: {av:?} vs {:?}", b.attrs.get(ak));
                    }
                }
                for (bk, bv) in &b.attrs {
                    if !a.attrs.contains_key(bk) {
                        let _ = writeln!(out, "   {bk}: missing vs {bv:?}");
                    }
                }
                if a.events != b.events || a.status != b.status {
                    let _ = writeln!(
                        out,
                        "   events/status {:?}/{} vs {:?}/{}",
                        a.events, a.status, b.events, b.status
                    );
                }
            }
            _ => continue,
        }
        shown += 1;
        if shown > 12 {
            break;
        }
    }
    for (k, b) in &r {
        if !l.contains_key(k) {
            let _ = writeln!(out, "only right: {} {} {:?}", b.name, b.span_id, b.attrs.get("k8s.job.name"));
        }
    }
    out
}
