//! Turns the exposed state into remote write requests: one `TimeSeries` per exposed sample
//! (named and labelled exactly as `/metrics` names it), one sample each at the window's time,
//! split into requests of at most `max_samples_per_request` samples, protobuf-encoded and
//! snappy-compressed (block format, as the spec requires).

use prost::Message as _;

use super::proto::{Label, Sample, TimeSeries, WriteRequest};
use crate::base::expo;
use crate::model::Context;
use crate::sinks::prometheus::{label_pairs, Exposition, FamilyRef, SampleRef, Snapshot, Visitor};

/// The staleness marker of the remote write 1.0 spec (and Prometheus' own `StaleNaN`): a NaN
/// with this exact bit pattern tells the receiver that the series ended.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

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
    /// An encoder adding `external` labels and splitting requests at `max_samples` samples
    /// (at least 1).
    pub fn new(external: &std::collections::BTreeMap<String, String>, max_samples: usize) -> Self {
        Encoder {
            external: external
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_samples: max_samples.max(1),
        }
    }

    /// The series of `state` at `timestamp_ms`, then a staleness marker for each series of
    /// `stale` (the series that expired since the last window), unencoded.
    fn series(
        &self,
        state: &Exposition,
        stale: Option<&Snapshot>,
        timestamp_ms: i64,
    ) -> (Vec<TimeSeries>, u64) {
        let mut c = Collect {
            enc: self,
            ts: timestamp_ms,
            out: Vec::with_capacity(state.len()),
            cached: None,
            stale: false,
        };
        let mut conflicts = state.visit(&mut c);
        if let Some(gone) = stale.filter(|g| !g.is_empty()) {
            let live = c.out.len();
            c.stale = true;
            gone.visit(&mut c);
            // A series exposed again under the same labels is not stale.
            let key = |ts: &TimeSeries| -> Vec<(String, String)> {
                ts.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect()
            };
            let names: std::collections::HashSet<Vec<(String, String)>> =
                c.out[..live].iter().map(key).collect();
            let mut i = 0;
            c.out.retain(|ts| {
                i += 1;
                i <= live || !names.contains(&key(ts))
            });
        }
        let mut out = c.out;
        if !self.external.is_empty() {
            // An external label can make two series equal (`m{cluster="a"}` and a bare `m`
            // with external `cluster="a"`); a receiver rejects the whole request for that.
            let keep: Vec<bool> = {
                let mut seen = std::collections::HashSet::with_capacity(out.len());
                out.iter()
                    .map(|ts| seen.insert(ts.labels.as_slice()))
                    .collect()
            };
            let before = out.len();
            let mut i = 0;
            out.retain(|_| {
                i += 1;
                keep[i - 1]
            });
            conflicts += (before - out.len()) as u64;
        }
        (out, conflicts)
    }

    /// The requests for `state` at `timestamp_ms`.
    pub fn encode(&self, state: &Exposition, timestamp_ms: i64) -> Encoded {
        self.encode_with_stale(state, None, timestamp_ms)
    }

    /// The requests for `state` at `timestamp_ms`, with a staleness marker ([`STALE_NAN`])
    /// for every series of `stale`, so that queries stop at once rather than after the
    /// receiver's lookback.
    pub fn encode_with_stale(
        &self,
        state: &Exposition,
        stale: Option<&Snapshot>,
        timestamp_ms: i64,
    ) -> Encoded {
        let (series, conflicts) = self.series(state, stale, timestamp_ms);
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
    /// Every sample visited is a staleness marker.
    stale: bool,
}

