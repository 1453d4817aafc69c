//! Live reload: SIGHUP and `POST /admin/reload` re-read the file and the environment and put
//! the reloadable part of the new configuration in effect without a restart, so no datagram,
//! window, alert state or queued payload is lost.
//!
//! One task takes the requests one at a time. A reload is all or nothing:
//!
//! 1. the new configuration is loaded and validated exactly as `check-config` does (an error
//!    rejects it, `result="invalid"`, and names it as `check-config` would);
//! 2. it is compared with the running one key by key: a changed key listed in [`RELOADABLE`]
//!    is taken, any other changed key (listen addresses, the queue directory, thread counts)
//!    keeps its running value and is reported by name as needing a restart;
//! 3. the merged configuration (running values for those keys) is validated again, then
//!    applied to the components, the fallible steps first: the log filter, then the alert
//!    rules and notifiers (a failure there restores the log filter: `result="failed"`), then
//!    the swaps that cannot fail (percentiles, the Datadog encoding, delivery targets).
//!
//! The components keep their state: the aggregator keeps its shards, the alert evaluator its
//! groups (by rule name), the queues their payloads; a reloaded sink setting acts from the next
//! window or the next delivery attempt.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::notify;
use crate::aggregate::Aggregator;
use crate::alert;
use crate::base::health::{Health, LastReload};
use crate::base::metrics::{Collect, Families};
use crate::component::reload::Request;
use crate::config::{Config, LogFormat};
use crate::queue::deliver::header_map;
use crate::queue::Registry as QueueRegistry;
use crate::sinks::datadog::sink::headers as dd_headers;
use crate::sinks::datadog::DatadogSink;
use crate::sinks::remote_write::sink::headers as rw_headers;

/// Applies a new log filter (`log.level`); the error says why it is not one.
pub type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Keys (and whole tables) a reload puts in effect. Every other key needs a restart.
pub const RELOADABLE: &[&str] = &[
    "log.level",
    "aggregate.percentiles",
    "alerts.default_rules",
    "alerts.repeat_interval",
    "alerts.notify_queue",
    "alerts.max_attempts",
    "alerts.retry_initial",
    "alerts.retry_max",
    "alerts.timeout",
    "alerts.health",
    "alerts.rules",
    "alerts.notifiers",
    // Datadog: what each window is encoded with, and where it goes (with the API key).
    "datadog.tags",
    "datadog.env",
    "datadog.version",
    "datadog.histogram_aggregates",
    "datadog.histogram_percentiles",
    "datadog.url",
    "datadog.site",
    "datadog.api_key",
    // remote_write: where it goes and with which credentials.
    "remote_write.url",
    "remote_write.headers",
    "remote_write.bearer_token",
    "remote_write.basic_auth_user",
    "remote_write.basic_auth_password",
    // GPS point delivery over HTTP.
    "gps.points_url",
    "gps.points_headers",
];

/// Delivery keys whose change retargets a queue's sender: (key prefix, queue name).
const TARGETS: &[(&str, &str)] = &[
    ("datadog.url", "datadog"),
    ("datadog.site", "datadog"),
    ("datadog.api_key", "datadog"),
    ("remote_write.url", "remote_write"),
    ("remote_write.headers", "remote_write"),
    ("remote_write.bearer_token", "remote_write"),
    ("remote_write.basic_auth_user", "remote_write"),
    ("remote_write.basic_auth_password", "remote_write"),
    ("gps.points_url", "live_points"),
    ("gps.points_headers", "live_points"),
];

/// Whether `key` (dotted) is reloadable: listed, or inside a listed table.
pub fn reloadable(key: &str) -> bool {
    RELOADABLE.iter().any(|p| {
        key == *p || (key.len() > p.len() && key.starts_with(p) && key.as_bytes()[p.len()] == b'.')
    })
}

/// What the process was started with, that a reload re-applies.
pub struct Service {
    /// The configuration file (`--config`); `None` = the embedded defaults.
    pub config_path: Option<PathBuf>,
    /// `--log-level`, which wins over the file's on every reload too.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// Swaps the log filter (`main` installs a reloadable one).
    pub set_log_level: Option<SetLogLevel>,
}

