//! The one way to ask for a configuration reload: SIGHUP (from `main`) and `POST /admin/reload`
//! (from the API) both send a [`Request`] through a [`Reloader`]; the topology's reload task
//! takes them one at a time, so two reloads never run at once.

use tokio::sync::{mpsc, oneshot};

pub use crate::base::health::LastReload;

/// A reload asked for, and where its outcome goes.
pub struct Request {
    /// What asked: `signal` or `api`.
    pub trigger: &'static str,
    /// Gets the outcome, when the caller waits for it.
    pub reply: Option<oneshot::Sender<LastReload>>,
}

/// Asks the topology to reload. Cloned into whoever may ask.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<Request>,
}

impl Reloader {
    /// A reloader and the receiving end the topology's reload task reads. Requests beyond
    /// `depth` waiting are merged into the ones already waiting (a reload re-reads everything).
    pub fn channel(depth: usize) -> (Reloader, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        (Reloader { tx }, rx)
    }

    /// Asks for a reload without waiting for it (SIGHUP). A request while others already
    /// wait is dropped: the waiting one reads the same file.
    pub fn request(&self, trigger: &'static str) {
        let _ = self.tx.try_send(Request {
            trigger,
            reply: None,
        });
    }

    /// Asks for a reload and waits for its outcome; `None` when tallyd is stopping.
    pub async fn reload(&self, trigger: &'static str) -> Option<LastReload> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                trigger,
                reply: Some(reply),
            })
            .await
            .ok()?;
        rx.await.ok()
    }
}
