//! One collection: reads each enabled group's files under a root (`/` in production, a copy
//! in tests), keeps the previous readings for rates and deltas, and returns the values.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use super::cgroup::{self, Cgroup};
use super::config::{Filter, HostMetricsConfig};
use super::process::Processes;
use super::procfs::{self, CpuTimes, DiskStats, NetDev};
use super::statvfs::statvfs;

/// One value: a gauge, or a counter's change since the last reading.
#[allow(missing_docs)] // the kernel\'s field names
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub tags: Vec<String>,
    pub value: f64,
    pub counter: bool,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Reads the host's metrics; holds what rates and deltas need from the last reading.
pub struct Collector {
    cfg: HostMetricsConfig,
    root: PathBuf,
    cgroup_dir: Option<PathBuf>,
    cgroup_note: String,
    prev_cpu: Option<(CpuTimes, Vec<(u32, CpuTimes)>)>,
    prev_disk: HashMap<String, (DiskStats, Instant)>,
    procs: Processes,
    /// Last raw value of each counter, and the collection that saw it (to forget series
    /// that went away).
    last: HashMap<String, (u64, u64)>,
    generation: u64,
    /// Files that could not be read or parsed, since start.
    pub read_errors: u64,
    last_warn: Option<Instant>,
    out: Vec<Point>,
}

impl Collector {
    /// A collector over the filesystem at `root`; finds this process's cgroup v2 once.
    pub fn new(cfg: HostMetricsConfig, root: PathBuf) -> Collector {
        let mut c = Collector {
            cfg,
            root,
            cgroup_dir: None,
            cgroup_note: String::new(),
            prev_cpu: None,
            prev_disk: HashMap::new(),
            procs: Processes::default(),
            last: HashMap::new(),
            generation: 0,
            read_errors: 0,
            last_warn: None,
            out: Vec::new(),
        };
        let root = c.root.clone();
        c.find_cgroup(&root);
        c
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&mut self, rel: &str) -> Option<String> {
        match std::fs::read_to_string(self.path(rel)) {
            Ok(t) => Some(t),
            Err(e) => {
                self.read_errors += 1;
                // At most one line a minute; the rest are counted.
                if self.last_warn.is_none_or(|t| t.elapsed().as_secs() >= 60) {
                    self.last_warn = Some(Instant::now());
                    tracing::warn!(
                        component = "host_metrics",
                        file = %self.path(rel).display(),
                        error = %e,
                        "cannot read (further errors this minute are counted in tallyd_host_metrics_read_errors_total, not logged)"
                    );
                }
                None
            }
        }
    }

    /// Finds this process's cgroup v2 in the files under `base` (the collector's root at
    /// first; the topology passes `/` when `host_metrics.root` is the host's, since the
    /// cgroup reported is tallyd's own).
    pub fn find_cgroup(&mut self, base: &std::path::Path) {
        self.cgroup_dir = None;
        if !self.cfg.cgroup {
            self.cgroup_note = "cgroup metrics off (host_metrics.cgroup = false)".into();
            return;
        }
        let own = std::fs::read_to_string(base.join("proc/self/cgroup")).unwrap_or_default();
        let mounts = std::fs::read_to_string(base.join("proc/self/mountinfo")).unwrap_or_default();
        let mounts = procfs::parse_mountinfo(&mounts);
        let found = cgroup::v2_path(&own).and_then(|p| Some((p, cgroup::v2_dir(&mounts, p)?)));
        match found {
            None if cgroup::v2_path(&own).is_some() => {
                self.cgroup_note = "cgroup v2 listed but not mounted: no container metrics".into()
            }
            None => {
                self.cgroup_note = "no cgroup v2 (v1 only or none): no container metrics".into()
            }
            Some((path, dir)) => {
                let dir = base.join(dir.strip_prefix("/").unwrap_or(&dir));
                let mut bad = 0;
                let now = cgroup::read(&dir, &mut bad);
                self.cgroup_note =
                    format!("cgroup v2 {path} at {}: {}", dir.display(), now.describe());
                self.cgroup_dir = Some(dir);
            }
        }
    }