impl Service {
    /// The file and the environment now, with the command line's overrides.
    ///
    /// # Errors
    /// As `check-config` reports them.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        let mut cfg = Config::load(self.config_path.as_deref())?;
        if let Some(l) = &self.log_level {
            cfg.log.level = l.clone();
        }
        if let Some(f) = self.log_format {
            cfg.log.format = f;
        }
        Ok(cfg)
    }
}

/// `tallyd_config_reloads_total{result}`.
#[derive(Default)]
pub struct Counts {
    ok: AtomicU64,
    invalid: AtomicU64,
    failed: AtomicU64,
}

impl Collect for Counts {
    fn collect(&self, out: &mut Families) {
        let f = out.counter(
            "tallyd_config_reloads",
            "Configuration reloads (SIGHUP, POST /admin/reload) by result: ok, invalid (rejected as check-config would), failed (a component could not take it).",
        );
        for (r, c) in [
            ("ok", &self.ok),
            ("invalid", &self.invalid),
            ("failed", &self.failed),
        ] {
            f.sample(&[("result", r)], c.load(Relaxed) as f64);
        }
    }
}

/// The running components a reload reaches.
pub struct Parts {
    /// The aggregator (percentiles).
    pub aggregator: Arc<Aggregator>,
    /// Alerting, when it runs.
    pub alerts: Option<Arc<alert::Shared>>,
    /// Datadog delivery, when it runs (its encoding).
    pub datadog: Option<Arc<DatadogSink>>,
    /// The durable queues: their senders are retargeted.
    pub queues: Arc<QueueRegistry>,
}

impl Parts {
    fn queue(&self, name: &str) -> Option<Arc<crate::queue::sender::Handle>> {
        self.queues
            .all()
            .into_iter()
            .find(|h| h.queue.name() == name)
    }
}

/// The reload task's state.
pub struct ReloadTask {
    /// The configuration in effect, as loaded (before descriptor caps were fitted).
    pub running: Config,
    /// What the process was started with.
    pub service: Service,
    /// What a reload reaches.
    pub parts: Parts,
    /// Where the outcome is shown.
    pub health: Arc<Health>,
    /// The outcome counts.
    pub counts: Arc<Counts>,
}

