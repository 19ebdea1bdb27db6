#![forbid(unsafe_code)]
//! agentrun-lifecycle-exporter: the lifecycle of every Kubernetes Job behind an AgentRun, as OpenTelemetry
//! traces and metrics.
//!
//! Data flows one way: sources ([`source`]: Kubernetes watches, the demo simulator, replay files) produce
//! observations; the pure [`engine`] turns them into lifecycle facts; sinks ([`sink`]) project the facts into
//! spans and metrics. [`pipeline`] is the loop all modes share, [`telemetry`] owns provider setup and
//! shutdown, [`run`] wires each mode.

pub mod catalogue;
pub mod config;
pub mod engine;
pub mod http;
pub mod leader;
pub mod pipeline;
pub mod run;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod upstream;
