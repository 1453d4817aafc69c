//! End-to-end tests of the protocols and decoder fixes of issue 18: the real binary, one
//! simulated device per protocol on the one shared port at once (each from its own 127.0.0.x
//! address), the exact answer bytes, the points file, the registry API and /metrics, and
//! corrupt and truncated frames counted and skipped. Frames are built here from the protocol
//! documents (or are device captures quoted in them), never with `src/gps`.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;

use common::gps::{
    closed_by_server, connect_from, hex, meitrack, nmea, of_device, read_n, read_until, teltonika8,
    wait_points,
};
use common::gt06::{crc_itu, gt06_frame};
use common::{value, Tallyd};

const CONFIG: &str = "[gps]\npoints_file = \"@DIR@/points.ndjson\"\nframe_timeout = \"1s\"\n\
    blacklist_invalid_frames = 5\nblacklist_min_frames = 1000\n";

fn device(f: impl FnOnce() -> TcpStream + Send + 'static) -> JoinHandle<TcpStream> {
    std::thread::spawn(f)
}

/// TK103 parenthesised: login, heartbeat, a corrupt frame, two positions and an alarm.
fn tk103(gps: SocketAddr) -> TcpStream {
    let mut s = connect_from(gps, 31);
    s.write_all(b"(027044702512BP05000027044702512240301A5130.0000N00007.5000W012.3120000090.0000000000L00000000)")
        .expect("login");
    assert_eq!(read_until(&mut s, b')'), "(027044702512AP05)");
    s.write_all(b"(027044702512BP00HSO)").expect("heartbeat");
    assert_eq!(read_until(&mut s, b')'), "(027044702512AP01HSO)");
    s.write_all(b"(027044702512BR00240301A51)")
        .expect("corrupt");
    for m in 1..=2 {
        let f = format!(
            "(027044702512BR00240301A5130.000{m}N00007.5000W030.012{m}000180.0000000000L00000000)"
        );
        s.write_all(f.as_bytes()).expect("position");
    }
    s.write_all(
        b"(027044702512BO012240301A5130.0009N00007.5000W000.0120900000.0000000000L00000000)",
    )
    .expect("alarm");
    assert_eq!(read_until(&mut s, b')'), "(027044702512AS012)");
    s
}

/// Queclink: a report, a buffered report of two points (the second not fixed), a corrupt
/// report and the heartbeat.
fn queclink(gps: SocketAddr) -> TcpStream {
    let mut s = connect_from(gps, 32);
    let point = |acc: u8, lat: &str, t: &str| {
        format!("{acc},4.3,92,70.0,121.354335,{lat},{t},0460,0000,18d8,6141,00")
    };
    let fri = format!(
        "+RESP:GTFRI,020102,135790246811220,,0,0,1,{},,20240301120100,0001$",
        point(1, "31.222073", "20240301120000")
    );
    s.write_all(fri.as_bytes()).expect("FRI");
    let buff = format!(
        "+BUFF:GTFRI,020102,135790246811220,,0,0,2,{},{},,20240301120300,0002$",
        point(1, "31.222074", "20240301120100"),
        point(0, "31.222075", "20240301120200")
    );
    s.write_all(buff.as_bytes()).expect("BUFF");
    s.write_all(
        b"+RESP:GTFRI,020102,135790246811220,,0,0,1,1,4.3,92,70.0,121.354335,91.5,20240301120000$",
    )
    .expect("corrupt");
    s.write_all(b"+ACK:GTHBD,060100,135790246811220,,20240301120400,11F0$")
        .expect("HBD");
    assert_eq!(read_until(&mut s, b'$'), "+SACK:GTHBD,060100,11F0$");
    s
}

