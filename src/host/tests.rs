//! The parsers on copies of real files (`tests/fixtures/host/`), and one collection over a
//! copied root.

use std::path::PathBuf;

use super::cgroup;
use super::collect::{Collector, Point};
use super::config::{glob, HostMetricsConfig};
use super::procfs::*;

macro_rules! fixture {
    ($p:literal) => {
        include_str!(concat!("../../tests/fixtures/host/", $p))
    };
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host")
}

#[test]
fn stat_of_a_current_kernel() {
    let s = parse_stat(fixture!("root/proc/stat")).expect("cpu line");
    assert_eq!(s.total.user, 1004758);
    assert_eq!(s.total.steal, 706);
    assert_eq!(s.total.guest, 0);
    assert_eq!(s.cpus.len(), 2);
    assert_eq!(s.cpus[1].0, 1);
    assert_eq!(s.cpus[1].1.idle, 379668);
    assert_eq!(s.ctxt, Some(44601724));
    assert_eq!(s.processes, Some(382890));
    assert_eq!(s.btime, Some(1796118024));
    assert_eq!((s.procs_running, s.procs_blocked), (Some(3), Some(0)));
}

#[test]
fn stat_without_steal_and_guest_columns() {
    let s = parse_stat(fixture!("stat.2.6.9")).expect("cpu line");
    assert_eq!(s.total.softirq, 7061);
    assert_eq!(
        (s.total.steal, s.total.guest, s.total.guest_nice),
        (0, 0, 0)
    );
    assert_eq!(s.cpus.len(), 2);
    assert!(parse_stat("intr 1 2\nctxt 5\n").is_none(), "no cpu line");
}

#[test]
fn cpu_percent_sums_to_100_and_leaves_guest_out_of_user() {
    let a = CpuTimes {
        user: 100,
        idle: 100,
        guest: 10,
        ..Default::default()
    };
    let b = CpuTimes {
        user: 160,
        system: 20,
        idle: 110,
        steal: 10,
        guest: 30,
        ..Default::default()
    };
    let p = cpu_percent(&a, &b).expect("ticks passed");
    let get = |m: &str| p.iter().find(|(n, _)| *n == m).expect("mode").1;
    // 100 ticks passed: user 60 of which guest 20.
    assert_eq!(get("user"), 40.0);
    assert_eq!(get("guest"), 20.0);
    assert_eq!(get("system"), 20.0);
    assert_eq!(get("idle"), 10.0);
    assert_eq!(get("stolen"), 10.0);
    let sum: f64 = p.iter().map(|(_, v)| v).sum();
    assert!((sum - 100.0).abs() < 1e-9, "{sum}");
    assert!(cpu_percent(&b, &b).is_none(), "no tick passed");
}

#[test]
fn loadavg_meminfo_uptime_file_nr() {
    assert_eq!(
        parse_loadavg(fixture!("root/proc/loadavg")),
        Some([2.85, 3.57, 4.79])
    );
    assert_eq!(parse_loadavg("1.0 2.0"), None);
    let m = parse_meminfo(fixture!("root/proc/meminfo"));
    let get = |k: &str| m.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    assert!(get("MemTotal").is_some_and(|v| v > 1 << 30));
    assert!(get("MemAvailable").is_some());
    assert_eq!(get("MemTotal").map(|v| v % 1024), Some(0), "kB into bytes");
    assert_eq!(parse_uptime(fixture!("root/proc/uptime")), Some(11014.95));
    assert_eq!(
        parse_file_nr(fixture!("root/proc/sys/fs/file-nr")),
        Some([1214, 0, 2466116])
    );
}

#[test]
fn mountinfo_with_optional_fields_and_escapes() {
    let m = parse_mountinfo(fixture!("root/proc/self/mountinfo"));
    let root = m.iter().find(|m| m.mount_point == "/").expect("root");
    assert_eq!(
        (root.fs_type.as_str(), root.source.as_str()),
        ("ext4", "/dev/vda")
    );
    // "shared:1" is an optional field before the separator.
    let netns = m
        .iter()
        .find(|m| m.mount_point == "/run/netns")
        .expect("netns");
    assert_eq!(netns.fs_type, "ext4");
    let c = parse_mountinfo(fixture!("mountinfo.container"));
    assert_eq!(c[0].fs_type, "overlay");
    assert!(
        c.iter().any(|m| m.mount_point == "/etc/my hosts"),
        "\\040 is a space"
    );
}

#[test]
fn diskstats_of_old_and_new_kernels() {
    let d = parse_diskstats(fixture!("root/proc/diskstats"));
    let vda = d.iter().find(|(n, _)| *n == "vda").expect("vda").1;
    assert_eq!(vda.reads, 2512046);
    assert_eq!(vda.read_sectors, 127860986);
    assert_eq!(vda.writes, 378332);
    assert_eq!(vda.io_ms, 320064);
    let old = parse_diskstats(fixture!("diskstats.4.14"));
    assert_eq!(old.len(), 2);
    assert_eq!(old[1].1.write_sectors, 1600);
}

