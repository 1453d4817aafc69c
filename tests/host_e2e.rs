//! Host metrics end to end: the real binary beside a real Debian `prometheus-node-exporter`
//! (both read the same kernel; their values must agree), an alert on a process's CPU that
//! fires under a busy loop and resolves when it stops, and a disk-space alert on a small tmpfs
//! this test mounts and fills (needs root).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_request, Tallyd};

/// The value of the first sample named `name` whose labels include every `k="v"` of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        if l.starts_with('#') {
            return None;
        }
        let (series, v) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            .then(|| v.parse().ok())
            .flatten()
    })
}

/// Sum of every sample of `name` whose labels include `labels`.
fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let ok = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| v.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A node exporter on a port it chose itself: `127.0.0.1:0`, the bound address read from its
/// log (exporter-toolkit logs `msg="Listening on" address=...`), so no port is guessed.
struct NodeExporter {
    child: Child,
    addr: SocketAddr,
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeExporter {
    fn start() -> NodeExporter {
        let bin = common::system_tool(
            "NODE_EXPORTER_BIN",
            &["prometheus-node-exporter", "node_exporter"],
            "prometheus-node-exporter",
        );
        let mut child = Command::new(bin)
            .args([
                "--web.listen-address=127.0.0.1:0",
                "--collector.disable-defaults",
                "--collector.cpu",
                "--collector.meminfo",
                "--collector.filesystem",
                "--collector.netdev",
                // Debian's build excludes `lo` by default; this test measures it.
                "--collector.netdev.device-exclude=^tallyd-none$",
                "--collector.stat",
                "--collector.time",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node exporter");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("logs").push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let addr = logs.lock().expect("logs").iter().find_map(|l| {
                l.contains("msg=\"Listening on\"")
                    .then(|| l.split(" address=").nth(1)?.split_whitespace().next())
                    .flatten()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            });
            if let Some(addr) = addr {
                break addr;
            }
            if let Ok(Some(s)) = child.try_wait() {
                panic!("node exporter exited with {s}: {:#?}", logs.lock());
            }
            assert!(
                Instant::now() < deadline,
                "node exporter: {:#?}",
                logs.lock()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let ne = NodeExporter { child, addr };
        while !ne.metrics().contains("node_memory_MemTotal_bytes") {
            assert!(
                Instant::now() < deadline,
                "node exporter: {:#?}",
                logs.lock()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ne
    }

    fn metrics(&self) -> String {
        http_request(self.addr, "GET", "/metrics", &[], "").1
    }
}

fn host_config(extra: &str) -> String {
    format!(
        r#"
[alerts]
default_rules = false
[host_metrics]
enabled = true
interval = "1s"
{extra}
"#
    )
}

/// Sends `bytes` through a loopback TCP connection.
fn loopback_traffic(bytes: usize) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0;
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk).expect("write");
        sent += chunk.len();
    }
    drop(s);
    assert_eq!(reader.join().expect("reader"), sent);
}

/// tallyd's `system_net_bytes_rcvd_total` on `lo`, bracketed by two node exporter readings
/// taken 1.5 s apart around it: tallyd's value comes from a reading at most one interval
/// plus one flush (1.2 s) old, so it was read between the two.
fn bracket(t: &Tallyd, ne: &NodeExporter) -> (f64, f64, f64) {
    let lo = [("device", "lo")];
    let before = sample(&ne.metrics(), "node_network_receive_bytes_total", &lo).expect("ne lo");
    std::thread::sleep(Duration::from_millis(1500));
    let ours = sample(
        &t.metrics(),
        "system_net_bytes_rcvd_total",
        &[("interface", "lo")],
    )
    .expect("tallyd lo");
    let after = sample(&ne.metrics(), "node_network_receive_bytes_total", &lo).expect("ne lo");
    (before, ours, after)
}

#[test]
fn values_agree_with_node_exporter() {
    let ne = NodeExporter::start();
    let t = Tallyd::start(&host_config(""));
    let m = t.wait_metrics(
        |m| m.contains("system_net_bytes_rcvd_total{") && m.contains("system_cpu_idle{"),
        "host metrics on /metrics",
    );
    let n = ne.metrics();

    // /health says what was found of this process's cgroup.
    let (_, health) = t.get("/health");
    let h: serde_json::Value = serde_json::from_str(&health).expect("health json");
    let cg = h["components"]["host_metrics_cgroup"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        cg.starts_with("cgroup v2 ") || cg.starts_with("no cgroup v2"),
        "{health}"
    );

    // Memory: the same MemTotal, ours in MiB (Datadog's unit).
    let ours = sample(&m, "system_mem_total", &[]).expect("mem") * 1048576.0;
    let theirs = sample(&n, "node_memory_MemTotal_bytes", &[]).expect("ne mem");
    assert!((ours - theirs).abs() <= theirs * 1e-9, "{ours} vs {theirs}");

    // Filesystem size of `/`: the same statvfs, ours in KiB. Free space moves; 1 % apart at most.
    let root = [("mountpoint", "/")];
    let ours = sample(&m, "system_disk_total", &root).expect("disk /") * 1024.0;
    let theirs = sample(&n, "node_filesystem_size_bytes", &root).expect("ne disk /");
    assert!((ours - theirs).abs() <= theirs * 1e-9, "{ours} vs {theirs}");
    let ours = sample(&m, "system_disk_free", &root).expect("free /") * 1024.0;
    let theirs = sample(&n, "node_filesystem_avail_bytes", &root).expect("ne avail /");
    assert!((ours - theirs).abs() <= theirs * 0.01, "{ours} vs {theirs}");

    // Uptime: node_time_seconds - node_boot_time_seconds, within 5 s.
    let up = sample(&m, "system_uptime", &[]).expect("uptime");
    let theirs = sample(&n, "node_time_seconds", &[]).expect("time")
        - sample(&n, "node_boot_time_seconds", &[]).expect("boot");
    assert!((up - theirs).abs() < 5.0, "{up} vs {theirs}");

    // Network bytes on lo, over 40 MB of traffic this test sends: tallyd's increase lies within
    // node exporter's increases bracketing it (background loopback traffic widens the bracket,
    // and is the only tolerance).
    let (b0, t0, a0) = bracket(&t, &ne);
    loopback_traffic(40 << 20);
    let (b1, t1, a1) = bracket(&t, &ne);
    let ours = t1 - t0;
    let (low, high) = (b1 - a0, a1 - b0);
    eprintln!("lo bytes: tallyd +{ours}, node exporter between +{low} and +{high}");
    assert!(ours >= (40 << 20) as f64, "the traffic is counted: {ours}");
    assert!(
        low <= ours && ours <= high,
        "tallyd's lo increase {ours} outside node exporter's [{low}, {high}]"
    );

    // CPU: our cores are node exporter's CPUs; our per-mode utilisation sums to 100; our mean
    // idle over ~5 s is node exporter's idle share of the same period, 15 points apart at most
    // (the intervals do not line up exactly, and other work on the machine is bursty).
    let cpus = |n: &str| {
        n.lines()
            .filter(|l| l.starts_with("node_cpu_seconds_total{") && l.contains("mode=\"idle\""))
            .count() as f64
    };
    assert_eq!(sample(&m, "system_cpu_num_cores", &[]), Some(cpus(&n)));
    let modes = [
        "user",
        "nice",
        "system",
        "idle",
        "iowait",
        "interrupt",
        "stolen",
        "guest",
    ];
    let total: f64 = modes
        .iter()
        .map(|mode| sample(&m, &format!("system_cpu_{mode}"), &[]).expect("mode"))
        .sum();
    assert!((total - 100.0).abs() < 0.5, "modes sum to {total}");
    let seconds = |n: &str| {
        let idle = sum(n, "node_cpu_seconds_total", &[("mode", "idle")]);
        let all = sum(n, "node_cpu_seconds_total", &[]);
        (idle, all)
    };
    let n0 = seconds(&ne.metrics());
    let mut ours = Vec::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        ours.push(sample(&t.metrics(), "system_cpu_idle", &[]).expect("idle"));
    }
    let n1 = seconds(&ne.metrics());
    let theirs = 100.0 * (n1.0 - n0.0) / (n1.1 - n0.1);
    let mean = ours.iter().sum::<f64>() / ours.len() as f64;
    eprintln!("idle: tallyd {mean:.1} % ({ours:?}), node exporter {theirs:.1} %");
    assert!(
        (mean - theirs).abs() <= 15.0,
        "idle: tallyd {mean:.1} % ({ours:?}) vs node exporter {theirs:.1} %"
    );
}

