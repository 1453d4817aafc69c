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

impl Broker {
    fn start(dir: &std::path::Path, port: u16) -> Broker {
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
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 persistence true\npersistence_location {}/\nautosave_interval 1\n\
                 log_dest stderr\n",
                passwd.display(),
                dir.display()
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
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
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
