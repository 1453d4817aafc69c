//! The GPS device server: tracker protocols on one TCP port (default 5000).
//!
//! `detect` picks the protocol from a connection's first bytes; one pure decoder per protocol
//! (`nmea`, `h02`, `gps103`, `gt06`, `teltonika`, `tk103`, `queclink`, `meitrack`, `watch`) turns bytes into [`fix::Message`]s with the
//! acknowledgement the device waits for; `server` owns the sockets and the abuse limits
//! (`guard`); `registry` remembers devices; `points` delivers every valid fix at least once;
//! `metrics` feeds counters into an aggregation shard of its own, so they reach every sink like
//! StatsD metrics; `service` wires them up and hands the HTTP API (`crate::api`) the registry,
//! guard and counters it serves.
//! Sources never reach sinks directly: points go through the [`points::PointSink`] interface.

pub mod command;
pub mod detect;
pub mod encode;
mod encode_more;
pub mod fix;
pub mod forward;
pub mod gps103;
pub mod gt06;
mod gt06_more;
pub mod guard;
pub mod h02;
pub mod meitrack;
pub mod metrics;
pub mod mqtt;
pub mod nmea;
pub mod osmand;
pub mod points;
pub mod queclink;
pub mod registry;
pub mod server;
pub mod service;
pub mod teltonika;
pub mod tk103;
pub mod watch;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::duration::duration_str;
use crate::base::error::{check_nonzero_duration, check_positive, ConfigError};

