//! The background sender of a queue: oldest payload first, one at a time, exponential backoff
//! with jitter between failed attempts, and the registry the admin API and metrics read.
//!
//! One request at a time per queue keeps the order of windows and matches the Datadog Agent's
//! single forwarder worker. A forced batch (admin API) takes the same send lock, so a payload is
//! never in flight twice.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::deliver::{Attempt, Deliver};
use super::store::{unix_ms, Queue, QueueError};
use crate::base::lock;
use crate::base::metrics::{Collect, Families};

/// Exponential backoff with jitter: attempt n waits a random time in
/// `[d/2, d]`, `d = min(initial * 2^(n-1), max)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failures in a row (at least 1), with `jitter` in [0, 1).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let d = self.initial.saturating_mul(1u32 << exp).min(self.max);
        d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A cheap per-sender random source for jitter (not for anything secret).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        Jitter(unix_ms() ^ 0x9E37_79B9_7F4A_7C15 ^ (std::process::id() as u64) << 32)
    }
    fn next(&mut self) -> f64 {
        // xorshift64*
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The result of sending the head of a queue once.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Nothing queued.
    Empty,
    /// Delivered (or gone from the disk meanwhile).
    Delivered,
    /// Moved to the dead-letter queue.
    DeadLettered,
    /// Failed; try again after the far side's `Retry-After` or the backoff.
    Retry(Option<Duration>),
}

/// A queue together with whatever delivers its payloads.
pub struct Handle {
    /// The queue.
    pub queue: Arc<Queue>,
    /// What sends its payloads.
    pub deliver: Arc<dyn Deliver>,
    /// The wait between failed attempts.
    pub backoff: Backoff,
}

impl Handle {
    /// Sends the oldest payload once and settles it. The caller holds `queue.send_lock`.
    pub async fn send_head(&self) -> Step {
        let q = &self.queue;
        let Some(head) = q.head() else {
            return Step::Empty;
        };
        let (mut meta, body) = match q.load(head.seq) {
            Ok(x) => x,
            Err(QueueError::Corrupt { path, why }) => {
                tracing::error!(queue = q.name(), file = %path.display(), why, "damaged queue file set aside");
                return Step::DeadLettered;
            }
            Err(QueueError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                // Dropped at the byte limit meanwhile.
                q.ack(head.seq);
                return Step::Delivered;
            }
            Err(e) => {
                // Kept: a read that fails now (too many open files, an I/O error) may work
                // after the backoff; dropping the file here would lose a payload silently.
                let n = q.stats.read_errors.fetch_add(1, Relaxed) + 1;
                q.stats.consecutive_failures.fetch_add(1, Relaxed);
                if n == 1 || n.is_multiple_of(100) {
                    tracing::warn!(queue = q.name(), error = %e, read_errors = n, "cannot read a queued payload; it stays queued");
                }
                return Step::Retry(None);
            }
        };
        meta.attempts += 1;
        let len = body.len() as u64;
        let kept = body.clone();
        q.stats.in_flight.store(1, Relaxed);
        let t0 = Instant::now();
        let attempt = self.deliver.deliver(&meta, body).await;
        q.stats.observe_latency(t0.elapsed().as_secs_f64());
        q.stats.in_flight.store(0, Relaxed);
        match attempt {
            Attempt::Delivered { .. } => {
                q.ack(head.seq);
                q.stats.delivered.fetch_add(1, Relaxed);
                q.stats.bytes_sent.fetch_add(len, Relaxed);
                q.stats.last_success_unix.store(unix_ms() / 1000, Relaxed);
                q.stats.consecutive_failures.store(0, Relaxed);
                Step::Delivered
            }
            Attempt::Retry {
                class,
                status,
                after,
                why,
            } => {
                q.stats.failure(class);
                q.stats.retries.fetch_add(1, Relaxed);
                let n = q.stats.consecutive_failures.load(Relaxed);
                // One line per outage, then one per 100 failures: no log flood.
                if n == 1 || n.is_multiple_of(100) {
                    tracing::warn!(queue = q.name(), endpoint = %meta.endpoint, status, class = class.as_str(), failures = n, error = %why, "delivery failed; will retry");
                }
                Step::Retry(after)
            }
            Attempt::Reject { status, body } => {
                q.stats.failure(super::deliver::FailureClass::Client4xx);
                // The first rejection and every 100th are logged: a bad key must not flood the log.
                let n = q.stats.dead_lettered.load(Relaxed);
                if n == 0 || (n + 1).is_multiple_of(100) {
                    tracing::error!(queue = q.name(), endpoint = %meta.endpoint, status, response = %body, dead_lettered = n + 1, "payload rejected; moved to the dead-letter queue");
                }
                if let Err(e) = q.reject(head.seq, meta, &kept, status, &body) {
                    tracing::error!(queue = q.name(), error = %e, "cannot write the dead letter; the payload stays queued");
                    return Step::Retry(None);
                }
                Step::DeadLettered
            }
        }
    }

