//! The explicit bucket bounds OTLP histograms arrived with, by context, so that `/metrics`
//! and remote write export them as classic histograms with those bounds rather than with
//! `prometheus.histogram_buckets`. The OTLP converter records them as it converts a point;
//! the Prometheus exposition reads them when it creates the series. Process-wide, bounded at
//! [`MAX_CONTEXTS`] contexts (past it a new histogram gets the configured buckets).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::{key_hash, write_key, MetricKind};

/// Contexts whose bounds are kept.
pub const MAX_CONTEXTS: usize = 100_000;

fn table() -> &'static Mutex<HashMap<u64, Arc<[f64]>>> {
    static T: OnceLock<Mutex<HashMap<u64, Arc<[f64]>>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Records `bounds` for the context (`kind`, `name`, `tags`), the tags as the shard will key
/// them (empty ones left out, sorted, de-duplicated).
pub fn record(kind: MetricKind, name: &str, tags: &[String], bounds: &[f64]) {
    let mut t: Vec<&[u8]> = tags
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| t.as_bytes())
        .collect();
    t.sort_unstable();
    t.dedup();
    let mut key = Vec::with_capacity(name.len() + 64);
    write_key(&mut key, name.as_bytes(), t);
    let hash = key_hash(kind, name.len(), &key);
    let mut map = table().lock().unwrap_or_else(|p| p.into_inner());
    match map.get(&hash) {
        Some(b) if **b == *bounds => {}
        Some(_) => {
            map.insert(hash, bounds.into());
        }
        None if map.len() < MAX_CONTEXTS => {
            map.insert(hash, bounds.into());
        }
        None => {}
    }
}

/// The bounds recorded for the context whose [`Context::hash_code`](super::Context::hash_code)
/// is `hash`.
pub fn lookup(hash: u64) -> Option<Arc<[f64]>> {
    let map = table().lock().unwrap_or_else(|p| p.into_inner());
    map.get(&hash).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Context;

    #[test]
    fn keyed_like_the_shard_keys_contexts() {
        let tags = vec!["b:2".to_string(), "a:1".to_string(), String::new()];
        record(MetricKind::Distribution, "otlp.lat", &tags, &[1.0, 2.0]);
        let ctx = Context::from_unsorted(MetricKind::Distribution, "otlp.lat", &["a:1", "b:2"]);
        assert_eq!(lookup(ctx.hash_code()).as_deref(), Some(&[1.0, 2.0][..]));
        let other = Context::from_unsorted(MetricKind::Histogram, "otlp.lat", &["a:1", "b:2"]);
        assert_eq!(lookup(other.hash_code()), None);
    }
}
