//! Threshold alerts at the edge: rules evaluated on every flushed window, a state machine per
//! rule and group, and notifications to the log, webhooks, Slack, PagerDuty, Alertmanager and
//! Datadog events.
//!
//! The flusher hands each `Flush` to [`AlertSink`], which only offers it to a bounded
//! [`Handoff`]; one thread evaluates (`eval.rs`) and queues notifications (`notify/`), whose
//! workers deliver them. Nothing here reaches back into the aggregator or blocks the flusher.

pub mod config;
pub mod eval;
pub mod input;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod reduce;
pub mod rules;
pub mod snapshot;
pub mod state;
pub mod template;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aggregate::Flush;
use crate::aggregate::Sink;
use crate::base::handoff::{DropCounter, Handoff, Offer};
use crate::base::lock;
use crate::component::{Context, Error, Running, Stage};
use crate::telemetry::Telemetry;

pub use config::AlertsConfig;
use eval::{Evaluator, Snapshot};
use notify::Dispatcher;

/// Starts alerting when `alerts.enabled`: compiles the rules (the shipped health rules over
/// StatsD intake only when `statsd_enabled`), adds the evaluator as a sink, and drains it in the
/// alerts stage: the final window is evaluated and its notifications get five seconds to go
/// out (Datadog events into the queue, before its sender drains in the delivery stage). Start
/// it after Datadog delivery, whose event outbox `datadog` notifiers write into.
///
/// # Errors
/// A rule that does not compile, a notifier that cannot be built, or the evaluator thread
/// cannot start.
pub fn start(
    cfg: &AlertsConfig,
    statsd_enabled: bool,
    ctx: &mut Context,
) -> Result<Running<Arc<Shared>>, Error> {
    if !cfg.enabled {
        return Ok(Running::disabled(
            "alerts",
            Stage::Alerts,
            "alerts.enabled is false",
        ));
    }
    let a = Alerting::start(
        cfg,
        statsd_enabled,
        Arc::clone(&ctx.telemetry),
        ctx.host.clone(),
        ctx.events.clone(),
    )?;
    ctx.add_sink(a.sink.clone());
    tracing::info!(
        component = "alerts",
        rules = a.rule_count(),
        notifiers = a.shared.dispatcher().notifiers.len(),
        "alerting enabled"
    );
    let detail = format!("{} rules", a.rule_count());
    let shared = Arc::clone(&a.shared);
    ctx.shutdown.on_stop(Stage::Alerts, async move {
        a.shutdown(Duration::from_secs(5)).await
    });
    Ok(Running::ok("alerts", Stage::Alerts, detail, shared))
}

/// State shared by the evaluator thread, the API and `/metrics`.
pub struct Shared {
    /// The evaluator's latest state, for the API.
    pub snapshot: Mutex<Snapshot>,
    /// Queues notifications for the notifiers (replaced by a reload: read it through
    /// [`Shared::dispatcher`]).
    dispatcher: Mutex<Arc<Dispatcher>>,
    /// A reload's rules and notifiers, taken by the evaluator before its next window.
    pending: Mutex<Option<Pending>>,
    /// What a reload needs to start notifiers the way the start did.
    restart: Restart,
    /// Windows not evaluated because the evaluator was behind (`alerts.eval_queue` full).
    pub windows_dropped: AtomicU64,
    /// Windows evaluated.
    pub evaluations: AtomicU64,
    /// New alert groups ignored at `alerts.max_groups_per_rule`.
    pub groups_dropped: AtomicU64,
    /// `tallyd_*` counter series not tracked for rules at the bound.
    pub self_series_dropped: AtomicU64,
    /// The host name alerts carry.
    pub host: String,
}

/// Rules and notifiers a reload built, waiting for the evaluator's next window.
struct Pending {
    rules: Vec<rules::Rule>,
    repeat_interval: Duration,
    dispatcher: Arc<Dispatcher>,
}

/// What the start was given, kept for reloads.
struct Restart {
    statsd_enabled: bool,
    datadog: Option<notify::EventQueue>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Shared {
    /// The notifiers in effect.
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        Arc::clone(&lock(&self.dispatcher))
    }

    /// Takes a reloaded `[alerts]`: compiles its rules and starts its notifiers (a notifier
    /// keeps its counters across), then hands both to the evaluator, which puts them in
    /// effect before its next window. `enabled`, `eval_queue`, `max_groups_per_rule` and
    /// `history_size` are the start's (the caller reports them as needing a restart).
    ///
    /// # Errors
    /// A rule that does not compile or a notifier that cannot be built: nothing changes.
    pub fn reload(&self, cfg: &AlertsConfig) -> Result<(), Error> {
        let r = &self.restart;
        let rules = rules::build_rules(cfg, r.statsd_enabled)
            .map_err(|e| Error::start("alerts", e.sentence()))?;
        let current = self.dispatcher();
        let dispatcher = Dispatcher::start(
            cfg,
            &r.tracker,
            &r.cancel,
            r.datadog.clone(),
            Some(&current),
        )?;
        let pending = Pending {
            rules,
            repeat_interval: cfg.repeat_interval,
            dispatcher,
        };
        // A reload not yet taken is replaced: its notifiers had no work yet.
        if let Some(p) = lock(&self.pending).replace(pending) {
            p.dispatcher.close();
        }
        Ok(())
    }
}

impl DropCounter for Shared {
    fn dropped(&self) -> &AtomicU64 {
        &self.windows_dropped
    }
}

/// The flusher's handle: forwards each window to the evaluator without waiting.
pub struct AlertSink {
    windows: Handoff<Arc<Flush>, Shared>,
}

