//! A stream with an idle timeout, for the HTTP servers' connections (`base::conn`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::conn::{Event, Stats};

/// A stream that fails with `TimedOut` once no byte has moved either way for its timeout
/// (checked when the stream is polled and would wait), counting it once.
pub struct Idle<T> {
    pub(super) inner: T,
    timeout: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
    stats: Arc<Stats>,
    fired: bool,
    pub(super) partial: Arc<AtomicBool>,
}

impl<T> Idle<T> {
    /// `inner`, closed after `timeout` without traffic.
    pub fn new(inner: T, timeout: Duration, stats: Arc<Stats>) -> Idle<T> {
        let last = Instant::now();
        Idle {
            inner,
            timeout,
            last,
            sleep: Box::pin(tokio::time::sleep_until(last + timeout)),
            stats,
            fired: false,
            partial: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Called when the inner stream would wait: `Ready(Err)` once idle for the timeout.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last + self.timeout;
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= self.last + self.timeout {
                if !self.fired {
                    self.fired = true;
                    self.stats.count(Event::IdleTimeout);
                }
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle_timeout"));
            }
        }
    }

    fn moved<R>(&mut self, p: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match p {
            Poll::Ready(r) => {
                self.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Idle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let p = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.partial.store(true, Relaxed);
        }
        this.moved(p, cx)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Idle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let p = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(p, Poll::Ready(Ok(n)) if n > 0) {
            this.partial.store(false, Relaxed);
        }
        this.moved(p, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let p = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(p, Poll::Ready(Ok(n)) if n > 0) {
            this.partial.store(false, Relaxed);
        }
        this.moved(p, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let p = Pin::new(&mut this.inner).poll_flush(cx);
        this.moved(p, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
