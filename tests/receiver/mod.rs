//! Local stand-ins for the services alert notifiers talk to, written from their published
//! APIs: each validates a request as the real service documents it and answers the way it
//! does (status and body), with scripted faults. HTTP/1.1 on 127.0.0.1:0, one request per
//! connection (`Connection: close`).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status this stand-in answered.
    pub status: u16,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Which service a path imitates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Service {
    /// Any JSON object, 200.
    Webhook,
    /// Slack incoming webhook: `{"text"}` required; 200 "ok", 400 "invalid_payload",
    /// "no_text" (docs.slack.dev incoming webhooks; api.slack.com changelog 2016-05-17).
    Slack,
    /// PagerDuty Events API v2 enqueue: 202 `{"status":"success","message":"Event processed",
    /// "dedup_key"}`, 400 `{"status":"invalid event","message":"Event object is invalid","errors"}`.
    PagerDuty,
    /// Alertmanager `POST /api/v2/alerts`: array of alerts, `labels.alertname` required,
    /// RFC 3339 times; 200 with empty body, 400 with the validation error.
    Alertmanager,
}

struct Route {
    prefix: String,
    service: Service,
    /// Statuses to answer before validating (fault injection); consumed in order.
    faults: VecDeque<u16>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    routes: Arc<Mutex<Vec<Route>>>,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let routes: Arc<Mutex<Vec<Route>>> = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (r, q) = (Arc::clone(&routes), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, q) = (Arc::clone(&r), Arc::clone(&q));
                std::thread::spawn(move || {
                    let _ = serve(stream, &r, &q);
                });
            }
        });
        Receiver {
            addr,
            routes,
            requests,
        }
    }

    /// Serves `service` under `prefix`, answering `faults` first.
    pub fn route(&self, prefix: &str, service: Service, faults: &[u16]) -> String {
        self.routes.lock().expect("routes").push(Route {
            prefix: prefix.to_string(),
            service,
            faults: faults.iter().copied().collect(),
        });
        format!("http://{}{prefix}", self.addr)
    }

    pub fn received(&self, prefix: &str) -> Vec<Request> {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits (at most 15 s) until `pred` holds for the requests under `prefix`.
    pub fn wait(
        &self,
        prefix: &str,
        what: &str,
        pred: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.received(prefix);
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} at {prefix}; got {got:#?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn serve(
    stream: std::net::TcpStream,
    routes: &Mutex<Vec<Route>>,
    log: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    let (status, answer) = {
        let mut routes = routes.lock().expect("routes");
        match routes.iter_mut().find(|r| path.starts_with(&r.prefix)) {
            None => (404, "no route".to_string()),
            Some(r) => match r.faults.pop_front() {
                Some(code) => (code, format!("injected {code}")),
                None => answer(r.service, &method, &headers, &body),
            },
        }
    };
    log.lock().expect("log").push(Request {
        method,
        path,
        headers,
        body,
        status,
    });
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    out.flush()
}

fn is_json(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("application/json"))
}

fn rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| humantime::parse_rfc3339(s).is_ok())
}

fn answer(
    service: Service,
    method: &str,
    headers: &[(String, String)],
    body: &str,
) -> (u16, String) {
    if method != "POST" {
        return (405, "method not allowed".into());
    }
    let parsed: Result<Value, _> = serde_json::from_str(body);
    match service {
        Service::Webhook => match parsed {
            Ok(Value::Object(_)) if is_json(headers) => (200, "{}".into()),
            _ => (400, "expected a JSON object".into()),
        },
        Service::Slack => match parsed {
            Ok(v) if is_json(headers) => match v.get("text").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => (200, "ok".into()),
                _ => (400, "no_text".into()),
            },
            _ => (400, "invalid_payload".into()),
        },
        Service::PagerDuty => {
            let mut errors = Vec::new();
            let v = parsed.unwrap_or(Value::Null);
            if v.get("routing_key")
                .and_then(Value::as_str)
                .is_none_or(|k| k.len() != 32)
            {
                errors.push("'routing_key' must be a 32 character integration key");
            }
            let action = v.get("event_action").and_then(Value::as_str).unwrap_or("");
            if !["trigger", "acknowledge", "resolve"].contains(&action) {
                errors.push("'event_action' is invalid");
            }
            let dedup = v.get("dedup_key").and_then(Value::as_str);
            if dedup.is_some_and(|d| d.len() > 255) || (action != "trigger" && dedup.is_none()) {
                errors.push("'dedup_key' is missing or longer than 255 characters");
            }
            if action == "trigger" {
                let p = v.get("payload").cloned().unwrap_or(Value::Null);
                if p.get("summary")
                    .and_then(Value::as_str)
                    .is_none_or(|s| s.is_empty() || s.chars().count() > 1024)
                {
                    errors.push("'payload.summary' is missing or too long");
                }
                if p.get("source")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errors.push("'payload.source' is missing");
                }
                let sev = p.get("severity").and_then(Value::as_str).unwrap_or("");
                if !["critical", "error", "warning", "info"].contains(&sev) {
                    errors.push("'payload.severity' is invalid");
                }
                if p.get("timestamp").is_some_and(|t| !rfc3339(t)) {
                    errors.push("'payload.timestamp' is not ISO 8601");
                }
            }
            if errors.is_empty() && is_json(headers) {
                let key = dedup
                    .map(str::to_string)
                    .unwrap_or_else(|| "generated".into());
                (202, serde_json::json!({"status": "success", "message": "Event processed", "dedup_key": key}).to_string())
            } else {
                (400, serde_json::json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}).to_string())
            }
        }
        Service::Alertmanager => {
            let Ok(Value::Array(alerts)) = parsed else {
                return (400, "body must be a JSON array of alerts".into());
            };
            for a in &alerts {
                let labels = a.get("labels").and_then(Value::as_object);
                if labels
                    .and_then(|l| l.get("alertname"))
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return (400, "labels.alertname is required".into());
                }
                for f in ["startsAt", "endsAt"] {
                    if a.get(f).is_some_and(|t| !rfc3339(t)) {
                        return (400, format!("{f} is not RFC 3339"));
                    }
                }
            }
            (200, String::new())
        }
    }
}
