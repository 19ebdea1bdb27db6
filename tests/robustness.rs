//! Hostile input through the binary: replay files with a BOM, garbage and invalid UTF-8, values that must
//! never reach a log line, absurd times; flag and environment values that used to panic or hang; HTTP
//! clients that hold connections or dribble headers.

mod support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Output, Stdio},
    time::{Duration, Instant},
};

use support::{exporter, free_port, http_get};

const JOB: &str = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"r-job","namespace":"agents","uid":"j1","resourceVersion":"12","creationTimestamp":"2026-08-20T12:00:01Z","labels":{"agents.proompteng.ai/agent-run":"r"},"ownerReferences":[{"apiVersion":"agents.proompteng.ai/v1alpha1","kind":"AgentRun","name":"r","uid":"run-1","controller":true}]}}"#;
const RUN: &str = r#"{"apiVersion":"agents.proompteng.ai/v1alpha1","kind":"AgentRun","metadata":{"name":"r","namespace":"agents","uid":"run-1","resourceVersion":"10","creationTimestamp":"2026-08-20T12:00:00Z"},"spec":{"runtime":{"type":"job"}},"status":{"phase":"Running","updatedAt":"2026-08-20T12:00:00.500Z"}}"#;

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agentrun-robustness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn event(kind: &str, object: &str, at: &str) -> String {
    format!("{{\"type\":\"{kind}\",\"object\":{object},\"observedAt\":\"{at}\"}}\n")
}

/// Runs the binary with a deadline: a hang is a failure, not a stuck test.
fn run(mut cmd: std::process::Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn replay(args: &[&str]) -> (Output, String) {
    let mut cmd = exporter();
    cmd.arg("replay").args(args).env("OTEL_TRACES_EXPORTER", "none").env("OTEL_METRICS_EXPORTER", "none");
    let out = run(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out, stderr)
}

#[test]
fn replay_reads_past_a_bom_garbage_and_invalid_utf8() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(event("ADDED", RUN, "2026-08-20T12:00:01Z").as_bytes());
    bytes.extend("é€漢字 garbage\n".as_bytes());
    bytes
        .extend(b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Job\",\"metadata\":{\"name\":\"\xff\xfe\"}}}\n");
    bytes.extend(event("ADDED", JOB, "2026-08-20T12:00:02Z").as_bytes());
    let path = scratch("bom.jsonl", &bytes);
    let file = path.to_str().unwrap();
    let (out, stderr) = replay(&["--format", "json", file]);
    assert!(out.status.success(), "replay failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(&format!("{file}:2:")), "no position for the garbage line: {stderr}");
    assert!(stderr.contains(&format!("{file}:3:")), "no position for the invalid UTF-8 line: {stderr}");
    assert!(!stderr.contains(&format!("{file}:1:")), "a BOM is not an error: {stderr}");
    assert!(!stderr.contains('漢'), "the file's content was echoed: {stderr}");
    // Lines 1 and 4 were replayed: the run and its Job.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"jobs\":1"), "{stdout}");
}

#[test]
fn replay_kubectl_form_survives_non_ascii_garbage() {
    let pretty = |object: &str| {
        serde_json::to_string_pretty(&serde_json::json!({
            "type": "ADDED", "object": serde_json::from_str::<serde_json::Value>(object).unwrap()
        }))
        .unwrap()
    };
    let run = pretty(RUN);
    let text = format!("{run}\n漢字 garbage\n{{ é€\n{}\n", pretty(JOB));
    let path = scratch("pretty.json", text.as_bytes());
    let (out, stderr) = replay(&["--format", "json", path.to_str().unwrap()]);
    assert!(out.status.success(), "replay failed: {stderr}");
    let garbage = run.lines().count() + 1;
    assert!(stderr.contains(&format!("{}:{garbage}:", path.display())), "{stderr}");
    assert!(!stderr.contains('漢'), "{stderr}");
    // The run before the garbage and its Job after it were both replayed.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"jobs\":1"), "{stdout}");
}

/// Wrong-typed fields, unsupported event types, ERROR events: the warning names the field and the type
/// expected; the value (which may be a secret) never appears.
#[test]
fn replay_warnings_name_fields_never_values() {
    let lines = [
        // 1: a time field that is not a time
        r#"{"type":"ADDED","object":{"kind":"Job","metadata":{"uid":"j"},"status":{"startTime":"SECRET-A"}}}"#
            .to_string(),
        // 2: a string field given a map
        r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"uid":{"token":"SECRET-B"}}}}"#.to_string(),
        // 3: an event type nobody knows
        format!("{{\"type\":\"SECRET-C\",\"object\":{JOB}}}"),
        // 4: a watch error
        r#"{"type":"ERROR","object":{"kind":"Status","code":410,"message":"SECRET-D"}}"#.to_string(),
        // 5: observedAt that is not a time
        format!("{{\"type\":\"ADDED\",\"object\":{JOB},\"observedAt\":\"SECRET-E\"}}"),
        // 6: an unsupported kind
        r#"{"type":"ADDED","object":{"kind":"SECRET-F"}}"#.to_string(),
        // 7: a number where a string belongs
        r#"{"type":"ADDED","object":{"kind":"Job","metadata":{"name":424242}}}"#.to_string(),
    ];
    let path = scratch("secrets.jsonl", (lines.join("\n") + "\n").as_bytes());
    let file = path.to_str().unwrap();
    let (out, stderr) = replay(&[file]);
    assert!(out.status.success(), "replay failed: {stderr}");
    for marker in ["SECRET", "424242"] {
        assert!(!stderr.contains(marker), "a value reached the log: {stderr}");
    }
    for (line, needle) in [
        (1, "status.startTime"),
        (2, "metadata.uid"),
        (3, "type"),
        (4, "ERROR"),
        (5, "observedAt"),
        (6, "kind"),
        (7, "metadata.name"),
    ] {
        let warning = stderr
            .lines()
            .find(|l| l.contains(&format!("{file}:{line}:")))
            .unwrap_or_else(|| panic!("no warning for line {line}: {stderr}"));
        assert!(warning.contains(needle), "line {line} does not name {needle}: {warning}");
    }
    let expected = |line: usize| stderr.lines().find(|l| l.contains(&format!("{file}:{line}:"))).unwrap();
    assert!(expected(1).contains("RFC 3339"), "{}", expected(1));
    assert!(expected(2).contains("expected a string"), "{}", expected(2));
    assert!(expected(7).contains("expected a string"), "{}", expected(7));
}