/// `GET /api/alerts`: whether `alert` is firing.
fn firing(t: &Tallyd, alert: &str) -> bool {
    let (_, body) = t.get("/api/alerts");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["firing"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["alert"] == alert))
}

fn wait(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A busy loop in a child process, killed when dropped.
struct Busy(Child);

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill only sends a signal to the child this test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

#[test]
fn cpu_alert_fires_under_a_busy_loop_and_resolves_after_it_stops() {
    let busy = Busy(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("busy loop"),
    );
    let pid = busy.0.id();
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("busy.pid");
    std::fs::write(&pidfile, pid.to_string()).expect("pidfile");
    // A spinning process gets well over 30 % of a core even on a loaded 2-core machine, and
    // 0 % when stopped: the rule depends on this test only, not on the machine's other work.
    let t = Tallyd::start(&host_config(&format!(
        r#"process_pidfiles = {{ busyloop = "{}" }}
[[alerts.rules]]
name = "BusyLoopCpu"
metric = "system.processes.cpu.pct"
tags = ["process_name:busyloop"]
warn = 30.0
"#,
        pidfile.display()
    )));
    wait("BusyLoopCpu to fire", 20, || firing(&t, "BusyLoopCpu"));
    signal(pid, libc::SIGSTOP);
    wait("BusyLoopCpu to resolve", 20, || !firing(&t, "BusyLoopCpu"));
    let m = t.metrics();
    let pct = sample(
        &m,
        "system_processes_cpu_pct",
        &[("process_name", "busyloop")],
    );
    assert!(pct.is_some_and(|v| v < 30.0), "{pct:?}");
    assert_eq!(
        sample(
            &m,
            "system_processes_number",
            &[("process_name", "busyloop")]
        ),
        Some(1.0)
    );
    signal(pid, libc::SIGCONT);
}

/// A tmpfs this test mounted, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_space_alert_fires_on_a_filled_tmpfs() {
    // SAFETY: geteuid only reads the process's effective user id.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root, "this test mounts a tmpfs: run it as root");
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tallyd-test"])
        .arg(&mnt)
        .status()
        .expect("mount");
    assert!(ok.success(), "mount -t tmpfs");
    let _guard = Tmpfs(mnt.clone());
    let mp = mnt.display().to_string();
    let t = Tallyd::start(&host_config(&format!(
        r#"mount_points_include = ["{mp}"]
network = false
tcp_states = false
[[alerts.rules]]
name = "DiskSpaceLow"
metric = "system.disk.in_use"
group_by = ["mountpoint"]
critical = 0.9
"#
    )));
    let tag = [("mountpoint", mp.as_str())];
    let m = t.wait_metrics(
        |m| sample(m, "system_disk_total", &tag).is_some(),
        "the tmpfs on /metrics",
    );
    assert_eq!(sample(&m, "system_disk_total", &tag), Some(4096.0));
    assert!(sample(&m, "system_disk_in_use", &tag).is_some_and(|v| v < 0.1));
    assert!(!firing(&t, "DiskSpaceLow"));
    // Only the listed mount point, and no group that is switched off.
    assert!(sample(&m, "system_disk_total", &[("mountpoint", "/")]).is_none());
    assert!(!m.contains("system_net_"), "network and tcp_states are off");
    assert!(m.contains("system_mem_total{"), "the other groups stay on");
    // Fill 3.8 of its 4 MiB.
    std::fs::write(mnt.join("fill"), vec![1u8; 3_800 * 1024]).expect("fill");
    wait("DiskSpaceLow to fire", 20, || firing(&t, "DiskSpaceLow"));
    let (_, body) = t.get("/api/alerts");
    assert!(
        body.contains(&mp),
        "the alert names the mount point: {body}"
    );
    std::fs::remove_file(mnt.join("fill")).expect("rm");
    wait("DiskSpaceLow to resolve", 20, || {
        !firing(&t, "DiskSpaceLow")
    });
}