/// Meitrack: two positions around one whose checksum is wrong.
fn meitrack_device(gps: SocketAddr) -> TcpStream {
    let mut s = connect_from(gps, 33);
    let aaa = |lat: &str, t: &str| {
        meitrack(&format!(
            "862170010187175,AAA,35,{lat},-51.655455,{t},A,8,9,20,107,0.9,7,169322,126582,724|6|0547|132B,0000,0009|000A||0278|0000,"
        ))
    };
    s.write_all(&aaa("-29.960365", "240301120000"))
        .expect("AAA");
    let mut bad = aaa("-29.960366", "240301120100");
    let n = bad.len();
    bad[n - 3] = if bad[n - 3] == b'0' { b'1' } else { b'0' };
    s.write_all(&bad).expect("bad checksum");
    s.write_all(&aaa("-29.960367", "240301120200"))
        .expect("AAA");
    s
}

/// The watch protocol: link, position, corrupt position, alarm.
fn watch(gps: SocketAddr) -> TcpStream {
    let mut s = connect_from(gps, 34);
    s.write_all(b"[SG*8800000015*0002*LK]").expect("LK");
    assert_eq!(read_until(&mut s, b']'), "[SG*8800000015*0002*LK]");
    let ud = "UD,010324,120000,A,22.571707,N,113.8613968,E,5.5,90.0,100,7,60,90,1000,50,0000";
    s.write_all(format!("[SG*8800000015*{:04X}*{ud}]", ud.len()).as_bytes())
        .expect("UD");
    s.write_all(b"[SG*8800000015*000E*UD,010324]")
        .expect("corrupt");
    let al = "AL,010324,120100,A,22.571708,N,113.8613968,E,0,0,100,7,60,90,1000,50,0001";
    s.write_all(format!("[SG*8800000015*{:04X}*{al}]", al.len()).as_bytes())
        .expect("AL");
    assert_eq!(read_until(&mut s, b']'), "[SG*8800000015*0002*AL]");
    s
}

/// A GT06 answer `78 78 05 <protocol> <serial> <crc> 0D 0A`.
fn gt06_ack(protocol: u8, serial: u16) -> Vec<u8> {
    gt06_frame(protocol, &[], serial)
}