#[test]
fn net_dev_tcp_snmp() {
    let n = parse_net_dev(fixture!("root/proc/net/dev"));
    assert_eq!(n.len(), 4, "two header lines skipped");
    let eth0 = n.iter().find(|(i, _)| *i == "eth0").expect("eth0").1;
    assert_eq!((eth0.rx_bytes, eth0.rx_packets), (203331052, 8811));
    assert_eq!((eth0.tx_bytes, eth0.tx_packets), (497910, 5098));
    // 16 established, 8 listening, 16 time_wait in the copy.
    assert_eq!(
        count_tcp_states(fixture!("root/proc/net/tcp")),
        [16, 0, 0, 8, 16]
    );
    assert_eq!(count_tcp_states(fixture!("net_tcp6")), [1, 0, 0, 1, 1]);
    assert_eq!(count_tcp_states(fixture!("root/proc/net/tcp6")), [0; 5]);
    let udp = parse_snmp_udp(fixture!("root/proc/net/snmp"));
    let get = |k: &str| udp.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    assert_eq!(get("InErrors"), Some(122525));
    assert_eq!(get("RcvbufErrors"), Some(122525));
    assert_eq!(get("InDatagrams"), Some(105911322));
    assert!(parse_snmp_udp("Ip: a b\nIp: 1 2\n").is_empty());
}

#[test]
fn cgroup_v2_detection() {
    let hybrid = fixture!("proc_self_cgroup.hybrid");
    assert_eq!(cgroup::v2_path(hybrid), Some("/"));
    assert_eq!(cgroup::v2_path(fixture!("proc_self_cgroup.v1_only")), None);
    let mounts = parse_mountinfo(fixture!("root/proc/self/mountinfo"));
    assert_eq!(
        cgroup::v2_dir(&mounts, "/"),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    // A pod without its own cgroup namespace: the mount's root is its cgroup.
    let pod = cgroup::v2_path(fixture!("proc_self_cgroup.v2_host_ns")).expect("v2");
    let mounts = parse_mountinfo(fixture!("mountinfo.container"));
    assert_eq!(
        cgroup::v2_dir(&mounts, pod),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
}

#[test]
fn cgroup_v2_with_and_without_limits() {
    let mut bad = 0;
    let g = cgroup::read(&fixtures().join("root/sys/fs/cgroup/unified"), &mut bad);
    assert_eq!(bad, 0);
    assert_eq!(g.cpu_max, Some((Some(150_000), 100_000)));
    assert_eq!(g.cpu_limit_cores(), Some(1.5));
    assert_eq!(g.nr_throttled, Some(1270));
    assert_eq!(g.throttled_usec, Some(90544210));
    assert_eq!(g.memory_max, Some(Some(536870912)));
    assert_eq!(g.memory_current, Some(212344832));
    assert_eq!(g.oom_kill, Some(2));
    assert_eq!((g.pids_current, g.pids_max), (Some(37), Some(Some(512))));
    assert!(
        g.describe().contains("cpu.max 1.5 cores"),
        "{}",
        g.describe()
    );

    let n = cgroup::read(&fixtures().join("cgroup_v2_nolimits"), &mut bad);
    assert_eq!(bad, 0);
    assert_eq!(n.cpu_max, Some((None, 100_000)));
    assert_eq!(n.cpu_limit_cores(), None);
    assert_eq!((n.memory_max, n.pids_max), (Some(None), Some(None)));
    assert_eq!(n.describe(), "cpu.max max, memory.max max, pids.max max");

    let none = cgroup::read(&fixtures().join("no-such-dir"), &mut bad);
    assert_eq!(none, cgroup::Cgroup::default());
    assert!(cgroup::parse_max("12x").is_none());
    assert_eq!(cgroup::parse_cpu_max("max"), Some((None, 100_000)));
}

#[test]
fn globs() {
    assert!(glob("loop*", "loop0"));
    assert!(glob("*", ""));
    assert!(glob("/mnt/*/data", "/mnt/a/b/data"));
    assert!(!glob("loop*", "xloop0"));
    assert!(glob("eth0", "eth0") && !glob("eth0", "eth01"));
}

fn find<'a>(p: &'a [Point], name: &str, tag: Option<&str>) -> Option<&'a Point> {
    p.iter()
        .find(|p| p.name == name && tag.is_none_or(|t| p.tags.iter().any(|x| x == t)))
}