#[test]
fn replay_warns_about_a_time_far_from_the_capture() {
    let future = RUN.replace("2026-08-20T12:00:00.500Z", "2100-01-01T00:00:00Z");
    let body = event("ADDED", &future, "2026-08-20T12:00:01Z") + &event("ADDED", JOB, "2026-08-20T12:00:02Z");
    let path = scratch("future.jsonl", body.as_bytes());
    let file = path.to_str().unwrap();
    let (out, stderr) = replay(&[file]);
    assert!(out.status.success(), "replay failed: {stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains(&format!("{file}:1:")))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(warning.contains("status.updatedAt"), "{warning}");
}

fn assert_rejected(out: &Output, flag: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(flag), "the error does not name {flag}: {stderr}");
}

#[test]
fn huge_and_garbage_durations_are_rejected_by_name() {
    let file = scratch("empty.jsonl", b"");
    let file = file.to_str().unwrap();
    for (flag, value) in [
        ("--settle", "18446744073709551616s"),
        ("--settle", "18446744073709551616"),
        ("--ttl-grace", "1e30"),
        ("--backfill-window", "99999999999999999999d"),
        ("--settle", "NaN"),
        ("--settle", "inf"),
        ("--settle", "-5s"),
        ("--ttl-grace", "2y"),
    ] {
        let mut cmd = exporter();
        cmd.args(["replay", &format!("{flag}={value}"), file]);
        assert_rejected(&run(cmd, Duration::from_secs(30)), flag);
    }
    // Values are never repeated: an environment value can be anything.
    for (var, flag) in [
        ("AGENTRUN_EXPORTER_SETTLE", "--settle"),
        ("AGENTRUN_EXPORTER_SPAN_BUFFER_SIZE", "--span-buffer-size"),
        ("AGENTRUN_EXPORTER_SPAN_BUFFER_MAX_AGE", "--span-buffer-max-age"),
        ("AGENTRUN_EXPORTER_EXPORT_TIMEOUT", "--export-timeout"),
        ("AGENTRUN_EXPORTER_SHUTDOWN_TIMEOUT", "--shutdown-timeout"),
    ] {
        let mut cmd = exporter();
        cmd.args(["replay", file]).env(var, "SEKRET-9s");
        let out = run(cmd, Duration::from_secs(30));
        assert_rejected(&out, flag);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("SEKRET"), "{var} echoed");
    }
    // The same through the environment, in `watch` (which parses before it connects anywhere).
    for (var, flag) in [
        ("AGENTRUN_EXPORTER_SETTLE", "--settle"),
        ("AGENTRUN_EXPORTER_TTL_GRACE", "--ttl-grace"),
        ("AGENTRUN_EXPORTER_BACKFILL_WINDOW", "--backfill-window"),
    ] {
        let mut cmd = exporter();
        cmd.arg("watch").env(var, "18446744073709551616s").env("KUBECONFIG", "/nonexistent");
        assert_rejected(&run(cmd, Duration::from_secs(30)), flag);
    }
}

