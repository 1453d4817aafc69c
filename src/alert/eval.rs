//! Rule evaluation on each flushed window: reduce the matching series to one value per group,
//! drive each group's state machine, and emit the notifications the transitions call for.
//!
//! The clock is the flush: `now` is the end of the window being evaluated, so `for`, no-data
//! and repeat intervals are exact and tests need no waiting. The evaluator owns its state and
//! is driven from one task; readers get a [`Snapshot`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use crate::aggregate::Flush;
#[cfg(test)]
use crate::aggregate::Samples;
use crate::base::{expo::sanitize_label, metrics::Family};

pub use super::snapshot::{fingerprint, rfc3339, ActiveAlert, HistoryEntry, Snapshot};

use super::config::Severity;
use super::input::{SelfMetrics, Window};
use super::notify::{AlertEvent, EventStatus};
use super::reduce::Acc;
use super::rules::{format_value, Aggregation, Rule, Source};
use super::state::{Phase, Transition};

/// How long a group that stopped reporting keeps its last value (gauges and non-counting
/// aggregations); after this it counts as cleared: it resolves if firing and is forgotten.
pub const GROUP_HOLD_MS: u64 = 5 * 60 * 1000;

struct Group {
    labels: BTreeMap<String, String>,
    phase: Phase,
    value: Option<f64>,
    seen_ms: u64,
    /// True when the group's data is counted (counters, sets, timers), so a window without
    /// it means zero rather than unknown.
    counting: bool,
    prev_last: Option<(f64, u64)>,
}

struct RuleState {
    rule: Rule,
    groups: HashMap<Vec<String>, Group>,
    seen_ms: Option<u64>,
    first_ms: Option<u64>,
    no_data: Phase,
}

/// The outcome of one evaluation.
#[derive(Default)]
pub struct Output {
    /// Transitions to notify.
    pub events: Vec<AlertEvent>,
    /// Every alert firing now (for notifiers that must be refreshed, like Alertmanager).
    pub firing: Vec<AlertEvent>,
    /// The end of the evaluated window, in Unix milliseconds.
    pub now_ms: u64,
}

/// Evaluates all rules window after window.
pub struct Evaluator {
    rules: Vec<RuleState>,
    own: SelfMetrics,
    host: String,
    repeat_ms: u64,
    max_groups: usize,
    history: VecDeque<HistoryEntry>,
    history_size: usize,
    last_now: u64,
    /// New groups ignored at `alerts.max_groups_per_rule`.
    pub groups_dropped: u64,
    /// Windows evaluated.
    pub evaluations: u64,
}

impl Evaluator {
    /// An evaluator of `rules`, labelling alerts with `host`, renotifying firing alerts every
    /// `repeat_interval`, tracking at most `max_groups` groups per rule and keeping the last
    /// `history_size` transitions.
    pub fn new(
        rules: Vec<Rule>,
        host: String,
        repeat_interval: Duration,
        max_groups: usize,
        history_size: usize,
    ) -> Self {
        Evaluator {
            rules: rules
                .into_iter()
                .map(|rule| RuleState {
                    rule,
                    groups: HashMap::new(),
                    seen_ms: None,
                    first_ms: None,
                    no_data: Phase::Ok,
                })
                .collect(),
            own: SelfMetrics::default(),
            host,
            repeat_ms: repeat_interval.as_millis() as u64,
            max_groups,
            history: VecDeque::new(),
            history_size,
            last_now: 0,
            groups_dropped: 0,
            evaluations: 0,
        }
    }