/// `[gps]`: the tracker server. `config/tallyd.toml` documents every key at more length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpsConfig {
    /// Master switch: false starts no GPS server.
    pub enabled: bool,
    /// TCP address for trackers; empty = no server.
    pub listen: String,
    /// Open connections in total; a new one beyond it is closed at once and counted.
    pub max_connections: usize,
    /// Open connections per remote IP; beyond it a new one is closed and counted.
    pub max_connections_per_ip: usize,
    /// Longest binary frame (GT06, Teltonika) in bytes, 64..=1048576; a longer one closes the
    /// connection and counts as invalid.
    pub max_frame_bytes: usize,
    /// Longest text frame or line (NMEA, H02, GPS103, TK103, Queclink, Meitrack, watch) in
    /// bytes, 64..=65536; same treatment.
    pub max_line_bytes: usize,
    /// Whether NMEA sentences without a `*hh` checksum are refused (many receivers omit it;
    /// a checksum that is present is always verified).
    pub nmea_require_checksum: bool,
    /// Whether fixes the device itself marks invalid (RMC status `V`, GT06 not positioned,
    /// Teltonika without satellites) are written as points too, with `valid: false`.
    pub points_invalid_fixes: bool,
    /// Time a new connection has to name its device (login, IMEI handshake, first frame).
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
    /// Time a frame that has started arriving has to complete (cuts off byte-at-a-time senders).
    #[serde(with = "duration_str")]
    pub frame_timeout: Duration,
    /// An identified connection silent for this long is closed (keep above the heartbeat).
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// Devices kept in the registry; at the bound the longest-unseen disconnected one is
    /// forgotten, and a new device finding only connected ones is not listed (its points
    /// still go out).
    pub max_devices: usize,
    /// Plain-NMEA connections that never named themselves (`$PGID`), listed as
    /// `nmea:<ip>:<port>`, kept apart from `max_devices`: at the bound only their own
    /// longest-unseen disconnected one is forgotten, never an identified device; 0 = not listed
    /// (their points still go out).
    pub max_unidentified_devices: usize,
    /// A device is active when it sent anything within this window.
    #[serde(with = "duration_str")]
    pub active_window: Duration,
    /// Remote IPs the abuse guard tracks; idle ones are swept at the bound, and a new IP that
    /// still finds no room is refused.
    pub max_tracked_ips: usize,
    /// Whether misbehaving IPs are blacklisted (refused at accept for `blacklist_duration`).
    pub blacklist_enabled: bool,
    /// The fixed per-IP counting window of the blacklist thresholds.
    #[serde(with = "duration_str")]
    pub blacklist_window: Duration,
    /// Invalid frames from one IP within a window that blacklist it.
    pub blacklist_invalid_frames: u64,
    /// Share of invalid frames, in (0, 1], that blacklists an IP once it sent
    /// `blacklist_min_frames` in the window.
    pub blacklist_invalid_ratio: f64,
    /// Frames an IP must have sent in the window before `blacklist_invalid_ratio` applies.
    pub blacklist_min_frames: u64,
    /// Connections from one IP within a window beyond which it is blacklisted.
    pub blacklist_connections: u64,
    /// How long a blacklisted IP is refused.
    #[serde(with = "duration_str")]
    pub blacklist_duration: Duration,
    /// Prefix of the GPS metrics (`gps_tcp.messages_received`, ...).
    pub metric_prefix: String,
    /// Prefix of the point-pipeline metrics (`live.points_received`, ...).
    pub live_metric_prefix: String,
    /// NDJSON file receiving every valid fix, one object per line; empty = not written.
    /// Devices are acknowledged only once their points are written.
    pub points_file: String,
    /// Size in bytes (at least 4096) past which a write rotates the points file.
    pub points_file_max_bytes: u64,
    /// Points files kept, the current one included; the oldest is deleted.
    pub points_file_max_files: usize,
    /// Whether the points file is fsynced after each (group-committed) write.
    pub points_fsync: bool,
    /// Point batches waiting for the writer; a batch finding the queue full is not stored,
    /// is counted, and its device is not acknowledged.
    pub points_queue_batches: usize,
    /// HTTP endpoint receiving point batches as JSON through the durable `live_points` queue;
    /// empty = off.
    pub points_url: String,
    /// Extra headers for `points_url` requests (authorization, ...).
    pub points_headers: std::collections::BTreeMap<String, String>,
    /// Timeout of one `points_url` request, and of one batch's MQTT acknowledgements.
    #[serde(with = "duration_str")]
    pub points_timeout: Duration,
    /// MQTT broker receiving every point as JSON through the durable `mqtt_points` queue:
    /// `mqtt://host:1883` or `mqtts://host:8883`; empty = off.
    pub points_mqtt: String,
    /// Topic of each point; `{device_id}` is replaced by the device's id (`+ # /` in it
    /// become `_`).
    pub points_mqtt_topic: String,
    /// MQTT client id; empty = `tallyd-<host name>`.
    pub points_mqtt_client_id: String,
    /// MQTT user name; empty = none.
    pub points_mqtt_username: String,
    /// MQTT password (with `points_mqtt_username`).
    pub points_mqtt_password: String,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://`); empty = the
    /// bundled web PKI roots.
    pub points_mqtt_ca_file: String,
    /// Whether the OsmAnd / Traccar Client HTTP listener runs (phones).
    pub osmand_enabled: bool,
    /// Address of the OsmAnd listener (5055 is the port Traccar uses).
    pub osmand_listen: String,
    /// OsmAnd HTTP connections served at once (per IP: `gps.max_connections_per_ip`).
    pub osmand_max_connections: usize,
    /// Time a sent command waits for the device's answer.
    #[serde(with = "duration_str")]
    pub command_timeout: Duration,
    /// How long a command for an offline device waits for it to connect.
    #[serde(with = "duration_str")]
    pub command_ttl: Duration,
    /// Commands waiting per device; one more is refused and counted.
    pub commands_per_device: usize,
    /// Commands waiting or awaiting an answer in total; one more is refused and counted.
    pub commands_max: usize,
}

impl Default for GpsConfig {
    fn default() -> Self {
        GpsConfig {
            enabled: true,
            listen: "0.0.0.0:5000".into(),
            max_connections: 10_000,
            max_connections_per_ip: 64,
            max_frame_bytes: 16_384,
            max_line_bytes: 1024,
            nmea_require_checksum: false,
            points_invalid_fixes: false,
            handshake_timeout: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_devices: 100_000,
            max_unidentified_devices: 1024,
            active_window: Duration::from_secs(300),
            max_tracked_ips: 65_536,
            blacklist_enabled: true,
            blacklist_window: Duration::from_secs(60),
            blacklist_invalid_frames: 50,
            blacklist_invalid_ratio: 0.5,
            blacklist_min_frames: 20,
            blacklist_connections: 120,
            blacklist_duration: Duration::from_secs(900),
            metric_prefix: "gps_tcp.".into(),
            live_metric_prefix: "live.".into(),
            points_file: String::new(),
            points_file_max_bytes: 100 * 1024 * 1024,
            points_file_max_files: 5,
            points_fsync: true,
            points_queue_batches: 1024,
            points_url: String::new(),
            points_headers: std::collections::BTreeMap::new(),
            points_timeout: Duration::from_secs(10),
            points_mqtt: String::new(),
            points_mqtt_topic: "tallyd/gps/{device_id}".into(),
            points_mqtt_client_id: String::new(),
            points_mqtt_username: String::new(),
            points_mqtt_password: String::new(),
            points_mqtt_ca_file: String::new(),
            osmand_enabled: false,
            osmand_listen: "0.0.0.0:5055".into(),
            osmand_max_connections: 1024,
            command_timeout: Duration::from_secs(20),
            command_ttl: Duration::from_secs(3600),
            commands_per_device: 16,
            commands_max: 10_000,
        }
    }
}

