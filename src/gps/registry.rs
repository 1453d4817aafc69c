//! The device registry: every device seen, its connection, last fix and message counts.
//!
//! Two pools, each with its own bound: devices that named themselves (a login, an IMEI, an id
//! field, `$PGID`) are bounded by `gps.max_devices`; plain-NMEA connections that never did are
//! listed as `nmea:<ip>:<port>`, one per connection, and bounded by
//! `gps.max_unidentified_devices`, so that a peer opening connections churns only its own pool
//! and never pushes out an identified device. At a pool's bound, its device seen longest ago
//! that has no open connection is forgotten to make room (counted as evicted); when every
//! device of the pool is connected, the new one is not tracked (counted as refused) but its
//! positions are still delivered. Times are passed in (Unix ms), so the active window is
//! tested without waiting.

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

/// Which pool a device is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The device named itself (bound `gps.max_devices`).
    Identified = 0,
    /// A plain-NMEA connection known only by its address (bound `gps.max_unidentified_devices`).
    Unidentified = 1,
}

/// One device, as shown by the API.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// The device's identity.
    pub id: String,
    /// Whether the device named itself (false: a plain-NMEA connection's `nmea:<ip>:<port>`).
    pub identified: bool,
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

/// The devices seen: one map per [`Pool`], each bounded.
pub struct Registry {
    devices: Mutex<[HashMap<String, Entry>; 2]>,
    max: [usize; 2],
    active_window_ms: i64,
    /// Identified devices forgotten at `gps.max_devices` to make room.
    pub evicted: AtomicU64,
    /// New identified devices not tracked because every tracked one was connected.
    pub refused: AtomicU64,
    /// Unidentified devices forgotten at `gps.max_unidentified_devices` to make room.
    pub unidentified_evicted: AtomicU64,
    /// New unidentified devices not tracked because every tracked one was connected (or the
    /// bound is 0).
    pub unidentified_refused: AtomicU64,
}

impl Registry {
    /// An empty registry of at most `max_devices` identified and `max_unidentified`
    /// unidentified devices; `active_window` is `gps.active_window`.
    pub fn new(
        max_devices: usize,
        max_unidentified: usize,
        active_window: std::time::Duration,
    ) -> Registry {
        Registry {
            devices: Mutex::new([HashMap::new(), HashMap::new()]),
            max: [max_devices, max_unidentified],
            active_window_ms: active_window.as_millis() as i64,
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            unidentified_evicted: AtomicU64::new(0),
            unidentified_refused: AtomicU64::new(0),
        }
    }

    fn counters(&self, pool: Pool) -> (&AtomicU64, &AtomicU64) {
        match pool {
            Pool::Identified => (&self.evicted, &self.refused),
            Pool::Unidentified => (&self.unidentified_evicted, &self.unidentified_refused),
        }
    }

