//! The exact Prometheus names `/metrics` exposes while the demo runs: the catalogue in docs/telemetry.md is
//! an API, and an exporter upgrade that renames anything must fail here, not in the alerts.

mod support;

use std::{collections::BTreeSet, time::Duration};

use support::{exporter, free_port, http_get, metric_families};

const EXPECTED: [&str; 27] = [
    "agentrun_exporter_build_info",
    "agentrun_exporter_metric_overflow",
    "agentrun_exporter_metric_series",
    "agentrun_exporter_span_buffer_size_bytes",
    "agentrun_exporter_span_buffer_spans",
    "agentrun_exporter_span_export_failures_total",
    "agentrun_exporter_spans_dropped_total",
    "agentrun_exporter_spans_exported_total",
    "agentrun_exporter_tracked_objects",
    "agentrun_exporter_watch_errors_total",
    "agentrun_exporter_watch_events_total",
    "agentrun_job_awaiting_collection",
    "agentrun_job_awaiting_collection_max_age_seconds",
    "agentrun_job_collection_delay_seconds",
    "agentrun_job_deleted_before_collection_total",
    "agentrun_job_deleted_with_run_total",
    "agentrun_job_missing_total",
    "agentrun_job_phase_duration_seconds",
    "agentrun_job_ttl_deletion_lag_seconds",
    "agentrun_job_ttl_margin_exceeded_total",
    "agentrun_job_ttl_margin_remaining_seconds",
    "agentrun_job_ttl_margin_seconds",
    "agentrun_job_ttl_seconds",
    "agentrun_jobs_without_ttl",
    "agentrun_retention_seconds",
    "agentrun_runs_total",
    "target_info",
];

/// The demo does not watch, so the watch self-metrics are exercised by the watch tests; everything else
/// must appear.
const NOT_IN_DEMO: [&str; 2] =
    ["agentrun_exporter_watch_errors_total", "agentrun_exporter_watch_events_total"];

#[test]
fn metrics_endpoint_serves_exactly_the_catalogued_names() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = exporter()
        .args(["demo", "--runs", "20", "--speed", "100", "--seed", "5", "--metrics-addr", &addr])
        .env("OTEL_TRACES_EXPORTER", "none")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut sample = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok((200, body)) = http_get(&addr, "/metrics") {
            seen.extend(metric_families(&body));
            if body.contains("agentrun_job_ttl_margin_remaining_seconds{") {
                sample = body;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(status.success() || status.code().is_none(), "{status}");
    let expected: BTreeSet<String> =
        EXPECTED.iter().filter(|n| !NOT_IN_DEMO.contains(n)).map(|s| s.to_string()).collect();
    assert_eq!(seen, expected);

    // Label sets are part of the API too.
    for (series, labels) in [
        ("agentrun_job_collection_delay_seconds_bucket{", vec!["le", "namespace", "outcome", "runtime"]),
        ("agentrun_job_ttl_margin_seconds_bucket{", vec!["le", "namespace", "runtime", "ttl_applied"]),
        ("agentrun_job_ttl_margin_remaining_seconds{", vec!["namespace"]),
        ("agentrun_runs_total{", vec!["namespace", "outcome", "runtime"]),
        ("agentrun_job_phase_duration_seconds_count{", vec!["namespace", "phase", "runtime"]),
        ("agentrun_exporter_spans_dropped_total{", vec!["reason"]),
        ("agentrun_exporter_span_export_failures_total{", vec!["reason"]),
        ("agentrun_exporter_metric_overflow{", vec!["metric"]),
        ("agentrun_exporter_metric_series{", vec!["metric"]),
    ] {
        let line = sample
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in\n{sample}"));
        let inner = &line[series.len()..line.find('}').unwrap()];
        let mut keys: Vec<&str> =
            inner.split(',').filter_map(|kv| kv.split_once('=').map(|(k, _)| k)).collect();
        keys.retain(|k| !k.starts_with("otel_scope"));
        keys.sort();
        assert_eq!(keys, labels, "{line}");
    }
    assert!(!sample.contains("otel_scope_name"), "scope labels are off");
    // Every drop reason and failure reason is a series from the start, so `increase()` sees the first.
    for reason in ["queue_full", "evicted", "expired", "shutdown", "rejected"] {
        assert!(sample.contains(&format!("agentrun_exporter_spans_dropped_total{{reason=\"{reason}\"}}")));
    }
    for reason in ["timeout", "error"] {
        assert!(
            sample.contains(&format!("agentrun_exporter_span_export_failures_total{{reason=\"{reason}\"}}"))
        );
    }
    assert!(sample.contains("agentrun_exporter_metric_overflow{metric=\"agentrun.runs\"} 0"));
    // Delay histograms span 0.5 s to a day.
    assert!(
        sample.contains("agentrun_job_collection_delay_seconds_bucket{") && sample.contains("le=\"0.5\"")
    );
    assert!(sample.contains("le=\"86400\""));
}

#[test]
fn readiness_and_health_endpoints() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = exporter()
        .args(["demo", "--speed", "10", "--metrics-addr", &addr])
        .env("OTEL_TRACES_EXPORTER", "none")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        if let (Ok((200, h)), Ok((200, r))) = (http_get(&addr, "/healthz"), http_get(&addr, "/readyz")) {
            ok = h.contains("ok") && r.contains("ready");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM-free stop: the demo without --runs runs until killed.
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok);
}
