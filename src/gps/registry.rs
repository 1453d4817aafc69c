//! The device registry: every device seen, its connection, last fix and message counts.
//!
//! Bounded by `gps.max_devices`. At the bound, the device seen longest ago that has no open
//! connection is forgotten to make room (counted as evicted); when every device is connected,
//! the new one is not tracked (counted as refused) but its positions are still delivered.
//! Times are passed in (Unix ms), so the active window is tested without waiting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

use super::fix::{rfc3339_ms, Fix, Protocol};
use crate::base::lock;

/// The last fix of a device, as shown by the API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LastFix {
    /// Device time, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Device time, Unix milliseconds.
    pub time_ms: i64,
    /// Latitude in degrees (units as in [`Fix`]).
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Altitude in metres, when the protocol carries it.
    pub altitude: Option<f64>,
    /// Ground speed in km/h.
    pub speed_kmh: f64,
    /// Heading in degrees clockwise from true north.
    pub course: f64,
    /// Satellites used, when reported.
    pub satellites: Option<u32>,
    /// The device's own validity flag.
    pub valid: bool,
}

/// One device, as shown by the API.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// The device's identity.
    pub id: String,
    /// The protocol of its latest connection.
    pub protocol: Protocol,
    /// The remote address of its latest connection.
    pub remote_addr: String,
    /// Whether a connection of it is open.
    pub connected: bool,
    /// When its latest connection identified itself, RFC 3339 UTC.
    pub connected_since: String,
    /// When it last sent anything, RFC 3339 UTC.
    pub last_seen: String,
    /// When it last sent anything, Unix milliseconds.
    pub last_seen_ms: i64,
    /// Whether it sent anything within `gps.active_window`.
    pub active: bool,
    /// Its newest fix by device time; `None` before the first.
    pub last_fix: Option<LastFix>,
    /// Valid messages counted since it was first tracked.
    pub valid_messages: u64,
    /// Invalid messages counted since it was first tracked.
    pub invalid_messages: u64,
}

struct Entry {
    protocol: Protocol,
    remote: SocketAddr,
    connections: u32,
    connected_since_ms: i64,
    last_seen_ms: i64,
    last_fix: Option<LastFix>,
    valid: u64,
    invalid: u64,
}

/// The devices seen, bounded by `gps.max_devices`.
pub struct Registry {
    devices: Mutex<HashMap<String, Entry>>,
    max_devices: usize,
    active_window_ms: i64,
    /// Devices forgotten at the bound to make room.
    pub evicted: AtomicU64,
    /// New devices not tracked because every tracked device was connected.
    pub refused: AtomicU64,
}

impl Registry {
    /// An empty registry of at most `max_devices`; `active_window` is `gps.active_window`.
    pub fn new(max_devices: usize, active_window: std::time::Duration) -> Registry {
        Registry {
            devices: Mutex::new(HashMap::new()),
            max_devices,
            active_window_ms: active_window.as_millis() as i64,
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A connection identified itself as `id`. Returns false when the device is not tracked.
    pub fn connected(&self, id: &str, protocol: Protocol, remote: SocketAddr, now_ms: i64) -> bool {
        let mut d = lock(&self.devices);
        if !d.contains_key(id) && d.len() >= self.max_devices {
            let oldest = d
                .iter()
                .filter(|(_, e)| e.connections == 0)
                .min_by_key(|(_, e)| e.last_seen_ms)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    d.remove(&k);
                    self.evicted.fetch_add(1, Relaxed);
                }
                None => {
                    self.refused.fetch_add(1, Relaxed);
                    return false;
                }
            }
        }
        let e = d.entry(id.to_string()).or_insert_with(|| Entry {
            protocol,
            remote,
            connections: 0,
            connected_since_ms: now_ms,
            last_seen_ms: now_ms,
            last_fix: None,
            valid: 0,
            invalid: 0,
        });
        e.protocol = protocol;
        e.remote = remote;
        e.connections += 1;
        e.connected_since_ms = now_ms;
        e.last_seen_ms = now_ms;
        true
    }

