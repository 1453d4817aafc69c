//! End-to-end GPS tests: the real binary, simulated trackers of every protocol on real TCP
//! sockets (each from its own 127.0.0.x address, so per-IP limits apply to one device at a
//! time), ACK bytes, the registry API, /metrics and the NDJSON points file.
//! Frames and checksums are built here from the protocol documents, independently of the
//! server's decoders.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::gps::crc_ibm;
use common::gt06::gt06_frame;
use common::{value, Tallyd};

// ---- protocol builders (independent of src/gps) ----

fn gt06_ack(protocol: u8, serial: u16) -> Vec<u8> {
    gt06_frame(protocol, &[], serial)
}

/// GT06 login for IMEI 863586038760942 (BCD with a leading 0 nibble).
fn gt06_login(serial: u16) -> Vec<u8> {
    gt06_frame(
        0x01,
        &[
            0x08, 0x63, 0x58, 0x60, 0x38, 0x76, 0x09, 0x42, 0x00, 0x01, 0x00, 0x00,
        ],
        serial,
    )
}

/// A GT06 location (0x12) at minute `m` of 2024-03-01 12:00 UTC; raw lat/lon in 1/30000 minutes.
fn gt06_location(
    m: u8,
    lat_raw: u32,
    lon_raw: u32,
    speed: u8,
    course: u16,
    serial: u16,
) -> Vec<u8> {
    let mut c = vec![24, 3, 1, 12, m, 0, 0xC8];
    c.extend_from_slice(&lat_raw.to_be_bytes());
    c.extend_from_slice(&lon_raw.to_be_bytes());
    c.push(speed);
    c.extend_from_slice(&((1u16 << 12) | (1 << 10) | course).to_be_bytes());
    c.extend_from_slice(&[0x01, 0xCC, 0x00, 0x28, 0x7D, 0x00, 0x1F, 0xB8]);
    gt06_frame(0x12, &c, serial)
}

fn gt06_heartbeat(serial: u16) -> Vec<u8> {
    gt06_frame(0x13, &[0x44, 0x06, 0x04, 0x00, 0x02], serial)
}

fn teltonika_packet(codec: u8, records: &[(u64, i32, i32, i16, u16, u8, u16)]) -> Vec<u8> {
    let mut data = vec![codec, records.len() as u8];
    for (ts, lon, lat, alt, angle, sats, speed) in records {
        data.extend_from_slice(&ts.to_be_bytes());
        data.push(0);
        data.extend_from_slice(&lon.to_be_bytes());
        data.extend_from_slice(&lat.to_be_bytes());
        data.extend_from_slice(&alt.to_be_bytes());
        data.extend_from_slice(&angle.to_be_bytes());
        data.push(*sats);
        data.extend_from_slice(&speed.to_be_bytes());
        if codec == 0x8E {
            // event 0, total 1, N1 = 1 (id 239 = 1), N2 = N4 = N8 = NX = 0
            data.extend_from_slice(&[0, 0, 0, 1, 0, 1, 0, 239, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        } else {
            // event 0, total 1, N1 = 1 (id 239 = 1), N2 = N4 = N8 = 0
            data.extend_from_slice(&[0, 1, 1, 239, 1, 0, 0, 0]);
        }
    }
    data.push(records.len() as u8);
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&(data.len() as u32).to_be_bytes());
    p.extend_from_slice(&data);
    p.extend_from_slice(&u32::from(crc_ibm(&data)).to_be_bytes());
    p
}

fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

// ---- sockets ----

/// Connects to `to` from 127.0.0.`host`.
fn connect_from(to: SocketAddr, host: u8) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("127.0.0.{host}:0").parse().expect("addr");
    sock.bind(&from.into()).expect("bind source address");
    sock.connect(&to.into()).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read reply");
    buf
}

/// Reads up to and including `end`.
fn read_until(s: &mut TcpStream, end: u8) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.last() != Some(&end) {
        s.read_exact(&mut b).expect("read reply");
        out.push(b[0]);
        assert!(out.len() < 256, "reply too long: {out:?}");
    }
    String::from_utf8(out).expect("utf8 reply")
}

