//! End-to-end: GPS points published to a real MQTT broker (Debian's `mosquitto`, started here
//! on a free loopback port with a config file this test writes, a password file made by
//! `mosquitto_passwd`, persistence on). A subscriber with a persistent session (QoS 1) collects
//! what arrives. Every point arrives; with the broker stopped for a while and restarted on the
//! same port, none is lost: the devices are answered meanwhile (the points are in the durable
//! `mqtt_points` queue) and the queue delivers them once the broker is back.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_request, Tallyd};

const USER: &str = "tallyd";
const PASSWORD: &str = "s3cret-pw";

fn mosquitto_bin(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).is_file() {
            return p;
        }
    }
    common::system_tool("MOSQUITTO", &[name], "mosquitto")
}

/// A mosquitto process on `port`, stopped with SIGTERM (so that it saves its persistence file)
/// when dropped or stopped.
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

/// A second listener with TLS: its port and the certificate and key files.
struct Tls {
    port: u16,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Broker {
    fn start(dir: &std::path::Path, port: u16) -> Broker {
        Self::start_with(dir, port, None)
    }

    fn start_with(dir: &std::path::Path, port: u16, tls: Option<&Tls>) -> Broker {
        let conf = dir.join("mosquitto.conf");
        let passwd = dir.join("passwd");
        if !passwd.exists() {
            let ok = Command::new(mosquitto_bin("mosquitto_passwd"))
                .args(["-c", "-b"])
                .arg(&passwd)
                .args([USER, PASSWORD])
                .status()
                .expect("run mosquitto_passwd");
            assert!(ok.success(), "mosquitto_passwd failed");
        }
        std::fs::write(
            &conf,
            format!(
                "user root\nallow_anonymous false\npassword_file {}\n\
                 persistence true\npersistence_location {}/\nautosave_interval 1\n\
                 log_dest stderr\nlistener {port} 127.0.0.1\n{}",
                passwd.display(),
                dir.display(),
                tls.map_or(String::new(), |t| format!(
                    "listener {} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                    t.port,
                    t.cert.display(),
                    t.key.display()
                ))
            ),
        )
        .expect("write mosquitto.conf");
        let child = Command::new(mosquitto_bin("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let b = Broker {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        for p in std::iter::once(port).chain(tls.map(|t| t.port)) {
            let addr: SocketAddr = format!("127.0.0.1:{p}").parse().expect("addr");
            let deadline = Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "mosquitto did not listen on {p}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        b
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A subscriber on `fleet/+/points` with a persistent session, reconnecting until stopped.
struct Subscriber {
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    subscribed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    fn start(port: u16) -> Subscriber {
        let got = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s, st) = (got.clone(), subscribed.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut o = MqttOptions::new("e2e-subscriber", "127.0.0.1", port);
                o.set_clean_session(false)
                    .set_credentials(USER, PASSWORD)
                    .set_keep_alive(Duration::from_secs(5));
                let (client, mut events) = AsyncClient::new(o, 16);
                while !st.load(Relaxed) {
                    let ev = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
                    match ev {
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            let _ = client.subscribe("fleet/+/points", QoS::AtLeastOnce).await;
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => s.store(true, Relaxed),
                        Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                            let v = serde_json::from_slice(&p.payload).unwrap_or_default();
                            g.lock().expect("got").push((p.topic.clone(), v));
                        }
                        Ok(Ok(_)) | Err(_) => {}
                        Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            });
        });
        Subscriber {
            got,
            subscribed,
            stop,
            thread: Some(thread),
        }
    }

    /// The distinct points received, by (device, time_ms); checks each topic on the way.
    fn distinct(&self) -> BTreeSet<(String, i64)> {
        let got = self.got.lock().expect("got");
        got.iter()
            .map(|(topic, v)| {
                let dev = v["device_id"].as_str().unwrap_or_default().to_string();
                assert_eq!(topic, &format!("fleet/{dev}/points"), "{v}");
                assert_eq!(v["protocol"], "osmand");
                (dev, v["time_ms"].as_i64().unwrap_or_default())
            })
            .collect()
    }

    fn wait_for(&self, want: &BTreeSet<(String, i64)>, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let have = self.distinct();
            if want.is_subset(&have) {
                return;
            }
            let missing: Vec<_> = want.difference(&have).collect();
            assert!(Instant::now() < deadline, "{what}: missing {missing:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reports point `i` from one of three phones; the listener must answer 200.
fn report(osmand: SocketAddr, i: i64) -> (String, i64) {
    let dev = format!("veh-{}", i % 3);
    let ts = 1_700_000_000 + i;
    let path = format!("/?id={dev}&lat=51.{i:04}&lon=-0.{i:04}&timestamp={ts}&speed=3");
    let (code, body) = http_request(osmand, "GET", &path, &[], "");
    assert_eq!(code, 200, "point {i}: {body}");
    (dev, ts * 1000)
}

fn osmand_addr(t: &Tallyd) -> SocketAddr {
    t.logs()
        .iter()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let f = v.get("fields")?;
            (f.get("component")?.as_str()? == "gps_osmand")
                .then(|| f.get("addr")?.as_str()?.parse().ok())
                .flatten()
        })
        .expect("OsmAnd address in the logs")
}

/// The sum of the samples of `family` for queue `mqtt_points`.
fn queue_metric(t: &Tallyd, family: &str) -> f64 {
    t.metrics()
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains("queue=\"mqtt_points\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn every_point_reaches_the_broker_and_an_outage_loses_none() {
    let broker_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut broker = Broker::start(broker_dir.path(), port);
    let sub = Subscriber::start(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sub.subscribed.load(Relaxed) {
        assert!(Instant::now() < deadline, "subscriber did not subscribe");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Tallyd::start(&format!(
        r#"
[gps]
osmand_enabled = true
osmand_listen = "127.0.0.1:0"
points_mqtt = "mqtt://127.0.0.1:{port}"
points_mqtt_topic = "fleet/{{device_id}}/points"
points_mqtt_username = "{USER}"
points_mqtt_password = "{PASSWORD}"
points_timeout = "3s"
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "500ms"
"#
    ));
    let osmand = osmand_addr(&t);

    // Every point arrives.
    let mut want = BTreeSet::new();
    for i in 0..30 {
        want.insert(report(osmand, i));
    }
    sub.wait_for(&want, "before the outage");

    // The broker goes away: devices are still answered (points on disk), delivery retries.
    broker.stop();
    for i in 30..60 {
        want.insert(report(osmand, i));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue_metric(&t, "tallyd_forwarder_retries_total") < 3.0 {
        assert!(
            Instant::now() < deadline,
            "no failed deliveries counted while the broker is down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(queue_metric(&t, "tallyd_forwarder_queue_depth") >= 1.0);

    // Back on the same port: everything queued arrives, nothing lost.
    let _broker = Broker::start(&broker.dir, broker.port);
    for i in 60..70 {
        want.insert(report(osmand, i));
    }
    sub.wait_for(&want, "after the broker came back");
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue_metric(&t, "tallyd_forwarder_queue_depth") > 0.0 {
        assert!(Instant::now() < deadline, "mqtt_points queue not drained");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sub.distinct().len(), 70);
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn points_reach_a_tls_broker_that_checks_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |n: &str| dir.path().join(n).display().to_string();
    // A CA and a server certificate for 127.0.0.1 signed by it (rustls refuses a self-signed
    // end-entity certificate as its own anchor).
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (ca_key, ca, key, csr) = (p("ca.key"), p("ca.pem"), p("server.key"), p("server.csr"));
    let mut args = vec!["req", "-x509", "-days", "1", "-subj", "/CN=e2e CA"];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca]);
    openssl(&args);
    let mut args = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ];
    args.extend(ec);
    openssl(&args);
    let ext = p("ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    let cert = p("server.pem");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    let tls = Tls {
        port: free_port(),
        cert: cert.into(),
        key: key.into(),
    };
    let plain = free_port();
    let _broker = Broker::start_with(dir.path(), plain, Some(&tls));
    let sub = Subscriber::start(plain);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sub.subscribed.load(Relaxed) {
        assert!(Instant::now() < deadline, "subscriber did not subscribe");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = |password: &str| {
        format!(
            r#"
[gps]
osmand_enabled = true
osmand_listen = "127.0.0.1:0"
points_mqtt = "mqtts://127.0.0.1:{}"
points_mqtt_topic = "fleet/{{device_id}}/points"
points_mqtt_username = "{USER}"
points_mqtt_password = "{password}"
points_mqtt_ca_file = "{ca}"
points_timeout = "3s"
[queue]
directory = "@DIR@/queue"
backoff_initial = "100ms"
backoff_max = "500ms"
"#,
            tls.port
        )
    };

    // A wrong password: the broker refuses the login, the device is still answered (the point
    // is in the queue) and delivery is retried.
    let t = Tallyd::start(&config("wrong"));
    report(osmand_addr(&t), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue_metric(&t, "tallyd_forwarder_retries_total") < 2.0 {
        assert!(Instant::now() < deadline, "refused logins not retried");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(queue_metric(&t, "tallyd_forwarder_queue_depth"), 1.0);
    assert!(sub.distinct().is_empty());
    drop(t);

    // The right one: every point over TLS, the broker checked against the CA file.
    let t = Tallyd::start(&config(PASSWORD));
    let osmand = osmand_addr(&t);
    let want: BTreeSet<_> = (0..10).map(|i| report(osmand, i)).collect();
    sub.wait_for(&want, "over TLS");
}
