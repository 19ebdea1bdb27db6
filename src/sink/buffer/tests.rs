use std::{
    borrow::Cow,
    sync::atomic::{AtomicUsize, Ordering},
};

use opentelemetry::{
    InstrumentationScope,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    /// Accepts the request and never answers (a collector that is stuck).
    Hang,
    /// Refuses the batch for its content (as the OTLP gRPC client words it).
    Reject,
}

#[derive(Clone, Debug)]
struct Fake {
    mode: Arc<Mutex<Mode>>,
    got: Arc<Mutex<Vec<SpanData>>>,
    calls: Arc<AtomicUsize>,
}

impl Fake {
    fn new(mode: Mode) -> Self {
        Fake { mode: Arc::new(Mutex::new(mode)), got: Arc::default(), calls: Arc::default() }
    }
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|s| u64::from_be_bytes(s.span_context.span_id().to_bytes()))
            .collect();
        ids.sort();
        ids
    }
}

impl SpanExporter for Fake {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Up => {
                self.got.lock().unwrap().extend(batch);
                Ok(())
            }
            Mode::Down => Err(OTelSdkError::InternalFailure("connection refused".into())),
            Mode::Hang => std::future::pending().await,
            Mode::Reject => Err(OTelSdkError::InternalFailure(
                "TonicTracesClient export failed with gRPC code: InvalidArgument".into(),
            )),
        }
    }
}

fn span(id: u64) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes(id.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed("job.run"),
        start_time: SystemTime::UNIX_EPOCH,
        end_time: SystemTime::UNIX_EPOCH,
        attributes: vec![KeyValue::new("k8s.namespace.name", "synthesis")],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("t").build(),
    }
}

fn batch(from: u64, n: u64) -> Vec<SpanData> {
    (from..from + n).map(span).collect()
}