    /// What was found of this process's cgroup, for `/health`.
    pub fn cgroup_summary(&self) -> String {
        self.cgroup_note.clone()
    }

    fn gauge(&mut self, name: impl Into<String>, tags: &[String], value: f64) {
        if value.is_finite() {
            self.out.push(Point {
                name: name.into(),
                tags: tags.to_vec(),
                value,
                counter: false,
            });
        }
    }

    /// The counter `name` went to `raw`: emits the change since the last reading (nothing at
    /// the first reading, or when it went backwards: a reset or a wrapped 32-bit counter).
    fn counter(&mut self, name: &str, tags: &[String], raw: u64, scale: f64) {
        let mut key = String::with_capacity(name.len() + 16);
        key.push_str(name);
        for t in tags {
            key.push('|');
            key.push_str(t);
        }
        let prev = self.last.insert(key, (raw, self.generation));
        if let Some((was, _)) = prev {
            if raw >= was {
                self.out.push(Point {
                    name: name.to_string(),
                    tags: tags.to_vec(),
                    value: (raw - was) as f64 * scale,
                    counter: true,
                });
            }
        }
    }

    /// One reading of every enabled group.
    pub fn collect(&mut self) -> Vec<Point> {
        self.generation += 1;
        self.out.clear();
        let c = self.cfg.clone();
        if c.cpu || c.kernel || c.uptime {
            self.stat(&c);
        }
        if c.load {
            self.load();
        }
        if c.memory {
            self.memory();
        }
        if c.filesystem {
            self.filesystems(&c);
        }
        if c.disk_io {
            self.disk_io(&c);
        }
        if c.network {
            self.network(&c);
        }
        if c.tcp_states {
            self.tcp();
        }
        if c.udp {
            self.udp();
        }
        if c.file_handles {
            self.file_handles();
        }
        if c.cgroup {
            self.cgroup();
        }
        if !c.process_names.is_empty() || !c.process_pidfiles.is_empty() {
            self.processes(&c);
        }
        let generation = self.generation;
        self.last.retain(|_, (_, g)| *g == generation);
        std::mem::take(&mut self.out)
    }

    fn stat(&mut self, c: &HostMetricsConfig) {
        let Some(text) = self.read("proc/stat") else {
            return;
        };
        let Some(stat) = procfs::parse_stat(&text) else {
            self.read_errors += 1;
            return;
        };
        if c.cpu {
            let cores = stat.cpus.len().max(1) as f64;
            self.gauge("system.cpu.num_cores", &[], cores);
            if let Some((prev, prev_cpus)) = self.prev_cpu.take() {
                for (mode, v) in procfs::cpu_percent(&prev, &stat.total)
                    .into_iter()
                    .flatten()
                {
                    self.gauge(format!("system.cpu.{mode}"), &[], v);
                }
                if c.per_cpu {
                    for (n, now) in &stat.cpus {
                        let Some((_, was)) = prev_cpus.iter().find(|(m, _)| m == n) else {
                            continue;
                        };
                        let tags = [format!("cpu:cpu{n}")];
                        for (mode, v) in procfs::cpu_percent(was, now).into_iter().flatten() {
                            self.gauge(format!("system.cpu.{mode}"), &tags, v);
                        }
                    }
                }
            }
            self.prev_cpu = Some((stat.total, stat.cpus.clone()));
        }
        if c.kernel {
            if let Some(v) = stat.ctxt {
                self.counter("system.cpu.context_switches", &[], v, 1.0);
            }
            if let Some(v) = stat.processes {
                self.counter("system.linux.processes_created", &[], v, 1.0);
            }
            if let Some(v) = stat.procs_running {
                self.gauge("system.processes.running", &[], v as f64);
            }
            if let Some(v) = stat.procs_blocked {
                self.gauge("system.processes.blocked", &[], v as f64);
            }
        }
        if c.uptime {
            if let Some(t) = self.read("proc/uptime") {
                match procfs::parse_uptime(&t) {
                    Some(u) => self.gauge("system.uptime", &[], u),
                    None => self.read_errors += 1,
                }
            }
        }
    }