#[test]
fn demo_rejects_speeds_and_arrivals_that_cannot_progress() {
    for args in [
        ["--speed", "inf"],
        ["--speed", "NaN"],
        ["--speed", "0"],
        ["--arrival", "NaN"],
        ["--arrival", "inf"],
        ["--arrival", "0"],
        ["--arrival", "-1"],
    ] {
        let mut cmd = exporter();
        cmd.args(["demo", "--runs", "2", "--metrics-addr", &format!("127.0.0.1:{}", free_port())]);
        cmd.arg(format!("{}={}", args[0], args[1]));
        cmd.env("OTEL_TRACES_EXPORTER", "none");
        assert_rejected(&run(cmd, Duration::from_secs(20)), args[0]);
    }
}

/// A demo serving `/metrics` with the given HTTP flags, under a file-descriptor limit like a small pod's.
fn server(extra: &[&str], nofile: u32) -> (Child, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(support::BIN)
        .args(["demo", "--speed", "1", "--metrics-addr", &addr])
        .args(extra)
        .env("OTEL_TRACES_EXPORTER", "none")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(&addr, "/healthz"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

/// Many connections that never send a request (more than the process has file descriptors for) must not
/// keep a scrape from being answered.
#[test]
fn held_idle_connections_do_not_blind_metrics() {
    let (mut child, addr) = server(&["--http-max-connections", "32"], 128);
    let mut held = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect(&addr) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(held.len() >= 200, "could open only {} connections", held.len());
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let answer = http_get(&addr, "/metrics");
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let (status, body) = answer.expect("no answer to /metrics while connections are held");
    assert_eq!(status, 200);
    assert!(body.contains("agentrun_exporter_build_info"));
    assert!(took < Duration::from_secs(3), "/metrics took {took:?} while connections were held");
    drop(held);
}

/// A client that sends half a header and stalls is disconnected after the header timeout.
#[test]
fn slow_header_client_is_dropped() {
    let (mut child, addr) = server(&["--http-header-timeout", "1s"], 1024);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let closed = s.read_to_end(&mut buf);
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    assert!(closed.is_ok(), "not closed within 10 s: {closed:?}");
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

/// A client that sends requests and stops reading the answers stalls the server's writes: the connection
/// is closed after the idle timeout instead of being held for as long as the client likes.
#[test]
fn client_that_stops_reading_is_dropped_after_the_idle_timeout() {
    let (mut child, addr) = server(&["--http-idle-timeout", "1s", "--http-header-timeout", "60s"], 1024);
    let mut s = TcpStream::connect(&addr).unwrap();
    let requests = 3_000;
    let one = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(one.repeat(requests).as_bytes()).unwrap();
    // Enough answers to fill both socket buffers are now stuck; nothing is read for a while.
    std::thread::sleep(Duration::from_secs(4));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);
    let _ = child.kill();
    let _ = child.wait();
    let answered = String::from_utf8_lossy(&buf).matches("HTTP/1.1 200").count();
    assert!(read.is_ok() || answered < requests, "still open: {read:?}");
    assert!(answered < requests, "all {answered} answers were written: the stalled connection was kept");
}