    /// Sends up to `n` payloads now, skipping any backoff; stops at the first retryable failure.
    pub async fn force(&self, n: usize) -> ForceResult {
        let mut r = ForceResult::default();
        for _ in 0..n {
            let _guard = self.queue.send_lock.lock().await;
            match self.send_head().await {
                Step::Empty => break,
                Step::Delivered => r.delivered += 1,
                Step::DeadLettered => r.dead_lettered += 1,
                Step::Retry(_) => {
                    r.failed += 1;
                    break;
                }
            }
        }
        // Let the background sender re-check at once (it may be sleeping a long backoff).
        self.queue.skip_backoff.notify_one();
        r
    }

    /// The background loop: runs until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut jitter = Jitter::new();
        let q = &self.queue;
        let mut failures: u32 = 0;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let step = {
                let _guard = q.send_lock.lock().await;
                tokio::select! {
                    s = self.send_head() => s,
                    () = cancel.cancelled() => return,
                }
            };
            let wait = match step {
                Step::Empty => None,
                Step::Delivered | Step::DeadLettered => {
                    failures = 0;
                    continue;
                }
                Step::Retry(after) => {
                    failures = failures.saturating_add(1);
                    Some(after.unwrap_or_else(|| self.backoff.delay(failures, jitter.next())))
                }
            };
            match wait {
                None => tokio::select! {
                    () = q.wake.notified() => {}
                    () = cancel.cancelled() => return,
                },
                Some(d) => tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    // A forced batch or a requeue cuts the backoff short; new payloads do not.
                    () = q.skip_backoff.notified() => {}
                    () = cancel.cancelled() => return,
                },
            }
        }
    }
}

/// What a forced batch did.
#[derive(Debug, Default, serde::Serialize, PartialEq)]
pub struct ForceResult {
    /// Payloads delivered.
    pub delivered: u64,
    /// Payloads moved to the dead-letter queue.
    pub dead_lettered: u64,
    /// Attempts that failed (the batch stops at the first).
    pub failed: u64,
}

/// Every queue of the process, for the admin API and `/metrics`.
#[derive(Default)]
pub struct Registry {
    handles: Mutex<Vec<Arc<Handle>>>,
}

impl Registry {
    /// Adds a queue.
    pub fn add(&self, h: Arc<Handle>) {
        lock(&self.handles).push(h);
    }

    /// Every queue, in the order they were added.
    pub fn all(&self) -> Vec<Arc<Handle>> {
        lock(&self.handles).clone()
    }

    /// The queue called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Handle>> {
        lock(&self.handles)
            .iter()
            .find(|h| h.queue.name() == name)
            .cloned()
    }
}

impl Collect for Registry {
    fn collect(&self, out: &mut Families) {
        let all = self.all();
        if all.is_empty() {
            return;
        }
        let qs: Vec<&Queue> = all.iter().map(|h| h.queue.as_ref()).collect();
        super::stats::collect(&qs, out);
    }
}

