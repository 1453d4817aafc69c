//! Sinks: consumers of each window's [`Flush`](crate::aggregate::Flush).
//!
//! A sink must not block the flusher: it takes what it needs from the shared batch and returns.
//! Work that crosses the network belongs behind a queue of the sink's own.

pub mod datadog;
pub mod delivery;
pub mod otlp;
pub mod prometheus;
pub mod remote_write;

pub use crate::aggregate::Sink;

/// Windows built by hand for the sinks' unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::aggregate::{Flush, Samples, Series, SeriesValue};
    use crate::model::{Context, MetricKind};

    /// A 10 s window at `ts` with percentiles 0.5 and 0.99.
    pub fn flush(ts: u64, series: Vec<(MetricKind, &str, &[&str], SeriesValue)>) -> Flush {
        Flush {
            timestamp: ts,
            interval: Duration::from_secs(10),
            percentiles: Arc::from(vec![0.5, 0.99]),
            series: series
                .into_iter()
                .map(|(k, n, t, value)| {
                    Series::new(Arc::new(Context::from_unsorted(k, n, t)), value)
                })
                .collect(),
            events: vec![],
            service_checks: vec![],
            timestamped: vec![],
            recycle: Default::default(),
        }
    }

    /// A sample summary of `values` with the quantiles `flush` declares.
    pub fn summary(values: &[f64]) -> SeriesValue {
        let mut samples = Samples::new();
        for v in values {
            samples.add(*v, 1);
        }
        samples.summarize(&[0.5, 0.99]);
        SeriesValue::Samples(Box::new(samples))
    }
}
