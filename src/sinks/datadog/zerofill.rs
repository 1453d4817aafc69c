//! Counter zero-fill, as the Datadog Agent does it: a counter that stops receiving samples is
//! sent as 0 in every following window for `datadog.expiry_seconds` (the Agent's
//! `dogstatsd_expiry_seconds`, default 300) after its last sample, then forgotten. So
//! `.as_count()` graphs and "sum of errors" monitors read 0 rather than a gap and No Data.
//!
//! Held on the Datadog encoder thread; bounded by the counters the aggregator saw within the
//! expiry (themselves bounded by `aggregate.max_contexts`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::aggregate::Flush;
use crate::model::{Context, MetricKind};

/// The counters remembered for zero-fill, with the window (Unix seconds) of their last sample.
#[derive(Debug, Default)]
pub struct ZeroFill {
    expiry_secs: u64,
    last: HashMap<Arc<Context>, u64>,
}

impl ZeroFill {
    /// Zero-fill for `expiry_secs` after a counter's last sample; 0 turns it off.
    pub fn new(expiry_secs: u64) -> ZeroFill {
        ZeroFill {
            expiry_secs,
            last: HashMap::new(),
        }
    }

    /// Notes the window's counters and returns those to send as 0 in it: seen before, not in
    /// this window, and last seen at most `expiry_secs` before it. Older ones are forgotten.
    pub fn window(&mut self, flush: &Flush) -> Vec<Arc<Context>> {
        if self.expiry_secs == 0 {
            return Vec::new();
        }
        let ts = flush.timestamp;
        for s in &flush.series {
            // OTLP sums (COUNTs) are not zero-filled: the Agent does it for DogStatsD counters.
            if s.ctx.kind() == MetricKind::Counter && !s.count {
                self.last.insert(Arc::clone(&s.ctx), ts);
            }
        }
        let expiry = self.expiry_secs;
        let mut zeros = Vec::new();
        self.last.retain(|ctx, last| {
            if *last >= ts {
                true
            } else if ts - *last <= expiry {
                zeros.push(Arc::clone(ctx));
                true
            } else {
                false
            }
        });
        zeros
    }

    /// Counters remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no counter is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::SeriesValue;
    use crate::sinks::testutil::flush as fixture;

    #[test]
    fn zeros_for_the_expiry_then_forgotten() {
        let mut z = ZeroFill::new(30);
        let once = fixture(
            100,
            vec![(
                MetricKind::Counter,
                "errors",
                &["a:b"],
                SeriesValue::Counter(1.0),
            )],
        );
        assert!(z.window(&once).is_empty());
        let mut zeroed = Vec::new();
        for ts in (110..=150).step_by(10) {
            let f = fixture(ts, vec![]);
            zeroed.push((ts, z.window(&f).len()));
        }
        assert_eq!(
            zeroed,
            vec![(110, 1), (120, 1), (130, 1), (140, 0), (150, 0)]
        );
        assert!(z.is_empty());
        assert!(ZeroFill::new(0).window(&once).is_empty());
    }
}