impl ReloadTask {
    /// Takes requests until `stop` (the start of the drain) or every sender is gone.
    pub fn spawn(mut self, mut requests: mpsc::Receiver<Request>, stop: CancellationToken) {
        tokio::spawn(async move {
            loop {
                let req = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = requests.recv() => match r { Some(r) => r, None => return },
                };
                // Loading reads a file and building notifiers may block briefly: off the
                // async workers, the state moved in and back.
                let (back, outcome) = match tokio::task::spawn_blocking(move || {
                    let outcome = self.reload(req.trigger);
                    (self, outcome)
                })
                .await
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "the reload task failed; reloads stop");
                        return;
                    }
                };
                self = back;
                if let Some(reply) = req.reply {
                    let _ = reply.send(outcome);
                }
            }
        });
    }

    /// One reload, from the file to the components; records and returns its outcome.
    pub fn reload(&mut self, trigger: &'static str) -> LastReload {
        notify::reloading();
        let mut outcome = LastReload {
            at_unix: 0,
            trigger,
            result: "ok",
            error: None,
            applied: Vec::new(),
            restart_required: Vec::new(),
        };
        match self.try_reload(&mut outcome) {
            Ok(()) => {
                self.counts.ok.fetch_add(1, Relaxed);
                tracing::info!(
                    trigger,
                    applied = ?outcome.applied,
                    restart_required = ?outcome.restart_required,
                    "configuration reloaded"
                );
                if !outcome.restart_required.is_empty() {
                    tracing::warn!(keys = ?outcome.restart_required, "changed keys need a restart; their running values are kept");
                }
            }
            Err((result, error)) => {
                let c = if result == "invalid" {
                    &self.counts.invalid
                } else {
                    &self.counts.failed
                };
                c.fetch_add(1, Relaxed);
                tracing::error!(trigger, result, %error, "configuration reload rejected; the running configuration is kept");
                outcome.result = result;
                outcome.error = Some(error);
                outcome.applied.clear();
                outcome.restart_required.clear();
            }
        }
        outcome.at_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.health.set_reload(outcome.clone());
        notify::ready("reloaded");
        outcome
    }

    fn try_reload(&mut self, outcome: &mut LastReload) -> Result<(), (&'static str, String)> {
        let invalid = |e: &dyn std::fmt::Display| ("invalid", e.to_string());
        let new = self.service.load().map_err(|e| invalid(&e))?;
        let (old_t, new_t) = (table(&self.running), table(&new));
        // A section whose component is off (or would be turned off or on) needs a restart.
        let on = |queue: &str, wanted: bool| wanted && self.parts.queue(queue).is_some();
        let alerts_on = self.parts.alerts.is_some();
        let dd_on = self.parts.datadog.is_some() && !new.datadog.api_key.is_empty();
        let rw_on = on("remote_write", !new.remote_write.url.is_empty());
        let points_on = on("live_points", !new.gps.points_url.is_empty());
        let take = |key: &str| {
            reloadable(key)
                && (alerts_on || !key.starts_with("alerts."))
                && (dd_on || !key.starts_with("datadog."))
                && (rw_on || !key.starts_with("remote_write."))
                && (points_on || !key.starts_with("gps."))
        };
        let merged = merge(&old_t, &new_t, "", &take, outcome);
        let next = Config::deserialize(merged).map_err(|e| invalid(&e))?;
        next.validate().map_err(|e| invalid(&e))?;
        let changed = |prefix: &str| outcome.applied.iter().any(|k| within(k, prefix));

        // What can fail without a side effect first: the new targets' headers.
        let mut targets = Vec::new();
        for queue in ["datadog", "remote_write", "live_points"] {
            if !TARGETS.iter().any(|(k, q)| *q == queue && changed(k)) {
                continue;
            }
            let target = match queue {
                "datadog" => {
                    dd_headers(&next.datadog.api_key).map(|h| (next.datadog.base_url(), h))
                }
                "remote_write" => {
                    rw_headers(&next.remote_write).map(|h| (next.remote_write.url.clone(), h))
                }
                _ => header_map(&next.gps.points_headers, "gps.points_headers")
                    .map(|h| (next.gps.points_url.clone(), h)),
            }
            .map_err(|e| invalid(&e))?;
            targets.push((queue, target));
        }

        // Fallible steps next; each failure undoes the steps before it.
        let log_changed = next.log.level != self.running.log.level;
        if log_changed {
            if let Some(set) = &self.service.set_log_level {
                set(&next.log.level).map_err(|e| invalid(&e))?;
            }
        }
        if changed("alerts") {
            if let Some(a) = &self.parts.alerts {
                if let Err(e) = a.reload(&next.alerts) {
                    if let (true, Some(set)) = (log_changed, &self.service.set_log_level) {
                        let _ = set(&self.running.log.level);
                    }
                    return Err(("failed", e.to_string()));
                }
            }
        }
        // Swaps that cannot fail.
        if changed("aggregate.percentiles") {
            self.parts
                .aggregator
                .set_percentiles(&next.aggregate.percentiles);
        }
        if changed("datadog") {
            if let Some(dd) = &self.parts.datadog {
                dd.set_encoding(&next.datadog);
            }
        }
        for (queue, (url, headers)) in targets {
            if let Some(h) = self.parts.queue(queue) {
                h.deliver.retarget(&url, headers);
                tracing::info!(queue, url = %crate::base::redact::url(&url), "delivery retargeted; queued payloads go there");
            }
        }
        self.running = next;
        Ok(())
    }
}

/// `key` is `prefix` or inside it.
fn within(key: &str, prefix: &str) -> bool {
    key == prefix || key.strip_prefix(prefix).is_some_and(|r| r.starts_with('.'))
}

