//! A TCP proxy in front of an OTLP receiver, to play a collector outage on a fixed port: `down()` closes the
//! port and every connection (the collector process is gone), `up()` listens again on the same port,
//! `blackhole()` accepts connections and never answers (a stuck collector); connections held by the
//! blackhole are forwarded, with the bytes they sent, once the proxy is `up()` again.

use std::net::SocketAddr;

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
    task::JoinSet,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    Down,
    Blackhole,
}

pub struct OutageProxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    server: Option<tokio::task::JoinHandle<()>>,
    /// While down, the port stays bound without listening: connecting is refused, and no other socket of
    /// the machine (an outgoing connection's ephemeral port) can take it before `up()`.
    reserved: Option<TcpSocket>,
}

fn bind(addr: SocketAddr) -> TcpSocket {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket
}

async fn serve(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    // Connections live in this set: aborting the server task drops them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                conns.spawn(connection(client, upstream, mode.clone()));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // Held without reading while blackholed; forwarded when the proxy is up.
    if mode.wait_for(|m| *m == Mode::Up).await.is_err() {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let mut closed = mode.clone();
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        // Going down or stuck cuts the connections in use.
        _ = closed.wait_for(|m| *m != Mode::Up) => {}
    }
}

impl OutageProxy {
    /// A proxy on a free loopback port, up.
    pub async fn start(upstream: SocketAddr) -> OutageProxy {
        let socket = bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = socket.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Up);
        let mut p = OutageProxy { addr, upstream, mode, server: None, reserved: Some(socket) };
        p.listen();
        p
    }

    fn listen(&mut self) {
        let socket = self.reserved.take().unwrap_or_else(|| bind(self.addr));
        let listener = socket.listen(1024).unwrap();
        self.server = Some(tokio::spawn(serve(listener, self.upstream, self.mode.subscribe())));
    }

    /// Closes the port and every connection.
    pub async fn down(&mut self) {
        self.mode.send_replace(Mode::Down);
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = s.await;
            self.reserved = Some(bind(self.addr));
        }
    }

    /// Accepts connections and answers nothing.
    pub fn blackhole(&mut self) {
        self.mode.send_replace(Mode::Blackhole);
        if self.server.is_none() {
            self.listen();
        }
    }

    /// Listens again (same port) and forwards, held connections included.
    pub fn up(&mut self) {
        self.mode.send_replace(Mode::Up);
        if self.server.is_none() {
            self.listen();
        }
    }
}

impl Drop for OutageProxy {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

/// A receiver that refuses every trace batch for its content: gRPC `InvalidArgument`, HTTP 400.
pub async fn rejecting(protocol: &str) -> SocketAddr {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    };

    struct Reject;

    #[tonic::async_trait]
    impl TraceService for Reject {
        async fn export(
            &self,
            _: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            Err(tonic::Status::invalid_argument("span rejected"))
        }
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if protocol == "grpc" {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Reject))
                .serve_with_incoming(incoming),
        );
    } else {
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(|| async { (axum::http::StatusCode::BAD_REQUEST, "span rejected") }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    addr
}
