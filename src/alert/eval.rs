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

mod replace;

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
#[path = "eval_tests.rs"]
mod tests;
