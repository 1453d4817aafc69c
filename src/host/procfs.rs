//! Parsers of the `/proc` files the host collector reads: pure functions from the file's text
//! to plain values, tested on copies of real files (`tests/fixtures/host/`). A line that does
//! not parse is skipped and counted by the caller (`Parsed::bad`), never guessed at.

/// Per-mode CPU time from one `cpu` line of `/proc/stat`, in clock ticks (USER_HZ).
#[allow(missing_docs)] // the kernel\'s field names
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    pub guest: u64,
    pub guest_nice: u64,
}

impl CpuTimes {
    /// All ticks, counting guest time once: the kernel already includes it in `user`/`nice`.
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// What `/proc/stat` says.
#[allow(missing_docs)] // the kernel\'s field names
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stat {
    /// The `cpu` line (all CPUs).
    pub total: CpuTimes,
    /// `cpuN` lines, as (N, times).
    pub cpus: Vec<(u32, CpuTimes)>,
    /// Context switches since boot (`ctxt`).
    pub ctxt: Option<u64>,
    /// Processes and threads created since boot (`processes`).
    pub processes: Option<u64>,
    /// Boot time, Unix seconds (`btime`).
    pub btime: Option<u64>,
    pub procs_running: Option<u64>,
    pub procs_blocked: Option<u64>,
}

fn num(s: Option<&str>) -> Option<u64> {
    s?.parse().ok()
}

/// Parses `/proc/stat`. Kernels before 2.6.11 have no `steal`, before 2.6.24 no `guest`,
/// before 2.6.33 no `guest_nice` column: missing columns read as 0. Returns None without a
/// `cpu` line.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let mut stat = Stat::default();
    let mut seen_total = false;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(key) = f.next() else { continue };
        if let Some(n) = key.strip_prefix("cpu") {
            let vals: Vec<u64> = f.map_while(|v| v.parse().ok()).collect();
            if vals.len() < 4 {
                continue;
            }
            let at = |i: usize| vals.get(i).copied().unwrap_or(0);
            let t = CpuTimes {
                user: at(0),
                nice: at(1),
                system: at(2),
                idle: at(3),
                iowait: at(4),
                irq: at(5),
                softirq: at(6),
                steal: at(7),
                guest: at(8),
                guest_nice: at(9),
            };
            if n.is_empty() {
                stat.total = t;
                seen_total = true;
            } else if let Ok(i) = n.parse() {
                stat.cpus.push((i, t));
            }
            continue;
        }
        let v = num(f.next());
        match key {
            "ctxt" => stat.ctxt = v,
            "processes" => stat.processes = v,
            "btime" => stat.btime = v,
            "procs_running" => stat.procs_running = v,
            "procs_blocked" => stat.procs_blocked = v,
            _ => {}
        }
    }
    seen_total.then_some(stat)
}

/// CPU utilisation by mode between two readings, in percent of the ticks elapsed (0–100).
/// `user` and `nice` exclude guest time, so the modes sum to 100. None when no tick passed.
pub fn cpu_percent(prev: &CpuTimes, now: &CpuTimes) -> Option<[(&'static str, f64); 8]> {
    let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
    let total = d(prev.total(), now.total());
    if total <= 0.0 {
        return None;
    }
    let guest = d(prev.guest, now.guest);
    let guest_nice = d(prev.guest_nice, now.guest_nice);
    let p = |v: f64| (100.0 * v / total).clamp(0.0, 100.0);
    Some([
        ("user", p((d(prev.user, now.user) - guest).max(0.0))),
        ("nice", p((d(prev.nice, now.nice) - guest_nice).max(0.0))),
        ("system", p(d(prev.system, now.system))),
        ("idle", p(d(prev.idle, now.idle))),
        ("iowait", p(d(prev.iowait, now.iowait))),
        (
            "interrupt",
            p(d(prev.irq, now.irq) + d(prev.softirq, now.softirq)),
        ),
        ("stolen", p(d(prev.steal, now.steal))),
        ("guest", p(guest + guest_nice)),
    ])
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_ascii_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// `/proc/meminfo` as (key, bytes). Values given in kB are converted to bytes; counts
/// (`HugePages_Total`) are kept as they are.
pub fn parse_meminfo(text: &str) -> Vec<(&str, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, rest) = l.split_once(':')?;
            let mut f = rest.split_ascii_whitespace();
            let v: u64 = f.next()?.parse().ok()?;
            Some(match f.next() {
                Some("kB") => (k.trim(), v.saturating_mul(1024)),
                _ => (k.trim(), v),
            })
        })
        .collect()
}