    /// True when some rule reads `tallyd_*` metrics (so the caller collects them).
    pub fn needs_self_metrics(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.rule.source.selectors().iter().any(|s| s.is_self_metric()))
    }

    /// Self series not tracked at the bound.
    pub fn self_series_dropped(&self) -> u64 {
        self.own.dropped
    }

    /// Evaluates every rule against `flush` and `own`, a snapshot of tallyd's own metrics.
    pub fn evaluate(&mut self, flush: &Flush, own: &[Family], want_firing: bool) -> Output {
        let interval_ms = flush.interval.as_millis() as u64;
        let now = (flush.timestamp * 1000 + interval_ms).max(self.last_now);
        self.last_now = now;
        self.evaluations += 1;
        let own = self.own.read(own);
        let window = Window {
            flush,
            own: &own,
            secs: flush.interval.as_secs_f64(),
        };
        let mut out = Output {
            now_ms: now,
            ..Output::default()
        };
        let mut history = Vec::new();
        for rs in &mut self.rules {
            let repeat = rs.rule.repeat_ms.unwrap_or(self.repeat_ms);
            let ctx = Ctx {
                host: &self.host,
                now,
                repeat,
            };
            let dropped = evaluate_rule(
                rs,
                &window,
                &ctx,
                self.max_groups,
                &mut out.events,
                &mut history,
            );
            self.groups_dropped += dropped;
            if want_firing {
                for g in rs.groups.values() {
                    if let Phase::Firing {
                        since, severity, ..
                    } = g.phase
                    {
                        out.firing.push(ctx.event(
                            &rs.rule,
                            g,
                            EventStatus::Firing,
                            severity,
                            since,
                        ));
                    }
                }
                if let Phase::Firing {
                    since, severity, ..
                } = rs.no_data
                {
                    out.firing.push(ctx.no_data_event(
                        &rs.rule,
                        EventStatus::Firing,
                        severity,
                        since,
                    ));
                }
            }
        }
        for h in history {
            if self.history.len() >= self.history_size {
                self.history.pop_front();
            }
            self.history.push_back(h);
        }
        out
    }

    /// The current alerts and recent history.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            evaluated_at: (self.last_now > 0).then(|| rfc3339(self.last_now)),
            rules: self.rules.len(),
            history: self.history.iter().rev().cloned().collect(),
            ..Snapshot::default()
        };
        for rs in &self.rules {
            let mut push = |labels: &BTreeMap<String, String>, phase: Phase, value, no_data| {
                let (list, since, severity) = match phase {
                    Phase::Ok => return,
                    Phase::Pending { since, severity } => (&mut s.pending, since, severity),
                    Phase::Firing {
                        since, severity, ..
                    } => (&mut s.firing, since, severity),
                };
                let mut all = rs.rule.labels.clone();
                all.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                list.push(ActiveAlert {
                    alert: rs.rule.name.clone(),
                    labels: all,
                    state: phase.name(),
                    severity,
                    value,
                    since: rfc3339(since),
                    builtin: rs.rule.builtin,
                    no_data,
                });
            };
            for g in rs.groups.values() {
                push(&g.labels, g.phase, g.value, false);
            }
            push(&BTreeMap::new(), rs.no_data, None, true);
        }
        let order =
            |a: &ActiveAlert, b: &ActiveAlert| (&a.alert, &a.labels).cmp(&(&b.alert, &b.labels));
        s.firing.sort_by(order);
        s.pending.sort_by(order);
        s
    }
}

struct Ctx<'a> {
    host: &'a str,
    now: u64,
    repeat: u64,
}

impl Ctx<'_> {
    fn event(
        &self,
        rule: &Rule,
        g: &Group,
        status: EventStatus,
        severity: Severity,
        since: u64,
    ) -> AlertEvent {
        let mut labels = rule.labels.clone();
        labels.extend(g.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let threshold = rule.threshold(severity);
        let lookup = |name: &str| -> String {
            match name {
                "alert" => rule.name.clone(),
                "metric" => rule.source.describe(),
                "aggregation" => aggregation_name(rule.aggregation),
                "value" => g.value.map(format_value).unwrap_or_else(|| "n/a".into()),
                "warn" => rule.warn.map(format_value).unwrap_or_default(),
                "critical" => rule.critical.map(format_value).unwrap_or_default(),
                "threshold" => threshold.map(format_value).unwrap_or_default(),
                "severity" => severity.as_str().into(),
                "direction" => rule.direction.as_str().into(),
                "for" => crate::base::duration::format_duration(Duration::from_millis(rule.for_ms)),
                "host" => self.host.into(),
                "state" => status.as_str().into(),
                "tags" if g.labels.is_empty() => String::new(),
                "tags" => {
                    let t: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(" [{}]", t.join(", "))
                }
                _ => String::new(),
            }
        };
        AlertEvent {
            status,
            alert: rule.name.clone(),
            severity,
            previous_severity: None,
            fingerprint: fingerprint(&rule.name, &labels),
            labels,
            metric: rule.source.describe(),
            value: g.value,
            warn: rule.warn,
            critical: rule.critical,
            direction: rule.direction,
            message: rule.message.render(&lookup, &g.labels),
            runbook: rule.runbook.render(&lookup, &g.labels),
            starts_at_ms: since,
            at_ms: self.now,
            repeat: false,
            no_data: false,
            host: self.host.to_string(),
            notify: rule.notify.clone(),
        }
    }

    fn no_data_event(
        &self,
        rule: &Rule,
        status: EventStatus,
        severity: Severity,
        since: u64,
    ) -> AlertEvent {
        let g = Group {
            labels: BTreeMap::new(),
            phase: Phase::Ok,
            value: None,
            seen_ms: 0,
            counting: false,
            prev_last: None,
        };
        let mut e = self.event(rule, &g, status, severity, since);
        e.labels.insert("alert_kind".into(), "no_data".into());
        e.fingerprint = fingerprint(&rule.name, &e.labels);
        e.no_data = true;
        e.message = format!(
            "{}: no data for {} in the last {}",
            rule.name,
            rule.source.describe(),
            crate::base::duration::format_duration(Duration::from_millis(rule.no_data_ms))
        );
        e
    }
}

