//! Health of every component, as `/health` shows it, and readiness.
//!
//! A component either sets its state when it changes ([`Health::set`]) or is watched: a
//! function computes its state when health is read ([`Health::watch`]), for states that
//! decay with time (the aggregator's "no flush for 40s").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

use super::clock::Clock;
use super::lock;

/// A component's state as shown by `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working.
    Ok,
    /// Working, but losing or delaying something.
    Degraded,
    /// Not working: the whole agent reports down.
    Down,
    /// Not configured.
    Disabled,
}

/// One component's state and a line saying why.
#[derive(Debug, Clone, Serialize)]
pub struct Component {
    /// The state.
    pub status: Status,
    /// Why, for a person.
    pub detail: String,
}

impl Component {
    /// A state with its reason.
    pub fn new(status: Status, detail: impl Into<String>) -> Component {
        Component {
            status,
            detail: detail.into(),
        }
    }
}

/// Computes a watched component's state from the current Unix time in seconds.
pub type Watch = Box<dyn Fn(u64) -> Component + Send + Sync>;

/// Health of every component, and readiness (set once all listeners are bound).
pub struct Health {
    components: Mutex<BTreeMap<&'static str, Component>>,
    watched: Mutex<Vec<(&'static str, Watch)>>,
    ready: AtomicBool,
    clock: Clock,
    reload: Mutex<Option<LastReload>>,
}

/// The outcome of the last configuration reload (SIGHUP or `POST /admin/reload`), as
/// `/health` and the status page show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastReload {
    /// When it finished, Unix seconds.
    pub at_unix: u64,
    /// What asked for it: `signal` (SIGHUP) or `api`.
    pub trigger: &'static str,
    /// `ok` (the new configuration runs, but for `restart_required`), `invalid` (rejected,
    /// the old configuration keeps running) or `failed` (a component could not take it; the
    /// old configuration keeps running).
    pub result: &'static str,
    /// Why it was rejected or failed, as `check-config` would say it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Keys that changed and were applied.
    pub applied: Vec<String>,
    /// Keys that changed but need a restart: their old values keep running.
    pub restart_required: Vec<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(Clock::system())
    }
}

impl Health {
    /// Empty, not ready, reading time from `clock`.
    pub fn new(clock: Clock) -> Health {
        Health {
            components: Mutex::new(BTreeMap::new()),
            watched: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            clock,
            reload: Mutex::new(None),
        }
    }

    /// Sets a component's state.
    pub fn set(&self, name: &'static str, status: Status, detail: impl Into<String>) {
        lock(&self.components).insert(name, Component::new(status, detail));
    }

    /// Has `name`'s state computed by `watch` whenever health is read.
    pub fn watch(&self, name: &'static str, watch: Watch) {
        lock(&self.watched).push((name, watch));
    }

    /// Marks the agent ready (all listeners bound) or not (shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    /// Whether the agent is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// Records the outcome of a configuration reload.
    pub fn set_reload(&self, r: LastReload) {
        *lock(&self.reload) = Some(r);
    }

    /// The last configuration reload's outcome, if any since start.
    pub fn last_reload(&self) -> Option<LastReload> {
        lock(&self.reload).clone()
    }

    /// The overall state and every component's: down when not ready or any is down, degraded
    /// when any is degraded.
    pub fn snapshot(&self) -> (Status, BTreeMap<&'static str, Component>) {
        let mut c = lock(&self.components).clone();
        let now = self.clock.unix_secs();
        for (name, watch) in lock(&self.watched).iter() {
            c.insert(name, watch(now));
        }
        let overall = if !self.is_ready() || c.values().any(|x| x.status == Status::Down) {
            Status::Down
        } else if c.values().any(|x| x.status == Status::Degraded) {
            Status::Degraded
        } else {
            Status::Ok
        };
        (overall, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn overall_is_the_worst_and_watches_read_the_clock() {
        let clock = Clock::manual(Duration::from_secs(1000));
        let h = Health::new(clock.clone());
        h.set("a", Status::Ok, "fine");
        h.watch(
            "b",
            Box::new(|now| {
                let status = if now > 1010 { Status::Down } else { Status::Ok };
                Component::new(status, format!("at {now}"))
            }),
        );
        assert_eq!(h.snapshot().0, Status::Down, "not ready yet");
        h.set_ready(true);
        assert_eq!(h.snapshot().0, Status::Ok);
        h.set("a", Status::Degraded, "slow");
        assert_eq!(h.snapshot().0, Status::Degraded);
        clock.advance(Duration::from_secs(11));
        let (overall, c) = h.snapshot();
        assert_eq!(overall, Status::Down);
        assert_eq!(c["b"].detail, "at 1011");
    }
}
