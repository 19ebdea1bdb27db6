//! Projections of lifecycle facts: spans, metrics, and the replay summary.

pub mod buffer;
pub mod metrics;
pub mod spans;
pub mod summary;
