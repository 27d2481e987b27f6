//! Shared harness: start the backend in-process on 127.0.0.1:0 and talk to it over HTTP.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_backend::BackendConfig;
use palisade_token::{Claims, TokenKey, sign};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The current key, id "k-current".
pub const KEY_HEX: &str = "8f4e1c0a9b7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f";
pub const KEY_ID: &str = "k-current";
/// A previous key, still accepted in rotation tests.
pub const OLD_KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// A key the server never knows.
pub const FORGER_KEY_HEX: &str = "deadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeefdeadbeef";

pub fn key(hex: &str) -> TokenKey {
    TokenKey::from_hex(hex).unwrap()
}

pub fn config_with(keys: &[&str], replay_capacity: usize) -> BackendConfig {
    BackendConfig::new(keys.iter().map(|h| key(h)).collect(), 300, replay_capacity).unwrap()
}

pub fn default_config() -> BackendConfig {
    config_with(&[KEY_HEX], 10_000)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A request id unique within this test process.
pub fn fresh_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A token as the gateway would make it.
pub fn token(
    key_hex: &str,
    key_id: &str,
    timestamp: u64,
    request_id: &str,
    method: &str,
    path: &str,
) -> String {
    let claims = Claims {
        timestamp,
        request_id,
        method,
        path,
        key_id,
    };
    sign(&key(key_hex), &claims).unwrap()
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn start(config: BackendConfig) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(palisade_backend::serve(listener, config, async {
        let _ = rx.await;
    }));
    TestServer {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with no gateway headers at all.
    pub fn bare(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request carrying `X-Request-ID: request_id` and the given token.
    pub fn with_token(
        &self,
        method: reqwest::Method,
        path: &str,
        request_id: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.bare(method, path)
            .header("X-Request-ID", request_id)
            .header("X-Gateway-Token", token)
    }

    /// A correctly signed GET with a fresh request id.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.signed(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
    }

    /// A correctly signed request with a fresh request id, ready to send.
    pub fn signed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rid = fresh_request_id();
        let t = token(KEY_HEX, KEY_ID, now(), &rid, method.as_str(), path);
        self.with_token(method, path, &rid, &t)
    }

    /// Triggers graceful shutdown and checks the server stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            tx.send(()).unwrap();
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Status and JSON body.
pub async fn json(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Asserts a 401 with the given reason.
pub async fn assert_unauthorized(resp: reqwest::Response, reason: &str) {
    let (status, body) = json(resp).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body,
        serde_json::json!({ "error": "unauthorized", "reason": reason })
    );
}
