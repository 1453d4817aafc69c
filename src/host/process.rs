//! Named processes (`host_metrics.process_names`, `host_metrics.process_pidfiles`): whether
//! they run, their CPU, resident memory, threads and open descriptors, summed per name, as
//! Datadog's process check names them (`system.processes.cpu.pct`, tag `process_name`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// What `/proc/<pid>/stat` says of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PidStat {
    /// User plus system CPU time, clock ticks.
    pub ticks: u64,
    /// Threads.
    pub threads: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ...`; the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`. Returns the name and the values.
pub fn parse_pid_stat(text: &str) -> Option<(&str, PidStat)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    // Field 3 (state) is the first after the name; utime is field 14, stime 15, threads 20,
    // rss 24.
    let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    let n = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some((
        comm,
        PidStat {
            ticks: n(14)? + n(15)?,
            threads: n(20)?,
            rss_pages: n(24)?,
        },
    ))
}

/// One name's processes, summed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Processes found.
    pub count: u64,
    /// CPU over the interval, percent of one core; None at the first reading.
    pub cpu_pct: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors (those this process may list).
    pub fds: u64,
}

/// Keeps the last CPU ticks of each watched pid for the next reading's percentages.
#[derive(Default)]
pub struct Processes {
    last: HashMap<(String, u32), u64>,
    at: Option<Instant>,
}

fn sysconf(name: libc::c_int, default: u64) -> u64 {
    // SAFETY: sysconf takes an integer and has no memory effects.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v as u64
    } else {
        default
    }
}

impl Processes {
    /// Reads the processes of every name under `proc_dir`: names matched against
    /// `/proc/<pid>/comm`, and pids read from pidfiles.
    pub fn read(
        &mut self,
        proc_dir: &Path,
        names: &[String],
        pidfiles: &[(String, String)],
    ) -> Vec<(String, Sample)> {
        let mut pids: Vec<(String, u32)> = Vec::new();
        for (name, file) in pidfiles {
            let pid = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            match pid {
                Some(p) => pids.push((name.clone(), p)),
                None => pids.push((name.clone(), 0)),
            }
        }
        if !names.is_empty() {
            if let Ok(dir) = std::fs::read_dir(proc_dir) {
                for e in dir.flatten() {
                    let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
                        continue;
                    };
                    if let Some(n) = names.iter().find(|n| n.as_str() == comm.trim_end()) {
                        pids.push((n.clone(), pid));
                    }
                }
            }
        }
        let now = Instant::now();
        let secs = self.at.map(|t| now.duration_since(t).as_secs_f64());
        let hz = sysconf(libc::_SC_CLK_TCK, 100) as f64;
        let page = sysconf(libc::_SC_PAGESIZE, 4096);
        let mut out: Vec<(String, Sample)> = Vec::new();
        let mut last = HashMap::new();
        let mut cpu: Vec<f64> = Vec::new();
        for (name, pid) in pids {
            let i = match out.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    out.push((name.clone(), Sample::default()));
                    out.len() - 1
                }
            };
            if cpu.len() <= i {
                cpu.resize(i + 1, 0.0);
            }
            if pid == 0 {
                continue;
            }
            let dir = proc_dir.join(pid.to_string());
            let Some(st) = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|t| parse_pid_stat(&t).map(|(_, s)| s))
            else {
                continue;
            };
            let s = &mut out[i].1;
            s.count += 1;
            s.threads += st.threads;
            s.rss_bytes += st.rss_pages * page;
            s.fds += std::fs::read_dir(dir.join("fd")).map_or(0, |d| d.count() as u64);
            let key = (name, pid);
            if let Some(was) = self.last.get(&key) {
                cpu[i] += st.ticks.saturating_sub(*was) as f64;
            }
            last.insert(key, st.ticks);
        }
        if let Some(secs) = secs.filter(|s| *s > 0.0) {
            for (i, (_, s)) in out.iter_mut().enumerate() {
                s.cpu_pct = Some(100.0 * cpu.get(i).copied().unwrap_or(0.0) / hz / secs);
            }
        }
        self.last = last;
        self.at = Some(now);
        out
    }
}
