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
    assert!(spans.iter().all(|s| s.service == "agentrun-lifecycle-exporter"));
    // Span, attribute and event names are the catalogue's (docs/telemetry.toml), and every span kind is used.
    let cat = agentrun_lifecycle_exporter::catalogue::catalogue();
    let catalogued: std::collections::BTreeSet<String> = cat.span.iter().map(|s| s.name.clone()).collect();
    assert_eq!(spans::names(&spans), catalogued, "{protocol}: every catalogued span kind appears");
    let attributes: std::collections::BTreeSet<&str> =
        cat.attribute.iter().flat_map(|a| a.names.iter().map(String::as_str)).collect();
    let events: std::collections::BTreeSet<&str> = cat.event.iter().map(|e| e.name.as_str()).collect();
    for s in &spans {
        for key in s.attrs.keys() {
            assert!(
                attributes.contains(key.as_str()),
                "{protocol}: {} carries {key}, not in the catalogue",
                s.name
            );
        }
        for (event, _) in &s.events {
            assert!(events.contains(event.as_str()), "{protocol}: event {event} is not in the catalogue");
        }
    }
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

// --- collector outages ----------------------------------------------------------------------------------

/// The demo's closing line: (runs, spans exported, spans dropped).
fn demo_totals(stdout: &str) -> (u64, u64, u64) {
    let line =
        stdout.lines().find(|l| l.starts_with("demo: ") && l.contains("runs completed")).expect(stdout);
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1], nums[2])
}

/// One copy of each span; duplicates (re-sent after an attempt that timed out but arrived) must be
/// identical.
fn distinct(spans: Vec<spans::FlatSpan>) -> Vec<spans::FlatSpan> {
    let mut by_id = std::collections::BTreeMap::new();
    for s in spans {
        match by_id.get(&(s.trace_id.clone(), s.span_id.clone())) {
            Some(seen) => assert_eq!(seen, &s, "a re-sent span differs from the first copy"),
            None => {
                by_id.insert((s.trace_id.clone(), s.span_id.clone()), s);
            }
        }
    }
    by_id.into_values().collect()
}

/// A self-metric's value summed over its series (0 when absent).
fn scrape(addr: &str, family: &str) -> f64 {
    let Ok((200, body)) = support::http_get(addr, "/metrics") else { return 0.0 };
    body.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct OutageRun {
    received: otlp::Received,
    proxy: support::outage::OutageProxy,
    metrics_addr: String,
    child: std::process::Child,
}

async fn start_demo(protocol: &str, runs: u64, speed: u32, extra: &[&str]) -> OutageRun {
    let received = otlp::Received::default();
    let receiver = match protocol {
        "grpc" => otlp::grpc(received.clone()).await,
        _ => otlp::http(received.clone()).await,
    };
    let proxy = support::outage::OutageProxy::start(receiver).await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (runs, speed) = (runs.to_string(), speed.to_string());
    let child = exporter()
        .args(["demo", "--runs", &runs, "--speed", &speed, "--seed", "3", "--metrics-addr", &metrics_addr])
        .args(extra)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", proxy.addr))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_METRICS_EXPORTER", "prometheus")
        // Keeps the test short when the collector is gone at the end.
        .env("AGENTRUN_EXPORTER_SHUTDOWN_TIMEOUT", "2s")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the exporter");
    OutageRun { received, proxy, metrics_addr, child }
}

impl OutageRun {
    fn received_spans(&self) -> usize {
        spans::flatten(&self.received.traces.lock().unwrap()).len()
    }

    async fn finish(self) -> (String, Vec<spans::FlatSpan>, otlp::Received) {
        let OutageRun { received, proxy, child, .. } = self;
        let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
        drop(proxy);
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "demo failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        let spans = spans::flatten(&received.traces.lock().unwrap());
        (stdout, spans, received)
    }
}

async fn sleep(secs: f64) {
    tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
}