fn aggregation_name(a: Aggregation) -> String {
    match a {
        Aggregation::Last => "last".into(),
        Aggregation::Avg => "avg".into(),
        Aggregation::Min => "min".into(),
        Aggregation::Max => "max".into(),
        Aggregation::Sum => "sum".into(),
        Aggregation::Count => "count".into(),
        Aggregation::Rate => "rate".into(),
        Aggregation::Quantile(q) => format!("p{}", format_value(q * 100.0)),
    }
}

/// Group key and labels of a series: the values of the rule's `group_by` tags ("" if absent).
fn group_of(
    group_by: &[String],
    tags: &mut dyn Iterator<Item = &str>,
) -> (Vec<String>, BTreeMap<String, String>) {
    if group_by.is_empty() {
        return (Vec::new(), BTreeMap::new());
    }
    let tags: Vec<&str> = tags.collect();
    let mut key = Vec::with_capacity(group_by.len());
    let mut labels = BTreeMap::new();
    for g in group_by {
        let v = tags
            .iter()
            .find_map(|t| t.strip_prefix(g.as_str()).and_then(|r| r.strip_prefix(':')))
            .unwrap_or("");
        key.push(v.to_string());
        if !v.is_empty() {
            labels.insert(sanitize_label(g), v.to_string());
        }
    }
    (key, labels)
}

type Accs = HashMap<Vec<String>, (Acc, BTreeMap<String, String>)>;

/// A group's window: value, labels, and whether its data is counted.
type Current = (Option<f64>, BTreeMap<String, String>, bool);

fn collect(
    window: &Window<'_>,
    rule: &Rule,
    sel: &super::rules::Selector,
    limit: usize,
    dropped: &mut u64,
) -> Accs {
    let mut accs: Accs = HashMap::new();
    window.for_each(sel, |tags, p| {
        let (key, labels) = group_of(&rule.group_by, tags);
        if !accs.contains_key(&key) && accs.len() >= limit {
            *dropped += 1;
            return;
        }
        accs.entry(key)
            .or_insert_with(|| (Acc::default(), labels))
            .0
            .add(p);
    });
    accs
}

