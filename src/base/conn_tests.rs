use super::*;
use futures_core::Stream as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Holds every connection until cancelled or the peer closes.
struct Hold;

impl Protocol for Hold {
    async fn serve(&self, mut conn: Conn, cancel: CancellationToken) {
        let mut b = [0u8; 64];
        loop {
            tokio::select! {
                r = conn.read(&mut b) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => { let _ = conn.write_all(b"ok").await; }
                },
                () = cancel.cancelled() => return,
            }
        }
    }
}

fn limits(max: usize, per_peer: usize, idle_ms: u64) -> Limits {
    Limits {
        max_connections: max,
        max_connections_per_peer: per_peer,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(idle_ms),
        request_timeout: None,
        max_header_bytes: 8192,
        max_body_bytes: None,
    }
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 8];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn connect_from(ip: &str, addr: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().expect("socket");
    s.bind(format!("{ip}:0").parse().expect("addr"))
        .expect("bind");
    s.connect(addr).await.expect("connect")
}

fn value(stats: &Stats, name: &str, reason: &str) -> f64 {
    let mut f = Families::new();
    stats.collect(&mut f);
    f.into_vec()
        .into_iter()
        .find(|x| x.name == name)
        .and_then(|x| {
            x.samples
                .into_iter()
                .find(|s| reason.is_empty() || s.label("reason") == Some(reason))
        })
        .and_then(|s| s.number())
        .unwrap_or(-1.0)
}

#[tokio::test]
async fn per_peer_cap_refuses_one_peer_but_not_another() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Stats::new("test");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        listener,
        limits(10, 2, 60_000),
        None,
        Arc::clone(&stats),
        Hold,
        cancel.clone(),
    ));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.2", addr).await;
        s.write_all(b"x").await.expect("write");
        let mut b = [0u8; 2];
        s.read_exact(&mut b).await.expect("served");
        held.push(s);
    }
    let mut third = connect_from("127.0.0.2", addr).await;
    assert!(
        closed(&mut third).await,
        "a third connection from one peer is closed"
    );
    assert_eq!(
        value(
            &stats,
            "tallyd_http_connections_rejected",
            "max_connections_per_peer"
        ),
        1.0
    );
    let mut other = connect_from("127.0.0.1", addr).await;
    other.write_all(b"x").await.expect("write");
    let mut b = [0u8; 2];
    other
        .read_exact(&mut b)
        .await
        .expect("another peer is served");
    drop(held);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("ends")
        .expect("no panic");
}

#[tokio::test]
async fn idle_connections_are_closed_and_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Stats::new("test");
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        listener,
        limits(10, 10, 200),
        None,
        Arc::clone(&stats),
        Hold,
        cancel.clone(),
    ));
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert!(closed(&mut s).await, "closed after idle_timeout");
    assert_eq!(
        value(&stats, "tallyd_http_connections_timed_out", "idle"),
        1.0
    );
    cancel.cancel();
    task.await.expect("no panic");
}

#[tokio::test]
async fn handed_off_connections_hold_their_slot_until_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Stats::new("test");
    let cancel = CancellationToken::new();
    let (handoff, mut incoming) = handoff(|c| c, Duration::from_secs(5), Arc::clone(&stats));
    let task = tokio::spawn(run(
        listener,
        limits(1, 1, 60_000),
        None,
        Arc::clone(&stats),
        handoff,
        cancel.clone(),
    ));
    let mut a = TcpStream::connect(addr).await.expect("connect");
    a.write_all(b"x").await.expect("first byte");
    let conn = std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_next(cx))
        .await
        .expect("a connection")
        .expect("ok");
    let mut b = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed(&mut b).await,
        "the one slot is held by the handed-off connection"
    );
    drop(conn);
    // Wait for the slot to be given back, then a new connection is handed off.
    for _ in 0..500 {
        if value(&stats, "tallyd_http_connections_active", "") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"x").await.expect("first byte");
    let next = std::future::poll_fn(|cx| Pin::new(&mut incoming).poll_next(cx)).await;
    assert!(next.is_some());
    cancel.cancel();
    drop(next);
    drop(incoming);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("ends")
        .expect("no panic");
}

#[tokio::test]
async fn a_handed_off_connection_that_sends_nothing_is_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Stats::new("test");
    let cancel = CancellationToken::new();
    let (handoff, incoming) = handoff(|c| c, Duration::from_millis(200), Arc::clone(&stats));
    let task = tokio::spawn(run(
        listener,
        limits(4, 4, 60_000),
        None,
        Arc::clone(&stats),
        handoff,
        cancel.clone(),
    ));
    let mut s = TcpStream::connect(addr).await.expect("connect");
    assert!(closed(&mut s).await, "closed before the server saw it");
    assert_eq!(
        value(&stats, "tallyd_http_connections_timed_out", "idle"),
        1.0
    );
    cancel.cancel();
    drop(incoming);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("ends")
        .expect("no panic");
}