#[test]
fn datadog_gets_the_system_check_names_the_host_and_rates() {
    const KEY: &str = "0123456789abcdef0123456789abcdef";
    let intake = common::intake::Intake::start(KEY);
    let t = Tallyd::start(&format!(
        r#"
[aggregate]
flush_interval = "1s"
[datadog]
api_key = "{KEY}"
url = "{}"
hostname = "test-host"
[queue]
directory = "@DIR@/queue"
{}"#,
        intake.url(),
        host_config("")
    ));
    let names = [
        "system.cpu.user",
        "system.net.bytes_rcvd",
        "system.mem.total",
    ];
    intake.wait(20, "host metrics at the intake", |a| {
        names
            .iter()
            .all(|n| a.series.iter().any(|s| s.metric == *n))
    });
    let a = intake.accepted();
    let series = |name: &str| {
        a.series
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    for n in names {
        let s = series(n);
        assert!(
            s.resources
                .iter()
                .any(|r| r.rtype == "host" && r.name == "test-host"),
            "{n}: the host is the series' host: {:?}",
            s.resources
        );
        assert!(
            !s.tags.iter().any(|t| t.starts_with("host:")),
            "{n}: {:?}",
            s.tags
        );
    }
    // 1 count, 2 rate, 3 gauge: byte counts go out as a rate per second, as Datadog's check.
    assert_eq!(series("system.cpu.user").mtype, 3);
    assert_eq!(series("system.mem.total").mtype, 3);
    let bytes = a
        .series
        .iter()
        .find(|s| s.metric == "system.net.bytes_rcvd" && s.tags.iter().any(|t| t == "interface:lo"))
        .expect("lo");
    assert_eq!(bytes.mtype, 2);
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    let mib = series("system.mem.total").points[0].value;
    assert!((mib - kb / 1024.0).abs() < 1e-6, "{mib} MiB vs {kb} kB");
    drop(a);
    drop(t);
}

#[test]
fn host_cpu_alert_fires_and_resolves_on_a_proc_stat_the_test_drives() {
    use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
    // The machine's own CPU is shared with whatever else runs, so this rule reads a root
    // (`host_metrics.root`) whose proc/stat the test writes: busy (user ticks only), then
    // idle. The process test above is the one with a real busy loop.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("proc")).expect("proc");
    let phase = Arc::new(AtomicU8::new(1)); // 1 busy, 0 idle, 2 stop
    let writer = {
        let (phase, proc_dir) = (Arc::clone(&phase), dir.path().join("proc"));
        std::thread::spawn(move || {
            let (mut user, mut idle) = (1000u64, 1000u64);
            loop {
                match phase.load(Relaxed) {
                    1 => user += 5,
                    0 => idle += 5,
                    _ => return,
                }
                let text = format!(
                    "cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {user} 0 0 {idle} 0 0 0 0 0 0\n\
                     ctxt 1\nbtime 1\nprocesses 1\n"
                );
                let tmp = proc_dir.join("stat.tmp");
                std::fs::write(&tmp, text).expect("write stat");
                std::fs::rename(&tmp, proc_dir.join("stat")).expect("rename");
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let t = Tallyd::start(&format!(
        r#"
[alerts]
default_rules = false
[[alerts.rules]]
name = "HostCpuBusy"
metric = "system.cpu.user"
warn = 80.0
[host_metrics]
enabled = true
interval = "1s"
root = "{}"
load = false
memory = false
filesystem = false
disk_io = false
network = false
tcp_states = false
udp = false
file_handles = false
uptime = false
kernel = false
cgroup = false
"#,
        dir.path().display()
    ));
    wait("HostCpuBusy to fire", 20, || firing(&t, "HostCpuBusy"));
    assert_eq!(sample(&t.metrics(), "system_cpu_user", &[]), Some(100.0));
    phase.store(0, Relaxed);
    wait("HostCpuBusy to resolve", 20, || !firing(&t, "HostCpuBusy"));
    t.wait_metrics(
        |m| sample(m, "system_cpu_idle", &[]) == Some(100.0),
        "idle at 100 %",
    );
    phase.store(2, Relaxed);
    writer.join().expect("writer");
}