    /// A connection identified itself as `id` of `pool`. Returns false when the device is not
    /// tracked. Only devices of the same pool are evicted to make room.
    pub fn connected(
        &self,
        id: &str,
        pool: Pool,
        protocol: Protocol,
        remote: SocketAddr,
        now_ms: i64,
    ) -> bool {
        let mut all = lock(&self.devices);
        let d = &mut all[pool as usize];
        let (evicted, refused) = self.counters(pool);
        if !d.contains_key(id) && d.len() >= self.max[pool as usize] {
            let oldest = d
                .iter()
                .filter(|(_, e)| e.connections == 0)
                .min_by_key(|(_, e)| e.last_seen_ms)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    d.remove(&k);
                    evicted.fetch_add(1, Relaxed);
                }
                None => {
                    refused.fetch_add(1, Relaxed);
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

    /// The protocol of the latest connection of identified device `id`, if it is tracked.
    pub fn protocol(&self, id: &str) -> Option<Protocol> {
        lock(&self.devices)[Pool::Identified as usize]
            .get(id)
            .map(|e| e.protocol)
    }

    /// The connection of `id` (of `pool`) closed.
    pub fn disconnected(&self, id: &str, pool: Pool) {
        if let Some(e) = lock(&self.devices)[pool as usize].get_mut(id) {
            e.connections = e.connections.saturating_sub(1);
        }
    }

    /// Counts a message of `id` (of `pool`), good or bad, and keeps its newest fix.
    pub fn message(&self, id: &str, pool: Pool, valid: bool, fix: Option<&Fix>, now_ms: i64) {
        let mut d = lock(&self.devices);
        let Some(e) = d[pool as usize].get_mut(id) else {
            return;
        };
        e.last_seen_ms = now_ms;
        if valid {
            e.valid += 1;
        } else {
            e.invalid += 1;
        }
        if let Some(f) = fix {
            if e.last_fix.as_ref().is_none_or(|l| f.time_ms >= l.time_ms) {
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

    /// Every device (or the active ones), identified ones first, each pool sorted by id.
    pub fn snapshot(&self, active_only: bool, now_ms: i64) -> Vec<Device> {
        let d = lock(&self.devices);
        let mut out: Vec<Device> = d
            .iter()
            .enumerate()
            .flat_map(|(pool, m)| m.iter().map(move |(id, e)| (pool, id, e)))
            .filter(|(_, _, e)| !active_only || self.is_active(e, now_ms))
            .map(|(pool, id, e)| Device {
                id: id.clone(),
                identified: pool == Pool::Identified as usize,
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
        out.sort_by(|a, b| (!a.identified, &a.id).cmp(&(!b.identified, &b.id)));
        out
    }

    /// (devices tracked, active devices per protocol), both pools.
    pub fn counts(&self, now_ms: i64) -> (usize, [u64; Protocol::ALL.len()]) {
        let d = lock(&self.devices);
        let mut active = [0u64; Protocol::ALL.len()];
        for e in d.iter().flat_map(|m| m.values()) {
            if self.is_active(e, now_ms) {
                active[e.protocol.index()] += 1;
            }
        }
        (d.iter().map(HashMap::len).sum(), active)
    }

    /// Devices tracked per pool: (identified, unidentified).
    pub fn sizes(&self) -> (usize, usize) {
        let d = lock(&self.devices);
        (d[0].len(), d[1].len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ID: Pool = Pool::Identified;
    const ANON: Pool = Pool::Unidentified;

    fn addr() -> SocketAddr {
        "10.0.0.1:4000".parse().expect("addr")
    }

    #[test]
    fn active_window_and_counts() {
        let r = Registry::new(10, 10, Duration::from_secs(300));
        assert!(r.connected("a", ID, Protocol::Gt06, addr(), 0));
        assert!(r.connected("b", ID, Protocol::Nmea, addr(), 0));
        r.message("a", ID, true, None, 1_000);
        r.message("a", ID, false, None, 400_000);
        assert_eq!(r.counts(400_000), (2, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
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
        let r = Registry::new(2, 2, Duration::from_secs(300));
        assert!(r.connected("a", ID, Protocol::Gt06, addr(), 0));
        assert!(r.connected("b", ID, Protocol::Gt06, addr(), 10));
        assert!(!r.connected("c", ID, Protocol::Gt06, addr(), 20));
        assert_eq!(r.refused.load(Relaxed), 1);
        r.disconnected("a", ID);
        assert!(r.connected("c", ID, Protocol::Gt06, addr(), 30));
        assert_eq!(r.evicted.load(Relaxed), 1);
        let ids: Vec<String> = r.snapshot(false, 30).into_iter().map(|d| d.id).collect();
        assert_eq!(ids, vec!["b", "c"]);
    }

    #[test]
    fn unidentified_devices_churn_only_their_own_pool() {
        let r = Registry::new(2, 3, Duration::from_secs(300));
        assert!(r.connected("imei-1", ID, Protocol::Gt06, addr(), 0));
        r.disconnected("imei-1", ID);
        // A thousand short plain-NMEA connections: each a new unidentified device.
        for i in 0..1000 {
            let id = format!("nmea:10.0.0.9:{}", 1000 + i);
            assert!(r.connected(&id, ANON, Protocol::Nmea, addr(), 10 + i));
            r.disconnected(&id, ANON);
        }
        assert_eq!(r.sizes(), (1, 3));
        assert_eq!(r.unidentified_evicted.load(Relaxed), 997);
        assert_eq!(r.evicted.load(Relaxed), 0);
        let ids: Vec<String> = r.snapshot(false, 2000).into_iter().map(|d| d.id).collect();
        assert_eq!(
            ids[0], "imei-1",
            "the identified device stays, listed first"
        );
        assert_eq!(ids.len(), 4);
        // The same id in the other pool is another device (PGID ids may contain ':').
        assert!(r.connected("nmea:10.0.0.9:1999", ID, Protocol::Nmea, addr(), 3000));
        assert_eq!(r.sizes(), (2, 3));
        r.message("nmea:10.0.0.9:1999", ID, true, None, 3001);
        let d = r.snapshot(false, 3001);
        let both: Vec<_> = d.iter().filter(|d| d.id == "nmea:10.0.0.9:1999").collect();
        assert_eq!(both.len(), 2);
        assert!(both[0].identified && both[0].valid_messages == 1);
        assert!(!both[1].identified && both[1].valid_messages == 0);
        // Connected unidentified devices are refused, not evicted, at the bound.
        for i in 0..3 {
            assert!(r.connected(&format!("nmea:h:{i}"), ANON, Protocol::Nmea, addr(), 4000));
        }
        assert!(!r.connected("nmea:h:9", ANON, Protocol::Nmea, addr(), 4001));
        assert_eq!(r.unidentified_refused.load(Relaxed), 1);
        assert_eq!(r.refused.load(Relaxed), 0);
    }

    #[test]
    fn a_zero_bound_lists_no_unidentified_device() {
        let r = Registry::new(2, 0, Duration::from_secs(300));
        assert!(!r.connected("nmea:h:1", ANON, Protocol::Nmea, addr(), 0));
        assert_eq!(r.unidentified_refused.load(Relaxed), 1);
        assert_eq!(r.sizes(), (0, 0));
    }
}
