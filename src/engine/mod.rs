//! The pure core: objects in, lifecycle facts out. No I/O and no clock; `watch`, `demo` and `replay` all
//! drive the same tracker.

pub mod facts;
pub mod ids;
pub mod model;
pub mod time;
pub mod tracker;

pub use facts::{Emitted, Fact};
pub use model::{Input, Kind, Update};
pub use time::{Stamp, TimeSource, Ts};
pub use tracker::{LiveGauges, Tracker, TrackerConfig};

#[cfg(test)]
mod tests;
