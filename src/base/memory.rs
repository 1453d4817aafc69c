//! Handing freed heap memory back to the kernel after a large drop in what tallyd holds.
//!
//! glibc keeps what the aggregator and the exposition free (many small blocks, contexts and
//! series) inside its arenas: after a cardinality burst expires, RSS stays at the burst's level
//! although the memory is free (RELIABILITY.md, "Cardinality bomb"). `malloc_trim` returns the
//! free pages; it walks the arenas, so it runs only after a large drop, not every window.

/// Decides when a drop in held entries (contexts + series) is worth a trim: when they fell by a
/// quarter or more of the most held since the last trim, and by at least [`Trim::MIN_DROP`].
#[derive(Debug, Default)]
pub struct Trim {
    high: u64,
}

impl Trim {
    /// Drops smaller than this never trim: the pages freed would not be worth the walk.
    pub const MIN_DROP: u64 = 10_000;

    /// Records `held` entries now; true when a trim is due (and counts as done).
    pub fn due(&mut self, held: u64) -> bool {
        if held >= self.high {
            self.high = held;
            return false;
        }
        if self.high - held >= Self::MIN_DROP && held <= self.high / 4 * 3 {
            self.high = held;
            return true;
        }
        false
    }
}

/// Returns free heap pages to the kernel (glibc's `malloc_trim`); nothing elsewhere.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks and releases pages
    // of free chunks; it touches no memory the program uses.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_large_drop_not_on_small_ones() {
        let mut t = Trim::default();
        assert!(!t.due(200_000));
        assert!(!t.due(160_000), "a fifth less: not yet");
        assert!(t.due(150_000), "the contexts expired, the series not yet");
        assert!(t.due(6_000), "the series expired too");
        assert!(!t.due(6_000), "once");
        assert!(!t.due(0), "6,000 fewer is below the minimum drop");
        assert!(!t.due(40_000));
        assert!(!t.due(31_000), "9,000 fewer is below the minimum drop");
        assert!(t.due(30_000));
        release_free_memory();
    }
}