/// True when the server closed the connection (EOF or reset) within 10 s.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn points(t: &Tallyd) -> Vec<serde_json::Value> {
    std::fs::read_to_string(t.path("points.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn wait_points(t: &Tallyd, pred: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = points(t);
        if pred(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "points file never matched; it has: {p:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn of_device<'a>(points: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    points.iter().filter(|p| p["device_id"] == id).collect()
}

#[track_caller]
fn close(a: &serde_json::Value, b: f64) {
    let a = a.as_f64().unwrap_or_else(|| panic!("not a number: {a}"));
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

const POINTS_CONFIG: &str = "[gps]\npoints_file = \"@DIR@/points.ndjson\"\n";

#[test]
fn every_protocol_at_once() {
    let t = Tallyd::start(POINTS_CONFIG);
    let gps = t.gps.expect("gps listener");

    let gt06 = std::thread::spawn(move || {
        let mut s = connect_from(gps, 11);
        s.write_all(&gt06_login(1)).expect("login");
        assert_eq!(read_n(&mut s, 10), gt06_ack(0x01, 1), "login ACK");
        for i in 0..5u16 {
            s.write_all(&gt06_location(
                i as u8,
                40_000_000 + u32::from(i),
                200_000_000,
                50 + i as u8,
                100 + i,
                2 + i,
            ))
            .expect("loc");
        }
        s.write_all(&gt06_heartbeat(7)).expect("hb");
        assert_eq!(read_n(&mut s, 10), gt06_ack(0x13, 7), "heartbeat ACK");
        // A time request (0x8A) is answered with the server's UTC time, in a checked frame.
        let before = SystemTime::now();
        s.write_all(&gt06_frame(0x8A, &[], 8))
            .expect("time request");
        let reply = read_n(&mut s, 16);
        let t = &reply[4..10];
        assert_eq!(reply, gt06_frame(0x8A, t, 8), "time reply framing and CRC");
        let sec = before.duration_since(UNIX_EPOCH).expect("clock").as_secs() % 86_400;
        // Within a minute of the send, time of day (a wrap at midnight included).
        let answered = u64::from(t[3]) * 3600 + u64::from(t[4]) * 60 + u64::from(t[5]);
        let off = answered.abs_diff(sec);
        assert!(
            !(60..=86_400 - 60).contains(&off),
            "time reply {t:?} vs {sec} s into the UTC day"
        );
        s
    });
    let teltonika = std::thread::spawn(move || {
        let mut s = connect_from(gps, 12);
        s.write_all(b"\x00\x0f356307042441013").expect("imei");
        assert_eq!(read_n(&mut s, 1), vec![0x01], "IMEI accepted");
        let recs = [
            (1_709_294_400_000, 252_562_916, 546_676_016, 138, 270, 6, 42),
            (1_709_294_401_000, 252_562_917, 546_676_017, 139, 271, 7, 43),
        ];
        s.write_all(&teltonika_packet(0x08, &recs)).expect("avl");
        assert_eq!(read_n(&mut s, 4), vec![0, 0, 0, 2], "codec 8 ACK");
        s.write_all(&teltonika_packet(
            0x8E,
            &[(1_709_294_402_000, -1_000_000, -2_000_000, -5, 0, 9, 0)],
        ))
        .expect("avl 8E");
        assert_eq!(read_n(&mut s, 4), vec![0, 0, 0, 1], "codec 8E ACK");
        s
    });
    let h02 = std::thread::spawn(move || {
        let mut s = connect_from(gps, 13);
        for i in 0..3 {
            let frame = format!("*HQ,4970105243,V1,10400{i},A,2235.177{i},N,11357.8913,E,000.27,235,130721,FFFFFBFF,460,11,d18e105,7752,6#\r\n");
            s.write_all(frame.as_bytes()).expect("v1");
            let reply = read_until(&mut s, b'#');
            let stamp = reply
                .strip_prefix("*HQ,4970105243,V4,V1,")
                .and_then(|r| r.strip_suffix('#'))
                .unwrap_or_else(|| panic!("{reply}"));
            assert!(
                stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()),
                "{reply}"
            );
        }
        s
    });
    let tk103 = std::thread::spawn(move || {
        let mut s = connect_from(gps, 14);
        s.write_all(b"##,imei:359586015829802,A;").expect("login");
        assert_eq!(read_n(&mut s, 4), b"LOAD");
        s.write_all(b"359586015829802;").expect("hb");
        assert_eq!(read_n(&mut s, 2), b"ON");
        for i in 0..3 {
            let f = format!("imei:359586015829802,tracker,2403011200,,F,12000{i}.000,A,5130.000{i},N,00007.5000,W,10.5,90,35.5;");
            s.write_all(f.as_bytes()).expect("position");
        }
        s.write_all(b"359586015829802;").expect("hb");
        assert_eq!(read_n(&mut s, 2), b"ON");
        s
    });
    let nmea_dev = std::thread::spawn(move || {
        let mut s = connect_from(gps, 15);
        s.write_all(&nmea("PGID,boat-7")).expect("pgid");
        for i in 0..3 {
            s.write_all(&nmea(&format!(
                "GPGGA,08000{i}.00,4916.450{i},N,12311.1200,W,1,08,0.9,12.{i},M,,M,,"
            )))
            .expect("gga");
            s.write_all(&nmea(&format!(
                "GPRMC,08000{i}.00,A,4916.450{i},N,12311.1200,W,5.0,054.7,010324,,,A"
            )))
            .expect("rmc");
        }
        s
    });
    // The connections stay open until the end, so the registry shows them connected.
    let _open: Vec<TcpStream> = [gt06, teltonika, h02, tk103, nmea_dev]
        .into_iter()
        .map(|h| h.join().expect("device thread"))
        .collect();

    let all = wait_points(&t, |p| p.len() >= 17);
    assert_eq!(all.len(), 17, "{all:#?}");

    // GT06: raw / 30000 / 60 degrees, km/h, course bits, satellites from the low nibble.
    let g = of_device(&all, "863586038760942");
    assert_eq!(g.len(), 5);
    for (i, p) in g.iter().enumerate() {
        assert_eq!(p["protocol"], "gt06");
        assert_eq!(p["time"], format!("2024-03-01T12:0{i}:00.000Z"));
        close(&p["lat"], f64::from(40_000_000 + i as u32) / 30000.0 / 60.0);
        close(&p["lon"], 200_000_000.0 / 30000.0 / 60.0);
        close(&p["speed_kmh"], 50.0 + i as f64);
        close(&p["course"], 100.0 + i as f64);
        assert_eq!(p["satellites"], 8);
        assert_eq!(p["valid"], true);
    }
    // Teltonika: 1e-7 degrees, altitude, satellites, IO attributes.
    let tl = of_device(&all, "356307042441013");
    assert_eq!(tl.len(), 3);
    close(&tl[0]["lat"], 54.667_601_6);
    close(&tl[0]["lon"], 25.256_291_6);
    close(&tl[0]["altitude"], 138.0);
    close(&tl[0]["course"], 270.0);
    close(&tl[0]["speed_kmh"], 42.0);
    assert_eq!(tl[0]["time_ms"], 1_709_294_400_000i64);
    assert_eq!(tl[0]["attributes"]["io239"], 1);
    close(&tl[2]["lat"], -0.2);
    close(&tl[2]["lon"], -0.1);
    close(&tl[2]["altitude"], -5.0);
    assert_eq!(tl[2]["satellites"], 9);
    // H02: ddmm.mmmm, knots to km/h.
    let h = of_device(&all, "4970105243");
    assert_eq!(h.len(), 3);
    for (i, p) in h.iter().enumerate() {
        assert_eq!(p["time"], format!("2021-07-13T10:40:0{i}.000Z"));
        close(&p["lat"], 22.0 + (35.177 + i as f64 / 10000.0) / 60.0);
        close(&p["lon"], 113.0 + 57.8913 / 60.0);
        close(&p["speed_kmh"], 0.27 * 1.852);
        assert_eq!(p["attributes"]["status"], 0xFFFF_FBFFu32);
    }
    // TK103: west longitude, altitude, event keyword.
    let k = of_device(&all, "359586015829802");
    assert_eq!(k.len(), 3);
    for (i, p) in k.iter().enumerate() {
        assert_eq!(p["time"], format!("2024-03-01T12:00:0{i}.000Z"));
        close(&p["lat"], 51.0 + (30.0 + i as f64 / 10000.0) / 60.0);
        close(&p["lon"], -(7.5 / 60.0));
        close(&p["altitude"], 35.5);
        close(&p["speed_kmh"], 10.5 * 1.852);
        assert_eq!(p["attributes"]["event"], "tracker");
    }
    // NMEA: identified by $PGID; GGA altitude and satellites merged into the RMC of the same second.
    let n = of_device(&all, "boat-7");
    assert_eq!(n.len(), 3);
    for (i, p) in n.iter().enumerate() {
        assert_eq!(p["protocol"], "nmea");
        assert_eq!(p["time"], format!("2024-03-01T08:00:0{i}.000Z"));
        close(&p["lat"], 49.0 + (16.45 + i as f64 / 10000.0) / 60.0);
        close(&p["lon"], -(123.0 + 11.12 / 60.0));
        close(&p["altitude"], 12.0 + i as f64 / 10.0);
        assert_eq!(p["satellites"], 8);
        close(&p["speed_kmh"], 5.0 * 1.852);
    }

    // Registry.
    let (code, body) = t.get("/api/monitoring/metrics/devices?active_only=true");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["count"], 5, "{body}");
    let dev = |id: &str| {
        v["devices"]
            .as_array()
            .expect("array")
            .iter()
            .find(|d| d["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id}: {body}"))
    };
    let gd = dev("863586038760942");
    assert_eq!(
        (
            gd["protocol"].as_str(),
            gd["connected"].as_bool(),
            gd["active"].as_bool()
        ),
        (Some("gt06"), Some(true), Some(true))
    );
    assert_eq!(gd["valid_messages"], 8);
    assert_eq!(gd["invalid_messages"], 0);
    assert!(
        gd["remote_addr"]
            .as_str()
            .expect("addr")
            .starts_with("127.0.0.11:"),
        "{gd}"
    );
    assert_eq!(gd["last_fix"]["time"], "2024-03-01T12:04:00.000Z");
    assert_eq!(gd["last_fix"]["satellites"], 8);
    assert_eq!(dev("boat-7")["last_fix"]["altitude"], 12.2);
    assert_eq!(dev("356307042441013")["valid_messages"], 3);
    assert_eq!(dev("359586015829802")["valid_messages"], 6);

    // Metrics, through aggregation, on /metrics.
    let text = t.wait_value("live_points_processed_total", 17.0);
    let text = if value(&text, "live_latency_count") == Some(17.0) {
        text
    } else {
        t.wait_value("live_latency_count", 17.0)
    };
    for (proto, messages, locations) in [
        ("gt06", 8.0, 5.0),
        ("teltonika", 3.0, 3.0),
        ("h02", 3.0, 3.0),
        ("gps103", 6.0, 3.0),
        ("nmea", 7.0, 3.0),
    ] {
        assert_eq!(
            value(
                &text,
                &format!("gps_tcp_messages_received_total{{protocol=\"{proto}\"}}")
            ),
            Some(messages),
            "{proto}\n{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("gps_tcp_locations_valid_total{{protocol=\"{proto}\"}}")
            ),
            Some(locations),
            "{proto}"
        );
        assert_eq!(
            value(
                &text,
                &format!("gps_tcp_active_devices{{protocol=\"{proto}\"}}")
            ),
            Some(1.0),
            "{proto}"
        );
    }
    // One `_total`, added by the exposition to the counter `gps_tcp.connections` (issue 20,
    // defect 9: it was `gps_tcp_connections_total_total`); a gauge has none.
    assert_eq!(value(&text, "gps_tcp_connections_total"), Some(5.0));
    assert_eq!(value(&text, "gps_tcp_devices"), Some(5.0));
    assert!(!text.contains("_total_total"), "{text}");
    assert!(!text.contains("gps_tcp_devices_total"), "{text}");
    assert_eq!(value(&text, "gps_tcp_blacklisted_ips"), Some(0.0));
    assert_eq!(value(&text, "live_points_received_total"), Some(17.0));
    assert_eq!(value(&text, "live_points_failed_total"), Some(0.0));
    assert!(text.contains("gps_tcp_messages_per_second "), "{text}");

    let (code, body) = t.get("/api/monitoring/metrics/live?window_minutes=5");
    assert_eq!(code, 200, "{body}");
    let live: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(live["messages"], 27, "{body}");
    assert_eq!(live["active_devices"], 5);
    assert_eq!(live["points"]["processed"], 17);
    assert_eq!(live["latency_ms"]["count"], 17);
    assert!(live["latency_ms"]["p99"].as_f64().expect("p99") > 0.0);
    assert_eq!(
        t.get("/api/monitoring/metrics/live?window_minutes=0").0,
        400
    );
}

/// A GT06 device that logs in and then sends `rounds` location + heartbeat pairs, asserting
/// each ACK; returns its socket so the caller can continue.
fn good_gt06(gps: SocketAddr, host: u8, rounds: u16) -> TcpStream {
    let mut s = connect_from(gps, host);
    s.write_all(&gt06_login(1)).expect("login");
    assert_eq!(read_n(&mut s, 10), gt06_ack(0x01, 1));
    for i in 0..rounds {
        s.write_all(&gt06_location(
            (i % 60) as u8,
            40_000_000,
            200_000_000,
            10,
            10,
            100 + i,
        ))
        .expect("loc");
        s.write_all(&gt06_heartbeat(1000 + i)).expect("hb");
        assert_eq!(
            read_n(&mut s, 10),
            gt06_ack(0x13, 1000 + i),
            "ACK while hostile peers are around"
        );
    }
    s
}

#[test]
fn hostile_peers_are_counted_cut_off_and_blacklisted_while_good_devices_stream() {
    let t = Tallyd::start(
        "[gps]\npoints_file = \"@DIR@/points.ndjson\"\nhandshake_timeout = \"2s\"\nframe_timeout = \"1s\"\n\
         max_line_bytes = 128\nblacklist_invalid_frames = 5\nblacklist_min_frames = 1000\nblacklist_connections = 10\n\
         blacklist_duration = \"1m\"\n",
    );
    let gps = t.gps.expect("gps listener");

    // A well-behaved device streams in the background the whole time.
    let good = std::thread::spawn(move || {
        let mut s = good_gt06(gps, 2, 1);
        for round in 0..40u16 {
            s.write_all(&gt06_location(
                0,
                40_000_000,
                200_000_000,
                10,
                10,
                2000 + round,
            ))
            .expect("loc");
            s.write_all(&gt06_heartbeat(3000 + round)).expect("hb");
            assert_eq!(
                read_n(&mut s, 10),
                gt06_ack(0x13, 3000 + round),
                "good device starved"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    });

    // Bad NMEA checksum: counted, the connection goes on.
    let mut s = connect_from(gps, 3);
    s.write_all(&nmea("PGID,checksum-dev")).expect("pgid");
    let mut bad = nmea("GPRMC,080000,A,4916.4500,N,12311.1200,W,5.0,054.7,010324,,,A");
    let star = bad.iter().position(|b| *b == b'*').expect("star");
    bad[star + 1] = if bad[star + 1] == b'0' { b'1' } else { b'0' };
    s.write_all(&bad).expect("bad");
    s.write_all(&nmea(
        "GPRMC,080001,A,4916.4500,N,12311.1200,W,5.0,054.7,010324,,,A",
    ))
    .expect("good");
    wait_points(&t, |p| !of_device(p, "checksum-dev").is_empty());
    drop(s);

    // GT06 bad CRC: no ACK for that frame, the next heartbeat is answered.
    let mut s = connect_from(gps, 4);
    s.write_all(&gt06_login(1)).expect("login");
    assert_eq!(read_n(&mut s, 10), gt06_ack(0x01, 1));
    let mut f = gt06_heartbeat(2);
    f[5] ^= 0xFF;
    s.write_all(&f).expect("bad crc");
    s.write_all(&gt06_heartbeat(3)).expect("hb");
    assert_eq!(
        read_n(&mut s, 10),
        gt06_ack(0x13, 3),
        "the bad frame got no ACK, the good one did"
    );
    drop(s);

    // Truncated Teltonika packet: cut off after frame_timeout.
    let mut s = connect_from(gps, 5);
    s.write_all(b"\x00\x0f356307042441099").expect("imei");
    assert_eq!(read_n(&mut s, 1), vec![1]);
    let p = teltonika_packet(0x08, &[(1_709_294_400_000, 1, 1, 1, 1, 5, 1)]);
    s.write_all(&p[..p.len() / 2]).expect("half");
    assert!(closed_by_server(&mut s), "truncated frame not cut off");

    // Garbage: not a protocol.
    let mut s = connect_from(gps, 6);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("garbage");
    assert!(closed_by_server(&mut s));

    // Oversized H02 line: no `#` within max_line_bytes.
    let mut s = connect_from(gps, 7);
    s.write_all(format!("*HQ,4970105299,V1,{}", "1".repeat(300)).as_bytes())
        .expect("long");
    assert!(closed_by_server(&mut s));

    // One byte per 300 ms: each byte arrives well inside any idle timeout, but the frame never
    // completes, so frame_timeout (1 s) cuts it off.
    let mut s = connect_from(gps, 8);
    s.write_all(b"$").expect("first byte");
    let slow = b"GPRMC,080000,A,4916.4500,N,12311.1200,W,5.0,054.7,010324,,,A*00";
    let started = Instant::now();
    let mut cut = false;
    for b in slow.iter() {
        std::thread::sleep(Duration::from_millis(300));
        if s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(1)))
            .expect("timeout");
        let mut one = [0u8; 1];
        if matches!(s.read(&mut one), Ok(0)) {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "slow sender kept its connection for {:?}",
        started.elapsed()
    );

    // Invalid frames from one IP: blacklisted at the 5th, refused afterwards.
    let mut s = connect_from(gps, 9);
    for _ in 0..5 {
        let _ = s.write_all(b"imei:123,tracker,garbage;");
    }
    assert!(closed_by_server(&mut s));
    let mut again = connect_from(gps, 9);
    assert!(closed_by_server(&mut again), "blacklisted IP was served");

    // Connection flood from one address: blacklisted past 10 connections in the window.
    let flood: Vec<TcpStream> = (0..12).map(|_| connect_from(gps, 10)).collect();
    let mut refused = connect_from(gps, 10);
    assert!(closed_by_server(&mut refused), "flooding IP was served");
    drop(flood);

    good.join().expect("good device kept streaming");

    let (code, body) = t.get("/api/monitoring/gps/blacklist");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let bans = v["blacklist"].as_array().expect("array");
    let reason = |ip: &str| {
        bans.iter()
            .find(|b| b["ip"] == ip)
            .map(|b| b["reason"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(
        reason("127.0.0.9").as_deref(),
        Some("invalid_frames"),
        "{body}"
    );
    assert_eq!(
        reason("127.0.0.10").as_deref(),
        Some("connection_rate"),
        "{body}"
    );
    assert_eq!(bans.len(), 2, "only the two abusers: {body}");

    let text = t.wait_metrics(
        |m| value(m, "gps_tcp_blacklisted_ips") == Some(2.0),
        "two blacklisted IPs",
    );
    let text = if value(&text, "live_points_processed_total") >= Some(42.0) {
        text
    } else {
        t.wait_metrics(
            |m| value(m, "live_points_processed_total") >= Some(42.0),
            "good points processed",
        )
    };
    let v =
        |series: &str| value(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
    assert_eq!(
        v("gps_tcp_messages_invalid_total{protocol=\"nmea\",reason=\"bad_checksum\"}"),
        1.0
    );
    assert_eq!(
        v("gps_tcp_messages_invalid_total{protocol=\"gt06\",reason=\"bad_checksum\"}"),
        1.0
    );
    assert_eq!(
        v("gps_tcp_messages_invalid_total{protocol=\"h02\",reason=\"too_long\"}"),
        1.0
    );
    assert_eq!(
        v("gps_tcp_messages_invalid_total{protocol=\"unknown\",reason=\"malformed\"}"),
        1.0
    );
    assert_eq!(
        v("gps_tcp_messages_invalid_total{protocol=\"gps103\",reason=\"malformed\"}"),
        5.0
    );
    assert_eq!(
        v("gps_tcp_connections_failed_total{reason=\"unknown_protocol\"}"),
        1.0
    );
    assert!(v("gps_tcp_connections_failed_total{reason=\"blacklisted\"}") >= 2.0);
    assert_eq!(
        v("tallyd_gps_connections_closed_total{reason=\"frame_timeout\"}"),
        2.0
    );
    assert_eq!(v("tallyd_gps_blacklistings_total"), 2.0);
    assert_eq!(v("live_points_failed_total"), 0.0);

    // Every point of the good device arrived: 1 + 40 locations.
    let good_points = of_device(&points(&t), "863586038760942").len();
    assert_eq!(good_points, 41);
}

#[test]
fn plain_nmea_without_identification_uses_the_connection() {
    let t = Tallyd::start(POINTS_CONFIG);
    let mut s = connect_from(t.gps.expect("gps"), 20);
    let local = s.local_addr().expect("local");
    s.write_all(&nmea(
        "GNRMC,120000,A,4916.4500,N,12311.1200,W,0,0,010324,,,A",
    ))
    .expect("rmc");
    let p = wait_points(&t, |p| !p.is_empty());
    assert_eq!(p[0]["device_id"], format!("nmea:{local}"));
    s.flush().expect("flush");
}

/// An H02 binary position frame (packed BCD; see src/gps/h02.rs): id 4970105243, 10:40:0`second`
/// on 13/07/21, 22°35.1777' N, 113°57.8913' E, valid, 0 knots, course 235, status FFFFFBFF;
/// `extra` bytes after the 32 make the 45-byte variant.
fn h02_binary(second: u8, extra: usize) -> Vec<u8> {
    let mut f = vec![
        b'$', 0x49, 0x70, 0x10, 0x52, 0x43, 0x10, 0x40, second, 0x13, 0x07, 0x21,
    ];
    f.extend_from_slice(&[0x22, 0x35, 0x17, 0x77, 0x06, 0x11, 0x35, 0x78, 0x91, 0x3e]);
    f.extend_from_slice(&[0x00, 0x02, 0x35, 0xff, 0xff, 0xfb, 0xff, 0xff, 0x00, 0x00]);
    f.extend(std::iter::repeat_n(0x01, extra));
    f
}

#[test]
fn h02_binary_frames_mixed_with_text() {
    let t = Tallyd::start(POINTS_CONFIG);
    let mut s = connect_from(t.gps.expect("gps"), 21);
    // The first bytes are binary: the connection is recognised as H02 from them.
    s.write_all(&h02_binary(0x00, 0)).expect("binary");
    s.write_all(&h02_binary(0x01, 13)).expect("45-byte binary");
    s.write_all(
        b"*HQ,4970105243,V1,104002,A,2235.1777,N,11357.8913,E,000.00,235,130721,FFFFFBFF#\r\n",
    )
    .expect("text");
    // Text frames are acknowledged, binary ones are not: the first reply is the text frame's.
    let reply = read_until(&mut s, b'#');
    assert!(reply.starts_with("*HQ,4970105243,V4,V1,"), "{reply}");
    s.write_all(&h02_binary(0x03, 0))
        .expect("binary after text");
    let p = wait_points(&t, |p| of_device(p, "4970105243").len() == 4);
    let h = of_device(&p, "4970105243");
    for (i, p) in h.iter().enumerate() {
        assert_eq!(p["time"], format!("2021-07-13T10:40:0{i}.000Z"));
        close(&p["lat"], 22.0 + 35.1777 / 60.0);
        close(&p["lon"], 113.0 + 57.8913 / 60.0);
        close(&p["course"], 235.0);
        assert_eq!(p["valid"], true);
        assert_eq!(p["attributes"]["status"], 0xFFFF_FBFFu32);
    }
    t.wait_value("gps_tcp_messages_received_total{protocol=\"h02\"}", 4.0);
    // Nothing was refused (the invalid counters appear once they are above zero).
    let text = t.metrics();
    assert!(
        !text.contains("gps_tcp_messages_invalid_total{protocol=\"h02\""),
        "{text}"
    );
}

#[test]
fn handshake_timeout_and_per_ip_limit() {
    let t = Tallyd::start("[gps]\nhandshake_timeout = \"1s\"\nmax_connections_per_ip = 2\n");
    let gps = t.gps.expect("gps");
    // Connected but silent: never identifies itself.
    let mut silent = connect_from(gps, 30);
    let mut second = connect_from(gps, 30);
    let mut third = connect_from(gps, 30);
    assert!(
        closed_by_server(&mut third),
        "third connection from one IP accepted"
    );
    assert!(closed_by_server(&mut silent), "silent peer kept its slot");
    // Wait for the server to time the second one out too, rather than closing it ourselves.
    assert!(
        closed_by_server(&mut second),
        "second silent peer kept its slot"
    );
    let text = t.wait_metrics(
        |m| {
            value(
                m,
                "gps_tcp_connections_failed_total{reason=\"handshake_timeout\"}",
            ) == Some(2.0)
        },
        "handshake timeouts",
    );
    assert_eq!(
        value(
            &text,
            "gps_tcp_connections_failed_total{reason=\"per_ip_limit\"}"
        ),
        Some(1.0)
    );
}