/// GT06 / Concox: WiFi/LBS 0x69 with length byte 0, the position one byte longer than its
/// length byte, the 0x95 alarm, a 4G 0xA0 position, a 0x1E capture, a bad CRC.
fn gt06(gps: SocketAddr) -> TcpStream {
    let mut s = connect_from(gps, 35);
    s.write_all(&gt06_frame(0x01, &hex("0868120145233604 0001 0000"), 1))
        .expect("login");
    assert_eq!(read_n(&mut s, 10), gt06_ack(0x01, 1));
    s.write_all(&hex("787800691710231108500200cc080c4e2fa5640c4e2fa66e0d0a"))
        .expect("wifi");
    assert_eq!(read_n(&mut s, 12), hex("7878 00 69 171023110850 0d0a"));
    s.write_all(&hex("7878121011091c0b1b2999058508040097a89e0034520d0a"))
        .expect("length byte one short");
    s.write_all(&hex("78780c95130a071223200100013ad10d0a"))
        .expect("0x95");
    assert_eq!(read_n(&mut s, 10), gt06_ack(0x95, 1));
    // 0xA0: date, satellites, lat, lon, speed, course/status, MCC, MNC, LAC u32, cell u64,
    // ACC, upload mode, re-upload flag, mileage.
    let mut a0 = vec![24, 3, 1, 12, 30, 0, 0xC9];
    a0.extend_from_slice(&40_654_800u32.to_be_bytes());
    a0.extend_from_slice(&205_200_000u32.to_be_bytes());
    a0.push(36);
    a0.extend_from_slice(&((1u16 << 12) | (1 << 10) | 45).to_be_bytes());
    a0.extend(hex("01cc 00 0000287d 000000000f1fb801 01 00 00 00000000"));
    s.write_all(&gt06_frame(0xA0, &a0, 2)).expect("0xA0");
    assert_eq!(read_n(&mut s, 10), gt06_ack(0xA0, 2));
    let capture = hex("7878471e0e03110b0511c501c664fd074db73f0218a602e003433a002fed40433a0056e14e433a0056104e433a0056fd53433a002eed55433a007e4b57433a002ee25aff00020120f6720d0a");
    s.write_all(&capture).expect("0x1E");
    assert_eq!(read_n(&mut s, 10), gt06_ack(0x1E, 0x0120));
    // 0x70 (modular, position module 0x33) and the long-form 0x32, device captures; the
    // latter is answered in the long form `79 79 00 05 32 <serial> <crc> 0D 0A`.
    s.write_all(&hex("797900a87000000001020035000100003300125d62bf3a0800e804b5994308814a87001d5d00340006115d62bf29000011000a012e02620000000000000001000803537601000129800002000803102608593397620003000a8901260852293397626600180002017d002b000116002c00045d6278ea0009000108000a00010b002800010b002e00040000f0c1002a00010000290004000000be0030000a000100b4000a00b402d00006c5490d0a"))
        .expect("0x70");
    assert_eq!(read_n(&mut s, 10), gt06_ack(0x70, 6));
    s.write_all(&hex("7979004a321106170c1b180cc900a875580b7ab4f00010350901fe0a007c0009112424007c000912240081004efe2100c500100f1200000000000000000000000000000000000000000000bc7c900d0a"))
        .expect("0x32");
    let mut long_ack = hex("7979 0005 32 00bc");
    long_ack.extend_from_slice(&crc_itu(&long_ack[2..]).to_be_bytes());
    long_ack.extend_from_slice(&[0x0d, 0x0a]);
    assert_eq!(read_n(&mut s, 11), long_ack);
    let mut bad = gt06_frame(0x13, &[0x44, 0x06, 0x04, 0x00, 0x02], 3);
    bad[5] ^= 0xFF;
    s.write_all(&bad).expect("bad crc");
    s.write_all(&gt06_frame(0x13, &[0x44, 0x06, 0x04, 0x00, 0x02], 4))
        .expect("heartbeat");
    assert_eq!(read_n(&mut s, 10), gt06_ack(0x13, 4), "after the bad CRC");
    s
}

/// GPS103 (Coban): login, the report near midnight, OBD reports (more than the blacklist's
/// invalid-frame threshold), an SOS.
fn gps103(gps: SocketAddr) -> TcpStream {
    let mut s = connect_from(gps, 36);
    s.write_all(b"##,imei:359710049092324,A;").expect("login");
    assert_eq!(read_n(&mut s, 4), b"LOAD");
    s.write_all(b"imei:359710049092324,tracker,151027025958,,F,235957.000,A,2429.5156,N,04424.5828,E,0.01,27.91,,0,0,,,;")
        .expect("midnight");
    for _ in 0..8 {
        s.write_all(
            b"imei:359710049092324,OBD,180905200218,,,,0,0,0.39%,70,9.41%,494,0.00,P0137,P0430,,;",
        )
        .expect("OBD");
    }
    s.write_all(
        b"imei:359710049092324,help me,1510270300,,F,000100.000,A,2429.5156,N,04424.5828,E,0.00,;",
    )
    .expect("SOS");
    assert_eq!(read_until(&mut s, b';'), "**,imei:359710049092324,E;");
    s
}

/// H02: a V1 with the battery before the date (answered), then a 42-byte binary frame with a
/// 15-digit id from another connection.
fn h02(gps: SocketAddr) -> (TcpStream, TcpStream) {
    let mut s = connect_from(gps, 37);
    s.write_all(b"*HQ,4210209006,V1,054048,A,2828.2297,N,07733.4332,E,000.5,047,4,080918,EEE7FBDF,4261193,0#")
        .expect("V1");
    let reply = read_until(&mut s, b'#');
    assert!(reply.starts_with("*HQ,4210209006,V4,V1,"), "{reply}");
    let mut b = connect_from(gps, 38);
    b.write_all(&hex(
        "2435248308419329301047591808172627335900074412294E024138FEFFFFFFFF01120064BA73005ECC",
    ))
    .expect("long id");
    (s, b)
}

