//! The exact Prometheus names and label sets `/metrics` exposes while the demo runs are the catalogue's
//! (`docs/telemetry.toml`): nothing is exposed that it does not list, nothing it lists is missing. (A rename in
//! the catalogue that the alerts or dashboards still use fails their checks.)

mod support;

use std::{collections::BTreeSet, time::Duration};

use agentrun_lifecycle_exporter::catalogue::catalogue;
use support::{exporter, free_port, http_get, metric_families};

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
    let mut expected: BTreeSet<String> = catalogue().metric.iter().map(|m| m.prometheus.clone()).collect();
    expected.insert("target_info".into());
    expected.retain(|n| !NOT_IN_DEMO.contains(&n.as_str()));
    assert_eq!(seen, expected);

    // Label sets are part of the API too: every series of every metric carries exactly the catalogued labels.
    for m in &catalogue().metric {
        let mut want: Vec<&str> = m.labels.iter().map(String::as_str).collect();
        want.sort();
        for line in sample.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let suffixes = ["", "_bucket", "_sum", "_count"];
            if !suffixes.iter().any(|s| name == format!("{}{s}", m.prometheus)) {
                continue;
            }
            let inner = line.find('{').map_or("", |i| &line[i + 1..line.find('}').unwrap()]);
            let mut keys: Vec<&str> =
                inner.split(',').filter_map(|kv| kv.split_once('=').map(|(k, _)| k)).collect();
            keys.retain(|k| !k.starts_with("otel_scope") && *k != "le");
            keys.sort();
            assert_eq!(keys, want, "{line}");
        }
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
