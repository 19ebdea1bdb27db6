//! A bounded retry buffer between the span sink and the OTLP exporter.
//!
//! The OTLP exporter alone retries a batch for about 2 s and then it is gone. [`BufferedExporter`] takes
//! its place: the span sink hands it batches ([`BufferedExporter::hand_over`]; `export`, for an SDK span
//! processor, does the same), which it only stores, and a worker thread sends the stored batches oldest first,
//! one attempt at a time, each bounded by a timeout, backing off exponentially (with jitter) while the
//! backend fails. The buffer is bounded by bytes (the oldest spans are evicted for a new batch) and by age
//! (older batches expire). Every span that leaves it other than by a successful export is counted in
//! [`SpanStats`] with its [`DropReason`]; a re-sent span is the same `SpanData`, ids included.

use std::{
    collections::VecDeque,
    future::Future,
    mem::size_of,
    pin::pin,
    sync::{Arc, Condvar, Mutex, MutexGuard, atomic::Ordering},
    task::Poll,
    thread,
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{KeyValue, Value, trace::Event};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use tracing::{info, warn};

use super::spans::{DropReason, ExportFailure, SpanStats};

/// Limits and timings of the buffer (see the README's configuration table for the defaults and why).
#[derive(Clone, Debug)]
pub struct BufferConfig {
    /// Estimated in-memory size of the spans held, including the batch being sent.
    pub max_bytes: u64,
    /// A batch not delivered this long after it was handed over is dropped.
    pub max_age: Duration,
    /// One export attempt; the OTLP client gets the same timeout.
    pub attempt_timeout: Duration,
    /// How long shutdown keeps sending what is left.
    pub shutdown_timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(15 * 60),
            attempt_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Estimated heap and inline size of a span as the buffer holds it. Strings shared with other spans
/// (`Arc<str>` values, the scope) are counted in full, so this errs on the high side.
pub fn span_bytes(span: &SpanData) -> u64 {
    fn value_bytes(v: &Value) -> usize {
        match v {
            Value::String(s) => s.as_str().len(),
            Value::Array(_) => 64,
            _ => 0,
        }
    }
    fn kv_bytes(kv: &KeyValue) -> usize {
        size_of::<KeyValue>() + kv.key.as_str().len() + value_bytes(&kv.value)
    }
    fn event_bytes(e: &Event) -> usize {
        size_of::<Event>() + e.name.len() + e.attributes.iter().map(kv_bytes).sum::<usize>()
    }
    let status = match &span.status {
        opentelemetry::trace::Status::Error { description } => description.len(),
        _ => 0,
    };
    (size_of::<SpanData>()
        + span.name.len()
        + span.attributes.iter().map(kv_bytes).sum::<usize>()
        + span.events.iter().map(event_bytes).sum::<usize>()
        + status) as u64
}

struct Batch {
    spans: Vec<SpanData>,
    bytes: u64,
    since: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Batch>,
    /// Spans and bytes held, the batch being sent included.
    spans: u64,
    bytes: u64,
    /// The batch being sent (spans, bytes), counted in `spans`/`bytes` but not in `queue`.
    in_flight: Option<(u64, u64)>,
    /// No attempt before this instant (backoff).
    retry_at: Option<Instant>,
    failures: u32,
    /// Shutdown asked: send what is left, then stop.
    stopping: bool,
    /// Shutdown gave up (deadline passed, leftovers counted): the worker must not count anything more.
    closed: bool,
    done: bool,
    resource: Option<Resource>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    config: BufferConfig,
    stats: Arc<SpanStats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent counters (each update is one step), so go on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, s: &State) {
        self.stats.buffer_spans.store(s.spans, Ordering::Relaxed);
        self.stats.buffer_bytes.store(s.bytes, Ordering::Relaxed);
    }

    fn drop_front(&self, s: &mut State, reason: DropReason) {
        if let Some(b) = s.queue.pop_front() {
            s.spans -= b.spans.len() as u64;
            s.bytes -= b.bytes;
            self.stats.drop_spans(reason, b.spans.len() as u64);
        }
    }

    fn expire(&self, s: &mut State) {
        while s.queue.front().is_some_and(|b| b.since.elapsed() > self.config.max_age) {
            self.drop_front(s, DropReason::Expired);
        }
    }

    /// Takes a new batch, evicting the oldest spans if it does not fit.
    fn accept(&self, mut spans: Vec<SpanData>) {
        let mut s = self.lock();
        self.stats.buffered.fetch_add(spans.len() as u64, Ordering::Relaxed);
        // After shutdown nothing would send them.
        if s.closed || s.done {
            self.stats.drop_spans(DropReason::Shutdown, spans.len() as u64);
            return;
        }
        let mut bytes: u64 = spans.iter().map(span_bytes).sum();
        while s.bytes + bytes > self.config.max_bytes && !s.queue.is_empty() {
            self.drop_front(&mut s, DropReason::Evicted);
        }
        // Nothing older left to evict (only the batch in flight): trim this batch's oldest spans.
        let mut trimmed = 0;
        while s.bytes + bytes > self.config.max_bytes && trimmed < spans.len() {
            bytes -= span_bytes(&spans[trimmed]);
            trimmed += 1;
        }
        if trimmed > 0 {
            spans.drain(..trimmed);
            self.stats.drop_spans(DropReason::Evicted, trimmed as u64);
        }
        if !spans.is_empty() {
            s.spans += spans.len() as u64;
            s.bytes += bytes;
            s.queue.push_back(Batch { spans, bytes, since: Instant::now() });
        }
        self.publish(&s);
        drop(s);
        self.wake.notify_all();
    }

    /// Asks the worker to send what is left and stop; waits at most `shutdown_timeout`, then counts what is
    /// still held as dropped.
    fn close(&self) {
        let deadline = Instant::now() + self.config.shutdown_timeout;
        let mut s = self.lock();
        if s.closed || s.done {
            return;
        }
        if !s.stopping {
            s.stopping = true;
            // Try at once rather than wait out a long backoff.
            s.retry_at = None;
            self.wake.notify_all();
        }
        while !s.done {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self.wake.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        if !s.done {
            let left = s.spans;
            s.queue.clear();
            s.spans = 0;
            s.bytes = 0;
            s.closed = true;
            self.stats.drop_spans(DropReason::Shutdown, left);
            self.publish(&s);
            warn!(spans = left, "span export did not finish within the shutdown timeout; spans dropped");
        }
    }
}

/// The `SpanExporter` the batch processor drives: it stores batches for the worker and never waits on the
/// network.
#[derive(Clone)]
pub struct BufferedExporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BufferedExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BufferedExporter")
    }
}

