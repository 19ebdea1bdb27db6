//! `/metrics` (Prometheus text), `/healthz` and `/readyz`, on a hardened HTTP/1 server: a header-read
//! timeout (which also bounds a keep-alive connection's wait for its next request), an idle timeout (nothing
//! read or written), and a cap on open connections. At the cap, the connection least recently active is
//! closed to make room: held idle connections cannot keep a scrape out, and the process never runs out of
//! file descriptors because of them.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use tracing::debug;

use crate::{config::HttpArgs, telemetry::Telemetry};

/// Whether the process is ready to be scraped as complete.
pub trait Ready: Send + Sync {
    fn is_ready(&self) -> bool;
}

impl Ready for crate::source::kube::Readiness {
    fn is_ready(&self) -> bool {
        crate::source::kube::Readiness::is_ready(self)
    }
}

/// Always ready (demo, replay).
pub struct AlwaysReady;

impl Ready for AlwaysReady {
    fn is_ready(&self) -> bool {
        true
    }
}

#[derive(Clone)]
struct AppState {
    registry: prometheus::Registry,
    ready: Arc<dyn Ready>,
}

pub fn router(registry: prometheus::Registry, ready: Arc<dyn Ready>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { registry, ready })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let body = Telemetry::render_metrics(&state.registry);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first list of every watch\n")
    }
}

/// Binds the address (so a bad one fails at start) and serves until `shutdown` resolves.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The server's limits (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl From<&HttpArgs> for Limits {
    fn from(a: &HttpArgs) -> Self {
        Limits {
            header_timeout: a.http_header_timeout,
            idle_timeout: a.http_idle_timeout,
            max_connections: a.http_max_connections as usize,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&HttpArgs::default())
    }
}

/// One open connection, as the accept loop sees it.
struct Slot {
    /// Milliseconds since the server started, at the last byte read or written.
    active: Arc<AtomicU64>,
    close: Arc<Notify>,
}

#[derive(Default)]
struct Connections {
    next_id: u64,
    open: HashMap<u64, Slot>,
}

impl Connections {
    /// Closes the connection least recently active; false when there is none.
    fn evict_one(&mut self) -> bool {
        let oldest =
            self.open.iter().min_by_key(|(_, s)| s.active.load(Ordering::Relaxed)).map(|(id, _)| *id);
        match oldest.and_then(|id| self.open.remove(&id)) {
            Some(slot) => {
                // notify_one keeps a permit if the task is not waiting yet, so the close is never lost.
                slot.close.notify_one();
                true
            }
            None => false,
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let epoch = Instant::now();
    let conns = Arc::new(Mutex::new(Connections::default()));
    let stopping = Arc::new(Notify::new());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): free one and retry soon,
                // rather than wait a second as axum::serve does.
                debug!(error = %e, "accept failed");
                if let Ok(mut c) = conns.lock() {
                    c.evict_one();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let active = Arc::new(AtomicU64::new(millis(epoch)));
        let close = Arc::new(Notify::new());
        let id = {
            let Ok(mut c) = conns.lock() else { continue };
            while c.open.len() >= limits.max_connections.max(1) && c.evict_one() {}
            c.next_id += 1;
            let id = c.next_id;
            c.open.insert(id, Slot { active: active.clone(), close: close.clone() });
            id
        };
        let io = Tracked { inner: stream, active: active.clone(), epoch };
        let (router, conns, stopping) = (router.clone(), conns.clone(), stopping.clone());
        tokio::spawn(async move {
            connection(io, router, limits, active, epoch, close, stopping).await;
            if let Ok(mut c) = conns.lock() {
                c.open.remove(&id);
            }
        });
    }
    // Connections still open finish the request in flight and then close.
    stopping.notify_waiters();
    Ok(())
}

async fn connection(
    io: Tracked,
    router: Router,
    limits: Limits,
    active: Arc<AtomicU64>,
    epoch: Instant,
    close: Arc<Notify>,
    stopping: Arc<Notify>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let idle_ms = limits.idle_timeout.as_millis() as u64;
    let mut graceful = false;
    loop {
        let deadline = epoch + Duration::from_millis(active.load(Ordering::Relaxed).saturating_add(idle_ms));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "connection closed");
                }
                return;
            }
            _ = close.notified() => return,
            _ = stopping.notified(), if !graceful => {
                graceful = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if millis(epoch) >= active.load(Ordering::Relaxed).saturating_add(idle_ms) {
                    debug!("idle connection closed");
                    return;
                }
            }
        }
    }
}

fn millis(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// A TCP stream that records when it last moved a byte.
struct Tracked {
    inner: TcpStream,
    active: Arc<AtomicU64>,
    epoch: Instant,
}

impl Tracked {
    fn touch(&self) {
        self.active.store(millis(self.epoch), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
