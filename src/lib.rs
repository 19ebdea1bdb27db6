#![forbid(unsafe_code)]
//! agentrun-lifecycle-exporter: the lifecycle of every Kubernetes Job behind an AgentRun, as OpenTelemetry
//! traces and metrics.
//!
//! Data flows one way: sources (Kubernetes watches, the demo simulator, replay files) produce observations;
//! the pure [`engine`] turns them into lifecycle facts; sinks project the facts into spans and metrics.

pub mod engine;
pub mod upstream;
pub mod sink;
pub mod pipeline;
pub mod telemetry;
pub mod source;