    fn load(&mut self) {
        let Some(t) = self.read("proc/loadavg") else {
            return;
        };
        let Some(l) = procfs::parse_loadavg(&t) else {
            self.read_errors += 1;
            return;
        };
        let cores = self
            .prev_cpu
            .as_ref()
            .map_or(1, |(_, cpus)| cpus.len().max(1)) as f64;
        for (i, n) in ["1", "5", "15"].iter().enumerate() {
            self.gauge(format!("system.load.{n}"), &[], l[i]);
            self.gauge(format!("system.load.norm.{n}"), &[], l[i] / cores);
        }
    }

    fn memory(&mut self) {
        let Some(t) = self.read("proc/meminfo") else {
            return;
        };
        let m = procfs::parse_meminfo(&t);
        let get = |k: &str| m.iter().find(|(n, _)| *n == k).map(|(_, v)| *v as f64);
        let Some(total) = get("MemTotal") else {
            self.read_errors += 1;
            return;
        };
        let free = get("MemFree").unwrap_or(0.0);
        let buffers = get("Buffers").unwrap_or(0.0);
        let cached = get("Cached").unwrap_or(0.0);
        // Kernels before 3.14 have no MemAvailable: free + buffers + cached, as Datadog does.
        let usable = get("MemAvailable").unwrap_or(free + buffers + cached);
        self.gauge("system.mem.total", &[], total / MIB);
        self.gauge("system.mem.free", &[], free / MIB);
        self.gauge("system.mem.used", &[], (total - free) / MIB);
        self.gauge("system.mem.usable", &[], usable / MIB);
        if total > 0.0 {
            self.gauge("system.mem.pct_usable", &[], usable / total);
        }
        self.gauge("system.mem.buffered", &[], buffers / MIB);
        self.gauge("system.mem.cached", &[], cached / MIB);
        for (key, name) in [
            ("Shmem", "system.mem.shared"),
            ("Slab", "system.mem.slab"),
            ("PageTables", "system.mem.page_tables"),
            ("CommitLimit", "system.mem.commit_limit"),
            ("Committed_AS", "system.mem.committed_as"),
            ("SwapCached", "system.swap.cached"),
        ] {
            if let Some(v) = get(key) {
                self.gauge(name, &[], v / MIB);
            }
        }
        let swap_total = get("SwapTotal").unwrap_or(0.0);
        let swap_free = get("SwapFree").unwrap_or(0.0);
        self.gauge("system.swap.total", &[], swap_total / MIB);
        self.gauge("system.swap.free", &[], swap_free / MIB);
        self.gauge("system.swap.used", &[], (swap_total - swap_free) / MIB);
        if swap_total > 0.0 {
            self.gauge("system.swap.pct_free", &[], swap_free / swap_total);
        }
    }

    fn filesystems(&mut self, c: &HostMetricsConfig) {
        // Under the host's root, its mounts are those of its init process, not ours.
        let table = if self.cfg.root == "/" {
            "proc/self/mountinfo"
        } else {
            "proc/1/mountinfo"
        };
        let Some(t) = self.read(table) else {
            return;
        };
        let mounts = Filter {
            include: &c.mount_points_include,
            exclude: &c.mount_points_exclude,
        };
        let types = Filter {
            include: &c.fs_types_include,
            exclude: &c.fs_types_exclude,
        };
        let mut seen = Vec::new();
        for m in procfs::parse_mountinfo(&t) {
            let wanted = if c.mount_points_include.is_empty() {
                types.pass(&m.fs_type)
            } else {
                mounts.listed(&m.mount_point)
            };
            if !wanted || !mounts.pass(&m.mount_point) || seen.contains(&m.mount_point) {
                continue;
            }
            let Some(s) = statvfs(&self.root.join(m.mount_point.trim_start_matches('/'))) else {
                self.read_errors += 1;
                continue;
            };
            let tags = [
                format!("device:{}", m.source),
                format!("mountpoint:{}", m.mount_point),
                format!("fstype:{}", m.fs_type),
            ];
            seen.push(m.mount_point);
            let kib = |blocks: u64| blocks as f64 * s.frsize as f64 / 1024.0;
            let used = s.blocks.saturating_sub(s.bfree);
            self.gauge("system.disk.total", &tags, kib(s.blocks));
            self.gauge("system.disk.used", &tags, kib(used));
            self.gauge("system.disk.free", &tags, kib(s.bavail));
            // As df: used over what a user can have (root's reserve left out).
            let usable = used + s.bavail;
            if usable > 0 {
                self.gauge("system.disk.in_use", &tags, used as f64 / usable as f64);
            }
            if s.files > 0 {
                let iused = s.files.saturating_sub(s.ffree);
                self.gauge("system.fs.inodes.total", &tags, s.files as f64);
                self.gauge("system.fs.inodes.used", &tags, iused as f64);
                self.gauge("system.fs.inodes.free", &tags, s.ffree as f64);
                self.gauge(
                    "system.fs.inodes.in_use",
                    &tags,
                    iused as f64 / s.files as f64,
                );
            }
        }
    }

