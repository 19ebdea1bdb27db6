//! Decode cost per list object: the same 100-object list pages (the memory benchmark's full objects, with
//! managedFields, env and annotations) decoded the way kube-client decodes them (`serde_json::from_str` of an
//! `ObjectList`), through the watch source's `Guarded` projections, through kube's `DeserializeGuard` over the
//! same projections (what the watch source used before), straight into the projections, and into the full
//! typed objects a typical controller keeps (`DynamicObject` for AgentRuns). Prints µs per object, the best of
//! a few rounds. Run with `cargo bench --bench decode`.

#[allow(dead_code)]
#[path = "support/objects.rs"]
mod objects;

use std::time::Instant;

use agentrun_lifecycle_exporter::{source::kube::Guarded, upstream::objects as proj};
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::core::{DeserializeGuard, DynamicObject, ObjectList};
use serde::de::DeserializeOwned;

const PAGE: usize = 100;

fn page(items: &[serde_json::Value]) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items})
        .to_string()
}

/// Best µs per object over `rounds` passes over `pages`.
fn per_object<T: DeserializeOwned + Clone>(pages: &[String], rounds: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        let mut n = 0;
        for p in pages {
            let list: ObjectList<T> = serde_json::from_str(p).expect("page decodes");
            n += list.items.len();
            std::hint::black_box(list);
        }
        best = best.min(started.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    best
}

fn main() {
    let n: usize = std::env::var("DECODE_OBJECTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
    let rounds = 5;
    let (runs, jobs, pods) = objects::objects(n);
    let bytes = |v: &[serde_json::Value]| v.iter().map(|o| o.to_string().len()).sum::<usize>() / v.len();
    let pages = |v: &[serde_json::Value]| v.chunks(PAGE).map(page).collect::<Vec<_>>();
    let (runs_b, jobs_b, pods_b) = (bytes(&runs), bytes(&jobs), bytes(&pods));
    let (runs, jobs, pods) = (pages(&runs), pages(&jobs), pages(&pods));
    println!(
        "decode per list object, µs (best of {rounds} passes over {n} objects per kind, pages of {PAGE})"
    );
    println!("{:<34} {:>9} {:>9} {:>9}", "", "AgentRun", "Job", "Pod");
    println!("{:<34} {:>9} {:>9} {:>9}", "object size, bytes", runs_b, jobs_b, pods_b);
    let row = |name: &str, r: f64, j: f64, p: f64| println!("{name:<34} {r:>9.2} {j:>9.2} {p:>9.2}");
    let guarded = (
        per_object::<Guarded<proj::AgentRun>>(&runs, rounds),
        per_object::<Guarded<proj::Job>>(&jobs, rounds),
        per_object::<Guarded<proj::Pod>>(&pods, rounds),
    );
    let guard = (
        per_object::<DeserializeGuard<proj::AgentRun>>(&runs, rounds),
        per_object::<DeserializeGuard<proj::Job>>(&jobs, rounds),
        per_object::<DeserializeGuard<proj::Pod>>(&pods, rounds),
    );
    let plain = (
        per_object::<proj::AgentRun>(&runs, rounds),
        per_object::<proj::Job>(&jobs, rounds),
        per_object::<proj::Pod>(&pods, rounds),
    );
    let typed = (
        per_object::<DynamicObject>(&runs, rounds),
        per_object::<Job>(&jobs, rounds),
        per_object::<Pod>(&pods, rounds),
    );
    row("Guarded projection (watch source)", guarded.0, guarded.1, guarded.2);
    row("DeserializeGuard<projection>", guard.0, guard.1, guard.2);
    row("projection, no guard", plain.0, plain.1, plain.2);
    row("typed (DynamicObject, Job, Pod)", typed.0, typed.1, typed.2);
    let sum = |t: (f64, f64, f64)| t.0 + t.1 + t.2;
    println!(
        "per run (AgentRun + Job + Pod): Guarded {:.1} µs, DeserializeGuard {:.1} µs ({:.2}×), typed {:.1} µs; \
         Guarded / typed = {:.2}",
        sum(guarded),
        sum(guard),
        sum(guard) / sum(guarded),
        sum(typed),
        sum(guarded) / sum(typed)
    );
}
