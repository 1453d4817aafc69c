//! The `[statsd]` section: listeners, receive batching and line limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::{check_addr, check_nonzero_duration, check_positive, ConfigError};

use crate::aggregate::mapper::{Mapper, MapperProfile};
use crate::aggregate::{GaugeMode, LineOptions};
use crate::model::tagstyles::TagStyles;

/// The `[statsd]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsdConfig {
    /// UDP listen address; empty disables UDP.
    pub udp_listen: String,
    /// TCP listen address (newline-delimited); empty disables TCP.
    pub tcp_listen: String,
    /// Path of a Unix datagram socket; empty disables it.
    pub unix_socket: String,
    /// Number of UDP receiver threads, each with its own SO_REUSEPORT socket; 0 = one per two
    /// cores, at least 1, at most 4.
    pub udp_receivers: usize,
    /// SO_RCVBUF requested for each UDP socket, in bytes.
    pub udp_recv_buffer: usize,
    /// Datagrams read per recvmmsg call.
    pub udp_batch: usize,
    /// Pause after a recvmmsg call that returned fewer than `udp_batch` datagrams (it emptied
    /// the socket), so that the next call returns a fuller batch; 0 reads as soon as a datagram
    /// arrives.
    #[serde(with = "duration_str")]
    pub udp_batch_wait: Duration,
    /// Largest datagram accepted, in bytes; larger ones are truncated, counted, and their last line dropped.
    pub max_packet_size: usize,
    /// Concurrent TCP connections; further connections are refused and counted.
    pub tcp_max_connections: usize,
    /// A TCP connection that sends nothing for this long is closed.
    #[serde(with = "duration_str")]
    pub tcp_idle_timeout: Duration,
    /// Longest TCP line accepted, in bytes; a longer line is discarded and counted.
    pub tcp_max_line_length: usize,
    /// Tags per line; a line with more is rejected and counted.
    pub max_tags: usize,
    /// `absolute` (Datadog Agent) or `delta` (etsy statsd, statsd_exporter).
    pub gauge_mode: GaugeMode,
    /// Tag styles read besides DogStatsD's `|#k:v`: any of `influxdb` (`name,k=v:1|c`),
    /// `librato` (`name#k=v:1|c`), `signalfx` (`name[k=v]:1|c`).
    pub tag_styles: Vec<String>,
    /// Tags added to every StatsD metric line (the Agent's `dogstatsd_tags`, `DD_DOGSTATSD_TAGS`).
    pub tags: Vec<String>,
    /// Prefixed to every StatsD metric name, with a `.` added (the Agent's
    /// `statsd_metric_namespace`, `DD_STATSD_METRIC_NAMESPACE`); empty = none.
    pub metric_namespace: String,
    /// Names starting with one of these are not namespaced (the Agent's
    /// `statsd_metric_namespace_blocklist` and its default).
    pub metric_namespace_blocklist: Vec<String>,
    /// Timers and histograms are also sent as distributions (the Agent's
    /// `histogram_copy_to_distribution`, `DD_HISTOGRAM_COPY_TO_DISTRIBUTION`).
    pub histogram_copy_to_distribution: bool,
    /// Name prefix of those distributions (`histogram_copy_to_distribution_prefix`).
    pub histogram_copy_to_distribution_prefix: String,
    /// The Agent's `dogstatsd_mapper_profiles` (`DD_DOGSTATSD_MAPPER_PROFILES`, JSON).
    pub mapper_profiles: Vec<MapperProfile>,
}

/// The Agent's default `statsd_metric_namespace_blocklist`.
pub const NAMESPACE_BLOCKLIST: &[&str] = &[
    "datadog.agent",
    "datadog.dogstatsd",
    "datadog.process",
    "datadog.trace_agent",
    "datadog.tracer",
    "activemq",
    "activemq_58",
    "airflow",
    "cassandra",
    "confluent",
    "hazelcast",
    "hive",
    "ignite",
    "jboss",
    "jvm",
    "kafka",
    "presto",
    "sidekiq",
    "solr",
    "tomcat",
    "runtime",
];

impl Default for StatsdConfig {
    fn default() -> Self {
        Self {
            udp_listen: "0.0.0.0:8125".into(),
            tcp_listen: "0.0.0.0:8125".into(),
            unix_socket: String::new(),
            udp_receivers: 0,
            udp_recv_buffer: 8 * 1024 * 1024,
            udp_batch: 32,
            udp_batch_wait: Duration::from_micros(500),
            max_packet_size: 8192,
            tcp_max_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(300),
            tcp_max_line_length: 65536,
            max_tags: 100,
            tag_styles: Vec::new(),
            gauge_mode: GaugeMode::Absolute,
            tags: Vec::new(),
            metric_namespace: String::new(),
            metric_namespace_blocklist: NAMESPACE_BLOCKLIST.iter().map(|s| s.to_string()).collect(),
            histogram_copy_to_distribution: false,
            histogram_copy_to_distribution_prefix: String::new(),
            mapper_profiles: Vec::new(),
        }
    }
}

