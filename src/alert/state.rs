//! The per-group alert state machine: ok → pending → firing (warning or critical) → resolved.
//!
//! Pure: it is driven with an explicit clock (milliseconds, the flush timestamp) and returns
//! what should be notified, so every transition is tested without waiting.

use serde::Serialize;

use super::config::Severity;

/// Where one alert instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Phase {
    /// The condition does not hold.
    Ok,
    /// The condition holds since `since`, not yet for the rule's `for`.
    Pending {
        /// When the condition was first seen (ms).
        since: u64,
        /// The severity the latest value calls for.
        severity: Severity,
    },
    /// Notified; `last_sent` drives the repeat interval.
    Firing {
        /// When the alert fired (ms).
        since: u64,
        /// The severity notified last.
        severity: Severity,
        /// When the last notification was sent (ms).
        last_sent: u64,
    },
}

/// What a step asks to notify.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Pending for the rule's `for` (or at once with no `for`): the alert fires.
    Fired {
        /// The severity it fires at.
        severity: Severity,
    },
    /// Still firing at another severity (sent at once, without waiting for the repeat).
    Changed {
        /// The severity notified before.
        from: Severity,
        /// The new severity.
        to: Severity,
    },
    /// Still firing; the repeat interval has passed since the last notification.
    Repeated {
        /// The severity it still fires at.
        severity: Severity,
    },
    /// The condition no longer holds for a firing alert.
    Resolved {
        /// The severity it fired at last.
        severity: Severity,
        /// When it fired (ms).
        since: u64,
    },
}

impl Phase {
    /// Advances with the condition observed at `now`. `repeat_ms == 0` disables repeats.
    pub fn step(
        &mut self,
        now: u64,
        cond: Option<Severity>,
        for_ms: u64,
        repeat_ms: u64,
    ) -> Option<Transition> {
        match (*self, cond) {
            (Phase::Ok, None) => None,
            (Phase::Ok, Some(severity)) => {
                *self = Phase::Pending {
                    since: now,
                    severity,
                };
                self.promote(now, for_ms)
            }
            (Phase::Pending { .. }, None) => {
                *self = Phase::Ok;
                None
            }
            (Phase::Pending { since, .. }, Some(severity)) => {
                *self = Phase::Pending { since, severity };
                self.promote(now, for_ms)
            }
            (
                Phase::Firing {
                    severity, since, ..
                },
                None,
            ) => {
                *self = Phase::Ok;
                Some(Transition::Resolved { severity, since })
            }
            (
                Phase::Firing {
                    severity,
                    since,
                    last_sent,
                },
                Some(to),
            ) => {
                if to != severity {
                    *self = Phase::Firing {
                        since,
                        severity: to,
                        last_sent: now,
                    };
                    Some(Transition::Changed { from: severity, to })
                } else if repeat_ms > 0 && now.saturating_sub(last_sent) >= repeat_ms {
                    *self = Phase::Firing {
                        since,
                        severity,
                        last_sent: now,
                    };
                    Some(Transition::Repeated { severity })
                } else {
                    None
                }
            }
        }
    }

    fn promote(&mut self, now: u64, for_ms: u64) -> Option<Transition> {
        if let Phase::Pending { since, severity } = *self {
            if now.saturating_sub(since) >= for_ms {
                *self = Phase::Firing {
                    since: now,
                    severity,
                    last_sent: now,
                };
                return Some(Transition::Fired { severity });
            }
        }
        None
    }

    /// The severity pending or firing; `None` when ok.
    pub fn severity(&self) -> Option<Severity> {
        match self {
            Phase::Ok => None,
            Phase::Pending { severity, .. } | Phase::Firing { severity, .. } => Some(*severity),
        }
    }

    /// `ok`, `pending` or `firing`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Ok => "ok",
            Phase::Pending { .. } => "pending",
            Phase::Firing { .. } => "firing",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Severity::*;

    #[test]
    fn for_delays_firing_and_a_gap_resets_it() {
        let mut p = Phase::Ok;
        assert_eq!(p.step(0, Some(Warning), 30_000, 0), None);
        assert_eq!(p.name(), "pending");
        assert_eq!(p.step(20_000, Some(Warning), 30_000, 0), None);
        // Condition clears before `for`: back to ok, nothing sent.
        assert_eq!(p.step(25_000, None, 30_000, 0), None);
        assert_eq!(p, Phase::Ok);
        assert_eq!(p.step(30_000, Some(Warning), 30_000, 0), None);
        assert_eq!(
            p.step(60_000, Some(Critical), 30_000, 0),
            Some(Transition::Fired { severity: Critical })
        );
    }

    #[test]
    fn zero_for_fires_at_once() {
        let mut p = Phase::Ok;
        assert_eq!(
            p.step(5, Some(Critical), 0, 0),
            Some(Transition::Fired { severity: Critical })
        );
    }

    #[test]
    fn dedup_repeat_change_and_resolve() {
        let mut p = Phase::Ok;
        let repeat = 60_000;
        assert_eq!(
            p.step(0, Some(Warning), 0, repeat),
            Some(Transition::Fired { severity: Warning })
        );
        // Still firing: de-duplicated until the repeat interval.
        assert_eq!(p.step(10_000, Some(Warning), 0, repeat), None);
        assert_eq!(p.step(59_999, Some(Warning), 0, repeat), None);
        assert_eq!(
            p.step(60_000, Some(Warning), 0, repeat),
            Some(Transition::Repeated { severity: Warning })
        );
        assert_eq!(
            p.step(70_000, Some(Critical), 0, repeat),
            Some(Transition::Changed {
                from: Warning,
                to: Critical
            })
        );
        assert_eq!(p.step(129_999, Some(Critical), 0, repeat), None);
        assert_eq!(
            p.step(130_000, Some(Critical), 0, repeat),
            Some(Transition::Repeated { severity: Critical })
        );
        assert_eq!(
            p.step(140_000, None, 0, repeat),
            Some(Transition::Resolved {
                severity: Critical,
                since: 0
            })
        );
        assert_eq!(p, Phase::Ok);
        // No repeats when the interval is 0.
        p.step(200_000, Some(Warning), 0, 0);
        assert_eq!(p.step(10_000_000, Some(Warning), 0, 0), None);
    }
}
