//! Chaos: one notifier's endpoint hangs (accepts the connection, reads the request, never
//! answers) while alerts fire and resolve. Alerts are still evaluated every window, the other
//! notifier gets every notification, and the hanging one costs only its own queue. Short
//! enough for CI; `--nocapture` prints the `CHAOS notify` figures.
//!
//! ```text
//! cargo test --test chaos_notify -- --nocapture
//! ```

mod common;
mod receiver;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{value, Tallyd};
use receiver::{Receiver, Service};

/// Accepts connections and reads from them forever without answering; keeps them open.
struct Hang {
    url: String,
    accepted: Arc<AtomicU64>,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Hang {
    fn start() -> Hang {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", l.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicU64::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (a, h) = (Arc::clone(&accepted), Arc::clone(&held));
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                a.fetch_add(1, Relaxed);
                if let Ok(mut r) = s.try_clone() {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
                    });
                }
                h.lock().expect("held").push(s);
            }
        });
        Hang {
            url,
            accepted,
            _held: held,
        }
    }
}

fn metric(t: &Tallyd, series: &str) -> f64 {
    value(&t.metrics(), series).unwrap_or(0.0)
}

#[test]
fn a_hanging_notifier_endpoint_does_not_hold_up_evaluation_or_other_notifiers() {
    let hang = Hang::start();
    let rx = Receiver::start();
    let good = rx.route("/good", Service::Webhook, &[]);
    let t = Tallyd::start(&format!(
        r#"
[alerts]
default_rules = false
timeout = "3s"
retry_initial = "200ms"
retry_max = "1s"
[[alerts.rules]]
name = "HotOne"
metric = "notify.one"
warn = 10.0
[[alerts.rules]]
name = "HotTwo"
metric = "notify.two"
warn = 10.0
[alerts.notifiers.stuck]
type = "webhook"
url = "{}"
[alerts.notifiers.good]
type = "webhook"
url = "{good}"
"#,
        hang.url
    ));
    let started = Instant::now();
    t.send_udp("notify.one:20|g\n");
    let got = rx.wait("/good", "HotOne firing at the good notifier", |r| {
        r.iter().any(|x| x.json()["alert"] == "HotOne")
    });
    let first_ms = started.elapsed().as_millis();
    assert!(got.iter().all(|x| x.status == 200));
    // The stuck endpoint has the same notification in flight, unanswered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hang.accepted.load(Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the stuck notifier was never tried"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let evals = metric(&t, "tallyd_alert_evaluations_total");

    // While it hangs: a second alert fires, the first resolves; the good notifier hears both.
    t.send_udp("notify.two:20|g\nnotify.one:1|g\n");
    rx.wait("/good", "HotTwo firing and HotOne resolved", |r| {
        r.iter().any(|x| x.json()["alert"] == "HotTwo")
            && r.iter()
                .any(|x| x.json()["alert"] == "HotOne" && x.json()["status"] == "resolved")
    });
    let later = t.wait_metrics(
        |m| value(m, "tallyd_alert_evaluations_total").unwrap_or(0.0) >= evals + 5.0,
        "evaluations going on",
    );
    let (code, body) = t.get("/api/alerts");
    assert_eq!(code, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(api["firing"][0]["alert"], "HotTwo", "{api}");
    let stuck_sent = value(
        &later,
        "tallyd_alert_notifications_total{notifier=\"stuck\",type=\"webhook\",result=\"sent\"}",
    )
    .unwrap_or(0.0);
    let good_sent = value(
        &later,
        "tallyd_alert_notifications_total{notifier=\"good\",type=\"webhook\",result=\"sent\"}",
    )
    .unwrap_or(0.0);
    let retries = later
        .lines()
        .filter(|l| l.starts_with("tallyd_alert_notification_retries_total{notifier=\"stuck\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>();
    println!(
        "CHAOS notify: good notifier got HotOne {first_ms} ms after the sample; {} requests to the good endpoint, {good_sent} counted sent; \
         stuck endpoint: {} connections held unanswered, {stuck_sent} sent, {retries} retries; evaluations went on ({} -> {})",
        rx.received("/good").len(),
        hang.accepted.load(Relaxed),
        evals,
        value(&later, "tallyd_alert_evaluations_total").unwrap_or(0.0)
    );
    assert_eq!(stuck_sent, 0.0);
    assert!(good_sent >= 3.0, "{good_sent}");

    // After the stuck request timed out and is being retried, the good notifier still hears
    // every transition.
    let stuck_retries = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("tallyd_alert_notification_retries_total{notifier=\"stuck\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>()
    };
    t.wait_metrics(
        |m| stuck_retries(m) >= 1.0,
        "the stuck request timed out and retried",
    );
    t.send_udp("notify.two:1|g\n");
    rx.wait("/good", "HotTwo resolved", |r| {
        r.iter()
            .any(|x| x.json()["alert"] == "HotTwo" && x.json()["status"] == "resolved")
    });
    let m = t.metrics();
    println!(
        "CHAOS notify: after the stuck endpoint's first timeout: {} retries, {} connections held; good endpoint {} requests; stuck sent {:?}",
        stuck_retries(&m),
        hang.accepted.load(Relaxed),
        rx.received("/good").len(),
        value(&m, "tallyd_alert_notifications_total{notifier=\"stuck\",type=\"webhook\",result=\"sent\"}")
    );
    assert_eq!(rx.received("/good").len(), 4);
}