impl BufferedExporter {
    /// Starts the worker thread that owns `inner`.
    pub fn start<E: SpanExporter + 'static>(
        inner: E,
        config: BufferConfig,
        stats: Arc<SpanStats>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared { state: Mutex::default(), wake: Condvar::new(), config, stats });
        let worker = shared.clone();
        thread::Builder::new().name("span-export-buffer".into()).spawn(move || run(inner, &worker))?;
        Ok(BufferedExporter { shared })
    }

    /// Takes a batch of finished spans (never waits on the network).
    pub fn hand_over(&self, spans: Vec<SpanData>) {
        self.shared.accept(spans);
    }

    /// Sends what is held until done or `shutdown_timeout`; what is left then is counted as dropped.
    /// Blocking. Idempotent.
    pub fn close(&self) {
        self.shared.close();
    }
}

impl SpanExporter for BufferedExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.shared.accept(batch);
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // The buffer's own shutdown timeout applies: the processor's default (5 s) is shorter than an outage
        // flush may need and is not configurable.
        self.shared.close();
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.lock().resource = Some(resource.clone());
    }
}

/// Exponential backoff with jitter: the n-th consecutive failure waits a random time in [d/2, d], d =
/// initial × 2^(n-1), capped. Jitter spreads the retries of the two sidecars after a collector restart.
fn backoff(config: &BufferConfig, failures: u32) -> Duration {
    let d = config
        .initial_backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(config.max_backoff);
    d / 2 + d.mul_f64(0.5 * jitter())
}

