//! The wall clock, injected: components read time through a [`Clock`] handed to them, so tests
//! can set it (windows, `for:` durations, no-data alerts) instead of waiting for it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current Unix time. Cloning is cheap; clones of a manual clock share it.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.manual {
            None => f.write_str("Clock::system"),
            Some(ns) => write!(f, "Clock::manual({}ns)", ns.load(Relaxed)),
        }
    }
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands at `at` (since the Unix epoch) until [`Clock::set`] or
    /// [`Clock::advance`] moves it.
    pub fn manual(at: Duration) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(at.as_nanos() as u64))),
        }
    }

    /// Time since the Unix epoch (zero if the system clock is before it).
    pub fn unix(&self) -> Duration {
        match &self.manual {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            Some(ns) => Duration::from_nanos(ns.load(Relaxed)),
        }
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.unix().as_secs()
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> u64 {
        self.unix().as_millis() as u64
    }

    /// The current time as a `SystemTime`.
    pub fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + self.unix()
    }

    /// Moves a manual clock to `at`; the system clock ignores it.
    pub fn set(&self, at: Duration) {
        if let Some(ns) = &self.manual {
            ns.store(at.as_nanos() as u64, Relaxed);
        }
    }

    /// Moves a manual clock forward by `by`; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some(ns) = &self.manual {
            ns.fetch_add(by.as_nanos() as u64, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = Clock::manual(Duration::from_secs(100));
        let d = c.clone();
        assert_eq!(c.unix_secs(), 100);
        d.advance(Duration::from_millis(1500));
        assert_eq!(c.unix_millis(), 101_500);
        c.set(Duration::from_secs(7));
        assert_eq!(d.unix_secs(), 7);
    }

    #[test]
    fn system_clock_is_now() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let t = Clock::system().unix();
        assert!(t >= before && t - before < Duration::from_secs(60));
    }
}