impl Visitor for Collect<'_> {
    fn family(&mut self, _f: &FamilyRef<'_>) {}

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
        let extra = match (s.quantile, s.le) {
            (Some(q), _) => Some(("quantile", q)),
            (None, Some(le)) => Some(("le", le)),
            (None, None) => None,
        };
        if let Some((name, x)) = extra {
            let mut value = String::new();
            expo::value_into(&mut value, x);
            labels.push(Label {
                name: name.into(),
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
                value: if self.stale {
                    f64::from_bits(STALE_NAN)
                } else {
                    s.value
                },
                timestamp: self.ts,
            }],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::SeriesValue;
    use crate::model::MetricKind;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// The wire messages declared again from the spec's field numbers, so a mistake in
    /// `proto.rs` cannot cancel itself out.
    mod wire {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Req {
            #[prost(message, repeated, tag = "1")]
            pub ts: Vec<Ts>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Ts {
            #[prost(message, repeated, tag = "1")]
            pub labels: Vec<Lbl>,
            #[prost(message, repeated, tag = "2")]
            pub samples: Vec<Smp>,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Lbl {
            #[prost(string, tag = "1")]
            pub name: String,
            #[prost(string, tag = "2")]
            pub value: String,
        }
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Smp {
            #[prost(double, tag = "1")]
            pub value: f64,
            #[prost(int64, tag = "2")]
            pub timestamp: i64,
        }
    }

    use crate::sinks::testutil::{flush, summary};

    /// Decompresses and decodes every body into `"name{labels} value @ts"` lines, checking
    /// the spec's label rules on the way.
    fn decode(bodies: &[Vec<u8>]) -> Vec<String> {
        use prost::Message as _;
        let mut lines = Vec::new();
        for b in bodies {
            let raw = snap::raw::Decoder::new()
                .decompress_vec(b)
                .expect("snappy block format");
            let req = wire::Req::decode(raw.as_slice()).expect("WriteRequest");
            for ts in req.ts {
                let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
                let mut sorted = names.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(names, sorted, "labels sorted by name, no duplicates");
                assert!(ts
                    .labels
                    .iter()
                    .all(|l| !l.name.is_empty() && !l.value.is_empty()));
                let name = ts
                    .labels
                    .iter()
                    .find(|l| l.name == "__name__")
                    .expect("__name__")
                    .value
                    .clone();
                let rest: Vec<String> = ts
                    .labels
                    .iter()
                    .filter(|l| l.name != "__name__")
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect();
                assert_eq!(ts.samples.len(), 1);
                let s = &ts.samples[0];
                lines.push(format!(
                    "{name}{{{}}} {} @{}",
                    rest.join(","),
                    s.value,
                    s.timestamp
                ));
            }
        }
        lines.sort();
        lines
    }

    fn external() -> BTreeMap<String, String> {
        [("cluster", "eu-1"), ("env", "default")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn window_becomes_the_scrape_series() {
        let mut state = Exposition::new(Duration::from_secs(300), 1000);
        state.update(&flush(
            0,
            vec![
                (
                    MetricKind::Counter,
                    "page.views",
                    &["env:prod", "flag"],
                    SeriesValue::Counter(3.0),
                ),
                (MetricKind::Gauge, "temp-c", &[], SeriesValue::Gauge(-1.5)),
                (MetricKind::Set, "users", &[], SeriesValue::Set(4)),
                (
                    MetricKind::Timer,
                    "db.query",
                    &["db:main"],
                    summary(&[1.0, 2.0, 3.0]),
                ),
            ],
        ));
        state.update(&flush(
            10,
            vec![(
                MetricKind::Counter,
                "page.views",
                &["env:prod", "flag"],
                SeriesValue::Counter(2.0),
            )],
        ));
        let enc = Encoder::new(&external(), 2000);
        let out = enc.encode(&state, 20_000);
        assert_eq!(out.bodies.len(), 1);
        assert_eq!(out.samples, 7);
        assert_eq!((out.conflicts, out.compress_errors), (0, 0));
        let want = [
            "db_query_count{cluster=eu-1,db=main,env=default} 3 @20000",
            "db_query_sum{cluster=eu-1,db=main,env=default} 6 @20000",
            "db_query{cluster=eu-1,db=main,env=default,quantile=0.5} 2 @20000",
            "db_query{cluster=eu-1,db=main,env=default,quantile=0.99} 3 @20000",
            // The series' own env label wins over the external one; the counter is cumulative.
            "page_views_total{cluster=eu-1,env=prod} 5 @20000",
            "temp_c{cluster=eu-1,env=default} -1.5 @20000",
            "users{cluster=eu-1,env=default} 4 @20000",
        ];
        assert_eq!(decode(&out.bodies), want);
    }

    #[test]
    fn split_at_max_samples_and_clashes_as_on_metrics() {
        let mut state = Exposition::new(Duration::from_secs(300), 1000);
        let names: Vec<String> = (0..7).map(|i| format!("g{i}")).collect();
        let mut series: Vec<(MetricKind, &str, &[&str], SeriesValue)> = names
            .iter()
            .map(|n| {
                (
                    MetricKind::Gauge,
                    n.as_str(),
                    &[][..],
                    SeriesValue::Gauge(1.0),
                )
            })
            .collect();
        // Two gauges that differ only in a valueless tag: one series on /metrics, so one here.
        series.push((MetricKind::Gauge, "bar", &["a"], SeriesValue::Gauge(1.0)));
        series.push((MetricKind::Gauge, "bar", &["b"], SeriesValue::Gauge(2.0)));
        state.update(&flush(0, series));
        let out = Encoder::new(&BTreeMap::new(), 3).encode(&state, 1);
        assert_eq!(out.bodies.len(), 3, "8 samples in requests of at most 3");
        assert_eq!(out.samples, 8);
        assert_eq!(out.conflicts, 1);
        let lines = decode(&out.bodies);
        assert_eq!(lines.len(), 8);
        assert_eq!(lines.iter().filter(|l| l.starts_with("bar{")).count(), 1);
        // Each body on its own is a valid request of at most 3 series.
        for b in &out.bodies {
            assert!(decode(std::slice::from_ref(b)).len() <= 3);
        }
    }

    #[test]
    fn external_labels_never_make_two_equal_series() {
        let mut state = Exposition::new(Duration::from_secs(300), 1000);
        state.update(&flush(
            0,
            vec![
                (
                    MetricKind::Gauge,
                    "m",
                    &["cluster:eu-1"],
                    SeriesValue::Gauge(1.0),
                ),
                (MetricKind::Gauge, "m", &[], SeriesValue::Gauge(2.0)),
            ],
        ));
        let out = Encoder::new(&external(), 10).encode(&state, 1);
        assert_eq!(out.conflicts, 1);
        assert_eq!(decode(&out.bodies).len(), 1);
    }

    #[test]
    fn expired_series_get_one_staleness_marker() {
        let mut state = Exposition::new(Duration::from_secs(10), 1000);
        state.track_expired();
        let g = |n| (MetricKind::Gauge, n, &[][..], SeriesValue::Gauge(1.0));
        state.update(&flush(0, vec![g("gone"), g("kept")]));
        state.update(&flush(20, vec![g("kept")]));
        let stale = state.take_expired();
        let out = Encoder::new(&BTreeMap::new(), 10).encode_with_stale(&state, Some(&stale), 5);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&out.bodies[0])
            .unwrap();
        let req = wire::Req::decode(raw.as_slice()).unwrap();
        let by_name = |n: &str| {
            req.ts
                .iter()
                .find(|t| t.labels.iter().any(|l| l.value == n))
                .map(|t| t.samples[0].value.to_bits())
        };
        assert_eq!(by_name("gone"), Some(STALE_NAN));
        assert_eq!(by_name("kept"), Some(1f64.to_bits()));
        let next = state.take_expired();
        let out = Encoder::new(&BTreeMap::new(), 10).encode_with_stale(&state, Some(&next), 6);
        assert_eq!(out.samples, 1, "one marker, once");
    }

    #[test]
    fn empty_state_sends_nothing() {
        let state = Exposition::new(Duration::from_secs(300), 1000);
        let out = Encoder::new(&external(), 10).encode(&state, 1);
        assert!(out.bodies.is_empty());
        assert_eq!(out.samples, 0);
    }
}
