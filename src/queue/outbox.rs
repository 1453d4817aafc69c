//! An outbox: one durable queue with its HTTP delivery, as every component that sends payloads
//! somewhere (Datadog, remote write, GPS points) runs it.
//!
//! [`Outbox::open`] opens the queue under `queue.directory`, builds the [`HttpDeliver`], starts
//! the background sender and registers the queue in the [`Registry`] (admin API and
//! `tallyd_forwarder_*`). The component writes payloads into [`Outbox::queue`] and may attach
//! tasks of its own (a health watcher, a key check) that stop with the sender.
//! [`Outbox::shutdown`] lets the sender deliver for at most `queue.shutdown_drain`, then stops
//! it and those tasks; whatever is left stays on disk for the next run.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::QueueConfig;
use super::deliver::{Deliver, HttpDeliver};
use super::error::OpenError;
use super::sender::{self, Backoff, Handle, Registry};
use super::store::{Depth, Queue};
use crate::base::health::Health;
use crate::base::lock;

/// A running queue, its delivery (HTTP unless a component brings its own [`Deliver`], as
/// OTLP export does) and its sender. See the module docs.
pub struct Outbox<D = HttpDeliver> {
    handle: Arc<Handle>,
    deliver: Arc<D>,
    drain: Duration,
    cancel: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl<D: Deliver + 'static> Outbox<D> {
    /// Opens queue `name` as `cfg` says, then builds its delivery with `target` (called only
    /// once the queue is open), starts the sender and adds the queue to `registry`. Call from
    /// inside the runtime.
    ///
    /// # Errors
    /// The queue directory cannot be used ([`OpenError::Directory`], naming `queue.directory`),
    /// or `target` failed (its error is returned as is).
    pub fn open(
        cfg: &QueueConfig,
        name: &str,
        registry: &Registry,
        target: impl FnOnce() -> Result<D, OpenError>,
    ) -> Result<Outbox<D>, OpenError> {
        let queue = super::open_configured(cfg, name)?;
        let deliver = Arc::new(target()?);
        let handle = Arc::new(Handle {
            queue,
            deliver: deliver.clone(),
            backoff: Backoff::configured(cfg),
        });
        registry.add(Arc::clone(&handle));
        let cancel = CancellationToken::new();
        let tasks = vec![tokio::spawn(Arc::clone(&handle).run(cancel.clone()))];
        Ok(Outbox {
            handle,
            deliver,
            drain: cfg.shutdown_drain,
            cancel,
            tasks: Mutex::new(tasks),
        })
    }

    /// The queue payloads are written to.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.handle.queue
    }

    /// The delivery the sender uses (for HTTP: its key state, its validation endpoint).
    pub fn deliver(&self) -> &Arc<D> {
        &self.deliver
    }

    /// The retry backoff of the sender.
    pub fn backoff(&self) -> Backoff {
        self.handle.backoff
    }

    /// Runs the task `make` builds until shutdown: it gets the token that is cancelled once
    /// the drain is over, and is awaited after the sender.
    pub fn spawn<F>(&self, make: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(make(self.cancel.clone()));
        lock(&self.tasks).push(task);
    }

    /// Keeps component `name` of `/health` current until shutdown: down while `down` gives a
    /// reason, degraded while deliveries fail, ok otherwise.
    pub fn watch_health(
        &self,
        name: &'static str,
        health: Arc<Health>,
        down: impl Fn(&Depth) -> Option<String> + Send + 'static,
    ) {
        let handle = Arc::clone(&self.handle);
        self.spawn(move |cancel| sender::watch_health(name, handle, health, down, cancel));
    }

    /// Lets the sender deliver until the queue is empty, `queue.shutdown_drain` has passed or
    /// `give_up` says delivery cannot succeed; then stops the sender and the attached tasks.
    /// What is left stays on disk; returns how much that is.
    pub async fn shutdown(&self, give_up: impl Fn() -> bool) -> Depth {
        sender::wait_drained(self.queue(), self.drain, give_up).await;
        self.cancel.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
        self.queue().depth()
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
