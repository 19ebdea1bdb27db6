//! Telemetry setup and shutdown, in one place: the resource, the span output (OTLP, console or none), and
//! the one meter provider read both by `/metrics` and, when configured, by OTLP push. Configuration follows
//! the OpenTelemetry environment specification; the OTLP exporters read endpoints, protocol, headers and
//! timeouts from the `OTEL_EXPORTER_OTLP_*` variables themselves, except the traces timeout: spans go
//! through a retry buffer ([`crate::sink::buffer`]) whose attempts have their own (`--export-timeout`).

use std::{env, sync::Arc, time::Duration};

use opentelemetry::{KeyValue, metrics::MeterProvider as _};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{Instrument, SdkMeterProvider, Stream},
    trace::SpanExporter as _,
};
use tracing::{info, warn};

use crate::sink::{
    buffer::{BufferConfig, BufferedExporter},
    metrics::{LifecycleMetrics, SERIES_PER_NAMESPACE},
    spans::{ConsoleView, SpanOutput, SpanSink, SpanStats},
};

pub const DEFAULT_SERVICE_NAME: &str = "agentrun-lifecycle-exporter";
/// Namespaces the metrics are sized for by default (`--max-namespaces`).
pub const DEFAULT_MAX_NAMESPACES: usize = 1000;

/// What the command line sets about export.
#[derive(Clone, Debug)]
pub struct Settings {
    pub buffer: BufferConfig,
    /// Namespaces the metric streams must hold without overflow.
    pub max_namespaces: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { buffer: BufferConfig::default(), max_namespaces: DEFAULT_MAX_NAMESPACES }
    }
}

impl Settings {
    /// Series each metric stream may hold: every namespace with every label combination of the widest
    /// metric. Past it the SDK folds new series into one `otel_metric_overflow="true"` series.
    pub fn cardinality_limit(&self) -> usize {
        self.max_namespaces.max(1).saturating_mul(SERIES_PER_NAMESPACE).min(usize::MAX - 1)
    }
}

/// A view that sets the cardinality limit of every instrument (their names, units and buckets are kept).
pub fn cardinality_view(limit: usize) -> impl Fn(&Instrument) -> Option<Stream> + Send + Sync + 'static {
    move |_: &Instrument| Stream::builder().with_cardinality_limit(limit).build().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTEL_TRACES_EXPORTER={0:?} is not supported (use otlp, console or none)")]
    TracesExporter(String),
    #[error("OTEL_METRICS_EXPORTER={0:?} is not supported (use otlp, prometheus, console or none)")]
    MetricsExporter(String),
    #[error("building the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("building the Prometheus reader: {0}")]
    Prometheus(#[source] opentelemetry_sdk::error::OTelSdkError),
    #[error("starting the span export thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What a mode does when the environment says nothing about traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TracesDefault {
    /// OTLP if an endpoint is configured, else nothing (said once at start).
    OtlpIfConfigured,
    /// OTLP if an endpoint is configured, else the console view.
    OtlpElseConsole,
}

pub struct Telemetry {
    pub spans: SpanSink,
    pub metrics: Arc<LifecycleMetrics>,
    pub registry: prometheus::Registry,
    meter_provider: SdkMeterProvider,
}

