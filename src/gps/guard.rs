//! Abuse control per remote IP: connections per IP, connection rate, invalid frames, and the
//! blacklist that follows.
//!
//! Counters run in fixed windows of `gps.blacklist_window`. An IP is blacklisted for
//! `gps.blacklist_duration` when, within one window, it opens more than
//! `gps.blacklist_connections` connections, sends `gps.blacklist_invalid_frames` invalid
//! frames, or (after `gps.blacklist_min_frames` frames) an invalid share of at least
//! `gps.blacklist_invalid_ratio`. A blacklisted IP is refused at accept. The table of IPs is
//! bounded by `gps.max_tracked_ips`; idle entries are swept to make room, and a new IP that
//! still finds no room is refused and counted. Time is passed in, so tests need no sleeps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::fix::rfc3339_ms;
use super::GpsConfig;
use crate::base::lock;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The IP is on the blacklist (or just got there by opening too many connections).
    Blacklisted,
    /// The IP already has `gps.max_connections_per_ip` connections open.
    PerIpLimit,
    /// `gps.max_tracked_ips` are tracked and none could be swept.
    TableFull,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 3] = [
        Refusal::Blacklisted,
        Refusal::PerIpLimit,
        Refusal::TableFull,
    ];
    /// The `reason` tag value (`blacklisted`, `per_ip_limit`, `ip_table_full`).
    pub fn as_label(self) -> &'static str {
        match self {
            Refusal::Blacklisted => "blacklisted",
            Refusal::PerIpLimit => "per_ip_limit",
            Refusal::TableFull => "ip_table_full",
        }
    }
}

/// Why an IP was blacklisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `gps.blacklist_invalid_frames` invalid frames within a window.
    InvalidFrames,
    /// An invalid share of at least `gps.blacklist_invalid_ratio` within a window.
    InvalidRatio,
    /// More than `gps.blacklist_connections` connections within a window.
    ConnectionRate,
}

/// A blacklist entry, as shown by the API.
#[derive(Debug, Clone, Serialize)]
pub struct Ban {
    /// The blacklisted address.
    pub ip: String,
    /// Why it was blacklisted.
    pub reason: Reason,
    /// When, RFC 3339 UTC.
    pub since: String,
    /// When the ban lifts, RFC 3339 UTC.
    pub until: String,
    /// Whole seconds until the ban lifts.
    pub remaining_secs: u64,
}

struct IpState {
    active: u32,
    window_start: Instant,
    connections: u64,
    frames: u64,
    invalid: u64,
    ban: Option<(Instant, i64, Reason)>,
}

/// The abuse guard: per-IP connection counts, the counting windows and the blacklist.
pub struct Guard {
    per_ip: usize,
    max_ips: usize,
    enabled: bool,
    window: Duration,
    invalid_frames: u64,
    invalid_ratio: f64,
    min_frames: u64,
    connections: u64,
    duration: Duration,
    ips: Mutex<HashMap<IpAddr, IpState>>,
    /// IPs put on the blacklist since start.
    pub blacklistings: AtomicU64,
}

impl Guard {
    /// A guard with the limits of `cfg` and no IP tracked.
    pub fn new(cfg: &GpsConfig) -> Guard {
        Guard {
            per_ip: cfg.max_connections_per_ip,
            max_ips: cfg.max_tracked_ips,
            enabled: cfg.blacklist_enabled,
            window: cfg.blacklist_window,
            invalid_frames: cfg.blacklist_invalid_frames,
            invalid_ratio: cfg.blacklist_invalid_ratio,
            min_frames: cfg.blacklist_min_frames,
            connections: cfg.blacklist_connections,
            duration: cfg.blacklist_duration,
            ips: Mutex::new(HashMap::new()),
            blacklistings: AtomicU64::new(0),
        }
    }

