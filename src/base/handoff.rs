//! One bounded hand-off: a channel of a fixed number of slots, one named worker thread that
//! takes the items in order, and a count of the items dropped because the channel was full.
//!
//! The sending side ([`Handoff::offer`]) never blocks: a sink's `consume` runs on the flusher,
//! which must not wait for a slow disk or a slow evaluation. When the worker is that far behind
//! the item is dropped, counted, and the caller told so (it logs as it sees fit). At shutdown
//! [`Handoff::close`] ends intake; the worker finishes what is queued and ends, and
//! [`Handoff::join`] (or [`Handoff::join_blocking`]) waits for it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::lock;

/// Where a hand-off counts the items it drops: a plain counter, or the counter of that name in
/// a component's own counters (so its metrics read it where they read the rest).
pub trait DropCounter: Send + Sync + 'static {
    /// The counter the drops are added to.
    fn dropped(&self) -> &AtomicU64;
}

impl DropCounter for AtomicU64 {
    fn dropped(&self) -> &AtomicU64 {
        self
    }
}

/// What [`Handoff::offer`] did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued for the worker.
    Queued,
    /// The channel was full: the item was dropped; `total` items have been dropped so far.
    Dropped {
        /// Drops since the hand-off started, this one included.
        total: u64,
    },
    /// The hand-off is closed (shutting down) or its worker is gone: the item was let go
    /// without counting.
    Closed,
}

impl Offer {
    /// For an item dropped as the first or a hundredth drop, the drops so far: the drops worth
    /// a log line when a stalled worker must not flood the log.
    pub fn dropped_to_log(self) -> Option<u64> {
        match self {
            Offer::Dropped { total } if total == 1 || total % 100 == 0 => Some(total),
            _ => None,
        }
    }
}

/// What the worker thread tells the joiner when it is done.
type Done = tokio::sync::oneshot::Receiver<()>;

/// A bounded channel to a named worker thread, with a drop counter. See the module docs.
pub struct Handoff<T, C: DropCounter = AtomicU64> {
    tx: Mutex<Option<SyncSender<T>>>,
    worker: Mutex<Option<(JoinHandle<()>, Done)>>,
    counter: Arc<C>,
}

impl<T: Send + 'static> Handoff<T> {
    /// Starts thread `name` running `work` on every item in order, behind a channel of
    /// `capacity` slots (at least 1), counting drops in a counter of its own.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(
        name: &str,
        capacity: usize,
        work: impl FnMut(T) + Send + 'static,
    ) -> std::io::Result<Handoff<T>> {
        Handoff::start_counting(name, capacity, Arc::new(AtomicU64::new(0)), work)
    }
}

