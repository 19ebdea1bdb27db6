//! `demo --runs 20` against an in-process OTLP receiver, over gRPC and over HTTP/protobuf: span names,
//! parent/child links, ids derived from the AgentRun uid, object-derived timestamps, and OTLP metrics.

mod support;

use support::{exporter, free_port, otlp, spans};

async fn demo_against(protocol: &str) -> (Vec<spans::FlatSpan>, Vec<String>) {
    let received = otlp::Received::default();
    let addr = match protocol {
        "grpc" => otlp::grpc(received.clone()).await,
        _ => otlp::http(received.clone()).await,
    };
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let protocol_env = protocol.to_string();
    let output = tokio::task::spawn_blocking(move || {
        exporter()
            .args(["demo", "--runs", "20", "--speed", "400", "--seed", "3", "--metrics-addr", &metrics_addr])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol_env)
            .output()
            .expect("run the exporter")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("demo: 20 runs completed"), "{stdout}");
    let spans = spans::flatten(&received.traces.lock().unwrap());
    let metric_names: Vec<String> = received
        .metrics
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.resource_metrics.iter())
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter())
        .map(|m| format!("{} [{}]", m.name, m.unit))
        .collect();
    (spans, metric_names)
}

async fn check(protocol: &str) {
    let (spans, metrics) = demo_against(protocol).await;
    assert_eq!(spans::check_traces(&spans), Ok(20), "{protocol}");
    assert_eq!(
        spans::names(&spans),
        spans::SPAN_NAMES.iter().map(|s| s.to_string()).collect(),
        "{protocol}: every span kind appears"
    );
    assert!(spans.iter().all(|s| s.service == "agentrun-lifecycle-exporter"));
    // Ids are unique: each span exported once.
    let mut ids: Vec<_> = spans.iter().map(|s| (&s.trace_id, &s.span_id)).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "{protocol}: a span was exported twice");
    // Object-derived times: the Job phases of the simulator's objects have whole seconds.
    for s in spans.iter().filter(|s| s.name == "job.run") {
        assert_eq!(s.end_ns % 1_000_000_000, 0, "{s:?}");
    }
    // The incident shows: some Job deleted before collection, with a negative margin on its job.collect.
    assert!(spans.iter().any(|s| {
        s.name == "job.ttl"
            && s.attrs.get("agentrun.job.deleted_before_collection").map(String::as_str) == Some("true")
            && s.status == 2
            && s.events.iter().any(|(e, _)| e == "job.deleted_before_collection")
    }));
    assert!(spans.iter().any(|s| {
        s.name == "job.collect"
            && s.attrs.get("agentrun.job.outcome").map(String::as_str) == Some("missing")
            && s.attrs
                .get("agentrun.job.ttl_margin_seconds")
                .and_then(|m| m.parse::<f64>().ok())
                .is_some_and(|m| m < 0.0)
    }));
    assert!(
        spans
            .iter()
            .any(|s| s.name == "agentrun" && s.events.iter().any(|(e, _)| e == "agentrun.job_missing"))
    );
    for wanted in [
        "agentrun.job.collection_delay [s]",
        "agentrun.job.ttl_margin [s]",
        "agentrun.runs [{run}]",
        "agentrun.job.phase_duration [s]",
        "agentrun.exporter.spans_exported [{span}]",
    ] {
        assert!(metrics.iter().any(|m| m == wanted), "{protocol}: OTLP metrics lack {wanted}: {metrics:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_exports_over_otlp_grpc() {
    check("grpc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_exports_over_otlp_http_protobuf() {
    check("http/protobuf").await;
}