#[test]
fn one_collection_over_a_copied_root() {
    let cfg = HostMetricsConfig {
        enabled: true,
        per_cpu: true,
        ..HostMetricsConfig::default()
    };
    let mut c = Collector::new(cfg, fixtures().join("root"));
    assert!(
        c.cgroup_summary().starts_with("cgroup v2 / at ")
            && c.cgroup_summary().contains("memory.max 536870912 bytes"),
        "{}",
        c.cgroup_summary()
    );
    let first = c.collect();
    // Gauges at once; no rates or CPU percentages before a second reading.
    let mib = find(&first, "system.mem.total", None).expect("mem").value;
    assert!(mib > 1024.0, "{mib} MiB");
    assert_eq!(
        find(&first, "system.load.1", None).map(|p| p.value),
        Some(2.85)
    );
    assert_eq!(
        find(&first, "system.cpu.num_cores", None).map(|p| p.value),
        Some(2.0)
    );
    assert!(find(&first, "system.cpu.user", None).is_none());
    assert!(
        first.iter().all(|p| !p.counter),
        "first reading is the baseline"
    );
    let root = find(&first, "system.disk.total", Some("mountpoint:/")).expect("/");
    assert!(root.tags.contains(&"fstype:ext4".to_string()));
    assert!(root.tags.contains(&"device:/dev/vda".to_string()));
    assert!(find(&first, "system.disk.total", Some("mountpoint:/proc")).is_none());
    assert!(find(&first, "system.io.r_s", Some("device:loop0")).is_none());
    assert_eq!(
        find(&first, "system.net.tcp4.established", None).map(|p| p.value),
        Some(16.0)
    );
    assert_eq!(
        find(&first, "container.memory.limit", None).map(|p| p.value),
        Some(536870912.0)
    );
    assert_eq!(
        find(&first, "container.cpu.limit", None).map(|p| p.value),
        Some(1.5e9)
    );
    assert_eq!(
        find(&first, "system.fs.file_handles.max", None).map(|p| p.value),
        Some(2466116.0)
    );
    // The same files again: every counter moved by 0, and CPU had no tick.
    let second = c.collect();
    let bytes = find(&second, "system.net.bytes_rcvd", Some("interface:eth0")).expect("eth0");
    assert!(bytes.counter && bytes.value == 0.0);
    assert!(find(&second, "system.net.udp.rcv_buf_errors", None).is_some());
    assert!(find(&second, "container.memory.oom_events", None).is_some());
    assert!(find(&second, "system.cpu.user", None).is_none());
}

#[test]
fn pid_stat_with_spaces_and_parentheses_in_the_name() {
    let text = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 75 0 0 20 0 7 0 \
                123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
    let (comm, s) = super::process::parse_pid_stat(text).expect("parses");
    assert_eq!(comm, "my (odd) app");
    assert_eq!(s.ticks, 325);
    assert_eq!(s.threads, 7);
    assert_eq!(s.rss_pages, 2048);
    assert!(super::process::parse_pid_stat("12 (x) S 1").is_none());
}

#[test]
fn this_test_process_by_pidfile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("me.pid");
    std::fs::write(&pidfile, std::process::id().to_string()).expect("write");
    let mut p = super::process::Processes::default();
    let files = [
        ("me".to_string(), pidfile.display().to_string()),
        (
            "gone".to_string(),
            dir.path().join("none.pid").display().to_string(),
        ),
    ];
    let first = p.read(std::path::Path::new("/proc"), &[], &files);
    assert_eq!(first[0].0, "me");
    assert_eq!(first[0].1.count, 1);
    assert!(first[0].1.rss_bytes > 0 && first[0].1.threads >= 1 && first[0].1.fds >= 3);
    assert_eq!(first[0].1.cpu_pct, None);
    assert_eq!((first[1].0.as_str(), first[1].1.count), ("gone", 0));
    let second = p.read(std::path::Path::new("/proc"), &[], &files);
    assert!(second[0].1.cpu_pct.is_some_and(|v| v >= 0.0));
}

#[test]
fn validate_names_the_key() {
    let ok = HostMetricsConfig::default();
    assert!(ok.validate().is_ok());
    assert_eq!(
        ok.interval_or(std::time::Duration::from_secs(10)).as_secs(),
        10
    );
    let short = HostMetricsConfig {
        interval: std::time::Duration::from_millis(50),
        ..HostMetricsConfig::default()
    };
    assert_eq!(
        short.validate().expect_err("short").key,
        "host_metrics.interval"
    );
    let blank = HostMetricsConfig {
        interfaces_exclude: vec![" ".into()],
        ..HostMetricsConfig::default()
    };
    assert_eq!(
        blank.validate().expect_err("blank").key,
        "host_metrics.interfaces_exclude"
    );
    let relative = HostMetricsConfig {
        root: "host".into(),
        ..HostMetricsConfig::default()
    };
    assert_eq!(
        relative.validate().expect_err("relative").key,
        "host_metrics.root"
    );
    let mut pidfile = HostMetricsConfig::default();
    pidfile.process_pidfiles.insert("app".into(), String::new());
    assert_eq!(
        pidfile.validate().expect_err("empty path").key,
        "host_metrics.process_pidfiles.app"
    );
}

#[test]
fn readings_wait_at_most_one_interval_and_never_twice_at_once() {
    use std::time::Duration;
    for (every, flush) in [(10_000, 10_000), (1_000, 200), (200, 10_000), (150, 100)] {
        let (every, flush) = (Duration::from_millis(every), Duration::from_millis(flush));
        let wait = super::until_next(every, flush);
        assert!(
            wait <= every && wait >= every / 10,
            "{wait:?} for {every:?}"
        );
    }
}
