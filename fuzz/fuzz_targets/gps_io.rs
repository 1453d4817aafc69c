//! The GPS I/O parsers that read what peers send: OsmAnd / Traccar Client requests
//! (`gps::osmand::parse`: query string, form and JSON bodies) and the device answers to
//! commands (`gps::encode::answer`, every protocol). Properties: no panic; an accepted OsmAnd
//! report has a 1-64 character id and positions in range; an answer never claims more bytes
//! than the buffer holds.
//!
//! Input: the first byte picks the mode (even: OsmAnd, its bit 1 the JSON flag; odd: answers);
//! for OsmAnd the rest is `query 0xFF body` (no 0xFF: all query).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tallyd::gps::encode::{answer, Kind};
use tallyd::gps::fix::Protocol;
use tallyd::gps::osmand::parse;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let (query, body) = match rest.iter().position(|&b| b == 0xFF) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let query = String::from_utf8_lossy(query);
        if let Ok(r) = parse(&query, mode & 2 != 0, body, 1_700_000_000_000) {
            assert!(!r.id.is_empty() && r.id.len() <= 64, "id {:?}", r.id);
            for f in &r.fixes {
                assert!((-90.0..=90.0).contains(&f.lat), "lat {}", f.lat);
                assert!((-180.0..=180.0).contains(&f.lon), "lon {}", f.lon);
                assert!(f.speed_kmh.is_finite() && f.course.is_finite());
            }
        }
    } else {
        let kinds = [
            Kind::Locate,
            Kind::Interval { seconds: 60 },
            Kind::Custom { text: "AT+GTRTO=,1,,,,,,0001$".into() },
        ];
        for p in Protocol::ALL {
            for k in &kinds {
                if let Some(a) = answer(p, rest, k) {
                    assert!(a.consumed <= rest.len(), "{p:?} claims {} of {}", a.consumed, rest.len());
                }
            }
        }
    }
});