/// Evaluates one rule; returns how many groups were dropped at the limit.
fn evaluate_rule(
    rs: &mut RuleState,
    window: &Window<'_>,
    ctx: &Ctx<'_>,
    max_groups: usize,
    events: &mut Vec<AlertEvent>,
    history: &mut Vec<HistoryEntry>,
) -> u64 {
    let now = ctx.now;
    let rule = &rs.rule;
    let mut dropped = 0;
    rs.first_ms.get_or_insert(now);

    // value, labels, counting, last (for a gauge's rate)
    let mut current: HashMap<Vec<String>, Current> = HashMap::new();
    let prev_of = |groups: &HashMap<Vec<String>, Group>, k: &Vec<String>| {
        groups.get(k).and_then(|g| g.prev_last)
    };
    let mut lasts: HashMap<Vec<String>, f64> = HashMap::new();
    let mut matched = false;
    match &rule.source {
        Source::Metric(sel) => {
            for (key, (mut acc, labels)) in collect(window, rule, sel, max_groups, &mut dropped) {
                matched = true;
                let v = acc.value(
                    rule.aggregation,
                    rule.direction,
                    window.secs,
                    prev_of(&rs.groups, &key),
                    now,
                );
                if acc.gauges > 0 {
                    lasts.insert(key.clone(), acc.last(rule.direction));
                }
                current.insert(key, (v, labels, acc.gauges == 0));
            }
        }
        Source::Ratio {
            numerator,
            denominator,
        } => {
            let mut num = collect(window, rule, numerator, max_groups, &mut dropped);
            let den = collect(window, rule, denominator, max_groups, &mut dropped);
            matched = !den.is_empty();
            for (key, (mut d, labels)) in den {
                let dv = d.value(rule.aggregation, rule.direction, window.secs, None, now);
                let nv = match num.get_mut(&key) {
                    Some((n, _)) => {
                        n.value(rule.aggregation, rule.direction, window.secs, None, now)
                    }
                    None if rule.aggregation.counts() => Some(0.0),
                    None => None,
                };
                let v = match (nv, dv) {
                    (Some(n), Some(d)) if d != 0.0 => Some(100.0 * n / d),
                    _ => None,
                };
                current.insert(key, (v, labels, true));
            }
        }
    }
    if matched {
        rs.seen_ms = Some(now);
    }

    for (key, (value, labels, counting)) in current.iter() {
        if !rs.groups.contains_key(key) {
            if rs.groups.len() >= max_groups {
                dropped += 1;
                continue;
            }
            rs.groups.insert(
                key.clone(),
                Group {
                    labels: labels.clone(),
                    phase: Phase::Ok,
                    value: None,
                    seen_ms: now,
                    counting: *counting,
                    prev_last: None,
                },
            );
        }
        if let Some(g) = rs.groups.get_mut(key) {
            g.seen_ms = now;
            g.counting = *counting;
            g.value = *value;
            g.prev_last = lasts.get(key).map(|l| (*l, now));
            let cond = value.and_then(|v| rule.classify(v));
            let t = g.phase.step(now, cond, rule.for_ms, ctx.repeat);
            record(rule, g, t, ctx, events, history);
        }
    }
    let mut forget = Vec::new();
    for (key, g) in rs
        .groups
        .iter_mut()
        .filter(|(k, _)| !current.contains_key(*k))
    {
        let stale = now.saturating_sub(g.seen_ms) >= GROUP_HOLD_MS;
        if g.counting && rule.aggregation.counts() {
            g.value = Some(0.0);
        } else if stale {
            g.value = None;
        }
        let cond = g.value.and_then(|v| rule.classify(v));
        let t = g.phase.step(now, cond, rule.for_ms, ctx.repeat);
        record(rule, g, t, ctx, events, history);
        if stale && g.phase == Phase::Ok {
            forget.push(key.clone());
        }
    }
    for k in forget {
        rs.groups.remove(&k);
    }

    if rule.no_data_ms > 0 {
        // tallyd's own families are watched only once seen: one never rendered belongs to a
        // subsystem that is off. Application metrics are watched from the first evaluation.
        let own = rule.source.selectors().iter().all(|s| s.is_self_metric());
        let armed = if own {
            rs.seen_ms
        } else {
            rs.seen_ms.or(rs.first_ms)
        };
        let cond = armed
            .filter(|t| now.saturating_sub(*t) >= rule.no_data_ms)
            .map(|_| rule.no_data_severity);
        let before = rs.no_data;
        if let Some(t) = rs.no_data.step(now, cond, 0, ctx.repeat) {
            let (status, severity, since, event) = match (t, before) {
                (Transition::Resolved { severity, since }, _) => {
                    (EventStatus::Resolved, severity, since, "resolved")
                }
                (Transition::Fired { severity }, _) => {
                    (EventStatus::Firing, severity, now, "no_data")
                }
                (
                    Transition::Repeated { severity } | Transition::Changed { to: severity, .. },
                    Phase::Firing { since, .. },
                ) => (EventStatus::Firing, severity, since, "repeated"),
                (
                    Transition::Repeated { severity } | Transition::Changed { to: severity, .. },
                    _,
                ) => (EventStatus::Firing, severity, now, "repeated"),
            };
            let mut e = ctx.no_data_event(rule, status, severity, since);
            e.repeat = event == "repeated";
            history.push(HistoryEntry {
                alert: rule.name.clone(),
                labels: e.labels.clone(),
                event,
                severity,
                value: None,
                at: rfc3339(now),
            });
            if status == EventStatus::Firing || rule.send_resolved {
                events.push(e);
            }
        }
    }
    dropped
}