/// Keeps component `name` of `/health` current for the queue behind `h` until `cancel`: down
/// while `down` gives a reason, degraded while payloads could not be queued (until
/// [`super::stats::LOSS_WINDOW`] passes without such a loss) or deliveries fail, ok otherwise.
pub async fn watch_health(
    name: &'static str,
    h: Arc<Handle>,
    health: Arc<crate::base::health::Health>,
    down: impl Fn(&super::store::Depth) -> Option<String> + Send,
    cancel: CancellationToken,
) {
    use crate::base::health::Status;
    loop {
        let q = &h.queue;
        let d = q.depth();
        let fails = q.stats.consecutive_failures.load(Relaxed);
        let now = unix_ms();
        let mut trouble = Vec::new();
        if let Some(losses) = q.stats.recent_losses(now) {
            trouble.push(losses.reason(now));
        }
        if fails > 0 {
            trouble.push(format!("{fails} failed attempts in a row"));
        }
        let (status, detail) = if let Some(why) = down(&d) {
            (Status::Down, why)
        } else if !trouble.is_empty() {
            (
                Status::Degraded,
                format!("{}; {} payloads queued", trouble.join("; "), d.pending),
            )
        } else {
            (
                Status::Ok,
                format!(
                    "{} payloads delivered, {} queued, {} dead letters",
                    q.stats.delivered.load(Relaxed),
                    d.pending,
                    d.dlq
                ),
            )
        };
        health.set(name, status, detail);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Lets the sender keep delivering at shutdown until `queue` is empty, `drain` has passed, or
/// `give_up` says delivery cannot succeed (a rejected key); what is left stays on disk.
pub async fn wait_drained(queue: &Queue, drain: Duration, give_up: impl Fn() -> bool) {
    let deadline = Instant::now() + drain;
    while queue.head().is_some() && Instant::now() < deadline && !give_up() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::deliver::{BoxFuture, FailureClass};
    use crate::queue::store::{Limits, Meta};
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(1, 0.999_999).as_millis(), 99);
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(30, 0.0), Duration::from_millis(500));
        let mut j = Jitter::new();
        let xs: Vec<f64> = (0..100).map(|_| j.next()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.windows(2).any(|w| w[0] != w[1]));
    }

    /// Answers from a script, then 202.
    struct Scripted {
        script: Mutex<Vec<Attempt>>,
        calls: AtomicUsize,
    }

    impl Deliver for Scripted {
        fn deliver<'a>(&'a self, _m: &'a Meta, _b: Vec<u8>) -> BoxFuture<'a, Attempt> {
            self.calls.fetch_add(1, Relaxed);
            let next = lock(&self.script)
                .pop()
                .unwrap_or(Attempt::Delivered { status: 202 });
            Box::pin(async move { next })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_then_delivers_and_rejects_to_dlq() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Arc::new(
            Queue::open(
                dir.path(),
                "t",
                Limits {
                    max_bytes: 1 << 20,
                    dlq_max_bytes: 1 << 20,
                },
            )
            .expect("open"),
        );
        let retry = Attempt::Retry {
            class: FailureClass::Server5xx,
            status: Some(503),
            after: None,
            why: String::new(),
        };
        // Popped from the end: 503, 503, then 400 for the first payload... no: the first payload
        // sees 503 twice and then 202; the second sees 400.
        let script = vec![
            Attempt::Reject {
                status: 400,
                body: "bad".into(),
            },
            Attempt::Delivered { status: 202 },
            retry.clone(),
            retry,
        ];
        let d = Arc::new(Scripted {
            script: Mutex::new(script),
            calls: AtomicUsize::new(0),
        });
        let h = Arc::new(Handle {
            queue: Arc::clone(&q),
            deliver: d.clone(),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(4),
            },
        });
        q.push(
            Meta {
                endpoint: "/1".into(),
                ..Default::default()
            },
            b"one",
        )
        .expect("push");
        q.push(
            Meta {
                endpoint: "/2".into(),
                ..Default::default()
            },
            b"two",
        )
        .expect("push");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&h).run(cancel.clone()));
        for _ in 0..100 {
            if q.depth().pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        cancel.cancel();
        task.await.expect("join");
        assert_eq!(d.calls.load(Relaxed), 4);
        assert_eq!(q.stats.delivered.load(Relaxed), 1);
        assert_eq!(q.stats.retries.load(Relaxed), 2);
        assert_eq!(q.depth().dlq, 1);
        assert_eq!(q.dead_letters(1)[0].meta.endpoint, "/2");
    }

    #[tokio::test]
    async fn a_payload_that_cannot_be_read_stays_queued_and_is_sent_later() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_bytes: 1 << 20,
            dlq_max_bytes: 1 << 20,
        };
        let q = Arc::new(Queue::open(dir.path(), "t", limits).expect("open"));
        q.push(Meta::default(), b"one").expect("push");
        // A read error that is not "gone": the file replaced by a directory (EISDIR).
        let file = dir.path().join("t/pending/0000000000000001.tq");
        let bytes = std::fs::read(&file).expect("read");
        std::fs::remove_file(&file).expect("rm");
        std::fs::create_dir(&file).expect("dir in its place");
        let d = Arc::new(Scripted {
            script: Mutex::new(vec![]),
            calls: AtomicUsize::new(0),
        });
        let h = Handle {
            queue: Arc::clone(&q),
            deliver: d.clone(),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
        };
        assert_eq!(h.send_head().await, Step::Retry(None));
        assert_eq!(q.depth().pending, 1, "still queued");
        assert_eq!(q.stats.read_errors.load(Relaxed), 1);
        assert_eq!(d.calls.load(Relaxed), 0);
        std::fs::remove_dir(&file).expect("rmdir");
        std::fs::write(&file, bytes).expect("put back");
        assert_eq!(h.send_head().await, Step::Delivered);
        assert_eq!(d.calls.load(Relaxed), 1);
        assert_eq!(q.stats.delivered.load(Relaxed), 1);
        assert_eq!(q.depth().pending, 0);
    }

    #[tokio::test]
    async fn force_sends_a_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Arc::new(
            Queue::open(
                dir.path(),
                "t",
                Limits {
                    max_bytes: 1 << 20,
                    dlq_max_bytes: 1 << 20,
                },
            )
            .expect("open"),
        );
        for i in 0..5 {
            q.push(
                Meta {
                    endpoint: format!("/{i}"),
                    ..Default::default()
                },
                b"x",
            )
            .expect("push");
        }
        let d = Arc::new(Scripted {
            script: Mutex::new(vec![]),
            calls: AtomicUsize::new(0),
        });
        let h = Handle {
            queue: Arc::clone(&q),
            deliver: d,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
        };
        assert_eq!(
            h.force(3).await,
            ForceResult {
                delivered: 3,
                dead_lettered: 0,
                failed: 0
            }
        );
        assert_eq!(q.depth().pending, 2);
    }

    #[tokio::test]
    async fn health_line_reports_payloads_that_could_not_be_queued() {
        use crate::base::clock::Clock;
        use crate::base::health::{Health, Status};
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = Limits {
            max_bytes: 1000,
            dlq_max_bytes: 1000,
        };
        let q = Arc::new(Queue::open(dir.path(), "t", limits).expect("open"));
        let h = Arc::new(Handle {
            queue: Arc::clone(&q),
            deliver: Arc::new(Scripted {
                script: Mutex::new(vec![]),
                calls: AtomicUsize::new(0),
            }),
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            },
        });
        assert!(q.push(Meta::default(), &[0u8; 2000]).is_err());
        let health = Arc::new(Health::new(Clock::system()));
        let cancel = CancellationToken::new();
        cancel.cancel();
        // Cancelled already: one pass sets the line, then it returns.
        watch_health("t", h, Arc::clone(&health), |_| None, cancel).await;
        let (_, components) = health.snapshot();
        let c = &components["t"];
        assert_eq!(c.status, Status::Degraded, "{c:?}");
        assert!(
            c.detail
                .starts_with("1 payload could not be queued in the last "),
            "{c:?}"
        );
        assert!(c.detail.ends_with("; 0 payloads queued"), "{c:?}");
    }
}