/// A number in [0, 1) from the clock's nanoseconds (splitmix64); enough to de-synchronise retries.
fn jitter() -> f64 {
    let mut x =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

enum Attempt {
    Sent,
    Failed(ExportFailure),
    Rejected,
}

/// A batch the backend refused for its content (OTLP: gRPC `InvalidArgument`, HTTP 400 or 413): re-sending it
/// cannot succeed, and keeping it would hold up every later batch until it expires. Everything else, auth
/// errors and 5xx included, is retried: it is the backend's state, not the batch's. The OTLP clients say
/// which only in the message; `tests/otlp_export.rs` pins its wording down.
fn rejected(e: &OTelSdkError) -> bool {
    let OTelSdkError::InternalFailure(m) = e else { return false };
    m.contains("gRPC code: InvalidArgument")
        || m.ends_with("status code: 400")
        || m.ends_with("status code: 413")
}

/// Wakes the thread that polls an export future (the worker): a `Waker` without an executor.
struct Unpark(thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// One export attempt, bounded by `timeout` even if the exporter's own timeout does not fire. The export
/// future is polled on this thread, as the batch processor does, which parks between polls until woken or
/// until the deadline (no timer thread per attempt).
fn attempt<E: SpanExporter>(inner: &E, spans: Vec<SpanData>, timeout: Duration) -> Attempt {
    let deadline = Instant::now() + timeout;
    let mut export = pin!(inner.export(spans));
    let waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let result = loop {
        if let Poll::Ready(r) = export.as_mut().poll(&mut cx) {
            break Some(r);
        }
        let now = Instant::now();
        if now >= deadline {
            break None;
        }
        // Returns when woken (or spuriously: polling again is harmless) or at the deadline.
        thread::park_timeout(deadline - now);
    };
    match result {
        Some(Ok(())) => Attempt::Sent,
        Some(Err(e)) if rejected(&e) => Attempt::Rejected,
        Some(Err(OTelSdkError::Timeout(_))) => Attempt::Failed(ExportFailure::Timeout),
        // The OTLP clients report their own timeout as a transport error; tell it apart by the clock.
        Some(Err(_)) if Instant::now() + Duration::from_millis(50) >= deadline => {
            Attempt::Failed(ExportFailure::Timeout)
        }
        Some(Err(_)) => Attempt::Failed(ExportFailure::Error),
        None => Attempt::Failed(ExportFailure::Timeout),
    }
}

fn run<E: SpanExporter>(mut inner: E, shared: &Shared) {
    let config = &shared.config;
    loop {
        let mut s = shared.lock();
        if let Some(r) = s.resource.take() {
            inner.set_resource(&r);
        }
        shared.expire(&mut s);
        shared.publish(&s);
        if s.closed {
            return;
        }
        if s.queue.is_empty() {
            if s.stopping {
                s.done = true;
                drop(s);
                shared.wake.notify_all();
                let _ = inner.shutdown_with_timeout(config.attempt_timeout);
                return;
            }
            drop(shared.wake.wait(s).unwrap_or_else(|e| e.into_inner()));
            continue;
        }
        if let Some(at) = s.retry_at {
            let now = Instant::now();
            if now < at {
                // Wake for the retry, for shutdown, or for the oldest batch's expiry, whichever comes first.
                let expiry =
                    s.queue.front().map(|b| (b.since + config.max_age).saturating_duration_since(now));
                let wait = (at - now).min(expiry.unwrap_or(Duration::MAX)) + Duration::from_millis(1);
                drop(shared.wake.wait_timeout(s, wait).unwrap_or_else(|e| e.into_inner()));
                continue;
            }
        }
        let Some(batch) = s.queue.pop_front() else { continue };
        s.in_flight = Some((batch.spans.len() as u64, batch.bytes));
        drop(s);

        let outcome = attempt(&inner, batch.spans.clone(), config.attempt_timeout);

        let mut s = shared.lock();
        s.in_flight = None;
        if s.closed {
            return;
        }
        let n = batch.spans.len() as u64;
        match outcome {
            Attempt::Sent => {
                s.spans -= n;
                s.bytes -= batch.bytes;
                shared.stats.exported.fetch_add(n, Ordering::Relaxed);
                if s.failures > 0 {
                    info!(after_failures = s.failures, "span export recovered");
                }
                s.failures = 0;
                s.retry_at = None;
            }
            Attempt::Rejected => {
                s.spans -= n;
                s.bytes -= batch.bytes;
                shared.stats.drop_spans(DropReason::Rejected, n);
                // Once is enough to point at the cause; the counter has the rest.
                if shared.stats.dropped(DropReason::Rejected) == n {
                    warn!(spans = n, "the OTLP backend rejected a batch of spans for its content; dropped");
                }
            }
            Attempt::Failed(why) => {
                shared.stats.export_failure(why);
                s.failures = s.failures.saturating_add(1);
                if s.failures == 1 {
                    warn!(
                        reason = why.as_str(),
                        held = s.spans,
                        "span export failed; keeping the spans and retrying"
                    );
                }
                s.retry_at = Some(Instant::now() + backoff(config, s.failures));
                if batch.since.elapsed() > config.max_age {
                    s.spans -= n;
                    s.bytes -= batch.bytes;
                    shared.stats.drop_spans(DropReason::Expired, n);
                } else {
                    s.queue.push_front(batch);
                }
            }
        }
        shared.publish(&s);
    }
}

#[cfg(test)]
mod tests;
