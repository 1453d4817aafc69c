//! The data model shared by sources, the aggregator and sinks: metric kinds, contexts, events
//! and service checks.

pub mod bounds;
pub mod dogstatsd;
pub mod tagstyles;

use std::hash::{Hash, Hasher};

/// The six DogStatsD metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MetricKind {
    /// `c`: increments summed per window.
    Counter = 0,
    /// `g`: the latest value wins (in delta mode a signed value moves it).
    Gauge = 1,
    /// `s`: distinct members counted per window.
    Set = 2,
    /// `ms`: samples summarized per window.
    Timer = 3,
    /// `h`: samples summarized per window.
    Histogram = 4,
    /// `d`: samples summarized per window (a sketch for Datadog).
    Distribution = 5,
}

impl MetricKind {
    /// Every kind, in discriminant order.
    pub const ALL: [MetricKind; 6] = [
        MetricKind::Counter,
        MetricKind::Gauge,
        MetricKind::Set,
        MetricKind::Timer,
        MetricKind::Histogram,
        MetricKind::Distribution,
    ];

    /// The statsd type name, as used in documentation and conflict-renamed Prometheus names.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Set => "set",
            MetricKind::Timer => "timer",
            MetricKind::Histogram => "histogram",
            MetricKind::Distribution => "distribution",
        }
    }

    /// Timers, histograms and distributions keep a distribution of samples per window.
    pub fn is_sampled(self) -> bool {
        matches!(
            self,
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution
        )
    }
}

/// A metric's identity: kind, name and the sorted, de-duplicated tag set.
///
/// Stored as one string, `name` followed by `,tag` for each tag, so that a context costs a single
/// allocation and can be compared against a borrowed line without building anything. Names may
/// contain `,`; `name_len` says where the name ends. Tags cannot contain `,` (it separates them
/// on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Hash of kind and key, computed once (see [`Context::hash_code`]); first, so that
    /// comparing two different contexts usually stops here.
    hash: u64,
    kind: MetricKind,
    name_len: u32,
    key: Box<str>,
}

impl Context {
    /// Builds a context from a name and tags that are already sorted and de-duplicated.
    pub fn new(kind: MetricKind, name: &str, sorted_tags: &[&str]) -> Context {
        // The same layout as `write_key`, kept as a `String` from the start.
        let mut key = String::with_capacity(
            name.len() + sorted_tags.iter().map(|t| t.len() + 1).sum::<usize>(),
        );
        key.push_str(name);
        for t in sorted_tags {
            key.push(',');
            key.push_str(t);
        }
        Context {
            hash: key_hash(kind, name.len(), key.as_bytes()),
            kind,
            name_len: name.len() as u32,
            key: key.into_boxed_str(),
        }
    }

    /// Builds a context from a key made by [`write_key`] whose first `name_len` bytes are the
    /// name.
    pub fn from_key(kind: MetricKind, name_len: usize, key: &str) -> Context {
        Context {
            hash: key_hash(kind, name_len, key.as_bytes()),
            kind,
            name_len: name_len as u32,
            key: key.into(),
        }
    }

    /// A hash of the context, computed at creation with a per-process random seed: sinks that
    /// index series by context use it instead of hashing the whole key on every flush.
    pub fn hash_code(&self) -> u64 {
        self.hash
    }

    /// Builds a context from unsorted tags (sorts and de-duplicates them).
    pub fn from_unsorted(kind: MetricKind, name: &str, tags: &[&str]) -> Context {
        let mut tags: Vec<&str> = tags.iter().copied().filter(|t| !t.is_empty()).collect();
        tags.sort_unstable();
        tags.dedup();
        Context::new(kind, name, &tags)
    }

    /// The metric kind.
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    /// The metric name, as sent.
    pub fn name(&self) -> &str {
        &self.key[..self.name_len as usize]
    }

    /// The tags, in sorted order.
    pub fn tags(&self) -> impl Iterator<Item = &str> + '_ {
        let rest = &self.key[self.name_len as usize..];
        rest.split(',').skip(1)
    }

    /// True when this context is `kind` with the key `key` (made by [`write_key`]) whose name
    /// is `name_len` bytes long.
    pub fn is(&self, kind: MetricKind, name_len: usize, key: &[u8]) -> bool {
        self.kind == kind && self.name_len as usize == name_len && self.key.as_bytes() == key
    }

    /// Heap bytes held by this context, for memory accounting.
    pub fn heap_size(&self) -> usize {
        self.key.len()
    }
}

impl Hash for Context {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal contexts have equal `hash` (it is computed from kind, name length and key).
        state.write_u64(self.hash);
    }
}

/// Writes a context's key into `out` (cleared first): the name, then `,tag` for each of the
/// sorted, de-duplicated tags.
pub fn write_key<'a>(
    out: &mut Vec<u8>,
    name: &[u8],
    sorted_tags: impl IntoIterator<Item = &'a [u8]>,
) {
    out.clear();
    out.extend_from_slice(name);
    for t in sorted_tags {
        out.push(b',');
        out.extend_from_slice(t);
    }
}