fn record(
    rule: &Rule,
    g: &Group,
    t: Option<Transition>,
    ctx: &Ctx<'_>,
    events: &mut Vec<AlertEvent>,
    history: &mut Vec<HistoryEntry>,
) {
    let Some(t) = t else { return };
    let since = match g.phase {
        Phase::Firing { since, .. } => since,
        _ => ctx.now,
    };
    let (status, severity, event, previous, since) = match t {
        Transition::Fired { severity } => (EventStatus::Firing, severity, "firing", None, since),
        Transition::Changed { from, to } => (EventStatus::Firing, to, "changed", Some(from), since),
        Transition::Repeated { severity } => {
            (EventStatus::Firing, severity, "repeated", None, since)
        }
        Transition::Resolved { severity, since } => {
            (EventStatus::Resolved, severity, "resolved", None, since)
        }
    };
    let mut e = ctx.event(rule, g, status, severity, since);
    e.previous_severity = previous;
    e.repeat = matches!(t, Transition::Repeated { .. });
    history.push(HistoryEntry {
        alert: rule.name.clone(),
        labels: e.labels.clone(),
        event,
        severity,
        value: g.value,
        at: rfc3339(ctx.now),
    });
    if status == EventStatus::Firing || rule.send_resolved {
        events.push(e);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregate::{Series, SeriesValue};
    use crate::alert::config::AlertsConfig;
    use crate::alert::rules::build_rules;
    use crate::base::metrics::{Families, Kind};
    use crate::model::{Context, MetricKind};

    const IV: u64 = 10;

    fn rules(toml_text: &str) -> Vec<Rule> {
        let cfg: AlertsConfig =
            toml::from_str(&format!("default_rules = false\n{toml_text}")).expect("alerts toml");
        cfg.validate().expect("valid");
        build_rules(&cfg, true).expect("rules")
    }

    fn evaluator(toml_text: &str) -> Evaluator {
        Evaluator::new(
            rules(toml_text),
            "host-1".into(),
            Duration::from_secs(3600),
            100,
            50,
        )
    }

    fn series(kind: MetricKind, name: &str, tags: &[&str], value: SeriesValue) -> Series {
        Series::new(Arc::new(Context::from_unsorted(kind, name, tags)), value)
    }
    fn gauge(name: &str, tags: &[&str], v: f64) -> Series {
        series(MetricKind::Gauge, name, tags, SeriesValue::Gauge(v))
    }
    fn counter(name: &str, tags: &[&str], v: f64) -> Series {
        series(MetricKind::Counter, name, tags, SeriesValue::Counter(v))
    }
    fn timer(name: &str, values: &[f64]) -> Series {
        let mut samples = Samples::new();
        for v in values {
            samples.add(*v, 1);
        }
        series(
            MetricKind::Timer,
            name,
            &[],
            SeriesValue::Samples(Box::new(samples)),
        )
    }

    /// Evaluates the window that starts at `t` seconds.
    fn at(e: &mut Evaluator, t: u64, series: Vec<Series>) -> Output {
        at_own(e, t, series, &[])
    }
    fn at_own(e: &mut Evaluator, t: u64, series: Vec<Series>, own: &[Family]) -> Output {
        let flush = Flush {
            timestamp: t,
            interval: Duration::from_secs(IV),
            percentiles: Arc::from(Vec::new()),
            series,
            events: vec![],
            service_checks: vec![],
            recycle: Default::default(),
        };
        e.evaluate(&flush, own, true)
    }

    /// A snapshot of unlabelled self-metric families.
    fn own(families: &[(Kind, &'static str, f64)]) -> Vec<Family> {
        let mut out = Families::new();
        for (kind, name, v) in families {
            out.family(*kind, name, "").value(*v);
        }
        out.into_vec()
    }

    fn kinds(o: &Output) -> Vec<(String, EventStatus, Severity)> {
        o.events
            .iter()
            .map(|e| (e.alert.clone(), e.status, e.severity))
            .collect()
    }

    #[test]
    fn for_holds_before_firing() {
        let mut e = evaluator(
            "[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\ncritical = 100.0\nfor = \"30s\"\n",
        );
        assert!(at(&mut e, 0, vec![gauge("q", &[], 20.0)]).events.is_empty());
        assert_eq!(e.snapshot().pending.len(), 1);
        assert!(at(&mut e, 10, vec![gauge("q", &[], 20.0)])
            .events
            .is_empty());
        assert!(at(&mut e, 20, vec![gauge("q", &[], 20.0)])
            .events
            .is_empty());
        let o = at(&mut e, 30, vec![gauge("q", &[], 200.0)]);
        assert_eq!(
            kinds(&o),
            vec![("Q".into(), EventStatus::Firing, Severity::Critical)]
        );
        assert_eq!(o.events[0].value, Some(200.0));
        assert_eq!(
            o.events[0].message,
            "Q is critical: q last = 200 (above 100)"
        );
        // A dip below the threshold resets `for`.
        let mut e =
            evaluator("[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\nfor = \"20s\"\n");
        at(&mut e, 0, vec![gauge("q", &[], 20.0)]);
        at(&mut e, 10, vec![gauge("q", &[], 5.0)]);
        assert!(at(&mut e, 20, vec![gauge("q", &[], 20.0)])
            .events
            .is_empty());
        assert!(at(&mut e, 30, vec![gauge("q", &[], 20.0)])
            .events
            .is_empty());
        assert_eq!(kinds(&at(&mut e, 40, vec![gauge("q", &[], 20.0)])).len(), 1);
    }

    #[test]
    fn repeat_interval_and_resolution() {
        let mut e = evaluator(
            "[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\ncritical = 50.0\nrepeat_interval = \"30s\"\n",
        );
        assert_eq!(kinds(&at(&mut e, 0, vec![gauge("q", &[], 20.0)])).len(), 1);
        assert!(at(&mut e, 10, vec![gauge("q", &[], 20.0)])
            .events
            .is_empty());
        assert!(at(&mut e, 20, vec![gauge("q", &[], 20.0)])
            .events
            .is_empty());
        let o = at(&mut e, 30, vec![gauge("q", &[], 20.0)]);
        assert!(o.events[0].repeat, "repeat after 30 s");
        let o = at(&mut e, 40, vec![gauge("q", &[], 60.0)]);
        assert_eq!(o.events[0].previous_severity, Some(Severity::Warning));
        assert_eq!(o.events[0].severity, Severity::Critical);
        let o = at(&mut e, 50, vec![gauge("q", &[], 1.0)]);
        assert_eq!(
            kinds(&o),
            vec![("Q".into(), EventStatus::Resolved, Severity::Critical)]
        );
        assert_eq!(
            o.events[0].starts_at_ms, 10_000,
            "resolution carries the start of firing"
        );
        let snap = e.snapshot();
        assert!(snap.firing.is_empty());
        let events: Vec<&str> = snap.history.iter().map(|h| h.event).collect();
        assert_eq!(events, vec!["resolved", "changed", "repeated", "firing"]);
        // send_resolved = false keeps the recovery out of notifications (still in history).
        let mut e = evaluator(
            "[[rules]]\nname = \"Q\"\nmetric = \"q\"\nwarn = 10.0\nsend_resolved = false\n",
        );
        at(&mut e, 0, vec![gauge("q", &[], 20.0)]);
        assert!(at(&mut e, 10, vec![gauge("q", &[], 1.0)]).events.is_empty());
        assert_eq!(e.snapshot().history[0].event, "resolved");
    }

    #[test]
    fn group_by_gives_one_alert_per_group() {
        let mut e = evaluator(
            "[[rules]]\nname = \"Pending\"\nmetric = \"queue.pending\"\ngroup_by = [\"queue_type\"]\nwarn = 1000.0\ncritical = 5000.0\nmessage = \"{{tags.queue_type}}: {{value}}\"\n",
        );
        let o = at(
            &mut e,
            0,
            vec![
                gauge("queue.pending", &["queue_type:email", "host:a"], 1500.0),
                gauge("queue.pending", &["queue_type:email", "host:b"], 7000.0),
                gauge("queue.pending", &["queue_type:sms"], 10.0),
                gauge("queue.pending", &["queue_type:push"], 2000.0),
            ],
        );
        let mut got: Vec<(String, Severity, String)> = o
            .events
            .iter()
            .map(|e| {
                (
                    e.labels["queue_type"].clone(),
                    e.severity,
                    e.message.clone(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("email".into(), Severity::Critical, "email: 7000".into()),
                ("push".into(), Severity::Warning, "push: 2000".into())
            ]
        );
        assert_ne!(o.events[0].fingerprint, o.events[1].fingerprint);
        // Only push recovers.
        let o = at(
            &mut e,
            10,
            vec![
                gauge("queue.pending", &["queue_type:email"], 7000.0),
                gauge("queue.pending", &["queue_type:push"], 3.0),
            ],
        );
        assert_eq!(o.events.len(), 1);
        assert_eq!(
            (
                o.events[0].status,
                o.events[0].labels["queue_type"].as_str()
            ),
            (EventStatus::Resolved, "push")
        );
        assert_eq!(e.snapshot().firing.len(), 1);
    }

    #[test]
    fn ratio_rules_in_percent() {
        let mut e = evaluator(
            "[[rules]]\nname = \"ErrRate\"\naggregation = \"sum\"\nwarn = 5.0\nnumerator = { metric = \"api.requests\", tags = [\"status:5xx\"] }\ndenominator = { metric = \"api.requests\" }\n",
        );
        let o = at(
            &mut e,
            0,
            vec![
                counter("api.requests", &["status:2xx"], 94.0),
                counter("api.requests", &["status:5xx"], 6.0),
            ],
        );
        assert_eq!(
            kinds(&o),
            vec![("ErrRate".into(), EventStatus::Firing, Severity::Warning)]
        );
        assert_eq!(o.events[0].value, Some(6.0));
        assert!(at(
            &mut e,
            10,
            vec![
                counter("api.requests", &["status:2xx"], 50.0),
                counter("api.requests", &["status:5xx"], 4.0)
            ]
        )
        .events
        .is_empty());
        // No errors at all this window: the numerator counts as 0 and the alert resolves.
        let o = at(
            &mut e,
            20,
            vec![counter("api.requests", &["status:2xx"], 100.0)],
        );
        assert_eq!(
            kinds(&o),
            vec![("ErrRate".into(), EventStatus::Resolved, Severity::Warning)]
        );
        assert_eq!(e.snapshot().history[0].value, Some(0.0));
        // No traffic: nothing to divide by, nothing fires.
        assert!(at(&mut e, 30, vec![]).events.is_empty());
    }

    #[test]
    fn no_data_fires_and_resolves() {
        let mut e = evaluator("[[rules]]\nname = \"Live\"\nmetric = \"live.data\"\nno_data = \"30s\"\nno_data_severity = \"critical\"\n");
        assert!(at(&mut e, 0, vec![]).events.is_empty());
        assert!(at(&mut e, 10, vec![]).events.is_empty());
        // First evaluation ends at 10 s; 30 s later (window ending at 40 s) it fires.
        assert!(at(&mut e, 20, vec![]).events.is_empty());
        let o = at(&mut e, 30, vec![]);
        assert_eq!(
            kinds(&o),
            vec![("Live".into(), EventStatus::Firing, Severity::Critical)]
        );
        assert!(o.events[0].no_data);
        assert_eq!(o.events[0].labels["alert_kind"], "no_data");
        assert!(at(&mut e, 40, vec![]).events.is_empty(), "de-duplicated");
        let o = at(&mut e, 50, vec![gauge("live.data", &[], 1.0)]);
        assert_eq!(
            kinds(&o),
            vec![("Live".into(), EventStatus::Resolved, Severity::Critical)]
        );
    }

    #[test]
    fn own_metrics_of_disabled_subsystems_never_fire_no_data() {
        let mut e = evaluator("[[rules]]\nname = \"Gps\"\nmetric = \"tallyd_gps_messages_total\"\naggregation = \"sum\"\nno_data = \"20s\"\n");
        for t in 0..10 {
            let flushes = own(&[(Kind::Counter, "tallyd_flush", 3.0)]);
            assert!(at_own(&mut e, t * IV, vec![], &flushes).events.is_empty());
        }
        // Once the family exists, its disappearance is an alert.
        let with = own(&[(Kind::Counter, "tallyd_gps_messages", 3.0)]);
        assert!(at_own(&mut e, 100, vec![], &with).events.is_empty());
        assert!(at_own(&mut e, 110, vec![], &[]).events.is_empty());
        assert_eq!(kinds(&at_own(&mut e, 120, vec![], &[])).len(), 1);
    }

    #[test]
    fn default_rules_read_own_metrics_with_env_thresholds() {
        let env: Vec<(String, String)> = [
            ("ALERT_QUEUE_PENDING_WARN", "7"),
            ("ALERT_QUEUE_PENDING_CRIT", "70"),
            ("ALERT_NO_DATA_MINUTES", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cfg = crate::config::Config::from_toml_with_env("", "t", &env).expect("config");
        assert_eq!(cfg.alerts.health.queue_pending_warn, 7.0);
        let rules = build_rules(&cfg.alerts, true).expect("rules");
        let mut e = Evaluator::new(rules, "h".into(), Duration::from_secs(3600), 100, 50);
        let own = |pending: u64, samples: u64| {
            own(&[
                (Kind::Gauge, "tallyd_forwarder_queue_depth", pending as f64),
                (Kind::Counter, "tallyd_statsd_samples", samples as f64),
                (Kind::Gauge, "tallyd_flush_duration_seconds", 0.001),
            ])
        };
        assert!(at_own(&mut e, 0, vec![], &own(6, 10)).events.is_empty());
        let o = at_own(&mut e, 10, vec![], &own(8, 20));
        assert_eq!(
            kinds(&o),
            vec![(
                "TallydForwarderQueuePending".into(),
                EventStatus::Firing,
                Severity::Warning
            )]
        );
        let o = at_own(&mut e, 20, vec![], &own(80, 30));
        assert_eq!(o.events[0].severity, Severity::Critical);
        // Samples stop growing: after a minute (ALERT_NO_DATA_MINUTES=1) "no data received" fires.
        let mut fired = None;
        for t in 3..12 {
            let o = at_own(&mut e, t * IV, vec![], &own(80, 30));
            if o.events.iter().any(|e| e.alert == "TallydNoDataReceived") {
                fired = Some(t);
                break;
            }
        }
        assert_eq!(
            fired,
            Some(9),
            "pending from the window at 30 s, firing 60 s later"
        );
        // An invalid environment value names the variable.
        let bad = vec![("ALERT_DLQ_WARN".to_string(), "lots".to_string())];
        let err = crate::config::Config::from_toml_with_env("", "t", &bad).expect_err("bad env");
        assert!(err.to_string().contains("ALERT_DLQ_WARN"), "{err}");
    }

    #[test]
    fn counters_count_zero_when_absent_gauges_hold() {
        let mut e = evaluator(
            "[[rules]]\nname = \"Errs\"\nmetric = \"errors\"\naggregation = \"sum\"\nwarn = 5.0\n[[rules]]\nname = \"Temp\"\nmetric = \"temp\"\nwarn = 50.0\n",
        );
        let o = at(
            &mut e,
            0,
            vec![counter("errors", &[], 9.0), gauge("temp", &[], 80.0)],
        );
        assert_eq!(o.events.len(), 2);
        // Nothing sent next window: no errors counted (resolves); the gauge keeps its value.
        let o = at(&mut e, 10, vec![]);
        assert_eq!(
            kinds(&o),
            vec![("Errs".into(), EventStatus::Resolved, Severity::Warning)]
        );
        assert_eq!(e.snapshot().firing.len(), 1);
        // After GROUP_HOLD_MS without data the gauge's alert clears.
        let later = 10 + GROUP_HOLD_MS / 1000;
        let o = at(&mut e, later, vec![]);
        assert_eq!(
            kinds(&o),
            vec![("Temp".into(), EventStatus::Resolved, Severity::Warning)]
        );
    }

    #[test]
    fn aggregations_over_timers_and_rates() {
        let mut e = evaluator(
            "[[rules]]\nname = \"P95\"\nmetric = \"lat\"\naggregation = \"p95\"\nwarn = 1000.0\n[[rules]]\nname = \"Rate\"\nmetric = \"hits\"\naggregation = \"rate\"\nwarn = 2.0\n[[rules]]\nname = \"Avg\"\nmetric = \"lat\"\naggregation = \"avg\"\nwarn = 2000.0\n",
        );
        let mut values: Vec<f64> = (1..=20).map(|i| i as f64 * 10.0).collect();
        values.extend([5000.0; 5]);
        let o = at(
            &mut e,
            0,
            vec![timer("lat", &values), counter("hits", &[], 30.0)],
        );
        let fired: Vec<String> = o.events.iter().map(|e| e.alert.clone()).collect();
        assert_eq!(
            fired,
            vec!["P95".to_string(), "Rate".to_string()],
            "p95 = 5000, rate = 3/s, avg = 1084"
        );
        assert_eq!(o.events[1].value, Some(3.0));
    }

    #[test]
    fn groups_are_bounded() {
        let mut e = Evaluator::new(
            rules("[[rules]]\nname = \"G\"\nmetric = \"g\"\ngroup_by = [\"k\"]\nwarn = 1.0\n"),
            "h".into(),
            Duration::ZERO,
            3,
            10,
        );
        let s: Vec<Series> = (0..5)
            .map(|i| gauge("g", &[&format!("k:{i}")], 5.0))
            .collect();
        assert_eq!(at(&mut e, 0, s).events.len(), 3);
        assert_eq!(e.groups_dropped, 2);
    }
}
