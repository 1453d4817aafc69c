//! The flusher: the component that closes every window. A plain thread wakes at every multiple
//! of `aggregate.flush_interval` (wall-clock aligned, like the Datadog Agent's buckets: a
//! window's timestamp is its start), flushes the aggregator and hands the one `Arc<Flush>` to
//! every sink in the context. At shutdown (the flush stage, after intake has drained) it
//! flushes the partial window once more and stops.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tracing::info;

use crate::aggregate::{AggregateConfig, Aggregator, Sink};
use crate::base::clock::Clock;
use crate::base::cpu::thread_cpu;
use crate::base::health::{Component, Status, Watch};
use crate::base::memory::{release_free_memory, Trim};
use crate::component::{Context, Error, Running, Stage};
use crate::telemetry::Telemetry;

/// Starts the flusher over the sinks added to `ctx` so far (add every sink first). Its health
/// is watched: down after three intervals without a flush.
///
/// # Errors
/// The thread cannot start.
pub fn start(cfg: &AggregateConfig, ctx: &mut Context) -> Result<Running, Error> {
    ctx.health
        .watch("aggregator", watch(cfg.flush_interval, &ctx.telemetry));
    let (stop, stopped) = mpsc::channel::<()>();
    let aggregator = Arc::clone(&ctx.aggregator);
    let telemetry = Arc::clone(&ctx.telemetry);
    let sinks = ctx.sinks().to_vec();
    let clock = ctx.clock.clone();
    let thread = std::thread::Builder::new()
        .name("flusher".into())
        .spawn(move || flush_loop(&aggregator, &sinks, &telemetry, &clock, &stopped))
        .map_err(|e| {
            Error::start(
                "aggregator",
                format!("cannot start the flusher thread: {e}"),
            )
        })?;
    ctx.shutdown.on_stop(Stage::Flush, async move {
        let _ = stop.send(());
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    });
    // Its health line is the "aggregator" watch above.
    Ok(Running::reporting_itself("aggregator", Stage::Flush, ()))
}

/// The aggregator's health, judged from its last flush.
fn watch(interval: Duration, telemetry: &Arc<Telemetry>) -> Watch {
    let telemetry = Arc::clone(telemetry);
    let late = 3 * interval.as_secs().max(1);
    Box::new(move |now| {
        let last = telemetry.flush_last_unix.load(Relaxed);
        if last == 0 {
            Component::new(Status::Ok, "waiting for the first flush")
        } else if now.saturating_sub(last) > late {
            Component::new(Status::Down, format!("no flush for {}s", now - last))
        } else {
            Component::new(
                Status::Ok,
                format!("last flush {}s ago", now.saturating_sub(last)),
            )
        }
    })
}

/// Flushes at every multiple of the interval until told to stop, then flushes the partial
/// window once more.
fn flush_loop(
    aggregator: &Aggregator,
    sinks: &[Arc<dyn Sink>],
    telemetry: &Telemetry,
    clock: &Clock,
    stop: &mpsc::Receiver<()>,
) {
    let iv = aggregator.interval().as_millis().max(1) as u64;
    let mut trim = Trim::default();
    loop {
        let now = clock.unix_millis();
        let next = (now / iv + 1) * iv;
        let last = !matches!(
            stop.recv_timeout(Duration::from_millis(next - now)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        let start_ms = if last {
            (clock.unix_millis() / iv) * iv
        } else {
            next - iv
        };
        let t0 = Instant::now();
        let cpu0 = thread_cpu();
        let flush = Arc::new(aggregator.flush(start_ms / 1000));
        for s in sinks {
            s.consume(&flush);
        }
        let took = t0.elapsed();
        telemetry
            .flush_cpu_ns
            .store(thread_cpu().saturating_sub(cpu0).as_nanos() as u64, Relaxed);
        telemetry.flushes.fetch_add(1, Relaxed);
        let took_ns = took.as_nanos() as u64;
        telemetry.flush_last_ns.store(took_ns, Relaxed);
        telemetry.flush_max_ns.fetch_max(took_ns, Relaxed);
        telemetry
            .flush_series
            .store(flush.series.len() as u64, Relaxed);
        telemetry.flush_last_unix.store(clock.unix_secs(), Relaxed);
        if took > aggregator.interval() / 2 {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                series = flush.series.len(),
                "flush took more than half the interval"
            );
        }
        // After a burst of contexts or series expired, give the freed heap back (between
        // windows, outside the flush's own timing).
        let held = telemetry.contexts.load(Relaxed) + telemetry.prom_series.load(Relaxed);
        if trim.due(held) {
            let t = Instant::now();
            release_free_memory();
            info!(
                held,
                took_ms = t.elapsed().as_millis() as u64,
                "returned freed memory to the system"
            );
        }
        if last {
            info!(
                series = flush.series.len(),
                events = flush.events.len(),
                "final flush done"
            );
            return;
        }
        // The flush's series buffer returns to the aggregator when its last holder (often
        // the alert thread, not this one) drops it: see `aggregate::Recycle`.
    }
}

#[cfg(test)]
#[path = "flusher_tests.rs"]
mod tests;
