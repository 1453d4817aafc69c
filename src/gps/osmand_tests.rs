use super::*;

const NOW: i64 = 1_700_000_000_000;

#[test]
fn query_string_fields_as_traccar_reads_them() {
    let q = "id=phone-1&lat=52.5&lon=13.4&timestamp=1609459200&speed=10&bearing=90.5\
             &altitude=35&accuracy=4.5&batt=87.5&charge=true&driverUniqueId=d7";
    let r = parse(q, false, b"", NOW).expect("parse");
    assert_eq!(r.id, "phone-1");
    let f = &r.fixes[0];
    assert_eq!(f.time_ms, 1_609_459_200_000);
    assert_eq!((f.lat, f.lon, f.course), (52.5, 13.4, 90.5));
    assert!((f.speed_kmh - 18.52).abs() < 1e-9, "knots to km/h");
    assert_eq!(f.altitude, Some(35.0));
    assert_eq!(f.attributes["accuracy"], Attr::Float(4.5));
    assert_eq!(f.attributes["batt"], Attr::Float(87.5));
    assert_eq!(f.attributes["charge"], Attr::Int(1));
    assert_eq!(f.attributes["driverUniqueId"], Attr::Text("d7".into()));
    assert!(f.valid);
}

#[test]
fn timestamps_ids_and_locations() {
    let ms = parse(
        "deviceid=7&lat=1&lon=2&timestamp=1609459200123",
        false,
        b"",
        NOW,
    )
    .expect("ms");
    assert_eq!(
        (ms.id.as_str(), ms.fixes[0].time_ms),
        ("7", 1_609_459_200_123)
    );
    let iso = parse(
        "id=7&location=1.5,-2.5&timestamp=2021-01-01T00:00:01Z",
        false,
        b"",
        NOW,
    )
    .expect("iso");
    assert_eq!(iso.fixes[0].time_ms, 1_609_459_201_000);
    assert_eq!((iso.fixes[0].lat, iso.fixes[0].lon), (1.5, -2.5));
    let plain = parse(
        "id=7&lat=1&lon=2&timestamp=2021-01-01+00%3A00%3A02",
        false,
        b"",
        NOW,
    )
    .expect("plain");
    assert_eq!(plain.fixes[0].time_ms, 1_609_459_202_000);
    let now = parse("id=7&lat=1&lon=2", false, b"", NOW).expect("now");
    assert_eq!(now.fixes[0].time_ms, NOW);
    let invalid = parse("id=7&lat=1&lon=2&valid=false", false, b"", NOW).expect("valid");
    assert!(!invalid.fixes[0].valid);
    let heartbeat = parse("id=7&batt=50", false, b"", NOW).expect("no position");
    assert!(heartbeat.fixes.is_empty());
}

#[test]
fn form_body_is_read_when_the_query_is_empty() {
    let r = parse("", false, b"id=f1&lat=10&lon=20&timestamp=1609459200", NOW).expect("form");
    assert_eq!(
        (r.id.as_str(), r.fixes[0].lat, r.fixes[0].lon),
        ("f1", 10.0, 20.0)
    );
    // The query string wins over the body, as in Traccar.
    let r = parse("id=q&lat=1&lon=1", false, b"id=b&lat=2&lon=2", NOW).expect("query");
    assert_eq!(r.id, "q");
}

#[test]
fn json_body_of_newer_clients() {
    let body = br#"{"device_id":"j1","location":{"timestamp":"2021-01-01T00:00:03.500Z",
        "coords":{"latitude":48.1,"longitude":11.5,"speed":5,"heading":180,"accuracy":3,
        "altitude":520},"is_moving":true,"odometer":1234,"event":"motionchange",
        "battery":{"level":0.42,"is_charging":true},"activity":{"type":"on_foot"},
        "extras":{"trip":"t9"}}}"#;
    let r = parse("", true, body, NOW).expect("json");
    assert_eq!(r.id, "j1");
    let f = &r.fixes[0];
    assert_eq!(f.time_ms, 1_609_459_203_500);
    assert_eq!(
        (f.lat, f.lon, f.course, f.altitude),
        (48.1, 11.5, 180.0, Some(520.0))
    );
    assert!((f.speed_kmh - 18.0).abs() < 1e-9, "m/s to km/h");
    assert_eq!(f.attributes["batt"], Attr::Float(42.0));
    assert_eq!(f.attributes["charge"], Attr::Int(1));
    assert_eq!(f.attributes["motion"], Attr::Int(1));
    assert_eq!(f.attributes["odometer"], Attr::Int(1234));
    assert_eq!(f.attributes["activity"], Attr::Text("on_foot".into()));
    assert_eq!(f.attributes["trip"], Attr::Text("t9".into()));
    // Negative speed and heading mean unknown.
    let body = br#"{"device_id":"j1","location":[{"timestamp":"2021-01-01T00:00:03Z",
        "coords":{"latitude":1,"longitude":2,"speed":-1,"heading":-1}},
        {"timestamp":"2021-01-01T00:00:04Z","coords":{"latitude":1,"longitude":2}}]}"#;
    let r = parse("", true, body, NOW).expect("array");
    assert_eq!(r.fixes.len(), 2);
    assert_eq!((r.fixes[0].speed_kmh, r.fixes[0].course), (0.0, 0.0));
}

#[test]
fn bad_requests_say_why() {
    for (q, want) in [
        ("lat=1&lon=2", "no id"),
        ("id=&lat=1&lon=2", "no id"),
        ("id=a&lat=x&lon=2", "not a number"),
        ("id=a&lat=91&lon=2", "out of range"),
        ("id=a&lat=1", "lat without lon"),
        ("id=a&lat=1&lon=2&timestamp=yesterday", "timestamp"),
        ("id=a&lat=NaN&lon=2", "not a number"),
        (
            "id=a&lat=1&lon=2&timestamp=-9223372036854775808",
            "before 1970",
        ),
        ("id=a&lat=1&lon=2&timestamp=-5", "before 1970"),
    ] {
        let e = parse(q, false, b"", NOW).expect_err(q);
        assert!(e.contains(want), "{q}: {e}");
    }
    for body in [&b"{"[..], br#"{"location":{}}"#, br#"{"device_id":"a"}"#] {
        assert!(parse("", true, body, NOW).is_err());
    }
    let long = format!("id={}&lat=1&lon=1", "x".repeat(65));
    assert!(parse(&long, false, b"", NOW).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever a phone (or anyone) sends, parsing never panics, and an accepted report has a
    /// bounded id and positions in range.
    #[test]
    fn arbitrary_requests(
        query in "(id=[a-z0-9]{1,3}&)?[a-z=&%0-9.,:+-]{0,120}",
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        json in proptest::bool::ANY,
    ) {
        if let Ok(r) = parse(&query, json, &body, NOW) {
            proptest::prop_assert!(!r.id.is_empty() && r.id.len() <= 64);
            for f in &r.fixes {
                proptest::prop_assert!((-90.0..=90.0).contains(&f.lat));
                proptest::prop_assert!((-180.0..=180.0).contains(&f.lon));
                proptest::prop_assert!(f.speed_kmh.is_finite() && f.course.is_finite());
            }
        }
    }
}
