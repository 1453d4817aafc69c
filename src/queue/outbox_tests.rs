use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc;

use super::*;
use crate::base::error::ConfigError;
use crate::queue::store::{Limits, Meta};

/// What the test server received: content type and body.
type Received = (String, Vec<u8>);

/// An HTTP server on 127.0.0.1:0 answering 202 to `POST /in`, reporting each request.
async fn server() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/in",
            post(
                |State(tx): State<mpsc::UnboundedSender<Received>>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let ct = headers
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send((ct, body.to_vec()));
                    StatusCode::ACCEPTED
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, rx)
}

fn settings(dir: &std::path::Path, drain: Duration) -> QueueConfig {
    QueueConfig {
        directory: dir.display().to_string(),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(100),
        shutdown_drain: drain,
        ..QueueConfig::default()
    }
}

fn open(cfg: &QueueConfig, registry: &Registry, url: &str) -> Outbox {
    Outbox::open(cfg, "t", registry, || {
        HttpDeliver::new(
            url,
            reqwest::header::HeaderMap::new(),
            Duration::from_secs(5),
            None,
        )
        .map_err(|e| OpenError::client("the test server", e))
    })
    .expect("open")
}

fn push(outbox: &Outbox, body: &[u8]) {
    let meta = Meta {
        endpoint: "/in".into(),
        content_type: "application/json".into(),
        ..Meta::default()
    };
    outbox.queue().push(meta, body).expect("push");
}

#[tokio::test]
async fn a_queued_payload_is_delivered_to_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, mut rx) = server().await;
    let registry = Registry::default();
    let outbox = open(
        &settings(dir.path(), Duration::from_secs(5)),
        &registry,
        &format!("http://{addr}"),
    );
    assert!(registry.get("t").is_some(), "registered for the admin API");
    push(&outbox, br#"{"points":[]}"#);
    let (ct, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("in time")
        .expect("a request");
    assert_eq!(ct, "application/json");
    assert_eq!(body, br#"{"points":[]}"#);
    outbox.shutdown(|| false).await;
    assert_eq!(outbox.queue().depth().pending, 0);
    assert_eq!(outbox.queue().stats.delivered.load(Relaxed), 1);
}

#[tokio::test]
async fn shutdown_delivers_what_is_queued_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, mut rx) = server().await;
    let registry = Registry::default();
    let outbox = open(
        &settings(dir.path(), Duration::from_secs(10)),
        &registry,
        &format!("http://{addr}"),
    );
    for i in 0..5u8 {
        push(&outbox, &[b'0' + i]);
    }
    outbox.shutdown(|| false).await;
    assert_eq!(outbox.queue().depth().pending, 0);
    let got: Vec<Vec<u8>> = std::iter::from_fn(|| rx.try_recv().ok().map(|(_, b)| b)).collect();
    assert_eq!(got, (0..5u8).map(|i| vec![b'0' + i]).collect::<Vec<_>>());
}

#[tokio::test]
async fn shutdown_drain_is_bounded_and_what_is_left_stays_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nobody listens on: every attempt is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let cfg = settings(dir.path(), Duration::from_millis(300));
    let registry = Registry::default();
    let outbox = open(&cfg, &registry, &url);
    push(&outbox, b"kept");
    let t0 = Instant::now();
    let left = outbox.shutdown(|| false).await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(left.pending, 1);
    // A later run finds it.
    let limits = Limits {
        max_bytes: cfg.max_bytes,
        dlq_max_bytes: cfg.dlq_max_bytes,
    };
    let again = Queue::open(dir.path(), "t", limits).expect("reopen");
    assert_eq!(again.depth().pending, 1);
}

#[tokio::test]
async fn shutdown_gives_up_at_once_when_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let registry = Registry::default();
    let outbox = open(
        &settings(dir.path(), Duration::from_secs(30)),
        &registry,
        &url,
    );
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    outbox.spawn(move |cancel| async move {
        let _ = started_tx.send(());
        cancel.cancelled().await;
    });
    started_rx.await.expect("attached task runs");
    push(&outbox, b"kept");
    let t0 = Instant::now();
    // Returns only once the attached task saw the cancel.
    outbox.shutdown(|| true).await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(outbox.queue().depth().pending, 1);
}

#[tokio::test]
async fn open_errors_name_the_setting_and_pass_the_target_error_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let registry = Registry::default();
    let cfg = settings(&file, Duration::from_secs(1));
    let mut built = false;
    let bad_header =
        || OpenError::from(ConfigError::invalid("k", ": \"a b\" is not a header name"));
    let e = Outbox::<HttpDeliver>::open(&cfg, "t", &registry, || {
        built = true;
        Err(bad_header())
    })
    .err()
    .expect("a file is not a directory");
    assert!(matches!(e, OpenError::Directory { .. }), "{e}");
    assert!(e.to_string().contains("queue.directory"), "{e}");
    assert!(!built, "the delivery is built only once the queue is open");
    let cfg = settings(dir.path(), Duration::from_secs(1));
    let e = Outbox::<HttpDeliver>::open(&cfg, "t", &registry, || Err(bad_header()))
        .err()
        .expect("the target failed");
    assert!(matches!(e, OpenError::Headers(_)), "{e}");
    assert_eq!(e.to_string(), "k: \"a b\" is not a header name");
    assert!(registry.get("t").is_none());
}