impl Sink for AlertSink {
    fn name(&self) -> &'static str {
        "alerts"
    }

    fn consume(&self, flush: &Arc<Flush>) {
        if let Offer::Dropped { .. } = self.windows.offer(Arc::clone(flush)) {
            tracing::warn!("alert evaluation is behind; window not evaluated");
        }
    }
}

impl AlertSink {
    /// Stops forwarding; the evaluator finishes what it holds and ends.
    pub fn close(&self) {
        self.windows.close();
    }
}

/// The running alert subsystem.
pub struct Alerting {
    /// The flusher's handle.
    pub sink: Arc<AlertSink>,
    /// State shared with the API and `/metrics`.
    pub shared: Arc<Shared>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Alerting {
    /// Compiles the rules, starts the notifier workers and the evaluator thread, and registers
    /// tallyd_alert_* metrics. Call inside the tokio runtime.
    ///
    /// `datadog` is the Datadog queue when Datadog delivery is on (for `datadog` notifiers).
    ///
    /// # Errors
    /// A rule that does not compile, the HTTP client cannot be built, a `datadog` notifier
    /// without Datadog delivery, or the evaluator thread cannot be started.
    pub fn start(
        a: &AlertsConfig,
        statsd_enabled: bool,
        telemetry: Arc<Telemetry>,
        host: String,
        datadog: Option<notify::EventQueue>,
    ) -> Result<Alerting, Error> {
        let rules = rules::build_rules(a, statsd_enabled)
            .map_err(|e| Error::start("alerts", e.sentence()))?;
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let dispatcher = Dispatcher::start(a, &tracker, &cancel, datadog.clone(), None)?;
        let shared = Arc::new(Shared {
            snapshot: Mutex::new(Snapshot {
                rules: rules.len(),
                ..Snapshot::default()
            }),
            dispatcher: Mutex::new(dispatcher),
            pending: Mutex::new(None),
            restart: Restart {
                statsd_enabled,
                datadog,
                tracker: tracker.clone(),
                cancel: cancel.clone(),
            },
            windows_dropped: AtomicU64::new(0),
            evaluations: AtomicU64::new(0),
            groups_dropped: AtomicU64::new(0),
            self_series_dropped: AtomicU64::new(0),
            host: host.clone(),
        });
        telemetry.register(Arc::new(metrics::AlertMetrics(Arc::clone(&shared))));
        let evaluator = Evaluator::new(
            rules,
            host,
            a.repeat_interval,
            a.max_groups_per_rule,
            a.history_size,
        );
        let mut evaluate = evaluate_window(evaluator, Arc::clone(&shared), telemetry);
        let windows = Handoff::start_counting(
            "alert-eval",
            a.eval_queue,
            Arc::clone(&shared),
            move |flush: Arc<Flush>| evaluate(&flush),
        )
        .map_err(|e| {
            Error::start(
                "alerts",
                format!("cannot start the alert evaluator thread: {e}"),
            )
        })?;
        let sink = Arc::new(AlertSink { windows });
        Ok(Alerting {
            sink,
            shared,
            tracker,
            cancel,
        })
    }

    /// Rules in effect (for the startup log).
    pub fn rule_count(&self) -> usize {
        lock(&self.shared.snapshot).rules
    }

    /// Closes intake, lets the evaluator and the notifier queues drain for at most `grace`,
    /// then abandons what is left (retries in backoff are cancelled).
    pub async fn shutdown(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.sink.close();
        // The evaluator ends once it has evaluated the windows it holds (the final one too).
        let _ = tokio::time::timeout_at(deadline, self.sink.windows.join()).await;
        // Then the notifier queues close and the workers end after delivering what is queued.
        self.shared.dispatcher().close();
        if let Some(p) = lock(&self.shared.pending).take() {
            p.dispatcher.close();
        }
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("alert notifications still pending at shutdown; abandoning them");
            self.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        }
    }
}

/// The evaluator thread's work on each window: evaluate, dispatch the notifications, publish
/// the snapshot and counters.
fn evaluate_window(
    mut evaluator: Evaluator,
    shared: Arc<Shared>,
    telemetry: Arc<Telemetry>,
) -> impl FnMut(&Flush) + Send + 'static {
    let mut own = evaluator.needs_self_metrics();
    let mut wants_firing = shared.dispatcher().wants_firing();
    move |flush| {
        // A reload's rules and notifiers take effect from this window on; the state of the
        // rules kept is kept, and the old notifiers deliver what they hold, then end.
        if let Some(p) = lock(&shared.pending).take() {
            evaluator.replace_rules(p.rules, p.repeat_interval);
            let old = std::mem::replace(&mut *lock(&shared.dispatcher), p.dispatcher);
            old.close();
            own = evaluator.needs_self_metrics();
            wants_firing = shared.dispatcher().wants_firing();
            tracing::info!(
                component = "alerts",
                rules = evaluator.snapshot().rules,
                "reloaded rules and notifiers in effect"
            );
        }
        let families = if own {
            telemetry.snapshot()
        } else {
            Vec::new()
        };
        let out = evaluator.evaluate(flush, &families, wants_firing);
        shared.dispatcher().dispatch(&out);
        let snap = evaluator.snapshot();
        *lock(&shared.snapshot) = snap;
        shared.evaluations.store(evaluator.evaluations, Relaxed);
        shared
            .groups_dropped
            .store(evaluator.groups_dropped, Relaxed);
        shared
            .self_series_dropped
            .store(evaluator.self_series_dropped(), Relaxed);
    }
}
