//! The component contract. Every source, sink and service starts the same way,
//! `start(&ItsConfig, &mut Context) -> Result<Running, Error>`, and stops the same way: it
//! spawns its work on the [`Stage`] it drains in, waits there for that stage's cancellation,
//! drains what it holds and returns. The topology (`crate::topology`) builds the components in
//! order and, at shutdown, cancels and awaits the stages one after the other.
//!
//! This module owns what components share: the [`Context`] (aggregator intake, self-metrics,
//! health, the delivery queues, the clock, the sinks the flusher feeds, shutdown) and the
//! [`Running`] a start returns (its name, stage and health, and a handle the topology may hand
//! to the HTTP API).

mod error;
pub mod reload;

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::Error;

use crate::aggregate::{Aggregator, Sink};
use crate::base::clock::Clock;
use crate::base::health::{Health, Status};
use crate::telemetry::Telemetry;

/// The order of shutdown. A stage is cancelled once every earlier stage has finished
/// draining: intake stops, then the final flush runs, then alerts are evaluated and notified,
/// then delivery drains its queues, and the HTTP API stops last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Listeners: stop accepting, finish what was received into the shards.
    Intake = 0,
    /// The flusher: one last flush of the partial window into every sink.
    Flush = 1,
    /// The alert evaluator and its notifiers.
    Alerts = 2,
    /// Sinks that deliver over the network, and their durable queues.
    Delivery = 3,
    /// The HTTP API (`/metrics`, health, admin routes).
    Http = 4,
}

impl Stage {
    /// Every stage, in shutdown order.
    pub const ALL: [Stage; 5] = [
        Stage::Intake,
        Stage::Flush,
        Stage::Alerts,
        Stage::Delivery,
        Stage::Http,
    ];

    /// The stage's name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Intake => "intake",
            Stage::Flush => "flush",
            Stage::Alerts => "alerts",
            Stage::Delivery => "delivery",
            Stage::Http => "http",
        }
    }
}

/// One cancellation token and one task tracker per stage: children of one root token, so
/// [`Shutdown::abort`] (a component that could not start) stops every stage at once.
pub struct Shutdown {
    root: CancellationToken,
    tokens: [CancellationToken; 5],
    trackers: [TaskTracker; 5],
}

impl Default for Shutdown {
    fn default() -> Self {
        let root = CancellationToken::new();
        let tokens = Stage::ALL.map(|_| root.child_token());
        Shutdown {
            root,
            tokens,
            trackers: Stage::ALL.map(|_| TaskTracker::new()),
        }
    }
}

impl Shutdown {
    /// The token cancelled when `stage` is told to drain.
    pub fn token(&self, stage: Stage) -> CancellationToken {
        self.tokens[stage as usize].clone()
    }

    /// The tracker whose tasks `stage` waits for.
    pub fn tracker(&self, stage: Stage) -> &TaskTracker {
        &self.trackers[stage as usize]
    }

    /// Runs `work` as part of `stage`: shutdown waits for it before the next stage starts.
    pub fn spawn<F>(&self, stage: Stage, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker(stage).spawn(work);
    }

    /// Runs `drain` once `stage` is cancelled, as part of that stage.
    pub fn on_stop<F>(&self, stage: Stage, drain: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token(stage);
        self.spawn(stage, async move {
            token.cancelled().await;
            drain.await;
        });
    }

    /// Cancels and awaits every stage in order.
    pub async fn drain(&self) {
        for stage in Stage::ALL {
            self.tokens[stage as usize].cancel();
            let tracker = &self.trackers[stage as usize];
            tracker.close();
            tracker.wait().await;
            tracing::debug!(stage = stage.as_str(), "stage drained");
        }
    }

    /// Cancels every stage at once, without waiting: what already started stops (receive
    /// loops, servers, senders) when a later component fails to start.
    pub fn abort(&self) {
        self.root.cancel();
    }
}

/// A durable outlet for single events from outside the flush path: alert notifications go to
/// Datadog through the Datadog sink's queue, so an intake outage delays them instead of losing
/// them. The Datadog sink provides it; the alert notifiers use it without knowing the sink.
pub trait EventOutbox: Send + Sync {
    /// The queue's name, for messages.
    fn queue_name(&self) -> &'static str;
    /// Encodes `ev` and writes it to disk before returning. Blocking: call it from
    /// `spawn_blocking` in async code.
    ///
    /// # Errors
    /// The disk write failed or the event is larger than the whole queue.
    fn push(&self, ev: &crate::model::Event) -> Result<(), crate::queue::QueueError>;
    /// What the far side said about the credentials so far.
    fn key_state(&self) -> crate::queue::deliver::KeyState;
}

