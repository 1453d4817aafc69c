//! How a queue is doing: `healthy`, `degraded` or `critical`, and why (served by
//! `GET /admin/queue/health`).

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use super::store::{unix_ms, Queue};

/// A queue's state and the reasons for it, the critical ones first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueHealth {
    /// `healthy`, `degraded` or `critical`.
    pub status: &'static str,
    /// Why it is not healthy; empty when it is.
    pub reasons: Vec<String>,
}

impl QueueHealth {
    /// True for `critical`: payloads are about to be lost, or have waited too long.
    pub fn is_critical(&self) -> bool {
        self.status == "critical"
    }
}

/// Judges `q` now: critical at 90% of its byte bound, or after failures with the oldest
/// payload waiting five minutes or more; degraded while payloads could not be queued (until
/// [`super::stats::LOSS_WINDOW`] passes without such a loss), at 50%, after any failure in a
/// row, or with dead letters.
pub fn judge(q: &Queue) -> QueueHealth {
    let now = unix_ms();
    let d = q.depth();
    let lim = q.limits();
    let fails = q.stats.consecutive_failures.load(Relaxed);
    let age = d
        .oldest_ms
        .map(|ms| now.saturating_sub(ms) / 1000)
        .unwrap_or(0);
    let fill = d.pending_bytes as f64 / lim.max_bytes.max(1) as f64;
    let mut critical = Vec::new();
    let mut degraded = Vec::new();
    if let Some(losses) = q.stats.recent_losses(now) {
        degraded.push(losses.reason(now));
    }
    if fill >= 0.9 {
        critical.push(format!(
            "queue {:.0}% full; oldest payloads will be dropped",
            fill * 100.0
        ));
    } else if fill >= 0.5 {
        degraded.push(format!("queue {:.0}% full", fill * 100.0));
    }
    if fails > 0 && age >= 300 {
        critical.push(format!(
            "{fails} failed attempts in a row; oldest payload waiting {age}s"
        ));
    } else if fails > 0 {
        degraded.push(format!("{fails} failed attempts in a row"));
    }
    if d.dlq > 0 {
        degraded.push(format!("{} payloads in the dead-letter queue", d.dlq));
    }
    let status = if !critical.is_empty() {
        "critical"
    } else if !degraded.is_empty() {
        "degraded"
    } else {
        "healthy"
    };
    critical.extend(degraded);
    QueueHealth {
        status,
        reasons: critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::store::Limits;
    use crate::queue::Meta;

    fn queue(dir: &std::path::Path, max_bytes: u64) -> Queue {
        let limits = Limits {
            max_bytes,
            dlq_max_bytes: max_bytes,
        };
        Queue::open(dir, "q", limits).expect("open")
    }

    fn push(q: &Queue, bytes: usize) {
        q.push(Meta::default(), &vec![b'x'; bytes]).expect("push");
    }

    #[test]
    fn fill_and_failures_set_the_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = queue(dir.path(), 1000);
        assert_eq!(
            judge(&q),
            QueueHealth {
                status: "healthy",
                reasons: vec![]
            }
        );

        push(&q, 600);
        let h = judge(&q);
        assert_eq!(h.status, "degraded", "{h:?}");
        assert!(!h.is_critical());

        q.stats.consecutive_failures.store(3, Relaxed);
        let h = judge(&q);
        assert_eq!(h.status, "degraded");
        assert_eq!(h.reasons.len(), 2, "{h:?}");
        assert!(h.reasons[1].contains("3 failed attempts"), "{h:?}");

        let dir = tempfile::tempdir().expect("tempdir");
        let q = queue(dir.path(), 10_000);
        push(&q, 9_200);
        let h = judge(&q);
        assert!(h.is_critical(), "{h:?}");
        assert!(
            h.reasons[0].contains("full; oldest payloads will be dropped"),
            "{h:?}"
        );
    }

    #[test]
    fn payloads_that_could_not_be_queued_make_it_degraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = queue(dir.path(), 1000);
        assert!(q.push(Meta::default(), &[b'x'; 2000]).is_err());
        let h = judge(&q);
        assert_eq!(h.status, "degraded", "{h:?}");
        assert_eq!(h.reasons.len(), 1, "{h:?}");
        let r = &h.reasons[0];
        assert!(
            r.starts_with("1 payload could not be queued in the last "),
            "{r}"
        );
        assert!(
            r.ends_with("larger than the queue limit of 1000 bytes)"),
            "{r}"
        );
        // Later payloads that are queued do not hide the loss.
        push(&q, 10);
        assert_eq!(judge(&q).status, "degraded");
    }
}
