//! `tallyd_alert_*` on `/metrics`: alert state (like Prometheus's `ALERTS`), evaluation and
//! delivery counters. Reads only the published snapshot and atomics, never evaluator state.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::base::lock;
use crate::base::metrics::{Collect, Families, Kind};

use super::Shared;

/// Registered with telemetry by [`super::Alerting::start`].
pub struct AlertMetrics(pub Arc<Shared>);

/// Label names tallyd sets itself; a group tag with one of these names is exported as `tag_<name>`.
const RESERVED: &[&str] = &["alert", "severity", "state"];

impl Collect for AlertMetrics {
    fn collect(&self, out: &mut Families) {
        let s = &self.0;
        let snap = lock(&s.snapshot).clone();
        let f = out.gauge(
            "tallyd_alert_state",
            "Alerts pending or firing (1 per alert instance), like Prometheus's ALERTS.",
        );
        for a in snap.firing.iter().chain(&snap.pending) {
            let exported: Vec<(String, &str)> = a
                .labels
                .iter()
                .map(|(k, v)| {
                    let k = crate::base::expo::sanitize_label(k);
                    let k = if RESERVED.contains(&k.as_str()) {
                        format!("tag_{k}")
                    } else {
                        k
                    };
                    (k, v.as_str())
                })
                .collect();
            let mut labels: Vec<(&str, &str)> = vec![
                ("alert", &a.alert),
                ("severity", a.severity.as_str()),
                ("state", a.state),
            ];
            labels.extend(exported.iter().map(|(k, v)| (k.as_str(), *v)));
            f.sample(&labels, 1.0);
        }
        out.gauge("tallyd_alert_rules", "Alert rules in effect.")
            .value(snap.rules as f64);
        let counters = [
            (
                "tallyd_alert_evaluations",
                "Windows evaluated.",
                &s.evaluations,
            ),
            (
                "tallyd_alert_windows_dropped",
                "Windows not evaluated because alerts.eval_queue was full.",
                &s.windows_dropped,
            ),
            (
                "tallyd_alert_groups_dropped",
                "New alert groups ignored at alerts.max_groups_per_rule.",
                &s.groups_dropped,
            ),
            (
                "tallyd_alert_self_series_dropped",
                "tallyd_* counter series not tracked for rules at the bound.",
                &s.self_series_dropped,
            ),
        ];
        out.atomics(Kind::Counter, &[], &counters);

        let d = s.dispatcher();
        let d = &d;
        let f = out.counter(
            "tallyd_alert_notifications",
            "Alert notifications by notifier and result (sent, failed, dropped at the queue bound).",
        );
        f.sample(
            &[("notifier", "log"), ("type", "log"), ("result", "sent")],
            d.logged.load(Relaxed) as f64,
        );
        for n in &d.notifiers {
            for (result, v) in [
                ("sent", &n.stats.sent),
                ("failed", &n.stats.failed),
                ("dropped", &n.stats.dropped),
            ] {
                f.sample(
                    &[
                        ("notifier", &n.name),
                        ("type", n.cfg.kind.as_str()),
                        ("result", result),
                    ],
                    v.load(Relaxed) as f64,
                );
            }
        }
        let f = out.counter(
            "tallyd_alert_notification_retries",
            "Delivery attempts retried after a retryable failure.",
        );
        f.by(
            "notifier",
            d.notifiers
                .iter()
                .map(|n| (&n.name, n.stats.retries.load(Relaxed) as f64)),
        );
        let f = out.gauge(
            "tallyd_alert_notify_queue_length",
            "Notifications waiting per notifier.",
        );
        f.by(
            "notifier",
            d.notifiers
                .iter()
                .map(|n| (&n.name, n.stats.queued.load(Relaxed) as f64)),
        );
    }
}