fn fast() -> BufferConfig {
    BufferConfig {
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(60),
        attempt_timeout: Duration::from_millis(300),
        shutdown_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn export(b: &BufferedExporter, spans: Vec<SpanData>) {
    futures::executor::block_on(b.export(spans)).unwrap();
}

/// Every span handed over is exported, dropped with a reason, or still held.
fn assert_balanced(stats: &SpanStats) {
    let buffered = stats.buffered.load(Ordering::SeqCst);
    let exported = stats.exported.load(Ordering::SeqCst);
    let dropped = stats.dropped.load(Ordering::SeqCst);
    let held = stats.buffer_spans.load(Ordering::SeqCst);
    assert_eq!(
        buffered,
        exported + dropped + held,
        "buffered {buffered} exported {exported} dropped {dropped} held {held}"
    );
    let by_reason: u64 = DropReason::ALL.iter().map(|r| stats.dropped(*r)).sum();
    assert_eq!(by_reason, dropped);
}

#[test]
fn spans_held_through_an_outage_are_all_delivered_once_the_backend_is_back() {
    let fake = Fake::new(Mode::Down);
    let stats = Arc::new(SpanStats::default());
    let b = BufferedExporter::start(fake.clone(), fast(), stats.clone()).unwrap();
    for i in 0..10 {
        export(&b, batch(i * 100, 50));
    }
    wait_for("a few failed attempts", Duration::from_secs(5), || {
        stats.export_failures(ExportFailure::Error) >= 3
    });
    assert_eq!(stats.buffer_spans.load(Ordering::SeqCst), 500);
    assert!(stats.buffer_bytes.load(Ordering::SeqCst) >= 500 * size_of::<SpanData>() as u64);
    assert_eq!(stats.exported.load(Ordering::SeqCst), 0);
    fake.set(Mode::Up);
    wait_for("delivery", Duration::from_secs(5), || stats.exported.load(Ordering::SeqCst) == 500);
    let want: Vec<u64> = (0..10).flat_map(|i| i * 100..i * 100 + 50).collect();
    assert_eq!(fake.ids(), want, "every span, each once, ids unchanged");
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
    assert_eq!(stats.buffer_spans.load(Ordering::SeqCst), 0);
    assert_eq!(stats.buffer_bytes.load(Ordering::SeqCst), 0);
    assert_balanced(&stats);
    b.close();
}

#[test]
fn a_full_buffer_evicts_the_oldest_spans_and_counts_them() {
    let fake = Fake::new(Mode::Down);
    let stats = Arc::new(SpanStats::default());
    let per_span = span_bytes(&span(0));
    // Room for 250 spans: five batches of 100 keep the newest 250 (the oldest batch in flight may be
    // evicted only once it is back in the queue).
    let config = BufferConfig { max_bytes: 250 * per_span, ..fast() };
    let b = BufferedExporter::start(fake.clone(), config, stats.clone()).unwrap();
    for i in 0..5 {
        export(&b, batch(i * 100, 100));
        assert_balanced(&stats);
        assert!(stats.buffer_bytes.load(Ordering::SeqCst) <= 250 * per_span);
    }
    let evicted = stats.dropped(DropReason::Evicted);
    assert!(evicted >= 250, "{evicted}");
    assert_eq!(stats.buffer_spans.load(Ordering::SeqCst), 500 - evicted);
    fake.set(Mode::Up);
    wait_for("delivery", Duration::from_secs(5), || stats.buffer_spans.load(Ordering::SeqCst) == 0);
    assert_eq!(stats.exported.load(Ordering::SeqCst), 500 - evicted);
    // The newest spans survive.
    assert!(fake.ids().contains(&499));
    assert_balanced(&stats);
    b.close();
}

#[test]
fn spans_older_than_the_maximum_age_expire_and_are_counted() {
    let fake = Fake::new(Mode::Down);
    let stats = Arc::new(SpanStats::default());
    let config = BufferConfig { max_age: Duration::from_millis(300), ..fast() };
    let b = BufferedExporter::start(fake.clone(), config, stats.clone()).unwrap();
    export(&b, batch(0, 40));
    export(&b, batch(100, 60));
    wait_for("expiry", Duration::from_secs(5), || stats.dropped(DropReason::Expired) == 100);
    assert_eq!(stats.buffer_spans.load(Ordering::SeqCst), 0);
    fake.set(Mode::Up);
    export(&b, batch(200, 5));
    wait_for("delivery", Duration::from_secs(5), || stats.exported.load(Ordering::SeqCst) == 5);
    assert_balanced(&stats);
    b.close();
}

#[test]
fn an_export_that_never_answers_times_out_and_is_retried() {
    let fake = Fake::new(Mode::Hang);
    let stats = Arc::new(SpanStats::default());
    let b = BufferedExporter::start(fake.clone(), fast(), stats.clone()).unwrap();
    let began = Instant::now();
    export(&b, batch(0, 10));
    // The processor is never held up: export returns at once.
    assert!(began.elapsed() < Duration::from_millis(500));
    wait_for("two timeouts", Duration::from_secs(5), || stats.export_failures(ExportFailure::Timeout) >= 2);
    assert!(began.elapsed() >= Duration::from_millis(600), "each attempt waits the timeout");
    fake.set(Mode::Up);
    wait_for("delivery", Duration::from_secs(5), || stats.exported.load(Ordering::SeqCst) == 10);
    assert_eq!(fake.ids(), (0..10).collect::<Vec<_>>());
    assert_balanced(&stats);
    b.close();
}

#[test]
fn shutdown_gives_up_at_its_timeout_and_counts_what_is_left() {
    let fake = Fake::new(Mode::Hang);
    let stats = Arc::new(SpanStats::default());
    let config = BufferConfig { shutdown_timeout: Duration::from_millis(500), ..fast() };
    let b = BufferedExporter::start(fake.clone(), config, stats.clone()).unwrap();
    export(&b, batch(0, 30));
    export(&b, batch(100, 20));
    let began = Instant::now();
    b.close();
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "{took:?}");
    assert_eq!(stats.dropped(DropReason::Shutdown), 50);
    assert_eq!(stats.exported.load(Ordering::SeqCst), 0);
    assert_balanced(&stats);
    // Late batches (the processor's last flush) are counted too, and the worker counts nothing more.
    export(&b, batch(200, 5));
    fake.set(Mode::Up);
    thread::sleep(Duration::from_millis(400));
    assert_eq!(stats.dropped(DropReason::Shutdown), 55);
    assert_eq!(stats.exported.load(Ordering::SeqCst), 0);
    assert_balanced(&stats);
}

#[test]
fn shutdown_retries_at_once_and_flushes_when_the_backend_answers() {
    let fake = Fake::new(Mode::Down);
    let stats = Arc::new(SpanStats::default());
    // A long backoff: shutdown must not wait it out.
    let config = BufferConfig {
        initial_backoff: Duration::from_secs(30),
        max_backoff: Duration::from_secs(30),
        ..fast()
    };
    let b = BufferedExporter::start(fake.clone(), config, stats.clone()).unwrap();
    export(&b, batch(0, 25));
    wait_for("a failure", Duration::from_secs(5), || stats.export_failures(ExportFailure::Error) == 1);
    fake.set(Mode::Up);
    let began = Instant::now();
    b.close();
    assert!(began.elapsed() < Duration::from_secs(3), "{:?}", began.elapsed());
    assert_eq!(stats.exported.load(Ordering::SeqCst), 25);
    assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
    assert_balanced(&stats);
}

#[test]
fn a_rejected_batch_is_dropped_at_once_and_does_not_hold_up_the_next() {
    let fake = Fake::new(Mode::Reject);
    let stats = Arc::new(SpanStats::default());
    // A long backoff: a rejection must not start one.
    let config = BufferConfig { initial_backoff: Duration::from_secs(30), ..fast() };
    let b = BufferedExporter::start(fake.clone(), config, stats.clone()).unwrap();
    export(&b, batch(0, 7));
    wait_for("the rejection", Duration::from_secs(5), || stats.dropped(DropReason::Rejected) == 7);
    fake.set(Mode::Up);
    export(&b, batch(100, 3));
    wait_for("the next batch", Duration::from_secs(2), || stats.exported.load(Ordering::SeqCst) == 3);
    assert_eq!(stats.export_failures(ExportFailure::Error), 0);
    assert_balanced(&stats);
    b.close();
}

#[test]
fn only_content_errors_count_as_rejections() {
    let e = |m: &str| OTelSdkError::InternalFailure(m.into());
    assert!(rejected(&e("TonicTracesClient export failed with gRPC code: InvalidArgument")));
    assert!(rejected(&e("HTTP export failed with status code: 400")));
    assert!(rejected(&e("HTTP export failed with status code: 413")));
    assert!(!rejected(&e("TonicTracesClient export failed with gRPC code: Unavailable: connection refused")));
    assert!(!rejected(&e("TonicTracesClient export failed with gRPC code: Unauthenticated")));
    assert!(!rejected(&e("HTTP export failed with status code: 503")));
    assert!(!rejected(&e("HTTP export failed with status code: 4000")));
    assert!(!rejected(&OTelSdkError::Timeout(Duration::from_secs(1))));
}

#[test]
fn backoff_doubles_is_capped_and_jittered() {
    let config = BufferConfig {
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(10),
        ..BufferConfig::default()
    };
    for (failures, full) in [(1, 500), (2, 1000), (3, 2000), (5, 8000), (6, 10_000), (60, 10_000)] {
        let full = Duration::from_millis(full);
        for _ in 0..20 {
            let d = backoff(&config, failures);
            assert!(
                d >= full / 2 && d <= full,
                "failures {failures}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }
    let spread: HashSet<Duration> = (0..50).map(|_| backoff(&config, 6)).collect();
    assert!(spread.len() > 1, "jittered");
}

use std::collections::HashSet;
