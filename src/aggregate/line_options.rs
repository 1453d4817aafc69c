//! The Agent's DogStatsD settings a StatsD listener's shard applies to its lines.

/// The Datadog Agent's DogStatsD settings that change the lines a StatsD listener applies
/// (`statsd.metric_namespace`, `statsd.tags`, `statsd.histogram_copy_to_distribution`), set by
/// the listener on its shard. Values that arrive otherwise (OTLP, GPS, host) are not changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineOptions {
    /// Prefixed to every name (with a trailing `.`), unless the name starts with one of
    /// `namespace_blocklist`; empty = none.
    pub namespace: Vec<u8>,
    /// Name prefixes that are not namespaced.
    pub namespace_blocklist: Vec<Vec<u8>>,
    /// Tags added to every line.
    pub tags: Vec<Vec<u8>>,
    /// Timers and histograms are also applied as a distribution named with this prefix.
    pub copy_to_distribution: Option<Vec<u8>>,
    /// The Agent's mapper profiles (renames and tags), applied before the namespace.
    pub mapper: Option<super::mapper::Mapper>,
}