impl GpsConfig {
    /// A copy fit to be shown (`print-config`): the header values hidden, the password of
    /// `points_url` too.
    pub fn redacted(&self) -> GpsConfig {
        GpsConfig {
            points_url: crate::base::redact::url(&self.points_url),
            points_headers: crate::base::redact::header_values(&self.points_headers),
            points_mqtt: crate::base::redact::url(&self.points_mqtt),
            points_mqtt_password: if self.points_mqtt_password.is_empty() {
                String::new()
            } else {
                crate::base::redact::MARKER.into()
            },
            ..self.clone()
        }
    }

    /// Checks what types alone cannot.
    ///
    /// # Errors
    /// The first value not allowed, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url_ok = self.points_url.is_empty()
            || self.points_url.starts_with("http://")
            || self.points_url.starts_with("https://");
        if !url_ok {
            return Err(ConfigError::invalid(
                "gps.points_url",
                format!(
                    " = {:?} must start with http:// or https://",
                    crate::base::redact::url(&self.points_url)
                ),
            ));
        }
        crate::queue::deliver::header_map(&self.points_headers, "gps.points_headers")?;
        mqtt::check(self)?;
        if self.osmand_enabled && self.osmand_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "gps.osmand_listen",
                format!(
                    " = {:?} is not an address like \"0.0.0.0:5055\"",
                    self.osmand_listen
                ),
            ));
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "gps.listen",
                format!(
                    " = {:?} is not an address like \"0.0.0.0:5000\"",
                    self.listen
                ),
            ));
        }
        let positive = [
            ("gps.max_connections", self.max_connections),
            ("gps.max_connections_per_ip", self.max_connections_per_ip),
            ("gps.max_devices", self.max_devices),
            ("gps.max_tracked_ips", self.max_tracked_ips),
            ("gps.points_file_max_files", self.points_file_max_files),
            ("gps.points_queue_batches", self.points_queue_batches),
            ("gps.osmand_max_connections", self.osmand_max_connections),
            ("gps.commands_per_device", self.commands_per_device),
            ("gps.commands_max", self.commands_max),
        ];
        for (key, v) in positive {
            check_positive(key, v as u64)?;
        }
        if !(64..=1_048_576).contains(&self.max_frame_bytes) {
            return Err(ConfigError::invalid(
                "gps.max_frame_bytes",
                " must be between 64 and 1048576",
            ));
        }
        if !(64..=65_536).contains(&self.max_line_bytes) {
            return Err(ConfigError::invalid(
                "gps.max_line_bytes",
                " must be between 64 and 65536",
            ));
        }
        for (key, d) in [
            ("gps.handshake_timeout", self.handshake_timeout),
            ("gps.frame_timeout", self.frame_timeout),
            ("gps.idle_timeout", self.idle_timeout),
            ("gps.active_window", self.active_window),
            ("gps.blacklist_window", self.blacklist_window),
            ("gps.blacklist_duration", self.blacklist_duration),
            ("gps.points_timeout", self.points_timeout),
            ("gps.command_timeout", self.command_timeout),
            ("gps.command_ttl", self.command_ttl),
        ] {
            check_nonzero_duration(key, d)?;
        }
        if !(self.blacklist_invalid_ratio > 0.0 && self.blacklist_invalid_ratio <= 1.0) {
            return Err(ConfigError::invalid(
                "gps.blacklist_invalid_ratio",
                " must be in (0, 1]",
            ));
        }
        if self.points_file_max_bytes < 4096 {
            return Err(ConfigError::invalid(
                "gps.points_file_max_bytes",
                " must be at least 4096",
            ));
        }
        if self.metric_prefix.contains(['|', ':', '#', '\n', ','])
            || self.live_metric_prefix.contains(['|', ':', '#', '\n', ','])
        {
            return Err(ConfigError::invalid(
                "gps.metric_prefix",
                " and gps.live_metric_prefix may not contain | : # , or a newline",
            ));
        }
        Ok(())
    }
}
