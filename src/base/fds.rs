//! The file-descriptor budget: `RLIMIT_NOFILE` raised at start, and the listeners' connection
//! caps fitted inside it.
//!
//! Every connection a listener holds is a descriptor. With the usual soft limit of 1024 and
//! caps that add up to more, idle peers on one port took the last descriptors and every other
//! listener (and file opens) failed with EMFILE. So [`raise_limit`] lifts the soft limit to the
//! hard one, and [`fit`] checks the caps against what is left after [`RESERVE`]; caps that do
//! not fit are lowered (max-min fair: small caps are kept whole, the large ones share the
//! rest) so that each cap acts before the process runs out.

/// Descriptors kept for everything but inbound connections: stdio, the runtime's epoll and
/// eventfds, UDP and Unix sockets, the listeners, queue segments and the GPS points file,
/// outbound HTTP connections (delivery, notifiers) and `/proc` reads.
pub const RESERVE: u64 = 256;

/// `RLIMIT_NOFILE` after [`raise_limit`]: the soft limit now, the hard limit, and the soft
/// limit found at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit in force.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The soft limit before tallyd raised it.
    pub was: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped at `nr_open`-like values the
/// kernel refuses: on failure the limit stays as it was).
///
/// # Errors
/// The limit cannot be read.
pub fn raise_limit() -> std::io::Result<Limit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let was = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the valid `raised`; raising the soft limit up to the
        // hard one needs no privilege and affects only this process's descriptor table.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(Limit {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
        was,
    })
}

/// The soft `RLIMIT_NOFILE` in force, if it can be read.
pub fn soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the valid, exclusively borrowed `lim`.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// Descriptors this process has open, from `/proc/self/fd`.
pub fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle itself is one of the entries.
    Some((dir.count() as u64).saturating_sub(1))
}

/// One listener's connection cap: the key that sets it and its configured value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    /// The configuration key (`statsd.tcp_max_connections`, ...).
    pub key: &'static str,
    /// Its value.
    pub value: usize,
}

/// What [`fit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// The caps to use, in the order given (lowered when they did not fit).
    pub caps: Vec<usize>,
    /// Whether the configured caps fit as they are.
    pub fits: bool,
    /// For `/health`: the limit, the caps and what was done.
    pub detail: String,
}

/// Fits `caps` into `limit` less [`RESERVE`] descriptors. When they do not fit, every cap
/// gets at least one, small caps are kept and the large ones share what remains equally.
pub fn fit(limit: u64, caps: &[Cap]) -> Fit {
    let budget = limit.saturating_sub(RESERVE);
    let total: u64 = caps.iter().map(|c| c.value as u64).sum();
    let listed = |values: &[usize]| {
        caps.iter()
            .zip(values)
            .map(|(c, v)| format!("{} = {v}", c.key))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let configured: Vec<usize> = caps.iter().map(|c| c.value).collect();
    if total <= budget {
        return Fit {
            detail: format!(
                "RLIMIT_NOFILE {limit}: connection caps ({}) sum to {total}, within the {budget} descriptors left after a reserve of {RESERVE}",
                listed(&configured)
            ),
            caps: configured,
            fits: true,
        };
    }
    // Max-min fair shares: the smallest caps first, each given at most an equal part of
    // what is left.
    let mut order: Vec<usize> = (0..caps.len()).collect();
    order.sort_by_key(|&i| caps[i].value);
    let mut left = budget;
    let mut out = configured.clone();
    for (n, &i) in order.iter().enumerate() {
        let share = left / (caps.len() - n) as u64;
        let v = (caps[i].value as u64).min(share).max(1);
        out[i] = usize::try_from(v).unwrap_or(usize::MAX);
        left = left.saturating_sub(v);
    }
    Fit {
        detail: format!(
            "RLIMIT_NOFILE {limit} is too low for the configured connection caps ({}; {total} in all, {budget} descriptors left after a reserve of {RESERVE}): lowered to {}; raise LimitNOFILE (or ulimit -n) to at least {} to keep them",
            listed(&configured),
            listed(&out),
            total + RESERVE
        ),
        caps: out,
        fits: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(values: &[usize]) -> Vec<Cap> {
        let keys = ["a", "b", "c", "d", "e"];
        values
            .iter()
            .zip(keys)
            .map(|(&value, key)| Cap { key, value })
            .collect()
    }

    #[test]
    fn caps_that_fit_are_kept() {
        let f = fit(20_000, &caps(&[1024, 10_000, 256]));
        assert!(f.fits);
        assert_eq!(f.caps, vec![1024, 10_000, 256]);
    }

    #[test]
    fn caps_that_do_not_fit_share_the_budget_fairly() {
        // 1024 - 256 = 768 for five listeners: 153 each at most, the small one whole.
        let f = fit(1024, &caps(&[1024, 10_000, 100, 1024, 1024]));
        assert!(!f.fits);
        assert_eq!(f.caps[2], 100);
        assert!(f.caps.iter().sum::<usize>() <= 768, "{:?}", f.caps);
        assert_eq!(f.caps, vec![167, 167, 100, 167, 167]);
        assert!(f.detail.contains("a = 1024") && f.detail.contains("lowered to"));
        assert!(f.detail.contains("at least 13428"), "{}", f.detail);
    }

    #[test]
    fn every_cap_keeps_one_even_without_a_budget() {
        let f = fit(100, &caps(&[5, 5]));
        assert!(!f.fits);
        assert_eq!(f.caps, vec![1, 1]);
    }

    #[test]
    fn the_limit_is_raised_to_the_hard_limit() {
        let l = raise_limit().expect("getrlimit");
        assert_eq!(l.soft, l.hard);
        assert_eq!(soft_limit(), Some(l.soft));
        assert!(open_fds().is_some_and(|n| n > 0));
    }
}
