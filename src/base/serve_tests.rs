use super::*;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::base::metrics::{Collect, Families};

/// `/slow` answers after 5 s; `/body` reads the whole body and answers its length.
#[derive(Clone)]
struct App;

impl tower_service::Service<Request<RequestBody>> for App {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        Box::pin(async move {
            let text = match req.uri().path() {
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "slow".to_string()
                }
                "/body" => match req.into_body().collect().await {
                    Ok(b) => b.to_bytes().len().to_string(),
                    Err(_) => "cut".to_string(),
                },
                _ => "ok".to_string(),
            };
            Ok(Response::new(Full::new(Bytes::from(text))))
        })
    }
}

async fn server() -> (SocketAddr, Arc<Stats>, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Stats::new("test");
    let cancel = CancellationToken::new();
    let limits = Limits {
        max_connections: 8,
        max_connections_per_peer: 8,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_millis(300)),
        max_header_bytes: 8192,
        max_body_bytes: Some(100),
    };
    tokio::spawn(http(
        listener,
        limits,
        None,
        Arc::clone(&stats),
        App,
        |a: SocketAddr| a,
        cancel.clone(),
    ));
    (addr, stats, cancel)
}

/// Sends `raw` and reads until the server closes; gives back the response text.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&out).to_string()
}

fn count(stats: &Stats, name: &str, reason: &str) -> Option<f64> {
    let mut f = Families::new();
    stats.collect(&mut f);
    f.into_vec()
        .into_iter()
        .find(|x| x.name == name)?
        .samples
        .into_iter()
        .find(|s| s.label("reason") == Some(reason))?
        .number()
}

#[tokio::test]
async fn a_slow_response_is_cut_at_the_request_timeout() {
    let (addr, stats, cancel) = server().await;
    let r = exchange(addr, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert_eq!(
        count(&stats, "tallyd_http_requests_rejected", "request_timeout"),
        Some(1.0)
    );
    let r = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    cancel.cancel();
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_declared_or_streamed() {
    let (addr, stats, cancel) = server().await;
    let declared = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n";
    let r = exchange(addr, declared).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert_eq!(
        count(&stats, "tallyd_http_requests_rejected", "body_too_large"),
        Some(1.0)
    );
    let chunk = format!("{:x}\r\n{}\r\n0\r\n\r\n", 150, "a".repeat(150));
    let streamed = format!(
        "POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
    );
    let r = exchange(addr, streamed.as_bytes()).await;
    assert!(r.ends_with("cut"), "the service sees the body cut: {r}");
    let fits = "POST /body HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n"
        .to_string()
        + &"a".repeat(100);
    let r = exchange(addr, fits.as_bytes()).await;
    assert!(r.ends_with("100"), "{r}");
    cancel.cancel();
}

#[tokio::test]
async fn a_head_over_max_header_bytes_gets_431() {
    let (addr, _stats, cancel) = server().await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let r = exchange(addr, big.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    cancel.cancel();
}
