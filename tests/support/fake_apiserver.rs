//! A small Kubernetes API server that speaks list and watch over real HTTP, scripted per collection:
//! each watch request takes the next scripted response (events streamed line by line, then the stream
//! closes, sends a 410 `ERROR` event, or stays open), and lists return the collection's current items.

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
    pub resource_version: u64,
    pub watches: VecDeque<WatchScript>,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    pub collections: Arc<Mutex<HashMap<String, Collection>>>,
    /// Every request, as `path?query`.
    pub requests: Arc<Mutex<Vec<String>>>,
}

pub fn event(kind: &str, object: Value) -> Value {
    json!({ "type": kind, "object": object })
}

pub fn bookmark(api_version: &str, kind: &str, rv: u64) -> Value {
    json!({ "type": "BOOKMARK", "object": { "apiVersion": api_version, "kind": kind, "metadata": { "resourceVersion": rv.to_string() } } })
}

impl FakeApi {
    pub fn set(&self, path: &str, items: Vec<Value>, resource_version: u64, watches: Vec<WatchScript>) {
        self.collections
            .lock()
            .unwrap()
            .insert(path.to_string(), Collection { items, resource_version, watches: watches.into() });
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
        let end = start.saturating_add(limit).min(c.items.len());
        let mut metadata = json!({ "resourceVersion": c.resource_version.to_string() });
        if end < c.items.len() {
            metadata["continue"] = json!(end.to_string());
        }
        let body = json!({ "apiVersion": "v1", "kind": "List", "metadata": metadata, "items": &c.items[start.min(end)..end] });
        return json_response(StatusCode::OK, body);
    }
    let script = c.watches.pop_front().unwrap_or(WatchScript { events: Vec::new(), end: WatchEnd::Hang });
    drop(collections);
    let mut lines: Vec<Result<String, std::io::Error>> =
        script.events.iter().map(|e| Ok(format!("{e}\n"))).collect();
    if let WatchEnd::Expired = script.end {
        let err = json!({ "type": "ERROR", "object": status(410, "Expired", "too old resource version") });
        lines.push(Ok(format!("{err}\n")));
    }
    let head = futures::stream::iter(lines);
    let body = match script.end {
        WatchEnd::Hang => Body::from_stream(futures::StreamExt::chain(
            head,
            futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, std::io::Error>(String::new())
            }),
        )),
        _ => Body::from_stream(head),
    };
    Response::builder().header("content-type", "application/json").body(body).unwrap()
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
