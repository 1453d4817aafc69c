//! One TCP accept loop for every TCP listener (statsd over TCP, the GPS server).
//!
//! [`run`] accepts until cancelled; each accepted connection needs a permit (at most
//! `max_connections` are served at once) and runs as its own task. Accept errors (out of file
//! descriptors and the like clear up by themselves) are reported and followed by a backoff
//! instead of a busy loop. What differs between listeners is a [`Handler`]: its admission
//! policy (a per-IP limit or a blacklist, or nothing), its counters and log lines, and the
//! per-connection work. On cancellation the loop stops accepting, waits for every connection
//! task to end (they see the same token) and drops the handler.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first wait after a failed accept; it doubles per failure in a row up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// The longest wait after a failed accept.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a listener does with the connections [`run`] accepts. The hooks run on the accept task
/// and should not block; [`Handler::serve`]'s future runs on a task of its own.
pub trait Handler: Send + Sync + 'static {
    /// What admission hands to the connection and to [`Handler::refused`], e.g. the peer's
    /// per-IP slot to release afterwards; `()` for a listener without per-peer policy.
    type Admit: Send + 'static;

    /// Decides, before a permit is taken, whether `peer` may connect. `None` refuses it: the
    /// stream is closed at once and the handler has counted and logged the refusal itself.
    fn admit(&self, peer: SocketAddr) -> Option<Self::Admit>;

    /// All permits are taken: the admitted connection from `peer` is closed unserved. Count it
    /// and undo what [`Handler::admit`] did.
    fn refused(&self, peer: SocketAddr, admit: Self::Admit);

    /// The connection from `peer` holds a permit and is about to be served (count it here:
    /// this runs before the accept loop goes on).
    fn accepted(&self, peer: SocketAddr) {
        let _ = peer;
    }

    /// `accept` failed; the loop waits (see [`MIN_BACKOFF`]) and tries again.
    fn accept_failed(&self, error: &io::Error);

    /// Serves one connection until it ends or `cancel` fires; the permit is held until the
    /// returned future completes.
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        admit: Self::Admit,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send;
}

/// Accepts on `listener` until `cancel`, serving at most `max_connections` at once with
/// `handler`; then waits for every connection to end. The listener and the handler are
/// dropped when this returns, so a handler's resources end with the last connection.
pub async fn run<H: Handler>(
    handler: Arc<H>,
    listener: TcpListener,
    max_connections: usize,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = MIN_BACKOFF;
                a
            }
            Err(e) => {
                handler.accept_failed(&e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Some(admit) = handler.admit(peer) else {
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            handler.refused(peer, admit);
            drop(stream);
            continue;
        };
        handler.accepted(peer);
        let connection = Arc::clone(&handler).serve(stream, peer, admit, cancel.clone());
        tracker.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Mutex;

    use tokio::io::AsyncReadExt;

    /// Counts everything and holds every connection until cancelled.
    #[derive(Default)]
    struct Probe {
        refused_ip: Mutex<Option<IpAddr>>,
        admitted: AtomicU64,
        refused: AtomicU64,
        rejected: AtomicU64,
        accepted: AtomicU64,
        served: AtomicU64,
        ended: AtomicU64,
    }

    impl Handler for Probe {
        type Admit = u64;

        fn admit(&self, peer: SocketAddr) -> Option<u64> {
            if *crate::base::lock(&self.refused_ip) == Some(peer.ip()) {
                self.rejected.fetch_add(1, SeqCst);
                return None;
            }
            Some(self.admitted.fetch_add(1, SeqCst))
        }

        fn refused(&self, _peer: SocketAddr, _admit: u64) {
            self.refused.fetch_add(1, SeqCst);
        }

        fn accepted(&self, _peer: SocketAddr) {
            self.accepted.fetch_add(1, SeqCst);
        }

        fn accept_failed(&self, _error: &io::Error) {}

        async fn serve(
            self: Arc<Self>,
            _stream: TcpStream,
            _peer: SocketAddr,
            _admit: u64,
            cancel: CancellationToken,
        ) {
            self.served.fetch_add(1, SeqCst);
            cancel.cancelled().await;
            self.ended.fetch_add(1, SeqCst);
        }
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// True when the peer closed the connection without sending anything.
    async fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn permits_limit_refuse_and_count_the_extra_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let probe = Arc::new(Probe::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(Arc::clone(&probe), listener, 2, cancel.clone()));

        let _a = TcpStream::connect(addr).await.expect("connect");
        let _b = TcpStream::connect(addr).await.expect("connect");
        until("two served", || probe.served.load(SeqCst) == 2).await;
        let mut c = TcpStream::connect(addr).await.expect("connect");
        until("one refused", || probe.refused.load(SeqCst) == 1).await;
        assert!(closed(&mut c).await, "the refused connection is closed");
        assert_eq!(probe.accepted.load(SeqCst), 2);
        assert_eq!(
            probe.admitted.load(SeqCst),
            3,
            "admission runs before the permit"
        );

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run ends after cancel")
            .expect("no panic");
        assert_eq!(
            probe.ended.load(SeqCst),
            2,
            "connections end before run returns"
        );
        assert_eq!(Arc::strong_count(&probe), 1, "the loop dropped the handler");
    }

    #[tokio::test]
    async fn admission_refuses_before_a_permit_is_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let probe = Arc::new(Probe::default());
        *crate::base::lock(&probe.refused_ip) = Some(addr.ip());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(Arc::clone(&probe), listener, 1, cancel.clone()));

        let mut a = TcpStream::connect(addr).await.expect("connect");
        let mut b = TcpStream::connect(addr).await.expect("connect");
        assert!(closed(&mut a).await && closed(&mut b).await);
        assert_eq!(probe.rejected.load(SeqCst), 2);
        assert_eq!(probe.refused.load(SeqCst), 0, "no permit was missing");
        assert_eq!(probe.served.load(SeqCst), 0);
        cancel.cancel();
        task.await.expect("no panic");
    }

    #[tokio::test]
    async fn cancellation_stops_accepting() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let probe = Arc::new(Probe::default());
        let cancel = CancellationToken::new();
        cancel.cancel();
        tokio::time::timeout(
            Duration::from_secs(5),
            run(Arc::clone(&probe), listener, 4, cancel),
        )
        .await
        .expect("a cancelled loop returns");
        assert_eq!(probe.served.load(SeqCst), 0);
        // The listener is gone with the loop.
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
