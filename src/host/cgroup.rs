//! cgroup v2: which cgroup this process is in (`/proc/self/cgroup` and the `cgroup2` mount in
//! `/proc/self/mountinfo`), and its limits and usage (`cpu.max`, `cpu.stat`, `memory.max`,
//! `memory.current`, `memory.events`, `pids.current`, `pids.max`). Parsers are pure; `read`
//! reads one cgroup directory.

use std::path::{Path, PathBuf};

use super::procfs::Mount;

/// The v2 path of this process (the `0::` line of `/proc/self/cgroup`); None on a v1-only
/// system.
pub fn v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
}

/// The directory of cgroup `path` under the `cgroup2` mount in `mounts`. A mount whose root is
/// not `/` (a container without its own cgroup namespace sees its cgroup mounted as the root)
/// holds `path` below that root.
pub fn v2_dir(mounts: &[Mount], path: &str) -> Option<PathBuf> {
    let m = mounts.iter().find(|m| m.fs_type == "cgroup2")?;
    let rel = if m.root == "/" {
        path
    } else {
        path.strip_prefix(m.root.as_str()).unwrap_or(path)
    };
    let rel = rel.trim_start_matches('/');
    Some(Path::new(&m.mount_point).join(rel))
}

/// `cpu.max`: (quota, period) in microseconds; quota None when `max` (no limit).
pub fn parse_cpu_max(text: &str) -> Option<(Option<u64>, u64)> {
    let mut f = text.split_ascii_whitespace();
    let quota = match f.next()? {
        "max" => None,
        q => Some(q.parse().ok()?),
    };
    let period = f.next().map_or(Some(100_000), |p| p.parse().ok())?;
    Some((quota, period))
}

/// `memory.max`, `pids.max`: `Some(Some(n))` for a number, `Some(None)` for `max`, None for
/// text that is neither.
pub fn parse_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        v => v.parse().ok().map(Some),
    }
}

/// Flat keyed files (`cpu.stat`, `memory.events`): `key value` per line.
pub fn parse_keyed(text: &str) -> Vec<(&str, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

fn keyed(list: &[(&str, u64)], key: &str) -> Option<u64> {
    list.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// One reading of a cgroup's limits and usage. Files the kernel does not provide (a
/// controller not enabled for the cgroup, the root cgroup's missing limits) are None.
#[allow(missing_docs)] // the kernel\'s field names
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cgroup {
    /// `cpu.max`: quota and period in microseconds.
    pub cpu_max: Option<(Option<u64>, u64)>,
    pub usage_usec: Option<u64>,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
    /// `memory.max`: None inside for `max`.
    pub memory_max: Option<Option<u64>>,
    pub memory_current: Option<u64>,
    pub oom_kill: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_max: Option<Option<u64>>,
}

impl Cgroup {
    /// The CPU limit in cores (quota / period), when there is one.
    pub fn cpu_limit_cores(&self) -> Option<f64> {
        match self.cpu_max {
            Some((Some(q), p)) if p > 0 => Some(q as f64 / p as f64),
            _ => None,
        }
    }

    /// What `/health` says about the limits found.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.cpu_limit_cores() {
            Some(c) => parts.push(format!("cpu.max {c} cores")),
            None if self.cpu_max.is_some() => parts.push("cpu.max max".into()),
            None => {}
        }
        match self.memory_max {
            Some(Some(b)) => parts.push(format!("memory.max {b} bytes")),
            Some(None) => parts.push("memory.max max".into()),
            None => {}
        }
        match self.pids_max {
            Some(Some(n)) => parts.push(format!("pids.max {n}")),
            Some(None) => parts.push("pids.max max".into()),
            None => {}
        }
        if parts.is_empty() {
            "no limit files (root cgroup or controllers not enabled)".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Reads the cgroup v2 directory `dir`. Counts files present but unparsable in `bad`.
pub fn read(dir: &Path, bad: &mut u64) -> Cgroup {
    let file = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let mut c = Cgroup::default();
    if let Some(t) = file("cpu.max") {
        c.cpu_max = parse_cpu_max(&t);
        *bad += u64::from(c.cpu_max.is_none());
    }
    if let Some(t) = file("cpu.stat") {
        let kv = parse_keyed(&t);
        c.usage_usec = keyed(&kv, "usage_usec");
        c.nr_periods = keyed(&kv, "nr_periods");
        c.nr_throttled = keyed(&kv, "nr_throttled");
        c.throttled_usec = keyed(&kv, "throttled_usec");
    }
    let mut max = |name: &str| {
        let t = file(name)?;
        let v = parse_max(&t);
        *bad += u64::from(v.is_none());
        v
    };
    c.memory_max = max("memory.max");
    c.pids_max = max("pids.max");
    let number = |name: &str, bad: &mut u64| {
        let t = file(name)?;
        let v = t.trim().parse().ok();
        *bad += u64::from(v.is_none());
        v
    };
    c.memory_current = number("memory.current", bad);
    c.pids_current = number("pids.current", bad);
    if let Some(t) = file("memory.events") {
        c.oom_kill = keyed(&parse_keyed(&t), "oom_kill");
    }
    c
}
