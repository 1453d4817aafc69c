//! A handle for putting single Datadog events into the durable `datadog` queue from outside the
//! flush path: alert notifications (`alert::notify::datadog`) use it so that an intake outage
//! delays them instead of losing them, exactly like the window's own payloads.
//!
//! Events are encoded by the sink's [`Encoder`] (same host, constant tags and limits) and
//! delivered by the queue's one sender, so they share its retries, dead-letter queue and
//! `tallyd_forwarder_*` accounting. This handle never talks to the intake itself.

use std::sync::{Arc, Mutex};

use super::encode::Encoder;
use crate::component::EventOutbox;
use crate::model::Event;
use crate::queue::deliver::{KeyState, KeyStatus};
use crate::queue::store::{unix_ms, Meta, Queue, QueueError};

/// Cheap to clone; every clone writes to the same queue.
#[derive(Clone)]
pub struct EventQueue {
    queue: Arc<Queue>,
    key: Arc<KeyStatus>,
    /// Shared with the sink, which swaps it on a reload.
    encoder: Arc<Mutex<Arc<Encoder>>>,
}

impl EventQueue {
    pub(super) fn new(
        queue: Arc<Queue>,
        key: Arc<KeyStatus>,
        encoder: Arc<Mutex<Arc<Encoder>>>,
    ) -> EventQueue {
        EventQueue {
            queue,
            key,
            encoder,
        }
    }

    /// Encodes `ev` and writes it to disk (fsynced) before returning. Blocking: call it from
    /// `spawn_blocking` in async code.
    ///
    /// # Errors
    /// The disk write failed or the event is larger than the whole queue; nothing was queued.
    pub fn push(&self, ev: &Event) -> Result<(), QueueError> {
        let encoder = Arc::clone(&crate::base::lock(&self.encoder));
        let p = encoder.event(ev, (unix_ms() / 1000) as i64);
        let meta = Meta {
            endpoint: p.endpoint.into(),
            content_type: p.content_type.into(),
            content_encoding: p.encoding.into(),
            ..Default::default()
        };
        self.queue.push(meta, &p.body).map(|_dropped| ())
    }

    /// What the intake said about the API key so far.
    pub fn key_state(&self) -> KeyState {
        self.key.get()
    }
}

impl EventOutbox for EventQueue {
    fn queue_name(&self) -> &'static str {
        super::QUEUE_NAME
    }

    fn push(&self, ev: &Event) -> Result<(), QueueError> {
        EventQueue::push(self, ev)
    }

    fn key_state(&self) -> KeyState {
        EventQueue::key_state(self)
    }
}
