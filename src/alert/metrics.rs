//! `tallyd_alert_*` on `/metrics`: alert state (like Prometheus's `ALERTS`), evaluation and
//! delivery counters. Reads only the published snapshot and atomics, never evaluator state.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::base::expo;
use crate::base::lock;
use crate::telemetry::MetricsSource;

use super::Shared;

/// Registered with telemetry by [`super::Alerting::start`].
pub struct AlertMetrics(pub Arc<Shared>);

/// Label names tallyd sets itself; a group tag with one of these names is exported as `tag_<name>`.
const RESERVED: &[&str] = &["alert", "severity", "state"];

fn label(out: &mut String, k: &str, v: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    let _ = write!(out, "{k}=\"");
    expo::escape_label_value(out, v);
    out.push('"');
}

impl MetricsSource for AlertMetrics {
    fn render(&self, out: &mut String, om: bool) {
        let s = &self.0;
        let snap = lock(&s.snapshot).clone();
        expo::family_header(
            out,
            "tallyd_alert_state",
            "gauge",
            "Alerts pending or firing (1 per alert instance), like Prometheus's ALERTS.",
            om,
        );
        for a in snap.firing.iter().chain(&snap.pending) {
            let mut l = String::new();
            label(&mut l, "alert", &a.alert);
            label(&mut l, "severity", a.severity.as_str());
            label(&mut l, "state", a.state);
            for (k, v) in &a.labels {
                let k = crate::base::expo::sanitize_label(k);
                let k = if RESERVED.contains(&k.as_str()) {
                    format!("tag_{k}")
                } else {
                    k
                };
                label(&mut l, &k, v);
            }
            expo::sample(out, "tallyd_alert_state", "", &l, 1.0);
        }
        let one = |out: &mut String, name: &str, kind: &str, help: &str, v: f64| {
            expo::family_header(out, name, kind, help, om);
            expo::sample(
                out,
                name,
                if kind == "counter" { "_total" } else { "" },
                "",
                v,
            );
        };
        one(
            out,
            "tallyd_alert_rules",
            "gauge",
            "Alert rules in effect.",
            snap.rules as f64,
        );
        one(
            out,
            "tallyd_alert_evaluations",
            "counter",
            "Windows evaluated.",
            s.evaluations.load(Relaxed) as f64,
        );
        one(
            out,
            "tallyd_alert_windows_dropped",
            "counter",
            "Windows not evaluated because alerts.eval_queue was full.",
            s.windows_dropped.load(Relaxed) as f64,
        );
        one(
            out,
            "tallyd_alert_groups_dropped",
            "counter",
            "New alert groups ignored at alerts.max_groups_per_rule.",
            s.groups_dropped.load(Relaxed) as f64,
        );
        one(
            out,
            "tallyd_alert_self_series_dropped",
            "counter",
            "tallyd_* counter series not tracked for rules at the bound.",
            s.self_series_dropped.load(Relaxed) as f64,
        );

        let d = &s.dispatcher;
        expo::family_header(out, "tallyd_alert_notifications", "counter", "Alert notifications by notifier and result (sent, failed, dropped at the queue bound).", om);
        let mut l = String::new();
        label(&mut l, "notifier", "log");
        label(&mut l, "type", "log");
        label(&mut l, "result", "sent");
        expo::sample(
            out,
            "tallyd_alert_notifications",
            "_total",
            &l,
            d.logged.load(Relaxed) as f64,
        );
        for n in &d.notifiers {
            for (result, v) in [
                ("sent", &n.stats.sent),
                ("failed", &n.stats.failed),
                ("dropped", &n.stats.dropped),
            ] {
                let mut l = String::new();
                label(&mut l, "notifier", &n.name);
                label(&mut l, "type", n.cfg.kind.as_str());
                label(&mut l, "result", result);
                expo::sample(
                    out,
                    "tallyd_alert_notifications",
                    "_total",
                    &l,
                    v.load(Relaxed) as f64,
                );
            }
        }
        expo::family_header(
            out,
            "tallyd_alert_notification_retries",
            "counter",
            "Delivery attempts retried after a retryable failure.",
            om,
        );
        for n in &d.notifiers {
            let mut l = String::new();
            label(&mut l, "notifier", &n.name);
            expo::sample(
                out,
                "tallyd_alert_notification_retries",
                "_total",
                &l,
                n.stats.retries.load(Relaxed) as f64,
            );
        }
        expo::family_header(
            out,
            "tallyd_alert_notify_queue_length",
            "gauge",
            "Notifications waiting per notifier.",
            om,
        );
        for n in &d.notifiers {
            let mut l = String::new();
            label(&mut l, "notifier", &n.name);
            expo::sample(
                out,
                "tallyd_alert_notify_queue_length",
                "",
                &l,
                n.stats.queued.load(Relaxed) as f64,
            );
        }
    }
}
