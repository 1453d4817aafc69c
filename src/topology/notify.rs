//! The systemd service manager's notify protocol (`sd_notify(3)`), through the `sd-notify`
//! crate: `READY=1` once every listener is bound, `RELOADING=1` (with `MONOTONIC_USEC`) and
//! `READY=1` around a reload, `STOPPING=1` when the drain starts, and `WATCHDOG=1` every half
//! `WATCHDOG_USEC` while the flusher makes progress. Without `NOTIFY_SOCKET` (not under
//! systemd, or `Type=simple`) every call does nothing.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Telemetry;

/// Sends `states`; a failure (the socket went away) is logged, never fatal.
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Every listener is bound: the service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts. systemd (253+) wants the monotonic time with it, to match the `READY=1`
/// that ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The drain starts.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Half the watchdog timeout systemd set (`WATCHDOG_USEC`), or `None` when there is no
/// watchdog or it is meant for another process (`WATCHDOG_PID`, when set, is not ours). As
/// `sd_watchdog_enabled(3)` reads them; the crate's own reader also insists on
/// `WATCHDOG_PID` being set, which the man page makes optional.
pub fn watchdog_interval() -> Option<Duration> {
    let var = |n: &str| std::env::var(n).ok();
    interval_from(
        var("WATCHDOG_USEC"),
        var("WATCHDOG_PID"),
        std::process::id(),
    )
}

fn interval_from(usec: Option<String>, pid: Option<String>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Whether the flusher is alive: its flush count moved within `grace` of `now` (or the
/// process started less than `grace` ago).
pub fn flusher_alive(last_progress: Instant, now: Instant, grace: Duration) -> bool {
    now.saturating_duration_since(last_progress) <= grace
}

/// Sends `WATCHDOG=1` every `every` from a task on the runtime, so a wedged runtime stops the
/// pings, and only while the flusher thread completes windows: a flusher that made no flush
/// for two intervals plus one second stops them too, and systemd restarts the service after
/// `WatchdogSec`. Once `stopping` is cancelled (the drain, where the flusher ends) it pings
/// unconditionally until the process exits; `TimeoutStopSec` bounds the drain.
pub fn spawn_watchdog(
    every: Duration,
    telemetry: Arc<Telemetry>,
    flush_interval: Duration,
    stopping: CancellationToken,
) {
    tokio::spawn(watchdog(every, telemetry, flush_interval, stopping, || {
        send(&[NotifyState::Watchdog])
    }));
}

/// The watchdog loop, `ping` being the notification (tests count it).
async fn watchdog(
    every: Duration,
    telemetry: Arc<Telemetry>,
    flush_interval: Duration,
    stopping: CancellationToken,
    ping: impl Fn(),
) {
    let grace = 2 * flush_interval + Duration::from_secs(1);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = telemetry.flushes.load(Relaxed);
    let mut progress = Instant::now();
    let mut warned = false;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let flushes = telemetry.flushes.load(Relaxed);
        if flushes != seen {
            (seen, progress) = (flushes, now);
        }
        if stopping.is_cancelled() || flusher_alive(progress, now, grace) {
            ping();
            warned = false;
        } else if !warned {
            warned = true;
            tracing::error!(
                stalled_ms = now.duration_since(progress).as_millis() as u64,
                "the flusher made no progress; watchdog pings withheld so that the service manager restarts tallyd"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_of_watchdog_usec_for_this_process() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            interval_from(s("400000"), None, 7),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            interval_from(s("400000"), s("7"), 7),
            Some(Duration::from_millis(200))
        );
        assert_eq!(interval_from(s("400000"), s("8"), 7), None);
        assert_eq!(interval_from(s("0"), None, 7), None);
        assert_eq!(interval_from(s("x"), None, 7), None);
        assert_eq!(interval_from(None, s("7"), 7), None);
    }

    #[tokio::test(start_paused = true)]
    async fn pings_stop_while_the_flusher_is_stuck_and_resume_with_it_or_at_the_drain() {
        use std::sync::atomic::AtomicU64;
        let telemetry = Arc::new(Telemetry::default());
        let pings = Arc::new(AtomicU64::new(0));
        let stopping = CancellationToken::new();
        let p = Arc::clone(&pings);
        tokio::spawn(watchdog(
            Duration::from_millis(500),
            Arc::clone(&telemetry),
            Duration::from_secs(1),
            stopping.clone(),
            move || {
                p.fetch_add(1, Relaxed);
            },
        ));
        let count = || pings.load(Relaxed);
        // Flushing every second: a ping every half second.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            telemetry.flushes.fetch_add(1, Relaxed);
        }
        let flowing = count();
        assert!(flowing >= 8, "{flowing}");
        // No flush: pings go on for the grace (2 intervals + 1 s), then stop.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let stuck = count();
        assert!(
            stuck - flowing <= 7,
            "pinged while stuck: {}",
            stuck - flowing
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(count(), stuck, "no ping while the flusher is stuck");
        // The flusher moves again: pings resume.
        telemetry.flushes.fetch_add(1, Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(count() > stuck);
        // The drain: pings whatever the flusher does.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let before = count();
        stopping.cancel();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(count() >= before + 3);
    }

    #[test]
    fn the_flusher_counts_as_alive_only_within_its_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(3);
        assert!(flusher_alive(t0, t0, grace));
        assert!(flusher_alive(t0, t0 + grace, grace));
        assert!(!flusher_alive(
            t0,
            t0 + grace + Duration::from_millis(1),
            grace
        ));
    }
}
