//! Turns the exposed state into remote write requests: one `TimeSeries` per exposed sample
//! (named and labelled exactly as `/metrics` names it), one sample each at the window's time,
//! split into requests of at most `max_samples_per_request` samples, protobuf-encoded and
//! snappy-compressed (block format, as the spec requires).

use prost::Message as _;

use super::proto::{Label, Sample, TimeSeries, WriteRequest};
use crate::model::{Context, MetricKind};
use crate::sinks::prometheus::{expo, label_pairs, Exposition, SampleRef, Visitor};

/// Encoded requests of one window, ready for the queue.
#[derive(Debug, Default)]
pub struct Encoded {
    /// Snappy-compressed `WriteRequest`s.
    pub bodies: Vec<Vec<u8>>,
    /// Samples in all bodies.
    pub samples: u64,
    /// Series left out for name clashes (as on `/metrics`).
    pub conflicts: u64,
    /// Requests that failed to compress, dropped.
    pub compress_errors: u64,
}

/// Builds the requests; holds the settings that do not change per window.
pub struct Encoder {
    /// Sorted by name; a series label of the same name wins, as in Prometheus.
    external: Vec<(String, String)>,
    max_samples: usize,
}

impl Encoder {
    pub fn new(external: &std::collections::BTreeMap<String, String>, max_samples: usize) -> Self {
        Encoder {
            external: external
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_samples: max_samples.max(1),
        }
    }

    /// The series of `state` at `timestamp_ms`, unencoded (tests and [`Encoder::encode`]).
    pub fn series(&self, state: &Exposition, timestamp_ms: i64) -> (Vec<TimeSeries>, u64) {
        let mut c = Collect {
            enc: self,
            ts: timestamp_ms,
            out: Vec::with_capacity(state.len()),
            cached: None,
        };
        let conflicts = state.visit(&mut c);
        (c.out, conflicts)
    }

    /// The requests for `state` at `timestamp_ms`.
    pub fn encode(&self, state: &Exposition, timestamp_ms: i64) -> Encoded {
        let (series, conflicts) = self.series(state, timestamp_ms);
        let mut enc = Encoded {
            conflicts,
            ..Encoded::default()
        };
        let mut snappy = snap::raw::Encoder::new();
        let mut buf = Vec::new();
        // Each series carries one sample, so a chunk of series is a chunk of samples.
        let mut series = series.into_iter();
        loop {
            let chunk: Vec<TimeSeries> = series.by_ref().take(self.max_samples).collect();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len() as u64;
            let req = WriteRequest { timeseries: chunk };
            buf.clear();
            buf.reserve(req.encoded_len());
            // Encoding into a Vec that was reserved to size cannot run out of room.
            if req.encode(&mut buf).is_err() {
                enc.compress_errors += 1;
                continue;
            }
            match snappy.compress_vec(&buf) {
                Ok(body) => {
                    enc.samples += n;
                    enc.bodies.push(body);
                }
                Err(_) => enc.compress_errors += 1,
            }
        }
        enc
    }
}

struct Collect<'a> {
    enc: &'a Encoder,
    ts: i64,
    out: Vec<TimeSeries>,
    /// The last context's labels: a summary's samples share them.
    cached: Option<(*const Context, Vec<(String, String)>)>,
}

impl Visitor for Collect<'_> {
    fn family(&mut self, _name: &str, _kind: MetricKind, _original: &str) {}

    fn sample(&mut self, s: &SampleRef<'_>) {
        let key = s.ctx as *const Context;
        if self.cached.as_ref().map(|(k, _)| *k) != Some(key) {
            self.cached = Some((key, label_pairs(s.ctx)));
        }
        let base: &[(String, String)] = self.cached.as_ref().map_or(&[], |(_, p)| p);
        let mut labels: Vec<Label> = Vec::with_capacity(base.len() + self.enc.external.len() + 2);
        labels.push(Label {
            name: "__name__".into(),
            value: format!("{}{}", s.name, s.suffix),
        });
        labels.extend(base.iter().map(|(k, v)| Label {
            name: k.clone(),
            value: v.clone(),
        }));
        if let Some(q) = s.quantile {
            let mut value = String::new();
            expo::value_into(&mut value, q);
            labels.push(Label {
                name: "quantile".into(),
                value,
            });
        }
        for (k, v) in &self.enc.external {
            if !labels.iter().any(|l| l.name == *k) {
                labels.push(Label {
                    name: k.clone(),
                    value: v.clone(),
                });
            }
        }
        // The spec requires labels sorted by name (byte order, which `str` ordering is).
        labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        self.out.push(TimeSeries {
            labels,
            samples: vec![Sample {
                value: s.value,
                timestamp: self.ts,
            }],
        });
    }
}