/// NMEA: a device id before each sentence, with and without a checksum; and a GGA-only
/// receiver.
fn nmea_devices(gps: SocketAddr) -> (TcpStream, TcpStream) {
    let mut s = connect_from(gps, 39);
    let mut f = b"660420156A0066AA".to_vec();
    f.extend(nmea(
        "GPRMC,120000,A,4916.4500,N,12311.1200,W,5.0,054.7,010324,,,A",
    ));
    s.write_all(&f).expect("prefixed");
    s.write_all(
        b"660420156A0066AA$GPRMC,120001,A,4916.4501,N,12311.1200,W,5.0,054.7,010324,,,A\r\n",
    )
    .expect("no checksum");
    let mut g = connect_from(gps, 40);
    g.write_all(&nmea("PGID,gga-only")).expect("pgid");
    for i in 0..3 {
        g.write_all(&nmea(&format!(
            "GPGGA,12000{i}.00,4916.450{i},N,12311.1200,W,1,08,0.9,12.{i},M,,M,,"
        )))
        .expect("gga");
    }
    (s, g)
}

/// Teltonika, unchanged, on the same port: handshake and one Codec 8 record.
fn teltonika(gps: SocketAddr) -> TcpStream {
    let mut s = connect_from(gps, 45);
    s.write_all(b"\x00\x0f356307042441013").expect("imei");
    assert_eq!(read_n(&mut s, 1), [0x01]);
    s.write_all(&teltonika8(&[(
        1_709_294_400_000,
        252_562_916,
        546_676_016,
        138,
        270,
        6,
        42,
    )]))
    .expect("avl");
    assert_eq!(read_n(&mut s, 4), [0, 0, 0, 1]);
    s
}

