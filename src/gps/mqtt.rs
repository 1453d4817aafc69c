//! Point delivery to an MQTT broker (`gps.points_mqtt`) through the durable `mqtt_points`
//! queue, with rumqttc as the client.
//!
//! The same at-least-once rule as the NDJSON file and HTTP batches (`points`, `forward`): the
//! point writer hands each group of points to [`MqttSink::store`], which writes them (one JSON
//! object per line, the NDJSON fields) into the disk-backed queue; only once they are on disk
//! is the device acknowledged. The queue's sender then gives each payload to [`MqttDeliver`],
//! which publishes every point as its own message (QoS 1, topic `gps.points_mqtt_topic` with
//! `{device_id}` replaced) and reports the payload delivered only when the broker has sent a
//! PUBACK for every one of them within `gps.points_timeout`. Anything else (no connection, a
//! refused CONNECT, a dropped connection, the timeout) is a retry with the queue's backoff, on a
//! fresh connection: a point may reach the broker twice, never zero times. While the broker is
//! away the points wait on disk (`/admin/queue/mqtt_points`, `tallyd_forwarder_*`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, Transport};

use super::points::{Point, PointError, PointSink};
use super::GpsConfig;
use crate::base::error::ConfigError;
use crate::component::{Context, Error};
use crate::queue::deliver::BoxFuture;
use crate::queue::store::{Meta, Queue};
use crate::queue::{Attempt, Deliver, FailureClass, OpenError, Outbox};

/// The queue's name in `/admin/queue/*` and `tallyd_forwarder_*{queue=...}`.
pub const QUEUE_NAME: &str = "mqtt_points";

/// MQTT keep-alive; an idle connection older than this is replaced before use.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Where `gps.points_mqtt` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address.
    pub host: String,
    /// TCP port (1883 for `mqtt://`, 8883 for `mqtts://` unless given).
    pub port: u16,
    /// Whether TLS is used (`mqtts://`).
    pub tls: bool,
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 in brackets).
///
/// # Errors
/// What is wrong with the URL.
pub fn broker(url: &str) -> Result<Broker, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err("must start with mqtt:// or mqtts://".into());
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains(['/', '@', '?']) {
        return Err("must be mqtt[s]://host[:port] (credentials go in gps.points_mqtt_username and _password)".into());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h, p.parse::<u16>().map_err(|_| format!("port {p:?}"))?)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err("has no host or port".into());
    }
    Ok(Broker {
        host: host.to_string(),
        port,
        tls,
    })
}

/// The `[gps]` checks of the MQTT keys.
///
/// # Errors
/// The first value not allowed, naming its key.
pub fn check(g: &GpsConfig) -> Result<(), ConfigError> {
    if g.points_mqtt.is_empty() {
        return Ok(());
    }
    broker(&g.points_mqtt).map_err(|e| {
        ConfigError::invalid(
            "gps.points_mqtt",
            format!(" = {:?} {e}", crate::base::redact::url(&g.points_mqtt)),
        )
    })?;
    let t = &g.points_mqtt_topic;
    if t.is_empty() || t.contains(['+', '#', '\0']) {
        return Err(ConfigError::invalid(
            "gps.points_mqtt_topic",
            " must be a topic name without + or # (use {device_id} for the device)",
        ));
    }
    if !g.points_mqtt_ca_file.is_empty() && !g.points_mqtt.starts_with("mqtts://") {
        return Err(ConfigError::invalid(
            "gps.points_mqtt_ca_file",
            " is set but gps.points_mqtt does not start with mqtts://",
        ));
    }
    Ok(())
}