    /// The connection of `id` closed.
    pub fn disconnected(&self, id: &str) {
        if let Some(e) = lock(&self.devices).get_mut(id) {
            e.connections = e.connections.saturating_sub(1);
        }
    }

    /// Counts a message of `id`, good or bad, and keeps its newest fix.
    pub fn message(&self, id: &str, valid: bool, fix: Option<&Fix>, now_ms: i64) {
        let mut d = lock(&self.devices);
        let Some(e) = d.get_mut(id) else { return };
        e.last_seen_ms = now_ms;
        if valid {
            e.valid += 1;
        } else {
            e.invalid += 1;
        }
        if let Some(f) = fix {
            if e.last_fix.as_ref().map_or(true, |l| f.time_ms >= l.time_ms) {
                e.last_fix = Some(LastFix {
                    time: rfc3339_ms(f.time_ms),
                    time_ms: f.time_ms,
                    lat: f.lat,
                    lon: f.lon,
                    altitude: f.altitude,
                    speed_kmh: f.speed_kmh,
                    course: f.course,
                    satellites: f.satellites,
                    valid: f.valid,
                });
            }
        }
    }

    fn is_active(&self, e: &Entry, now_ms: i64) -> bool {
        now_ms - e.last_seen_ms <= self.active_window_ms
    }

    /// Every device (or the active ones), sorted by id.
    pub fn snapshot(&self, active_only: bool, now_ms: i64) -> Vec<Device> {
        let d = lock(&self.devices);
        let mut out: Vec<Device> = d
            .iter()
            .filter(|(_, e)| !active_only || self.is_active(e, now_ms))
            .map(|(id, e)| Device {
                id: id.clone(),
                protocol: e.protocol,
                remote_addr: e.remote.to_string(),
                connected: e.connections > 0,
                connected_since: rfc3339_ms(e.connected_since_ms),
                last_seen: rfc3339_ms(e.last_seen_ms),
                last_seen_ms: e.last_seen_ms,
                active: self.is_active(e, now_ms),
                last_fix: e.last_fix.clone(),
                valid_messages: e.valid,
                invalid_messages: e.invalid,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// (devices tracked, active devices per protocol).
    pub fn counts(&self, now_ms: i64) -> (usize, [u64; 5]) {
        let d = lock(&self.devices);
        let mut active = [0u64; 5];
        for e in d.values().filter(|e| self.is_active(e, now_ms)) {
            active[e.protocol.index()] += 1;
        }
        (d.len(), active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr() -> SocketAddr {
        "10.0.0.1:4000".parse().expect("addr")
    }

    #[test]
    fn active_window_and_counts() {
        let r = Registry::new(10, Duration::from_secs(300));
        assert!(r.connected("a", Protocol::Gt06, addr(), 0));
        assert!(r.connected("b", Protocol::Nmea, addr(), 0));
        r.message("a", true, None, 1_000);
        r.message("a", false, None, 400_000);
        assert_eq!(r.counts(400_000), (2, [0, 0, 0, 1, 0]));
        let active = r.snapshot(true, 400_000);
        assert_eq!(active.len(), 1);
        assert_eq!(
            (
                active[0].id.as_str(),
                active[0].valid_messages,
                active[0].invalid_messages
            ),
            ("a", 1, 1)
        );
        assert_eq!(r.snapshot(false, 400_000).len(), 2);
    }

    #[test]
    fn bound_evicts_disconnected_then_refuses() {
        let r = Registry::new(2, Duration::from_secs(300));
        assert!(r.connected("a", Protocol::Gt06, addr(), 0));
        assert!(r.connected("b", Protocol::Gt06, addr(), 10));
        assert!(!r.connected("c", Protocol::Gt06, addr(), 20));
        assert_eq!(r.refused.load(Relaxed), 1);
        r.disconnected("a");
        assert!(r.connected("c", Protocol::Gt06, addr(), 30));
        assert_eq!(r.evicted.load(Relaxed), 1);
        let ids: Vec<String> = r.snapshot(false, 30).into_iter().map(|d| d.id).collect();
        assert_eq!(ids, vec!["b", "c"]);
    }
}