/// The configuration as a TOML value (plain structs of strings, numbers and arrays).
fn table(cfg: &Config) -> toml::Value {
    toml::Value::try_from(cfg).unwrap_or_else(|_| toml::Value::Table(toml::Table::new()))
}

/// `old` with every changed key `take` accepts set from `new` (listed in `applied`), and
/// every other changed key kept (listed in `restart_required`).
fn merge(
    old: &toml::Value,
    new: &toml::Value,
    path: &str,
    take: &dyn Fn(&str) -> bool,
    out: &mut LastReload,
) -> toml::Value {
    if old == new {
        return old.clone();
    }
    if !path.is_empty() && take(path) {
        out.applied.push(path.to_string());
        return new.clone();
    }
    let (toml::Value::Table(o), toml::Value::Table(n)) = (old, new) else {
        out.restart_required.push(path.to_string());
        return old.clone();
    };
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let mut t = toml::Table::new();
    for (k, ov) in o {
        match n.get(k) {
            Some(nv) => {
                t.insert(k.clone(), merge(ov, nv, &join(k), take, out));
            }
            // Gone from a map (a notifier removed, a header dropped).
            None if take(&join(k)) => out.applied.push(join(k)),
            None => {
                out.restart_required.push(join(k));
                t.insert(k.clone(), ov.clone());
            }
        }
    }
    for (k, nv) in n {
        if o.contains_key(k) {
            continue;
        }
        if take(&join(k)) {
            out.applied.push(join(k));
            t.insert(k.clone(), nv.clone());
        } else {
            out.restart_required.push(join(k));
        }
    }
    toml::Value::Table(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> LastReload {
        LastReload {
            at_unix: 0,
            trigger: "test",
            result: "ok",
            error: None,
            applied: Vec::new(),
            restart_required: Vec::new(),
        }
    }

    fn cfg(text: &str) -> Config {
        Config::from_toml_with_env(text, "t", &[]).expect("valid")
    }

    #[test]
    fn reloadable_keys_are_taken_and_the_others_keep_their_running_value() {
        let old = cfg("[statsd]\nudp_listen = \"127.0.0.1:8125\"\n");
        let new = cfg(r#"
[log]
level = "debug"
[statsd]
udp_listen = "127.0.0.1:9999"
[aggregate]
percentiles = [0.9]
[queue]
directory = "/elsewhere"
[alerts.notifiers.hook]
url = "http://127.0.0.1:1/hook"
"#);
        let mut out = outcome();
        let merged = merge(&table(&old), &table(&new), "", &reloadable, &mut out);
        let next = Config::deserialize(merged).expect("merged");
        assert_eq!(next.log.level, "debug");
        assert_eq!(next.aggregate.percentiles, vec![0.9]);
        assert_eq!(next.statsd.udp_listen, "127.0.0.1:8125");
        assert_eq!(next.queue.directory, old.queue.directory);
        assert!(next.alerts.notifiers.contains_key("hook"));
        assert_eq!(
            out.applied,
            vec!["aggregate.percentiles", "alerts.notifiers", "log.level"]
        );
        assert_eq!(
            out.restart_required,
            vec!["queue.directory", "statsd.udp_listen"]
        );

        // And back: the notifier removed is applied too.
        let mut out = outcome();
        let merged = merge(&table(&next), &table(&old), "", &reloadable, &mut out);
        let back = Config::deserialize(merged).expect("merged");
        assert!(back.alerts.notifiers.is_empty());
        assert_eq!(
            out.applied,
            vec!["aggregate.percentiles", "alerts.notifiers", "log.level"]
        );
        assert!(
            out.restart_required.is_empty(),
            "{:?}",
            out.restart_required
        );
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(reloadable("alerts.health.dlq_warn"));
        assert!(reloadable("log.level"));
        assert!(!reloadable("log.levels"));
        assert!(!reloadable("log.format"));
        assert!(!reloadable("alerts.enabled"));
    }
}
