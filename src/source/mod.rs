//! Where observations come from: Kubernetes watches, the demo simulator, replay files.

pub mod demo;
pub mod kube;
pub mod replay;