impl<T: Send + 'static, C: DropCounter> Handoff<T, C> {
    /// As [`Handoff::start`], counting drops in `counter`.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start_counting(
        name: &str,
        capacity: usize,
        counter: Arc<C>,
        mut work: impl FnMut(T) + Send + 'static,
    ) -> std::io::Result<Handoff<T, C>> {
        let (tx, rx) = sync_channel::<T>(capacity.max(1));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(item) = rx.recv() {
                    work(item);
                }
                // Whatever the worker holds (a large state) is freed before the joiner hears.
                drop(work);
                let _ = done_tx.send(());
            })?;
        Ok(Handoff {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(Some((thread, done_rx))),
            counter,
        })
    }

    /// Hands `item` to the worker without waiting: queued, dropped and counted when the channel
    /// is full, or let go when the hand-off is closed.
    pub fn offer(&self, item: T) -> Offer {
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else {
            return Offer::Closed;
        };
        match tx.try_send(item) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(_)) => Offer::Dropped {
                total: self.counter.dropped().fetch_add(1, Relaxed) + 1,
            },
            Err(TrySendError::Disconnected(_)) => Offer::Closed,
        }
    }

    /// Items dropped so far because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.counter.dropped().load(Relaxed)
    }

    /// Ends intake: later offers are let go; the worker finishes what is queued, then ends.
    pub fn close(&self) {
        drop(lock(&self.tx).take());
    }

    /// Closes, then waits (without holding up the runtime) until the worker has handled what
    /// was queued and ended. Cancel-safe: dropped before the end, the worker runs on detached.
    pub async fn join(&self) {
        self.close();
        let worker = lock(&self.worker).take();
        let Some((thread, done)) = worker else { return };
        // An error means the worker panicked: it is over all the same.
        let _ = done.await;
        // Past the signal the thread only returns, so this join is immediate.
        let _ = thread.join();
    }

    /// Closes, then blocks until the worker has handled what was queued and ended.
    pub fn join_blocking(&self) {
        self.close();
        let worker = lock(&self.worker).take();
        if let Some((thread, _)) = worker {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn items_arrive_in_order_and_close_drains_before_the_join() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let h = {
            let seen = Arc::clone(&seen);
            Handoff::start("handoff-test", 64, move |i: u32| {
                std::thread::sleep(Duration::from_millis(1));
                lock(&seen).push(i);
            })
            .expect("start")
        };
        for i in 0..50 {
            assert_eq!(h.offer(i), Offer::Queued);
        }
        h.join_blocking();
        // Everything queued before the close was handled before the join returned.
        assert_eq!(*lock(&seen), (0..50).collect::<Vec<_>>());
        assert_eq!(h.dropped(), 0);
        assert_eq!(h.offer(99), Offer::Closed);
        assert_eq!(h.dropped(), 0, "an offer after the close is not a drop");
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_blocking() {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (took_tx, took_rx) = mpsc::channel::<u32>();
        let h = Handoff::start("handoff-test", 2, move |i: u32| {
            let _ = took_tx.send(i);
            let _ = gate_rx.recv();
        })
        .expect("start");
        assert_eq!(h.offer(1), Offer::Queued);
        // The worker holds item 1 and waits at the gate: two slots left, then drops.
        assert_eq!(
            took_rx.recv_timeout(Duration::from_secs(5)).expect("taken"),
            1
        );
        assert_eq!(h.offer(2), Offer::Queued);
        assert_eq!(h.offer(3), Offer::Queued);
        assert_eq!(h.offer(4), Offer::Dropped { total: 1 });
        assert_eq!(h.offer(5), Offer::Dropped { total: 2 });
        assert_eq!(h.dropped(), 2);
        assert_eq!(Offer::Dropped { total: 1 }.dropped_to_log(), Some(1));
        assert_eq!(Offer::Dropped { total: 2 }.dropped_to_log(), None);
        assert_eq!(Offer::Dropped { total: 200 }.dropped_to_log(), Some(200));
        assert_eq!(Offer::Queued.dropped_to_log(), None);
        for _ in 0..3 {
            gate_tx.send(()).expect("gate");
        }
        h.join_blocking();
        let rest: Vec<u32> = took_rx.try_iter().collect();
        assert_eq!(rest, vec![2, 3]);
    }

    #[test]
    fn drops_go_to_the_given_counter() {
        struct Counters {
            other: AtomicU64,
            windows_dropped: AtomicU64,
        }
        impl DropCounter for Counters {
            fn dropped(&self) -> &AtomicU64 {
                &self.windows_dropped
            }
        }
        let c = Arc::new(Counters {
            other: AtomicU64::new(0),
            windows_dropped: AtomicU64::new(0),
        });
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let h = Handoff::start_counting("handoff-test", 1, Arc::clone(&c), move |_: ()| {
            let _ = gate_rx.recv();
        })
        .expect("start");
        // However far the worker got, at most two offers fit (one held, one queued).
        let offers: Vec<Offer> = (0..4).map(|_| h.offer(())).collect();
        let dropped = offers
            .iter()
            .filter(|o| matches!(o, Offer::Dropped { .. }))
            .count() as u64;
        assert!(dropped >= 2, "{offers:?}");
        assert_eq!(c.windows_dropped.load(Relaxed), dropped);
        assert_eq!(c.other.load(Relaxed), 0);
        drop(gate_tx);
        h.join_blocking();
    }

    #[tokio::test]
    async fn the_async_join_waits_for_the_queue() {
        let seen = Arc::new(AtomicU64::new(0));
        let h = {
            let seen = Arc::clone(&seen);
            Handoff::start("handoff-test", 8, move |n: u64| {
                std::thread::sleep(Duration::from_millis(5));
                seen.fetch_add(n, Relaxed);
            })
            .expect("start")
        };
        for n in 1..=8 {
            assert_eq!(h.offer(n), Offer::Queued);
        }
        h.join().await;
        assert_eq!(seen.load(Relaxed), 36);
        // A second join has nothing left to wait for.
        h.join().await;
    }

    #[test]
    fn the_worker_thread_has_its_name() {
        let (tx, rx) = mpsc::channel();
        let h = Handoff::start("handoff-named", 1, move |()| {
            let _ = tx.send(std::thread::current().name().map(String::from));
        })
        .expect("start");
        assert_eq!(h.offer(()), Offer::Queued);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).expect("ran"),
            Some("handoff-named".into())
        );
        h.join_blocking();
    }
}