/// The topic of a point from `device`: the template with `{device_id}` replaced, the
/// characters MQTT reserves (`+ # /`, NUL) in the id replaced by `_`.
pub fn topic(template: &str, device: &str) -> String {
    let safe: String = device
        .chars()
        .map(|c| {
            if matches!(c, '+' | '#' | '/' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    template.replace("{device_id}", &safe)
}

/// Writes point groups into the `mqtt_points` queue, one JSON object per line.
pub struct MqttSink {
    queue: Arc<Queue>,
}

impl PointSink for MqttSink {
    fn name(&self) -> &'static str {
        QUEUE_NAME
    }

    fn store(&mut self, points: &[Point]) -> Result<(), PointError> {
        let mut body = Vec::with_capacity(points.len() * 256);
        for p in points {
            // A Point has only strings, numbers and maps with string keys: it always serializes.
            if serde_json::to_writer(&mut body, p).is_ok() {
                body.push(b'\n');
            }
        }
        let meta = Meta {
            content_type: "application/x-ndjson".into(),
            ..Meta::default()
        };
        self.queue
            .push(meta, &body)
            .map(|_| ())
            .map_err(|e| PointError {
                sink: QUEUE_NAME,
                detail: e.to_string(),
            })
    }
}

struct Conn {
    client: AsyncClient,
    events: EventLoop,
    used: Instant,
}

/// Publishes one queued payload's points and waits for the broker's PUBACKs.
pub struct MqttDeliver {
    options: MqttOptions,
    template: String,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl MqttDeliver {
    /// The client for `g.points_mqtt` (checked by [`check`]); `host` names the default client id.
    ///
    /// # Errors
    /// The URL does not parse or the CA file cannot be read.
    pub fn new(g: &GpsConfig, host: &str) -> Result<MqttDeliver, String> {
        let b = broker(&g.points_mqtt)?;
        let id = if g.points_mqtt_client_id.is_empty() {
            format!("tallyd-{host}")
        } else {
            g.points_mqtt_client_id.clone()
        };
        let mut o = MqttOptions::new(id, b.host, b.port);
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        if !g.points_mqtt_username.is_empty() {
            o.set_credentials(&g.points_mqtt_username, &g.points_mqtt_password);
        }
        if b.tls {
            let config = tls_config(&g.points_mqtt_ca_file)?;
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
            ));
        }
        Ok(MqttDeliver {
            options: o,
            template: g.points_mqtt_topic.clone(),
            timeout: g.points_timeout,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    async fn send(&self, body: &[u8]) -> Attempt {
        let mut messages = Vec::new();
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            #[derive(serde::Deserialize)]
            struct Id {
                device_id: String,
            }
            match serde_json::from_slice::<Id>(line) {
                Ok(p) => messages.push((topic(&self.template, &p.device_id), line.to_vec())),
                Err(e) => {
                    return Attempt::Reject {
                        status: 0,
                        body: format!("not a point line: {e}"),
                    }
                }
            }
        }
        if messages.is_empty() {
            return Attempt::Delivered { status: 200 };
        }
        let mut guard = self.conn.lock().await;
        if guard
            .as_ref()
            .is_some_and(|c| c.used.elapsed() >= KEEP_ALIVE)
        {
            *guard = None;
        }
        let conn = guard.get_or_insert_with(|| {
            let (client, events) = AsyncClient::new(self.options.clone(), 64);
            Conn {
                client,
                events,
                used: Instant::now(),
            }
        });
        let r = tokio::time::timeout(self.timeout, publish_all(conn, messages)).await;
        let (class, why) = match r {
            Ok(Ok(())) => {
                conn.used = Instant::now();
                return Attempt::Delivered { status: 200 };
            }
            Ok(Err(why)) => (FailureClass::Connection, why),
            Err(_) => (
                FailureClass::Timeout,
                format!("no PUBACK for every point within {:?}", self.timeout),
            ),
        };
        *guard = None;
        Attempt::Retry {
            class,
            status: None,
            after: None,
            why,
        }
    }
}

/// Publishes `messages` at QoS 1 and polls the connection until each has its PUBACK.
async fn publish_all(conn: &mut Conn, messages: Vec<(String, Vec<u8>)>) -> Result<(), String> {
    let n = messages.len();
    let client = conn.client.clone();
    let sending = tokio::spawn(async move {
        for (t, p) in messages {
            if client.publish(t, QoS::AtLeastOnce, false, p).await.is_err() {
                break;
            }
        }
    });
    let mut outstanding = HashSet::new();
    let mut acked = 0;
    let result = loop {
        match conn.events.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                outstanding.insert(pkid);
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                if outstanding.remove(&a.pkid) {
                    acked += 1;
                }
            }
            Ok(_) => {}
            Err(e) => break Err(format!("MQTT: {e}")),
        }
        if acked == n {
            break Ok(());
        }
    };
    sending.abort();
    result
}

fn tls_config(ca_file: &str) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        let certs = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("gps.points_mqtt_ca_file {ca_file}: {e}"))?;
        for c in certs {
            let c = c.map_err(|e| format!("gps.points_mqtt_ca_file {ca_file}: {e}"))?;
            roots
                .add(c)
                .map_err(|e| format!("gps.points_mqtt_ca_file {ca_file}: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

impl Deliver for MqttDeliver {
    fn deliver<'a>(&'a self, _meta: &'a Meta, body: Vec<u8>) -> BoxFuture<'a, Attempt> {
        Box::pin(async move { self.send(&body).await })
    }
}

/// The running MQTT forwarder: its sink for the point writer and its background sender.
pub struct Forwarder {
    outbox: Outbox<MqttDeliver>,
}

impl Forwarder {
    /// Opens the queue and starts its sender when `gps.points_mqtt` is set.
    ///
    /// # Errors
    /// The queue directory cannot be opened, or the client cannot be configured; the message
    /// names the key.
    pub fn start(g: &GpsConfig, ctx: &Context) -> Result<Option<Forwarder>, Error> {
        if g.points_mqtt.is_empty() {
            return Ok(None);
        }
        let outbox = Outbox::open(&ctx.queue, QUEUE_NAME, &ctx.queues, || {
            MqttDeliver::new(g, &ctx.host).map_err(OpenError::Setup)
        })
        .map_err(|e| Error::start("gps", e))?;
        let depth = outbox.queue().depth();
        tracing::info!(component = "gps", broker = %crate::base::redact::url(&g.points_mqtt), topic = %g.points_mqtt_topic, queued = depth.pending, dead_letters = depth.dlq, "point delivery to MQTT on");
        Ok(Some(Forwarder { outbox }))
    }

    /// The sink handed to the point writer (shares the queue with the sender).
    pub fn sink(&self) -> MqttSink {
        MqttSink {
            queue: Arc::clone(self.outbox.queue()),
        }
    }

    /// Keeps delivering for at most `queue.shutdown_drain`, then stops; what is left stays on
    /// disk.
    pub async fn shutdown(self) {
        self.outbox.shutdown(|| false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_and_topics() {
        let b = broker("mqtt://127.0.0.1:18830").expect("url");
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("127.0.0.1", 18830, false)
        );
        let b = broker("mqtts://broker.example").expect("url");
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("broker.example", 8883, true)
        );
        let b = broker("mqtt://[::1]:1884").expect("url");
        assert_eq!((b.host.as_str(), b.port), ("::1", 1884));
        assert!(broker("http://x").is_err());
        assert!(broker("mqtt://u:p@x").is_err());
        assert!(broker("mqtt://x:notaport").is_err());
        assert_eq!(topic("fleet/{device_id}/pos", "a/b+#"), "fleet/a_b__/pos");
    }

    #[test]
    fn config_checks_name_the_key() {
        let mut g = GpsConfig {
            points_mqtt: "tcp://x".into(),
            ..GpsConfig::default()
        };
        assert_eq!(g.validate().expect_err("scheme").key, "gps.points_mqtt");
        g.points_mqtt = "mqtt://x".into();
        g.points_mqtt_topic = "a/+/b".into();
        assert_eq!(g.validate().expect_err("wild").key, "gps.points_mqtt_topic");
        g.points_mqtt_topic = "t/{device_id}".into();
        g.points_mqtt_ca_file = "/ca.pem".into();
        assert_eq!(g.validate().expect_err("ca").key, "gps.points_mqtt_ca_file");
        g.points_mqtt_ca_file.clear();
        assert!(g.validate().is_ok());
        g.points_mqtt_password = "hunter2".into();
        let shown = format!("{:?}", g.redacted());
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
