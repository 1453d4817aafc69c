//! The `[host_metrics]` section: the switch, the interval, one switch per group, and the
//! include/exclude lists of mount points, filesystem types, interfaces and disk devices.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::ConfigError;

/// `[host_metrics]`: host and container metrics read from `/proc`, `/sys` and cgroup v2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostMetricsConfig {
    /// Off by default: turning it on adds about a hundred series per host to every sink.
    pub enabled: bool,
    /// How often to collect; 0 = the flush interval (`aggregate.flush_interval`).
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// Where `/proc`, `/sys` and the mount points are read: `/`, or the directory the host's
    /// root is mounted at when tallyd runs in a container and reports the host.
    pub root: String,
    /// `system.cpu.*`: utilisation by mode, all CPUs.
    pub cpu: bool,
    /// The same per core, tagged `cpu:cpuN`.
    pub per_cpu: bool,
    /// `system.load.*`.
    pub load: bool,
    /// `system.mem.*` and `system.swap.*`.
    pub memory: bool,
    /// `system.disk.*` and `system.fs.inodes.*` per mounted filesystem.
    pub filesystem: bool,
    /// `system.io.*` per block device.
    pub disk_io: bool,
    /// `system.net.*` per interface.
    pub network: bool,
    /// `system.net.tcp4.*` and `system.net.tcp6.*`: connections by state.
    pub tcp_states: bool,
    /// `system.net.udp.*` from `/proc/net/snmp`.
    pub udp: bool,
    /// `system.fs.file_handles.*`.
    pub file_handles: bool,
    /// `system.uptime`.
    pub uptime: bool,
    /// `system.cpu.context_switches`, `system.linux.processes_created`, running/blocked.
    pub kernel: bool,
    /// Named processes to report, matched against `/proc/<pid>/comm` (at most 15 bytes).
    pub process_names: Vec<String>,
    /// Processes to report by pidfile: name = path.
    pub process_pidfiles: BTreeMap<String, String>,
    /// `container.*` from this process's cgroup v2.
    pub cgroup: bool,
    /// Mount points to report (exact, or a glob with `*`); empty = all. A mount point listed
    /// here is reported whatever its filesystem type.
    pub mount_points_include: Vec<String>,
    /// Mount points never reported.
    pub mount_points_exclude: Vec<String>,
    /// Filesystem types to report; empty = all not excluded.
    pub fs_types_include: Vec<String>,
    /// Filesystem types not reported (pseudo and virtual filesystems by default).
    pub fs_types_exclude: Vec<String>,
    /// Interfaces to report; empty = all.
    pub interfaces_include: Vec<String>,
    /// Interfaces not reported.
    pub interfaces_exclude: Vec<String>,
    /// Block devices to report; empty = all.
    pub devices_include: Vec<String>,
    /// Block devices not reported (loop and RAM devices by default).
    pub devices_exclude: Vec<String>,
}

/// Pseudo and virtual filesystems: no disk space to report.
pub const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

impl Default for HostMetricsConfig {
    fn default() -> Self {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            enabled: false,
            interval: Duration::ZERO,
            root: "/".into(),
            cpu: true,
            per_cpu: false,
            load: true,
            memory: true,
            filesystem: true,
            disk_io: true,
            network: true,
            tcp_states: true,
            udp: true,
            file_handles: true,
            uptime: true,
            kernel: true,
            process_names: Vec::new(),
            process_pidfiles: BTreeMap::new(),
            cgroup: true,
            mount_points_include: Vec::new(),
            mount_points_exclude: Vec::new(),
            fs_types_include: Vec::new(),
            fs_types_exclude: list(PSEUDO_FS),
            interfaces_include: Vec::new(),
            interfaces_exclude: Vec::new(),
            devices_include: Vec::new(),
            devices_exclude: list(&["loop*", "ram*", "zram*"]),
        }
    }
}

impl HostMetricsConfig {
    /// The collection interval: `interval`, or `flush` when it is 0.
    pub fn interval_or(&self, flush: Duration) -> Duration {
        if self.interval.is_zero() {
            flush
        } else {
            self.interval
        }
    }

    /// Checks what the types cannot.
    ///
    /// # Errors
    /// An interval under 100 ms (other than 0), or a blank pattern in a list.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.interval.is_zero() && self.interval < Duration::from_millis(100) {
            return Err(ConfigError::invalid(
                "host_metrics.interval",
                ": must be 0 (the flush interval) or at least 100ms",
            ));
        }
        if !self.root.starts_with('/') {
            return Err(ConfigError::invalid(
                "host_metrics.root",
                ": must be an absolute path",
            ));
        }
        let lists = [
            ("mount_points_include", &self.mount_points_include),
            ("mount_points_exclude", &self.mount_points_exclude),
            ("fs_types_include", &self.fs_types_include),
            ("fs_types_exclude", &self.fs_types_exclude),
            ("interfaces_include", &self.interfaces_include),
            ("interfaces_exclude", &self.interfaces_exclude),
            ("devices_include", &self.devices_include),
            ("devices_exclude", &self.devices_exclude),
            ("process_names", &self.process_names),
        ];
        for (key, list) in lists {
            if list.iter().any(|p| p.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    format!("host_metrics.{key}"),
                    ": a pattern must not be empty",
                ));
            }
        }
        for (name, path) in &self.process_pidfiles {
            if name.trim().is_empty() || path.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("host_metrics.process_pidfiles.{name}"),
                    ": the name and the path must not be empty",
                ));
            }
        }
        Ok(())
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (none
/// included) and everything else matches itself.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// An include list (empty = everything) and an exclude list.
#[derive(Debug, Clone, Copy)]
pub struct Filter<'a> {
    /// Patterns a name must match one of; empty = every name.
    pub include: &'a [String],
    /// Patterns a name must match none of.
    pub exclude: &'a [String],
}

impl Filter<'_> {
    /// `name` is listed in `include`.
    pub fn listed(&self, name: &str) -> bool {
        self.include.iter().any(|p| glob(p, name))
    }

    /// `name` passes: included (or no include list) and not excluded.
    pub fn pass(&self, name: &str) -> bool {
        (self.include.is_empty() || self.listed(name))
            && !self.exclude.iter().any(|p| glob(p, name))
    }
}
