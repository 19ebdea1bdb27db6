//! A small Kubernetes API server that speaks list and watch over real HTTP, scripted per collection:
//! each watch request takes the next scripted response (events streamed line by line, then the stream
//! closes, sends a 410 `ERROR` event, or stays open), and lists return the collection's current items.
//! An open watch also streams what is published to its collection while it is open, and ends with a 410
//! when the collection is expired (for benchmarks: churn at a rate, relists on demand).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub enum WatchEnd {
    /// The server closes the stream (as on `timeoutSeconds`).
    Close,
    /// An `ERROR` event with a 410 Expired status, then close.
    Expired,
    /// Keep the stream open.
    Hang,
}

#[derive(Clone, Debug)]
pub struct WatchScript {
    pub events: Vec<Value>,
    pub end: WatchEnd,
}

#[derive(Default)]
pub struct Collection {
    pub items: Vec<Value>,
    /// Items already serialized, served after `items` (large collections: no value trees to keep or encode).
    pub raw_items: Arc<Vec<String>>,
    pub resource_version: u64,
    pub watches: VecDeque<WatchScript>,
}

/// What an open watch receives besides its script.
#[derive(Clone, Debug)]
enum Live {
    /// One serialized watch event.
    Event(Arc<str>),
    /// End the watch with a 410 `ERROR` event.
    Expire,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    pub collections: Arc<Mutex<HashMap<String, Collection>>>,
    /// Every request, as `path?query`.
    pub requests: Arc<Mutex<Vec<String>>>,
    live: Arc<Mutex<HashMap<String, tokio::sync::broadcast::Sender<Live>>>>,
}

pub fn event(kind: &str, object: Value) -> Value {
    json!({ "type": kind, "object": object })
}

pub fn bookmark(api_version: &str, kind: &str, rv: u64) -> Value {
    json!({ "type": "BOOKMARK", "object": { "apiVersion": api_version, "kind": kind, "metadata": { "resourceVersion": rv.to_string() } } })
}

impl FakeApi {
    pub fn set(&self, path: &str, items: Vec<Value>, resource_version: u64, watches: Vec<WatchScript>) {
        self.collections.lock().unwrap().insert(
            path.to_string(),
            Collection { items, resource_version, watches: watches.into(), ..Collection::default() },
        );
    }

    /// A collection of items already serialized (one JSON object each).
    pub fn set_raw(&self, path: &str, items: Vec<String>, resource_version: u64) {
        self.collections.lock().unwrap().insert(
            path.to_string(),
            Collection { raw_items: Arc::new(items), resource_version, ..Collection::default() },
        );
    }

    fn live(&self, path: &str) -> tokio::sync::broadcast::Sender<Live> {
        self.live
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_insert_with(|| tokio::sync::broadcast::channel(65_536).0)
            .clone()
    }

    /// Streams one event (as [`event`] builds it) to every watch of `path` that is open now.
    pub fn publish(&self, path: &str, event: &Value) {
        let _ = self.live(path).send(Live::Event(watch_line(event).into()));
    }

    /// Ends every open watch of `path` with a 410 Expired, so the watcher relists.
    pub fn expire_watches(&self, path: &str) {
        let _ = self.live(path).send(Live::Expire);
    }

    /// Watches of `path` requested so far.
    pub fn watch_requests(&self, path: &str) -> usize {
        self.requests_to(path).iter().filter(|r| r.contains("watch=true") || r.contains("watch=1")).count()
    }

    pub fn update(&self, path: &str, f: impl FnOnce(&mut Collection)) {
        let mut c = self.collections.lock().unwrap();
        f(c.get_mut(path).expect("collection"));
    }

    pub fn requests_to(&self, path: &str) -> Vec<String> {
        self.requests.lock().unwrap().iter().filter(|r| r.starts_with(&format!("{path}?"))).cloned().collect()
    }

    pub async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
}

async fn handle(State(api): State<FakeApi>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    api.requests.lock().unwrap().push(format!("{path}?{query}"));
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let mut collections = api.collections.lock().unwrap();
    let Some(c) = collections.get_mut(&path) else {
        return json_response(StatusCode::NOT_FOUND, status(404, "NotFound", "no such collection"));
    };
    if !watch {
        // Pages of `limit` items with a `continue` token, as the real API server serves them.
        let param = |name: &str| {
            query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).map(str::to_string)
        };
        let limit =
            param("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
        let start = param("continue").and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
        let total = c.items.len() + c.raw_items.len();
        let end = start.saturating_add(limit).min(total);
        let mut metadata = json!({ "resourceVersion": c.resource_version.to_string() });
        if end < total {
            metadata["continue"] = json!(end.to_string());
        }
        let (items, raw) = (&c.items, c.raw_items.clone());
        let mut body = format!(r#"{{"apiVersion":"v1","kind":"List","metadata":{metadata},"items":["#);
        for i in start.min(end)..end {
            if i > start {
                body.push(',');
            }
            match items.get(i) {
                Some(v) => body.push_str(&v.to_string()),
                None => body.push_str(&raw[i - items.len()]),
            }
        }
        body.push_str("]}");
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    let script = c.watches.pop_front().unwrap_or(WatchScript { events: Vec::new(), end: WatchEnd::Hang });
    drop(collections);
    // Subscribed before the response is sent: nothing published after the watch request is missed.
    let live = api.live(&path).subscribe();
    let mut lines: Vec<Result<String, std::io::Error>> =
        script.events.iter().map(|e| Ok(format!("{}\n", watch_line(e)))).collect();
    if let WatchEnd::Expired = script.end {
        lines.push(Ok(expired_line()));
    }
    let head = futures::stream::iter(lines);
    let body = match script.end {
        WatchEnd::Hang => {
            use tokio::sync::broadcast::error::RecvError;
            let tail = futures::stream::unfold(Some(live), |rx| async move {
                let mut rx = rx?;
                loop {
                    match rx.recv().await {
                        Ok(Live::Event(line)) => return Some((Ok(format!("{line}\n")), Some(rx))),
                        Ok(Live::Expire) => return Some((Ok(expired_line()), None)),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return None;
                        }
                    }
                }
            });
            Body::from_stream(futures::StreamExt::chain(head, tail))
        }
        _ => Body::from_stream(head),
    };
    Response::builder().header("content-type", "application/json").body(body).unwrap()
}

fn expired_line() -> String {
    let err = json!({ "type": "ERROR", "object": status(410, "Expired", "too old resource version") });
    format!("{}\n", watch_line(&err))
}

/// A watch event as the API server writes it: `type` before `object` (kube decodes the object straight
/// from the line only in that order; a map serialized here would put `object` first).
fn watch_line(e: &Value) -> String {
    match (e.get("type"), e.get("object")) {
        (Some(t), Some(o)) => format!(r#"{{"type":{t},"object":{o}}}"#),
        _ => e.to_string(),
    }
}

fn json_response(code: StatusCode, body: Value) -> Response {
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code })
}

/// Writes a kubeconfig for the fake server (plain HTTP, no credentials, default namespace `namespace`) into
/// `dir` and returns its path, for running the exporter binary against it.
pub fn kubeconfig(addr: SocketAddr, dir: &std::path::Path, namespace: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        ),
    )
    .unwrap();
    path
}

/// A kube client talking plain HTTP to the fake server.
pub fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}
