//! Durable, disk-backed delivery queues with a dead-letter queue.
//!
//! A payload handed to a [`Queue`] is on disk (written, fsynced, renamed into place) before
//! [`Queue::push`] returns; it leaves the disk only after the far side answered 2xx, or moves to
//! the dead-letter queue when the far side rejects it for good. Queues are bounded in bytes: at
//! the bound the oldest payloads are dropped and counted. Only a small index lives in memory, so
//! a long outage costs disk, not RAM. The on-disk format is described in ARCHITECTURE.md and in
//! `disk.rs`.
//!
//! The queue knows nothing about what it carries: payload bytes plus a small [`Meta`] (endpoint,
//! content type, encoding). A [`Deliver`] implementation (the HTTP one is [`HttpDeliver`]) sends
//! one payload and classifies the answer; [`sender::Handle::run`] drives retries with backoff.
//! A component that sends somewhere runs all of it as one [`Outbox`]: the queue, its HTTP
//! delivery, its sender, its place in the [`Registry`] and the bounded drain at shutdown.

pub mod config;
pub mod deliver;
mod disk;
pub mod error;
pub mod health;
pub mod outbox;
pub mod sender;
pub mod stats;
pub mod store;

pub use config::QueueConfig;
pub use deliver::{Attempt, Deliver, FailureClass, HttpDeliver};
pub use error::{KeyCheckError, OpenError};
pub use outbox::Outbox;
pub use sender::{Backoff, Registry};
pub use stats::QueueStats;
pub use store::{Meta, Queue, QueueError};

/// Opens queue `name` under `queue.directory` with the configured byte limits.
///
/// # Errors
/// The directory cannot be created or read ([`OpenError::Directory`], whose message names
/// `queue.directory`).
pub fn open_configured(cfg: &QueueConfig, name: &str) -> Result<std::sync::Arc<Queue>, OpenError> {
    let limits = store::Limits {
        max_bytes: cfg.max_bytes,
        dlq_max_bytes: cfg.dlq_max_bytes,
    };
    Queue::open(std::path::Path::new(&cfg.directory), name, limits)
        .map(std::sync::Arc::new)
        .map_err(|source| OpenError::Directory {
            name: name.to_string(),
            directory: cfg.directory.clone(),
            source,
        })
}

impl Backoff {
    /// The retry backoff configured in `[queue]`.
    pub fn configured(cfg: &QueueConfig) -> Backoff {
        Backoff {
            initial: cfg.backoff_initial,
            max: cfg.backoff_max,
        }
    }
}