    fn disk_io(&mut self, c: &HostMetricsConfig) {
        let Some(t) = self.read("proc/diskstats") else {
            return;
        };
        let filter = Filter {
            include: &c.devices_include,
            exclude: &c.devices_exclude,
        };
        let now = Instant::now();
        let mut prev = std::mem::take(&mut self.prev_disk);
        for (dev, d) in procfs::parse_diskstats(&t) {
            if !filter.pass(dev) {
                continue;
            }
            let tags = [format!("device:{dev}")];
            self.counter("system.io.r_s", &tags, d.reads, 1.0);
            self.counter("system.io.w_s", &tags, d.writes, 1.0);
            self.counter("system.io.rkb_s", &tags, d.read_sectors, 0.5);
            self.counter("system.io.wkb_s", &tags, d.write_sectors, 0.5);
            if let Some((was, at)) = prev.remove(dev) {
                let ms = now.duration_since(at).as_secs_f64() * 1000.0;
                if ms > 0.0 && d.io_ms >= was.io_ms {
                    let busy = (d.io_ms - was.io_ms) as f64;
                    self.gauge("system.io.util", &tags, (100.0 * busy / ms).min(100.0));
                }
                let avg = |time: u64, t0: u64, n: u64, n0: u64| {
                    (n > n0 && time >= t0).then(|| (time - t0) as f64 / (n - n0) as f64)
                };
                let r = avg(d.read_ms, was.read_ms, d.reads, was.reads).unwrap_or(0.0);
                let w = avg(d.write_ms, was.write_ms, d.writes, was.writes).unwrap_or(0.0);
                self.gauge("system.io.r_await", &tags, r);
                self.gauge("system.io.w_await", &tags, w);
            }
            self.prev_disk.insert(dev.to_string(), (d, now));
        }
    }

    fn network(&mut self, c: &HostMetricsConfig) {
        let Some(t) = self.read("proc/net/dev") else {
            return;
        };
        let filter = Filter {
            include: &c.interfaces_include,
            exclude: &c.interfaces_exclude,
        };
        for (name, n) in procfs::parse_net_dev(&t) {
            if !filter.pass(name) {
                continue;
            }
            let tags = [format!("interface:{name}")];
            let NetDev {
                rx_bytes,
                rx_packets,
                rx_errs,
                rx_drop,
                tx_bytes,
                tx_packets,
                tx_errs,
                tx_drop,
            } = n;
            for (metric, v) in [
                ("system.net.bytes_rcvd", rx_bytes),
                ("system.net.bytes_sent", tx_bytes),
                ("system.net.packets_in.count", rx_packets),
                ("system.net.packets_out.count", tx_packets),
                ("system.net.packets_in.error", rx_errs),
                ("system.net.packets_out.error", tx_errs),
                ("system.net.packets_in.drop", rx_drop),
                ("system.net.packets_out.drop", tx_drop),
            ] {
                self.counter(metric, &tags, v, 1.0);
            }
        }
    }

    fn tcp(&mut self) {
        for (file, family) in [("proc/net/tcp", "tcp4"), ("proc/net/tcp6", "tcp6")] {
            // No IPv6 in the kernel: no tcp6 file, not an error.
            let Ok(t) = std::fs::read_to_string(self.path(file)) else {
                continue;
            };
            let counts = procfs::count_tcp_states(&t);
            for (state, n) in procfs::TCP_GROUPS.iter().zip(counts) {
                self.gauge(format!("system.net.{family}.{state}"), &[], n as f64);
            }
        }
    }

