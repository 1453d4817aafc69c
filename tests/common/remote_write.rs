//! A local remote write receiver, written from the remote write 1.0 spec (independent of
//! tallyd's encoder): it checks the headers, the snappy block body, the protobuf and the label
//! rules, answers 204, and injects faults (a scripted status per request, a status for every
//! request until changed, a hook run before an answer is written). Shared by
//! `remote_write_e2e.rs`, the chaos tests and the soak bench.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message as _;

/// The remote write 1.0 messages, written from the spec for the stand-in.
pub mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: u16,
    pub payload_id: String,
    pub headers: HashMap<String, String>,
    /// `__name__{labels} value` per series, when the body was valid.
    pub series: Vec<String>,
    pub timestamps: Vec<i64>,
}

/// Run with each request as it was recorded, before the answer is written.
pub type Hook = Box<dyn FnMut(&Seen) + Send>;

#[derive(Clone)]
pub struct StandIn {
    pub addr: SocketAddr,
    faults: Arc<Mutex<VecDeque<u16>>>,
    status: Arc<Mutex<Option<u16>>>,
    hook: Arc<Mutex<Option<Hook>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    pub fn start(faults: &[u16]) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let s = StandIn {
            addr: listener.local_addr().expect("addr"),
            faults: Arc::new(Mutex::new(faults.iter().copied().collect())),
            status: Arc::new(Mutex::new(None)),
            hook: Arc::new(Mutex::new(None)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let me = s.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || {
                    let _ = me.serve(stream);
                });
            }
        });
        s
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Answers every request with `status` (after the scripted faults) until set to `None`.
    pub fn set_status(&self, status: Option<u16>) {
        *self.status.lock().expect("status") = status;
    }

    /// Runs `hook` with every request before its answer is written (a test kills tallyd there).
    pub fn before_answer(&self, hook: impl FnMut(&Seen) + Send + 'static) {
        *self.hook.lock().expect("hook") = Some(Box::new(hook));
    }

    /// The requests seen so far, forgotten here (a long run folds them as it goes).
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().expect("seen"))
    }

    /// Keep-alive HTTP/1.1: requests until the peer closes.
    fn serve(&self, stream: std::net::TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut out = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let method = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h)?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body)?;
            let (mut status, msg, series, timestamps) = match check(&method, &headers, &body) {
                Ok((s, ts)) => (204, String::new(), s, ts),
                Err(e) => (400, e, Vec::new(), Vec::new()),
            };
            if let Some(f) = self.faults.lock().expect("faults").pop_front() {
                status = f;
            } else if let Some(f) = *self.status.lock().expect("status") {
                status = f;
            }
            let seen = Seen {
                status,
                payload_id: headers
                    .get("x-tallyd-payload-id")
                    .cloned()
                    .unwrap_or_default(),
                headers,
                series,
                timestamps,
            };
            if let Some(h) = self.hook.lock().expect("hook").as_mut() {
                h(&seen);
            }
            self.seen.lock().expect("seen").push(seen);
            write!(
                out,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{msg}",
                msg.len()
            )?;
            out.flush()?;
        }
    }
}

pub type Checked = (Vec<String>, Vec<i64>);

/// What a remote write 1.0 receiver requires of a request.
pub fn check(method: &str, h: &HashMap<String, String>, body: &[u8]) -> Result<Checked, String> {
    let header = |k: &str| h.get(k).map(String::as_str).unwrap_or_default();
    if method != "POST" {
        return Err(format!("method {method}"));
    }
    if header("content-encoding") != "snappy"
        || header("content-type") != "application/x-protobuf"
        || header("x-prometheus-remote-write-version") != "0.1.0"
        || header("user-agent").is_empty()
    {
        return Err(format!("headers {h:?}"));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("not snappy block format: {e}"))?;
    let req = wire::WriteRequest::decode(raw.as_slice()).map_err(|e| e.to_string())?;
    let mut series = Vec::new();
    let mut ts = Vec::new();
    for s in req.timeseries {
        let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
        if names.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("labels not sorted or repeated: {names:?}"));
        }
        if s.labels
            .iter()
            .any(|l| l.name.is_empty() || l.value.is_empty())
        {
            return Err("empty label".into());
        }
        let name = s
            .labels
            .iter()
            .find(|l| l.name == "__name__")
            .ok_or("no __name__")?;
        let rest: Vec<String> = s
            .labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| format!("{}=\"{}\"", l.name, l.value))
            .collect();
        for sample in &s.samples {
            series.push(format!(
                "{}{{{}}} {}",
                name.value,
                rest.join(","),
                sample.value
            ));
            ts.push(sample.timestamp);
        }
    }
    Ok((series, ts))
}