fn env_nonempty(name: &str) -> Option<String> {
    env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The first exporter of an `OTEL_*_EXPORTER` list.
fn exporter_choice(name: &str) -> Option<String> {
    env_nonempty(name).and_then(|v| v.split(',').next().map(|s| s.trim().to_lowercase()))
}

fn endpoint_configured(signal_var: &str) -> bool {
    env_nonempty("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() || env_nonempty(signal_var).is_some()
}

pub fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    if detected.get(&opentelemetry::Key::from_static_str("service.version")).is_none() {
        builder = builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    builder.build()
}

/// Builds the span output and the meter provider. Must run inside a Tokio runtime (the gRPC exporters need
/// its reactor).
pub fn init(
    traces_default: TracesDefault,
    console: Box<dyn std::io::Write + Send>,
    settings: &Settings,
) -> Result<Telemetry, TelemetryError> {
    let resource = resource();
    let stats = Arc::new(SpanStats::default());

    let traces_endpoint = endpoint_configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let traces = match exporter_choice("OTEL_TRACES_EXPORTER") {
        Some(choice) => choice,
        None if traces_endpoint => "otlp".into(),
        None => match traces_default {
            TracesDefault::OtlpIfConfigured => {
                info!("no OTLP endpoint configured (OTEL_EXPORTER_OTLP_ENDPOINT): traces are not exported");
                "none".into()
            }
            TracesDefault::OtlpElseConsole => "console".into(),
        },
    };
    let output = match traces.as_str() {
        "otlp" => {
            let mut exporter = span_exporter(settings.buffer.attempt_timeout)?;
            exporter.set_resource(&resource);
            let buffer = BufferedExporter::start(exporter, settings.buffer.clone(), stats.clone())
                .map_err(TelemetryError::Thread)?;
            info!(
                protocol = %protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
                buffer_bytes = settings.buffer.max_bytes,
                buffer_max_age = ?settings.buffer.max_age,
                "exporting traces over OTLP"
            );
            // The sink hands the buffer its spans in batches itself: no SDK batch processor, whose queue
            // (allocated whole up front) and thread only bridged to the buffer.
            SpanOutput::Buffer(buffer)
        }
        "console" => SpanOutput::Console(ConsoleView::new(console)),
        "none" => SpanOutput::None,
        other => return Err(TelemetryError::TracesExporter(other.into())),
    };

    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .build()
        .map_err(TelemetryError::Prometheus)?;
    let limit = settings.cardinality_limit();
    let mut meters = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus_reader)
        .with_view(cardinality_view(limit));
    let metrics_endpoint = endpoint_configured("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let metrics_choice = exporter_choice("OTEL_METRICS_EXPORTER")
        .unwrap_or_else(|| if metrics_endpoint { "otlp".into() } else { "prometheus".into() });
    match metrics_choice.as_str() {
        "otlp" => {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .build()
                .map_err(|source| TelemetryError::Exporter { signal: "metrics", source })?;
            meters = meters.with_periodic_exporter(exporter);
            info!(protocol = %protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"), "pushing metrics over OTLP");
        }
        "prometheus" | "none" => {}
        "console" => {
            warn!("OTEL_METRICS_EXPORTER=console is not supported; metrics are served on /metrics only")
        }
        other => return Err(TelemetryError::MetricsExporter(other.into())),
    }
    let meter_provider = meters.build();
    let meter = meter_provider.meter("agentrun-lifecycle-exporter");
    let metrics = Arc::new(LifecycleMetrics::with_series_limit(&meter, stats.clone(), limit));
    Ok(Telemetry { spans: SpanSink::new(output, stats), metrics, registry, meter_provider })
}

/// The OTLP span exporter: one request per call, bounded by `timeout`. Retries are the buffer's (the
/// client's own would retry for 2 s and give up).
fn span_exporter(timeout: Duration) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let built = if protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") == "grpc" {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .with_retry_policy(RetryPolicy::disabled())
            .with_timeout(timeout)
            .build()
    } else {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_retry_policy(RetryPolicy::disabled())
            .with_timeout(timeout)
            .build()
    };
    built.map_err(|source| TelemetryError::Exporter { signal: "traces", source })
}

fn protocol(signal_var: &str) -> String {
    env_nonempty(signal_var)
        .or_else(|| env_nonempty("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into())
}

impl Telemetry {
    /// Prometheus text exposition of the current metrics.
    pub fn render_metrics(registry: &prometheus::Registry) -> String {
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_to_string(&registry.gather()).unwrap_or_default()
    }

    /// Flushes spans first (so the last traces are not lost), then metrics. Blocking: call it from a blocking
    /// context or after the async work is done.
    pub fn shutdown(mut self) {
        if let Err(e) = self.spans.shutdown() {
            warn!(error = %e, "flushing spans");
        }
        if let Err(e) = self.meter_provider.shutdown() {
            warn!(error = %e, "flushing metrics");
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). The exporter's own OTLP clients are kept quiet
/// unless asked for, so a broken backend does not flood the log.
pub fn init_logging(json: bool) {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,h2=warn,hyper=warn,tonic=warn,reqwest=warn,opentelemetry_sdk=warn")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init()
    } else {
        registry.with(fmt::layer().compact().with_writer(std::io::stderr)).try_init()
    };
}