/// The hash of a context given as its key (see [`write_key`]): the same value
/// [`Context::hash_code`] returns for that context. Seeded once per process.
pub fn key_hash(kind: MetricKind, name_len: usize, key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    static STATE: std::sync::OnceLock<foldhash::quality::RandomState> = std::sync::OnceLock::new();
    let mut h = STATE.get_or_init(Default::default).build_hasher();
    // Kind and name length in one word: one hasher round instead of two.
    h.write_u64((kind as u64) << 32 | name_len as u64);
    h.write(key);
    h.finish()
}

/// Event priority (`p:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// The default.
    Normal,
    /// `p:low`.
    Low,
}

/// Event alert type (`t:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertType {
    /// The default, and any value not listed below.
    Info,
    /// `t:warning`.
    Warning,
    /// `t:error`.
    Error,
    /// `t:success`.
    Success,
}

/// A DogStatsD event (`_e{..}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The title, with `\n` turned into newlines.
    pub title: String,
    /// The body, with `\n` turned into newlines.
    pub text: String,
    /// `d:`, Unix seconds; `None` = when it is forwarded.
    pub timestamp: Option<i64>,
    /// `h:`, the host it is about.
    pub hostname: Option<String>,
    /// `k:`, groups related events.
    pub aggregation_key: Option<String>,
    /// `p:`.
    pub priority: Priority,
    /// `s:`, the source type name.
    pub source_type: Option<String>,
    /// `t:`.
    pub alert_type: AlertType,
    /// `#`, the tags as sent, less the Agent's internal ones (see [`Origin`]).
    pub tags: Vec<String>,
    /// Client metadata from the internal tags.
    pub origin: Origin,
    /// Optional fields that could not be read and were skipped (counted by the receiver).
    pub skipped_fields: u32,
}

/// Client metadata a DogStatsD client sends as tags (`dd.internal.entity_id:`,
/// `dd.internal.card:`, `dd.internal.jmx_check_name:`) or fields: not tags of the data, so the
/// parser strips them, as the Datadog Agent does, and keeps them here for origin enrichment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    /// `dd.internal.entity_id:` (the pod UID the admission controller sets as `DD_ENTITY_ID`).
    pub entity_id: Option<String>,
    /// `dd.internal.card:` or the `card:` field: the tag cardinality asked for.
    pub cardinality: Option<String>,
    /// `dd.internal.jmx_check_name:`.
    pub jmx_check_name: Option<String>,
    /// The `c:` field (container id).
    pub container_id: Option<String>,
}

/// A service check status (`0`..`3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// `0`.
    Ok = 0,
    /// `1`.
    Warning = 1,
    /// `2`.
    Critical = 2,
    /// `3`.
    Unknown = 3,
}

/// A DogStatsD service check (`_sc|..`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheck {
    /// The check's name.
    pub name: String,
    /// Its status.
    pub status: CheckStatus,
    /// `d:`, Unix seconds; `None` = when it is forwarded.
    pub timestamp: Option<i64>,
    /// `h:`, the host it is about.
    pub hostname: Option<String>,
    /// `m:`, with `\n` turned into newlines.
    pub message: Option<String>,
    /// `#`, the tags as sent, less the Agent's internal ones (see [`Origin`]).
    pub tags: Vec<String>,
    /// Client metadata from the internal tags.
    pub origin: Origin,
    /// Optional fields that could not be read and were skipped (counted by the receiver).
    pub skipped_fields: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_its_key() {
        let c = Context::from_unsorted(MetricKind::Counter, "a.b", &["z:1", "a:2", "z:1"]);
        assert_eq!(c.name(), "a.b");
        assert_eq!(c.tags().collect::<Vec<_>>(), vec!["a:2", "z:1"]);
        let mut key = Vec::new();
        write_key(&mut key, b"a.b", [&b"a:2"[..], b"z:1"]);
        assert_eq!(key, b"a.b,a:2,z:1");
        assert!(c.is(MetricKind::Counter, 3, &key));
        assert_eq!(c.hash_code(), key_hash(MetricKind::Counter, 3, &key));
        assert!(!c.is(MetricKind::Gauge, 3, &key));
        assert!(!c.is(MetricKind::Counter, 3, b"a.b,a:2"));
        assert!(!c.is(MetricKind::Counter, 3, b"a.b,a:2,z:1,x"));
        // Same bytes, but the name is "a.b,a:2" with one tag: another context.
        assert!(!c.is(MetricKind::Counter, 7, &key));
        assert_ne!(c.hash_code(), key_hash(MetricKind::Counter, 7, &key));
    }

    #[test]
    fn name_with_comma_is_kept_whole() {
        let c = Context::new(MetricKind::Gauge, "odd,name", &["t"]);
        assert_eq!(c.name(), "odd,name");
        assert_eq!(c.tags().collect::<Vec<_>>(), vec!["t"]);
        let bare = Context::new(MetricKind::Gauge, "plain", &[]);
        assert_eq!(bare.tags().count(), 0);
    }
}