    /// Admits a new connection from `ip` or says why not. An admitted connection must be
    /// [`Guard::release`]d when it closes.
    pub fn admit(&self, ip: IpAddr, now: Instant, now_ms: i64) -> Result<(), Refusal> {
        let mut ips = lock(&self.ips);
        if !ips.contains_key(&ip) && ips.len() >= self.max_ips {
            ips.retain(|_, s| s.active > 0 || s.ban.is_some_and(|(until, _, _)| until > now));
            if ips.len() >= self.max_ips {
                return Err(Refusal::TableFull);
            }
        }
        let s = ips.entry(ip).or_insert_with(|| IpState {
            active: 0,
            window_start: now,
            connections: 0,
            frames: 0,
            invalid: 0,
            ban: None,
        });
        self.roll(s, now);
        if s.ban.is_some() {
            return Err(Refusal::Blacklisted);
        }
        s.connections += 1;
        if self.enabled && s.connections > self.connections {
            self.ban(s, Reason::ConnectionRate, now, now_ms);
            return Err(Refusal::Blacklisted);
        }
        if s.active as usize >= self.per_ip {
            return Err(Refusal::PerIpLimit);
        }
        s.active += 1;
        Ok(())
    }

    /// A connection from `ip` that [`Guard::admit`] let in has closed.
    pub fn release(&self, ip: IpAddr) {
        if let Some(s) = lock(&self.ips).get_mut(&ip) {
            s.active = s.active.saturating_sub(1);
        }
    }

    /// Counts a frame from `ip`; returns true when `ip` is (now) blacklisted.
    pub fn frame(&self, ip: IpAddr, valid: bool, now: Instant, now_ms: i64) -> bool {
        let mut ips = lock(&self.ips);
        let Some(s) = ips.get_mut(&ip) else {
            return false;
        };
        self.roll(s, now);
        if s.ban.is_some() {
            return true;
        }
        s.frames += 1;
        if !valid {
            s.invalid += 1;
        }
        if !self.enabled || valid {
            return false;
        }
        let reason = if s.invalid >= self.invalid_frames {
            Some(Reason::InvalidFrames)
        } else if s.frames >= self.min_frames
            && s.invalid as f64 >= self.invalid_ratio * s.frames as f64
        {
            Some(Reason::InvalidRatio)
        } else {
            None
        };
        match reason {
            Some(r) => {
                self.ban(s, r, now, now_ms);
                true
            }
            None => false,
        }
    }

    /// True while `ip` is blacklisted.
    pub fn is_blacklisted(&self, ip: IpAddr, now: Instant) -> bool {
        lock(&self.ips)
            .get(&ip)
            .is_some_and(|s| s.ban.is_some_and(|(until, _, _)| until > now))
    }

    fn ban(&self, s: &mut IpState, reason: Reason, now: Instant, now_ms: i64) {
        s.ban = Some((now + self.duration, now_ms, reason));
        self.blacklistings.fetch_add(1, Relaxed);
    }

    /// Starts a new counting window when the current one is over, and lifts an expired ban.
    fn roll(&self, s: &mut IpState, now: Instant) {
        if s.ban.is_some_and(|(until, _, _)| until <= now) {
            s.ban = None;
        }
        if now.duration_since(s.window_start) >= self.window {
            s.window_start = now;
            s.connections = 0;
            s.frames = 0;
            s.invalid = 0;
        }
    }

