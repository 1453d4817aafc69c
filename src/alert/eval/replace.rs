//! A configuration reload's new rules, put in place of the old ones without losing the state
//! of the rules kept.

use std::collections::HashMap;
use std::time::Duration;

use super::super::rules::Rule;
use super::super::state::Phase;
use super::{Evaluator, RuleState};

impl Evaluator {
    /// Replaces the rules (a configuration reload) and the default repeat interval. A rule
    /// whose name was in effect keeps its groups, their phases and its no-data state, so an
    /// alert firing before the reload is not notified again as new; a rule with a new
    /// definition is judged by it from the next window. Rules no longer configured are
    /// forgotten (their alerts are not notified as resolved).
    pub fn replace_rules(&mut self, rules: Vec<Rule>, repeat_interval: Duration) {
        let mut old: HashMap<String, RuleState> = self
            .rules
            .drain(..)
            .map(|rs| (rs.rule.name.clone(), rs))
            .collect();
        self.rules = rules
            .into_iter()
            .map(|rule| match old.remove(&rule.name) {
                Some(rs) => RuleState { rule, ..rs },
                None => RuleState {
                    rule,
                    groups: HashMap::new(),
                    seen_ms: None,
                    first_ms: None,
                    no_data: Phase::Ok,
                },
            })
            .collect();
        self.repeat_ms = repeat_interval.as_millis() as u64;
    }
}