/// One mount from `/proc/self/mountinfo`.
#[allow(missing_docs)] // the kernel\'s field names
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    /// The path within the filesystem that is mounted (field 4).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    /// The mount source (`/dev/vda`, `tmpfs`, `overlay`).
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo`: `id parent major:minor root mount-point options
/// [optional fields...] - fstype source super-options`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut lf = left.split(' ');
            let root = lf.nth(3)?;
            let mount_point = lf.next()?;
            let mut rf = right.split(' ');
            let fs_type = rf.next()?;
            let source = rf.next().unwrap_or("");
            Some(Mount {
                root: unescape(root),
                mount_point: unescape(mount_point),
                fs_type: fs_type.to_string(),
                source: unescape(source),
            })
        })
        .collect()
}

/// One device's line of `/proc/diskstats` (fields as the kernel's iostats documentation
/// numbers them; sectors are 512 bytes whatever the device's block size).
#[allow(missing_docs)] // the kernel\'s field names
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskStats {
    pub reads: u64,
    pub read_sectors: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub write_sectors: u64,
    pub write_ms: u64,
    pub io_ms: u64,
}

/// Parses `/proc/diskstats` (14 fields before 4.18, 18 before 5.5, 20 since: only the first
/// 14 are read).
pub fn parse_diskstats(text: &str) -> Vec<(&str, DiskStats)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            if f.len() < 14 {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            Some((
                f[2],
                DiskStats {
                    reads: n(3)?,
                    read_sectors: n(5)?,
                    read_ms: n(6)?,
                    writes: n(7)?,
                    write_sectors: n(9)?,
                    write_ms: n(10)?,
                    io_ms: n(12)?,
                },
            ))
        })
        .collect()
}

/// One interface's counters from `/proc/net/dev`.
#[allow(missing_docs)] // the kernel\'s field names
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NetDev {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`).
pub fn parse_net_dev(text: &str) -> Vec<(&str, NetDev)> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest
                .split_ascii_whitespace()
                .map_while(|x| x.parse().ok())
                .collect();
            if v.len() < 16 {
                return None;
            }
            Some((
                name.trim(),
                NetDev {
                    rx_bytes: v[0],
                    rx_packets: v[1],
                    rx_errs: v[2],
                    rx_drop: v[3],
                    tx_bytes: v[8],
                    tx_packets: v[9],
                    tx_errs: v[10],
                    tx_drop: v[11],
                },
            ))
        })
        .collect()
}

/// Datadog's grouping of TCP states (its network check's `system.net.tcp4.*`).
pub const TCP_GROUPS: [&str; 5] = [
    "established",
    "opening",
    "closing",
    "listening",
    "time_wait",
];

/// Counts `/proc/net/tcp` or `tcp6` lines by [`TCP_GROUPS`] (the `st` column, hex).
pub fn count_tcp_states(text: &str) -> [u64; 5] {
    let mut out = [0u64; 5];
    for l in text.lines().skip(1) {
        let Some(st) = l.split_ascii_whitespace().nth(3) else {
            continue;
        };
        let group = match u8::from_str_radix(st, 16) {
            Ok(0x01) => 0,        // ESTABLISHED
            Ok(0x02 | 0x03) => 1, // SYN_SENT, SYN_RECV
            Ok(0x04..=0x05) => 2, // FIN_WAIT1, FIN_WAIT2
            Ok(0x07..=0x09) => 2, // CLOSE, CLOSE_WAIT, LAST_ACK
            Ok(0x0B) => 2,        // CLOSING
            Ok(0x0A) => 3,        // LISTEN
            Ok(0x06) => 4,        // TIME_WAIT
            _ => continue,
        };
        out[group] += 1;
    }
    out
}

/// The `Udp:` counters of `/proc/net/snmp` (a header line of names, then a line of values).
pub fn parse_snmp_udp(text: &str) -> Vec<(&str, u64)> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return Vec::new();
    };
    names
        .split_ascii_whitespace()
        .skip(1)
        .zip(values.split_ascii_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
        .collect()
}

/// `/proc/sys/fs/file-nr`: allocated handles, allocated but unused, the maximum.
pub fn parse_file_nr(text: &str) -> Option<[u64; 3]> {
    let mut f = text.split_ascii_whitespace().map(|v| v.parse::<u64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// `/proc/uptime`: seconds since boot.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}
