//! What a network sink is made of: each window handed to an encoder thread (a bounded
//! [`Handoff`] that never blocks the flusher) and the payloads it writes delivered from a
//! durable [`Outbox`]. The Datadog and remote_write sinks are one of these each; this is where
//! their hand-off warnings and their shutdown live.

use tracing::{info, warn};

use crate::base::handoff::{DropCounter, Handoff};
use crate::queue::deliver::{Deliver, HttpDeliver};
use crate::queue::outbox::Outbox;

/// Names a delivery's log lines use.
pub struct Names {
    /// The `component` field of its log lines.
    pub component: &'static str,
    /// Logged when a window is dropped because the encoder is behind.
    pub behind: &'static str,
    /// Logged once the delivery has stopped.
    pub stopped: &'static str,
}

/// An encoder hand-off and the outbox it writes into.
pub struct Delivery<T, C: DropCounter, D = HttpDeliver> {
    windows: Handoff<T, C>,
    outbox: Outbox<D>,
    names: Names,
}

impl<T: Send + 'static, C: DropCounter + Send + Sync + 'static, D: Deliver + 'static>
    Delivery<T, C, D>
{
    /// Puts an encoder hand-off and its outbox together.
    pub fn new(windows: Handoff<T, C>, outbox: Outbox<D>, names: Names) -> Self {
        Delivery {
            windows,
            outbox,
            names,
        }
    }

    /// The outbox, for what the sink builds on its queue.
    pub fn outbox(&self) -> &Outbox<D> {
        &self.outbox
    }

    /// Offers a window to the encoder without waiting; a dropped one is counted by the
    /// hand-off and logged (the first, then every hundredth).
    pub fn offer(&self, item: T) {
        if let Some(n) = self.windows.offer(item).dropped_to_log() {
            warn!(
                component = self.names.component,
                dropped = n,
                "{}",
                self.names.behind
            );
        }
    }

    /// Stops after the final flush: encodes what was handed over, lets the sender deliver for
    /// up to `queue.shutdown_drain` (or until `give_up`), then stops it. Whatever is left stays
    /// on disk.
    pub async fn shutdown(&self, give_up: impl Fn() -> bool) {
        self.windows.join().await;
        let d = self.outbox.shutdown(give_up).await;
        info!(
            component = self.names.component,
            queued = d.pending,
            dead_letters = d.dlq,
            "{}",
            self.names.stopped
        );
    }
}
