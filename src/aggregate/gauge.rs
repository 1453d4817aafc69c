//! A gauge's window state in one shard, and how the same gauge from two shards combines.

/// Window state of a gauge in one shard. In delta mode, `delta` sums the relative changes seen
/// after the last absolute value (`abs`), and `delta_seq` says when the first of them arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct GaugeState {
    /// The last absolute value and its `seq`.
    pub(super) abs: Option<(f64, u64)>,
    pub(super) delta: f64,
    pub(super) delta_seq: Option<u64>,
}

impl GaugeState {
    pub(super) fn set(&mut self, v: f64, seq: u64) {
        *self = GaugeState {
            abs: Some((v, seq)),
            delta: 0.0,
            delta_seq: None,
        };
    }

    pub(super) fn shift(&mut self, d: f64, seq: u64) {
        self.delta += d;
        self.delta_seq.get_or_insert(seq);
    }

    /// Combines the same gauge from two shards: the later absolute value wins, and deltas that
    /// arrived after it are added.
    pub fn merge(&mut self, other: GaugeState) {
        let (mut win, lose) = match (self.abs, other.abs) {
            (Some(a), Some(b)) if b.1 > a.1 => (other, *self),
            (None, Some(_)) => (other, *self),
            _ => (*self, other),
        };
        let after = match win.abs {
            Some((_, seq)) => lose.delta_seq.is_some_and(|s| s >= seq),
            None => true,
        };
        if after && lose.delta_seq.is_some() {
            win.delta += lose.delta;
            win.delta_seq = match (win.delta_seq, lose.delta_seq) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        *self = win;
    }

    /// The gauge's value given its value before the window (`prev`, delta mode only).
    pub fn resolve(&self, prev: Option<f64>) -> f64 {
        match self.abs {
            Some((v, _)) => v + self.delta,
            None => prev.unwrap_or(0.0) + self.delta,
        }
    }
}