/// The collector goes away for `outage` seconds in the middle of the demo and comes back on the same
/// port: every span arrives, none is dropped.
async fn outage_loses_nothing(protocol: &str, runs: u64, speed: u32, before: f64, outage: f64) {
    let mut run = start_demo(protocol, runs, speed, &[]).await;
    sleep(before).await;
    let before_outage = run.received_spans();
    assert!(before_outage > 0, "{protocol}: spans arrive before the outage");
    run.proxy.down().await;
    let began = std::time::Instant::now();
    sleep(outage).await;
    let held = scrape(&run.metrics_addr, "agentrun_exporter_span_buffer_spans");
    let failures = scrape(&run.metrics_addr, "agentrun_exporter_span_export_failures_total");
    run.proxy.up();
    eprintln!(
        "{protocol}: outage of {:.0} s: {held} spans held, {failures} failed attempts",
        began.elapsed().as_secs_f64()
    );
    let (stdout, spans, _) = run.finish().await;
    let (done, exported, dropped) = demo_totals(&stdout);
    let unique = distinct(spans);
    eprintln!(
        "{protocol}: {done} runs, {exported} spans exported, {dropped} dropped, {} distinct spans received",
        unique.len()
    );
    assert_eq!((done, dropped), (runs, 0), "{protocol}: {stdout}");
    assert_eq!(unique.len() as u64, exported, "{protocol}: every exported span arrived");
    assert_eq!(spans::check_traces(&unique), Ok(runs as usize), "{protocol}: whole traces");
    assert!(
        held > 0.0 && failures > 0.0,
        "{protocol}: the outage was felt (held {held}, failures {failures})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_outage_in_the_middle_of_the_demo_loses_no_span_grpc() {
    outage_loses_nothing("grpc", 30, 20, 5.0, 8.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_outage_in_the_middle_of_the_demo_loses_no_span_http() {
    outage_loses_nothing("http/protobuf", 30, 20, 5.0, 8.0).await;
}

/// The measurement of the closing note: `OUTAGE_SECS` (default 120) of collector outage in the
/// middle of a demo long enough to span it. Run it with
/// `OUTAGE_SECS=120 cargo test --release --test otlp_export -- --ignored --nocapture measured_outage`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "takes minutes: a real measurement"]
async fn measured_outage() {
    let outage: f64 = std::env::var("OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(120.0);
    let protocol = std::env::var("OUTAGE_PROTOCOL").unwrap_or_else(|_| "grpc".into());
    // 30 runs take ~510 simulated seconds; at speed 3 the demo lasts ~170 s, the outage sits in its middle.
    let speed = ((510.0 / (outage + 50.0)).floor() as u32).max(1);
    outage_loses_nothing(&protocol, 30, speed, 20.0, outage).await;
}

/// A collector that accepts connections and never answers: each attempt times out (the demo is not held
/// up), and the spans arrive once it answers.
#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_never_answers_times_out_and_gets_the_spans_later() {
    let mut run = start_demo("grpc", 30, 20, &["--export-timeout", "1s"]).await;
    sleep(4.0).await;
    run.proxy.blackhole();
    // The connection in use is cut; the exporter reconnects into the blackhole.
    let began = std::time::Instant::now();
    sleep(8.0).await;
    let timeouts =
        scrape(&run.metrics_addr, "agentrun_exporter_span_export_failures_total{reason=\"timeout\"}");
    let held = scrape(&run.metrics_addr, "agentrun_exporter_span_buffer_spans");
    run.proxy.up();
    eprintln!(
        "blackhole {:.0} s: {timeouts} timed-out attempts, {held} spans held",
        began.elapsed().as_secs_f64()
    );
    assert!(timeouts >= 1.0, "attempts timed out: {timeouts}");
    assert!(held > 0.0);
    let (stdout, spans, _) = run.finish().await;
    let (done, exported, dropped) = demo_totals(&stdout);
    let unique = distinct(spans);
    assert_eq!((done, dropped), (30, 0), "{stdout}");
    assert_eq!(unique.len() as u64, exported);
    assert_eq!(spans::check_traces(&unique), Ok(30));
}

/// The collector is stuck when the demo ends: shutdown tries for its timeout (2 s here), then counts every
/// span it could not send. Nothing is unaccounted for: exported + dropped = every span of the demo.
#[tokio::test(flavor = "multi_thread")]
async fn spans_left_at_shutdown_are_counted_as_dropped() {
    // The reference: the same demo (same seed, same ids) with the collector up throughout.
    let reference = start_demo("grpc", 10, 40, &[]).await;
    let (stdout, spans, _) = reference.finish().await;
    let (_, all, none) = demo_totals(&stdout);
    assert_eq!(none, 0);
    assert_eq!(distinct(spans).len() as u64, all);

    let mut run = start_demo("grpc", 10, 40, &[]).await;
    sleep(2.0).await;
    // Stuck rather than gone: the harder case, each attempt waits for its timeout.
    run.proxy.blackhole();
    let began = std::time::Instant::now();
    let (stdout, spans, _) = run.finish().await;
    let (_, exported, dropped) = demo_totals(&stdout);
    eprintln!("collector stuck at the end: {exported} exported, {dropped} dropped of {all}");
    assert!(dropped > 0, "{stdout}");
    assert_eq!(exported + dropped, all, "every span exported or counted as dropped: {stdout}");
    assert_eq!(distinct(spans).len() as u64, exported);
    assert!(began.elapsed() < std::time::Duration::from_secs(20), "shutdown is bounded");
}

/// A backend that refuses the spans for their content: each batch is dropped at once with reason
/// `rejected` (re-sending cannot succeed, and would hold up every later batch), nothing waits for shutdown.
async fn rejected_spans_are_dropped_at_once(protocol: &str) {
    let receiver = support::outage::rejecting(protocol).await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let child = exporter()
        .args(["demo", "--runs", "10", "--speed", "40", "--seed", "3", "--metrics-addr", &metrics_addr])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_METRICS_EXPORTER", "prometheus")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the exporter");
    sleep(4.0).await;
    let rejected = scrape(&metrics_addr, "agentrun_exporter_spans_dropped_total{reason=\"rejected\"}");
    let held = scrape(&metrics_addr, "agentrun_exporter_span_buffer_spans");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (_, exported, dropped) = demo_totals(&stdout);
    eprintln!(
        "{protocol}: {rejected} rejected, {held} held after 4 s; {exported} exported, {dropped} dropped"
    );
    assert!(rejected > 0.0, "{protocol}: dropped as rejected while running");
    assert!(held < 50.0, "{protocol}: not held for retries: {held}");
    assert_eq!(exported, 0, "{protocol}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_the_backend_rejects_are_dropped_at_once_grpc() {
    rejected_spans_are_dropped_at_once("grpc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_the_backend_rejects_are_dropped_at_once_http() {
    rejected_spans_are_dropped_at_once("http/protobuf").await;
}