/// What components share. The topology builds one and hands it to every `start`.
pub struct Context {
    /// The wall clock.
    pub clock: Clock,
    /// tallyd's own counters and the registry of self-metric sources.
    pub telemetry: Arc<Telemetry>,
    /// Health of every component.
    pub health: Arc<Health>,
    /// The aggregation intake: sources take shards from it.
    pub aggregator: Arc<Aggregator>,
    /// The durable delivery queues, listed for the admin API and self-metrics.
    pub queues: Arc<crate::queue::Registry>,
    /// The durable queues' settings (`[queue]`), shared by every outbox.
    pub queue: crate::queue::QueueConfig,
    /// The host name metrics, events and alerts are reported with.
    pub host: String,
    /// Staged shutdown.
    pub shutdown: Shutdown,
    /// Where single events go to reach Datadog durably, once Datadog delivery has started.
    pub events: Option<Arc<dyn EventOutbox>>,
    sinks: Vec<Arc<dyn Sink>>,
}

impl Context {
    /// A context over `aggregator`, with no sinks yet.
    pub fn new(
        clock: Clock,
        telemetry: Arc<Telemetry>,
        aggregator: Arc<Aggregator>,
        queue: crate::queue::QueueConfig,
        host: String,
    ) -> Context {
        Context {
            health: Arc::new(Health::new(clock.clone())),
            clock,
            telemetry,
            aggregator,
            queues: Arc::new(crate::queue::Registry::default()),
            queue,
            host,
            shutdown: Shutdown::default(),
            events: None,
            sinks: Vec::new(),
        }
    }

    /// Adds a sink the flusher hands every window to.
    pub fn add_sink(&mut self, sink: Arc<dyn Sink>) {
        self.sinks.push(sink);
    }

    /// The sinks added so far, in order.
    pub fn sinks(&self) -> &[Arc<dyn Sink>] {
        &self.sinks
    }
}

/// Binds the TCP listener set by `key` to `value` (`what` names it in the error), and gives
/// back the address it got (the port chosen for `:0`).
///
/// # Errors
/// The address does not parse, or cannot be bound.
pub async fn bind_tcp(
    what: &'static str,
    key: &'static str,
    value: &str,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), Error> {
    let addr = crate::base::error::parse_addr(key, value)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::bind(what, addr, key, e))?;
    let local = listener.local_addr().unwrap_or(addr);
    Ok((listener, local))
}

/// A started (or disabled) component: its name, the stage it drains in, its health at start,
/// and a handle for whoever composes it (the HTTP API reads some components' state).
pub struct Running<H = ()> {
    /// The component's name, as `/health` shows it.
    pub name: &'static str,
    /// The stage it drains in.
    pub stage: Stage,
    /// Its state at start (`Disabled` when its configuration turns it off).
    pub status: Status,
    /// Why: the address it listens on, or what would enable it.
    pub detail: String,
    /// Further health lines of the same component (the OTLP receiver's second listener).
    pub parts: Vec<(&'static str, Status, String)>,
    /// What the component gives back (`None` when disabled).
    pub handle: Option<H>,
    /// The component keeps its own health line up to date (a queue watcher): the topology
    /// does not report one for it.
    pub reports_itself: bool,
}

impl<H> Running<H> {
    /// A component that started and is working.
    pub fn ok(name: &'static str, stage: Stage, detail: impl Into<String>, handle: H) -> Self {
        Running {
            name,
            stage,
            status: Status::Ok,
            detail: detail.into(),
            parts: Vec::new(),
            handle: Some(handle),
            reports_itself: false,
        }
    }

    /// A component that started and keeps its own health line up to date.
    pub fn reporting_itself(name: &'static str, stage: Stage, handle: H) -> Self {
        Running {
            reports_itself: true,
            ..Running::ok(name, stage, "", handle)
        }
    }

    /// A component its configuration turns off; `why` says which key would turn it on.
    pub fn disabled(name: &'static str, stage: Stage, why: impl Into<String>) -> Self {
        Running {
            name,
            stage,
            status: Status::Disabled,
            detail: why.into(),
            parts: Vec::new(),
            handle: None,
            reports_itself: false,
        }
    }

    /// Adds another health line to this component.
    pub fn with_part(
        mut self,
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
    ) -> Self {
        self.parts.push((name, status, detail.into()));
        self
    }

    /// Reports this component's health once and gives back its handle.
    pub fn report(self, health: &Health) -> Option<H> {
        if !self.reports_itself {
            health.set(self.name, self.status, self.detail);
        }
        for (name, status, detail) in self.parts {
            health.set(name, status, detail);
        }
        self.handle
    }
}