    fn udp(&mut self) {
        let Some(t) = self.read("proc/net/snmp") else {
            return;
        };
        let udp = procfs::parse_snmp_udp(&t);
        if udp.is_empty() {
            self.read_errors += 1;
        }
        for (key, name) in [
            ("InDatagrams", "system.net.udp.in_datagrams"),
            ("OutDatagrams", "system.net.udp.out_datagrams"),
            ("InErrors", "system.net.udp.in_errors"),
            ("NoPorts", "system.net.udp.no_ports"),
            ("RcvbufErrors", "system.net.udp.rcv_buf_errors"),
            ("SndbufErrors", "system.net.udp.snd_buf_errors"),
        ] {
            if let Some((_, v)) = udp.iter().find(|(k, _)| *k == key) {
                self.counter(name, &[], *v, 1.0);
            }
        }
    }

    fn file_handles(&mut self) {
        let Some(t) = self.read("proc/sys/fs/file-nr") else {
            return;
        };
        let Some([allocated, unused, max]) = procfs::parse_file_nr(&t) else {
            self.read_errors += 1;
            return;
        };
        let used = allocated.saturating_sub(unused);
        self.gauge("system.fs.file_handles.allocated", &[], allocated as f64);
        self.gauge("system.fs.file_handles.used", &[], used as f64);
        self.gauge("system.fs.file_handles.max", &[], max as f64);
        if max > 0 {
            self.gauge(
                "system.fs.file_handles.in_use",
                &[],
                used as f64 / max as f64,
            );
        }
    }

    fn processes(&mut self, c: &HostMetricsConfig) {
        let pidfiles: Vec<(String, String)> = c
            .process_pidfiles
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        let proc_dir = self.path("proc");
        for (name, s) in self.procs.read(&proc_dir, &c.process_names, &pidfiles) {
            let tags = [format!("process_name:{name}")];
            self.gauge("system.processes.number", &tags, s.count as f64);
            if s.count == 0 {
                continue;
            }
            if let Some(pct) = s.cpu_pct {
                self.gauge("system.processes.cpu.pct", &tags, pct);
            }
            self.gauge("system.processes.mem.rss", &tags, s.rss_bytes as f64);
            self.gauge("system.processes.threads", &tags, s.threads as f64);
            self.gauge(
                "system.processes.open_file_descriptors",
                &tags,
                s.fds as f64,
            );
        }
    }

    fn cgroup(&mut self) {
        let Some(dir) = self.cgroup_dir.clone() else {
            return;
        };
        let mut bad = 0;
        let g: Cgroup = cgroup::read(&dir, &mut bad);
        self.read_errors += bad;
        if let Some(cores) = g.cpu_limit_cores() {
            self.gauge("container.cpu.limit", &[], cores * 1e9);
        }
        if let Some(v) = g.usage_usec {
            self.counter("container.cpu.usage", &[], v, 1000.0);
        }
        if let Some(v) = g.throttled_usec {
            self.counter("container.cpu.throttled", &[], v, 1000.0);
        }
        if let Some(v) = g.nr_throttled {
            self.counter("container.cpu.throttled.periods", &[], v, 1.0);
        }
        if let Some(v) = g.nr_periods {
            self.counter("container.cpu.periods", &[], v, 1.0);
        }
        if let Some(v) = g.memory_current {
            self.gauge("container.memory.usage", &[], v as f64);
        }
        if let Some(Some(v)) = g.memory_max {
            self.gauge("container.memory.limit", &[], v as f64);
        }
        if let Some(v) = g.oom_kill {
            self.counter("container.memory.oom_events", &[], v, 1.0);
        }
        if let Some(v) = g.pids_current {
            self.gauge("container.pid.thread_count", &[], v as f64);
        }
        if let Some(Some(v)) = g.pids_max {
            self.gauge("container.pid.thread_limit", &[], v as f64);
        }
    }
}