impl StatsdConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tag_styles()?;
        check_addr("statsd.udp_listen", &self.udp_listen, true)?;
        check_addr("statsd.tcp_listen", &self.tcp_listen, true)?;
        check_positive("statsd.udp_recv_buffer", self.udp_recv_buffer as u64)?;
        check_positive("statsd.udp_batch", self.udp_batch as u64)?;
        check_positive(
            "statsd.tcp_max_connections",
            self.tcp_max_connections as u64,
        )?;
        check_positive(
            "statsd.tcp_max_line_length",
            self.tcp_max_line_length as u64,
        )?;
        if !(512..=65535).contains(&self.max_packet_size) {
            return Err(ConfigError::invalid(
                "statsd.max_packet_size",
                " must be between 512 and 65535",
            ));
        }
        if self.udp_batch_wait > Duration::from_millis(50) {
            return Err(ConfigError::invalid(
                "statsd.udp_batch_wait",
                " must be at most 50ms",
            ));
        }
        if self.udp_batch > 1024 {
            return Err(ConfigError::invalid(
                "statsd.udp_batch",
                " must be at most 1024",
            ));
        }
        if self.udp_receivers > 64 {
            return Err(ConfigError::invalid(
                "statsd.udp_receivers",
                " must be at most 64",
            ));
        }
        if let Err(e) = Mapper::new(&self.mapper_profiles) {
            return Err(ConfigError::invalid(
                "statsd.mapper_profiles",
                format!(": {e}"),
            ));
        }
        if let Some(t) = self.tags.iter().find(|t| t.contains(',')) {
            return Err(ConfigError::invalid(
                "statsd.tags",
                format!(": {t:?} contains a comma, which separates tags"),
            ));
        }
        check_nonzero_duration("statsd.tcp_idle_timeout", self.tcp_idle_timeout)
    }

    /// The DogStatsD settings a listener's shard applies to its lines.
    pub fn line_options(&self) -> std::sync::Arc<LineOptions> {
        let mut namespace = self.metric_namespace.clone().into_bytes();
        if !namespace.is_empty() && !namespace.ends_with(b".") {
            namespace.push(b'.');
        }
        // Without a namespace the blocklist changes nothing: leave it out, so that lines take
        // the shard's plain path.
        let blocklist = if namespace.is_empty() {
            &[][..]
        } else {
            &self.metric_namespace_blocklist[..]
        };
        std::sync::Arc::new(LineOptions {
            namespace,
            namespace_blocklist: blocklist.iter().map(|s| s.clone().into_bytes()).collect(),
            tags: self
                .tags
                .iter()
                .filter(|t| !t.is_empty())
                .map(|s| s.clone().into_bytes())
                .collect(),
            // validate() compiled the same profiles, so this cannot fail in a running agent.
            mapper: (!self.mapper_profiles.is_empty())
                .then(|| Mapper::new(&self.mapper_profiles).ok())
                .flatten(),
            copy_to_distribution: self.histogram_copy_to_distribution.then(|| {
                self.histogram_copy_to_distribution_prefix
                    .clone()
                    .into_bytes()
            }),
        })
    }

    /// Whether any StatsD listener (UDP, TCP, Unix socket) is configured.
    pub fn any_listener(&self) -> bool {
        !(self.udp_listen.is_empty() && self.tcp_listen.is_empty() && self.unix_socket.is_empty())
    }

    /// The UDP receiver thread count, resolving 0 to one per two cores (at least 1, at most
    /// 4). Every receiver applies its lines to the one shard the datagram receivers share, so
    /// a receiver per core makes them take turns on that shard and move its cache lines
    /// between cores (BENCHMARKS.md has the measurement).
    pub fn receivers(&self) -> usize {
        if self.udp_receivers > 0 {
            return self.udp_receivers;
        }
        std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .clamp(1, 4)
    }
}

impl StatsdConfig {
    /// `statsd.tag_styles` as switches.
    ///
    /// # Errors
    /// A name that is not a tag style.
    pub fn tag_styles(&self) -> Result<TagStyles, ConfigError> {
        let mut t = TagStyles::default();
        for s in &self.tag_styles {
            match s.as_str() {
                "influxdb" => t.influxdb = true,
                "librato" => t.librato = true,
                "signalfx" => t.signalfx = true,
                other => {
                    return Err(ConfigError::invalid(
                        "statsd.tag_styles",
                        format!(": {other:?} is not one of influxdb, librato, signalfx"),
                    ))
                }
            }
        }
        Ok(t)
    }
}