#[test]
fn every_protocol_and_fix_on_the_shared_port_at_once() {
    let t = Tallyd::start(CONFIG);
    let gps = t.gps.expect("gps listener");
    let singles = vec![
        device(move || tk103(gps)),
        device(move || queclink(gps)),
        device(move || meitrack_device(gps)),
        device(move || watch(gps)),
        device(move || gt06(gps)),
        device(move || gps103(gps)),
        device(move || teltonika(gps)),
    ];
    let pairs = vec![
        std::thread::spawn(move || h02(gps)),
        std::thread::spawn(move || nmea_devices(gps)),
    ];
    // The connections stay open until the end, so the registry shows them connected.
    let mut open: Vec<TcpStream> = singles
        .into_iter()
        .map(|h| h.join().expect("device thread"))
        .collect();
    for h in pairs {
        let (a, b) = h.join().expect("device thread");
        open.extend([a, b]);
    }

    let want = [
        ("027044702512", 4),
        ("135790246811220", 2),
        ("862170010187175", 2),
        ("8800000015", 2),
        ("868120145233604", 5),
        ("359710049092324", 2),
        ("4210209006", 1),
        ("352483084193293", 1),
        ("660420156A0066AA", 2),
        ("gga-only", 3),
        ("356307042441013", 1),
    ];
    let total: usize = want.iter().map(|w| w.1).sum();
    let all = wait_points(&t, |p| p.len() >= total);
    for (id, n) in want {
        assert_eq!(of_device(&all, id).len(), n, "{id}: {all:#?}");
    }
    assert_eq!(all.len(), total, "{all:#?}");
    assert!(
        all.iter().all(|p| p["valid"] == true),
        "no invalid fix written by default"
    );

    let one = |id: &str, k: usize| of_device(&all, id)[k].clone();
    let tk = one("027044702512", 0);
    assert_eq!(
        (tk["protocol"].as_str(), tk["time"].as_str()),
        (Some("tk103"), Some("2024-03-01T12:00:00.000Z"))
    );
    assert!((tk["lon"].as_f64().expect("lon") + 0.125).abs() < 1e-9 && tk["speed_kmh"] == 12.3);
    assert_eq!(one("027044702512", 3)["attributes"]["alarm"], "2");
    let q = one("135790246811220", 1);
    assert_eq!(
        (q["protocol"].as_str(), q["lat"].as_f64()),
        (Some("queclink"), Some(31.222074))
    );
    let m = one("862170010187175", 1);
    assert_eq!(
        (m["protocol"].as_str(), m["lat"].as_f64()),
        (Some("meitrack"), Some(-29.960367))
    );
    assert_eq!(m["time"], "2024-03-01T12:02:00.000Z");
    let w = one("8800000015", 0);
    assert_eq!(
        (w["protocol"].as_str(), w["speed_kmh"].as_f64()),
        (Some("watch"), Some(5.5))
    );
    let g: Vec<String> = of_device(&all, "868120145233604")
        .iter()
        .map(|p| p["time"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        g,
        [
            "2017-09-28T11:27:41.000Z",
            "2024-03-01T12:30:00.000Z",
            "2014-03-17T11:05:17.000Z",
            "2019-08-25T17:02:50.000Z",
            "2017-06-23T12:27:24.000Z"
        ]
    );
    let c = one("359710049092324", 0);
    assert_eq!(
        (c["protocol"].as_str(), c["time"].as_str()),
        (Some("gps103"), Some("2015-10-26T23:59:57.000Z"))
    );
    assert_eq!(one("359710049092324", 1)["attributes"]["event"], "help me");
    assert_eq!(one("4210209006", 0)["time"], "2018-09-08T05:40:48.000Z");
    assert_eq!(
        one("352483084193293", 0)["time"],
        "2017-08-18T10:47:59.000Z"
    );
    assert_eq!(one("660420156A0066AA", 1)["protocol"], "nmea");
    for (k, p) in of_device(&all, "gga-only").iter().enumerate() {
        assert_eq!(p["attributes"]["source"], "gga");
        let time = p["time"].as_str().expect("time");
        assert!(time.ends_with(&format!("T12:00:0{k}.000Z")), "{time}");
        let altitude = p["altitude"].as_f64().expect("altitude");
        assert!(
            (altitude - (12.0 + k as f64 / 10.0)).abs() < 1e-9,
            "{altitude}"
        );
    }

    // The registry names each device's protocol.
    let (code, body) = t.get("/api/monitoring/metrics/devices?active_only=true");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let protocol = |id: &str| {
        v["devices"]
            .as_array()
            .expect("array")
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| d["protocol"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("{id}: {body}"))
    };
    for (id, p) in [
        ("027044702512", "tk103"),
        ("135790246811220", "queclink"),
        ("862170010187175", "meitrack"),
        ("8800000015", "watch"),
        ("868120145233604", "gt06"),
        ("359710049092324", "gps103"),
        ("352483084193293", "h02"),
        ("660420156A0066AA", "nmea"),
        ("gga-only", "nmea"),
        ("356307042441013", "teltonika"),
    ] {
        assert_eq!(protocol(id), p, "{id}");
    }

    // Bad frames counted by protocol and reason; OBD is unsupported and blacklisted nobody.
    // Every count was made before the device's last answer; the scrape shows them once the
    // GPS counters are next published, so wait for all of them together.
    let mut want: Vec<(String, f64)> =
        vec![("live_points_processed_total".to_string(), total as f64)];
    for (protocol, reason, n) in [
        ("tk103", "malformed", 1.0),
        ("queclink", "malformed", 1.0),
        ("meitrack", "bad_checksum", 1.0),
        ("watch", "malformed", 1.0),
        ("gt06", "bad_checksum", 1.0),
        ("gps103", "unsupported", 8.0),
    ] {
        want.push((
            format!(
                "gps_tcp_messages_invalid_total{{protocol=\"{protocol}\",reason=\"{reason}\"}}"
            ),
            n,
        ));
    }
    for (protocol, n) in [
        ("tk103", 4.0),
        ("queclink", 2.0),
        ("meitrack", 2.0),
        ("watch", 2.0),
        ("gt06", 5.0),
        ("teltonika", 1.0),
    ] {
        want.push((
            format!("gps_tcp_locations_valid_total{{protocol=\"{protocol}\"}}"),
            n,
        ));
    }
    // The WiFi/LBS packet and Queclink's unfixed point: positions without a fix.
    for protocol in ["gt06", "queclink"] {
        want.push((
            format!("gps_tcp_locations_without_fix_total{{protocol=\"{protocol}\"}}"),
            1.0,
        ));
    }
    let text = t.wait_metrics(
        |m| want.iter().all(|(series, n)| value(m, series) == Some(*n)),
        &format!("{want:?}"),
    );
    let v =
        |series: &str| value(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
    assert_eq!(v("gps_tcp_blacklisted_ips"), 0.0);
    drop(open);
}

#[test]
fn invalid_fixes_written_when_asked_and_truncated_frames_cut_off() {
    let t = Tallyd::start(&format!("{CONFIG}points_invalid_fixes = true\n"));
    let gps = t.gps.expect("gps listener");
    let mut s = connect_from(gps, 41);
    s.write_all(&nmea("PGID,no-fix-yet")).expect("pgid");
    s.write_all(&nmea(
        "GPRMC,120000,V,4916.4500,N,12311.1200,W,0,0,010324,,,N",
    ))
    .expect("invalid");
    s.write_all(&nmea(
        "GPRMC,120001,A,4916.4500,N,12311.1200,W,0,0,010324,,,A",
    ))
    .expect("valid");
    let all = wait_points(&t, |p| of_device(p, "no-fix-yet").len() >= 2);
    let valid: Vec<bool> = of_device(&all, "no-fix-yet")
        .iter()
        .map(|p| p["valid"].as_bool().expect("bool"))
        .collect();
    assert_eq!(valid, [false, true]);

    // A truncated frame of each length-framed new protocol waits, then frame_timeout (1 s)
    // closes the connection; the device's earlier frames were delivered.
    let whole = meitrack(
        "862170010187176,AAA,35,-29.960365,-51.655455,240301120000,A,8,9,20,107,0.9,7,1,1,,,",
    );
    let mut m = connect_from(gps, 42);
    m.write_all(&whole).expect("AAA");
    m.write_all(&whole[..whole.len() / 2]).expect("half");
    assert!(
        closed_by_server(&mut m),
        "truncated Meitrack frame not cut off"
    );
    let mut w = connect_from(gps, 43);
    w.write_all(b"[SG*8800000016*0002*LK]").expect("LK");
    assert_eq!(read_until(&mut w, b']'), "[SG*8800000016*0002*LK]");
    w.write_all(b"[SG*8800000016*0040*UD,0103").expect("half");
    assert!(
        closed_by_server(&mut w),
        "truncated watch frame not cut off"
    );
    let mut g = connect_from(gps, 44);
    g.write_all(&gt06_frame(0x01, &hex("0868120145233605 0001 0000"), 1))
        .expect("login");
    assert_eq!(read_n(&mut g, 10), gt06_frame(0x01, &[], 1));
    let wifi = hex("787803691604130318491475905BD30E25001E10BBF7635D14759006E626560501CC0028660F213228660F1F2828660EA81E286610731428660F20140D0A");
    g.write_all(&wifi[..30]).expect("half a WiFi packet");
    assert!(closed_by_server(&mut g), "truncated GT06 frame not cut off");
    wait_points(&t, |p| of_device(p, "862170010187176").len() == 1);
    let text = t.wait_metrics(
        |m| {
            value(
                m,
                "tallyd_gps_connections_closed_total{reason=\"frame_timeout\"}",
            ) == Some(3.0)
        },
        "three frame timeouts",
    );
    assert_eq!(
        value(
            &text,
            "gps_tcp_locations_without_fix_total{protocol=\"nmea\"}"
        ),
        Some(1.0)
    );
}
