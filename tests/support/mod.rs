//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_apiserver;
pub mod otlp;
pub mod outage;
pub mod proxy;
pub mod spans;
pub mod standin;
pub mod testbed;
pub mod writes;

use std::{net::TcpListener, process::Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentrun-lifecycle-exporter");

/// A free loopback port (bound and released; good enough for tests that start a server right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The exporter binary with a clean OpenTelemetry environment.
pub fn exporter() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("AGENTRUN_") || k.starts_with("AGENTS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// GET over plain HTTP/1.1 on loopback; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// Metric family names in a Prometheus text exposition (from `# TYPE` lines).
pub fn metric_families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}