    /// The blacklist now, sorted by IP.
    pub fn blacklist(&self, now: Instant, now_ms: i64) -> Vec<Ban> {
        let ips = lock(&self.ips);
        let mut out: Vec<Ban> = ips
            .iter()
            .filter_map(|(ip, s)| {
                let (until, since_ms, reason) = s.ban?;
                let left = until.checked_duration_since(now).filter(|d| !d.is_zero())?;
                Some(Ban {
                    ip: ip.to_string(),
                    reason,
                    since: rfc3339_ms(since_ms),
                    until: rfc3339_ms(now_ms + left.as_millis() as i64),
                    remaining_secs: left.as_secs(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.ip.cmp(&b.ip));
        out
    }

    /// (IPs blacklisted now, IPs tracked).
    pub fn counts(&self, now: Instant) -> (u64, u64) {
        let ips = lock(&self.ips);
        let banned = ips
            .values()
            .filter(|s| s.ban.is_some_and(|(until, _, _)| until > now))
            .count();
        (banned as u64, ips.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(f: impl FnOnce(&mut GpsConfig)) -> Guard {
        let mut cfg = GpsConfig::default();
        f(&mut cfg);
        Guard::new(&cfg)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn per_ip_limit() {
        let g = guard(|c| c.max_connections_per_ip = 2);
        let t = Instant::now();
        assert_eq!(g.admit(ip(1), t, 0), Ok(()));
        assert_eq!(g.admit(ip(1), t, 0), Ok(()));
        assert_eq!(g.admit(ip(1), t, 0), Err(Refusal::PerIpLimit));
        assert_eq!(g.admit(ip(2), t, 0), Ok(()));
        g.release(ip(1));
        assert_eq!(g.admit(ip(1), t, 0), Ok(()));
    }

    #[test]
    fn connection_rate_blacklists_for_the_duration() {
        let g = guard(|c| {
            c.blacklist_connections = 3;
            c.blacklist_duration = Duration::from_secs(60);
            c.blacklist_window = Duration::from_secs(10);
        });
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(g.admit(ip(1), t, 0), Ok(()));
            g.release(ip(1));
        }
        assert_eq!(g.admit(ip(1), t, 0), Err(Refusal::Blacklisted));
        assert_eq!(g.admit(ip(2), t, 0), Ok(()));
        let bans = g.blacklist(t, 1_000);
        assert_eq!(bans.len(), 1);
        assert_eq!(
            (bans[0].ip.as_str(), bans[0].reason, bans[0].remaining_secs),
            ("10.0.0.1", Reason::ConnectionRate, 60)
        );
        assert_eq!(
            g.admit(ip(1), t + Duration::from_secs(59), 0),
            Err(Refusal::Blacklisted)
        );
        assert_eq!(g.admit(ip(1), t + Duration::from_secs(61), 0), Ok(()));
        assert_eq!(g.counts(t + Duration::from_secs(61)).0, 0);
        assert_eq!(g.blacklistings.load(Relaxed), 1);
    }

    #[test]
    fn invalid_frames_count_and_ratio() {
        let g = guard(|c| {
            c.blacklist_invalid_frames = 5;
            c.blacklist_min_frames = 4;
            c.blacklist_invalid_ratio = 0.5;
        });
        let t = Instant::now();
        g.admit(ip(1), t, 0).expect("admit");
        assert!(!g.frame(ip(1), false, t, 0));
        assert!(!g.frame(ip(1), true, t, 0));
        assert!(!g.frame(ip(1), true, t, 0));
        assert!(
            g.frame(ip(1), false, t, 0),
            "2 of 4 invalid reaches the ratio"
        );
        assert!(g.is_blacklisted(ip(1), t));

        let g = guard(|c| {
            c.blacklist_invalid_frames = 3;
            c.blacklist_min_frames = 1000;
        });
        g.admit(ip(1), t, 0).expect("admit");
        assert!(!g.frame(ip(1), false, t, 0));
        assert!(!g.frame(ip(1), false, t, 0));
        assert!(g.frame(ip(1), false, t, 0));
        assert_eq!(g.blacklist(t, 0)[0].reason, Reason::InvalidFrames);
    }

    #[test]
    fn disabled_blacklist_never_bans() {
        let g = guard(|c| {
            c.blacklist_enabled = false;
            c.blacklist_connections = 1;
            c.blacklist_invalid_frames = 1;
        });
        let t = Instant::now();
        for _ in 0..5 {
            g.admit(ip(1), t, 0).expect("admit");
            g.release(ip(1));
            assert!(!g.frame(ip(1), false, t, 0));
        }
    }

    #[test]
    fn ip_table_is_bounded() {
        let g = guard(|c| c.max_tracked_ips = 2);
        let t = Instant::now();
        g.admit(ip(1), t, 0).expect("1");
        g.admit(ip(2), t, 0).expect("2");
        assert_eq!(g.admit(ip(3), t, 0), Err(Refusal::TableFull));
        g.release(ip(1));
        assert_eq!(g.admit(ip(3), t, 0), Ok(()));
        assert_eq!(g.counts(t).1, 2);
    }
}
