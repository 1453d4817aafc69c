//! End-to-end, against the real binary: the OsmAnd / Traccar Client listener driven by a real
//! HTTP client (curl) in its three body forms, and device commands reaching simulated devices
//! (GT06 online, GPS103 and Meitrack offline until they connect, Teltonika, H02, TK103,
//! Queclink, watch) with their answers reported by the API.
//! Frames are built here from the protocol documents, independently of `src/gps`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::gps::{crc_ibm, meitrack, read_until};
use common::gt06::{crc_itu, gt06_frame};
use common::{http_request, value, Tallyd};

/// The OsmAnd listener's address, from the start-up log.
fn osmand_addr(t: &Tallyd) -> SocketAddr {
    t.logs()
        .iter()
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let f = v.get("fields")?;
            (f.get("component")?.as_str()? == "gps_osmand")
                .then(|| f.get("addr")?.as_str()?.parse().ok())
                .flatten()
        })
        .expect("OsmAnd address in the logs")
}

/// Runs curl with `args`; gives the HTTP status and the body.
fn curl(args: &[&str]) -> (u16, String) {
    let curl = common::system_tool("CURL", &["curl"], "curl");
    let out = Command::new(curl)
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn points(t: &Tallyd) -> Vec<serde_json::Value> {
    std::fs::read_to_string(t.path("points.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("point line"))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn osmand_query_form_and_json_bodies_are_points_once_answered() {
    let t = Tallyd::start(
        r#"
[gps]
osmand_enabled = true
osmand_listen = "127.0.0.1:0"
points_file = "@DIR@/points.ndjson"
"#,
    );
    let addr = osmand_addr(&t);
    let base = format!("http://{addr}/");

    // 1. GET with the fields in the query string (OsmAnd, Traccar Client before v9).
    let url = format!(
        "{base}?id=phone-q&lat=52.520008&lon=13.404954&timestamp=1700000000&speed=10\
         &bearing=270.5&altitude=34&accuracy=5.5&batt=81"
    );
    let (code, _) = curl(&[&url]);
    assert_eq!(code, 200);
    // Answered only once stored: the point is in the file when the 200 arrives.
    let p = points(&t);
    assert_eq!(p.len(), 1, "{p:?}");
    let q = &p[0];
    assert_eq!(q["device_id"], "phone-q");
    assert_eq!(q["protocol"], "osmand");
    assert_eq!(q["time"], "2023-11-14T22:13:20.000Z");
    assert!(close(q["lat"].as_f64().expect("lat"), 52.520008));
    assert!(close(q["lon"].as_f64().expect("lon"), 13.404954));
    assert!(
        close(q["speed_kmh"].as_f64().expect("speed"), 18.52),
        "knots"
    );
    assert_eq!(q["course"], 270.5);
    assert_eq!(q["altitude"], 34.0);
    assert_eq!(q["attributes"]["accuracy"], 5.5);
    assert_eq!(q["attributes"]["batt"], 81.0);

    // 2. POST with a form body (empty query string).
    let (code, _) = curl(&[
        "--data",
        "id=phone-f&lat=-33.8688&lon=151.2093&timestamp=2023-11-14T22:13:21Z&speed=0&batt=12.5",
        &base,
    ]);
    assert_eq!(code, 200);
    let p = points(&t);
    assert_eq!(p.len(), 2);
    assert_eq!(p[1]["device_id"], "phone-f");
    assert_eq!(p[1]["time"], "2023-11-14T22:13:21.000Z");
    assert_eq!(p[1]["lat"], -33.8688);

    // 3. POST with the JSON body of newer Traccar Client versions.
    let json = r#"{"device_id":"phone-j","location":{"timestamp":"2023-11-14T22:13:22.250Z",
      "coords":{"latitude":48.8584,"longitude":2.2945,"speed":2.5,"heading":45,
      "accuracy":8,"altitude":330},"is_moving":true,"odometer":4200,
      "battery":{"level":0.66,"is_charging":false},"activity":{"type":"walking"}}}"#;
    let (code, _) = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        json,
        &base,
    ]);
    assert_eq!(code, 200);
    let p = points(&t);
    assert_eq!(p.len(), 3);
    let j = &p[2];
    assert_eq!(j["device_id"], "phone-j");
    assert_eq!(j["time"], "2023-11-14T22:13:22.250Z");
    assert!(close(j["speed_kmh"].as_f64().expect("speed"), 9.0), "m/s");
    assert_eq!(j["course"], 45.0);
    assert_eq!(j["attributes"]["batt"], 66.0);
    assert_eq!(j["attributes"]["motion"], 1);
    assert_eq!(j["attributes"]["activity"], "walking");

    // Refused: no id, a bad number, a bad JSON body. Counted, nothing stored.
    assert_eq!(curl(&[&format!("{base}?lat=1&lon=2")]).0, 400);
    assert_eq!(curl(&[&format!("{base}?id=x&lat=north&lon=2")]).0, 400);
    let bad = ["-H", "Content-Type: application/json", "--data", "{", &base];
    assert_eq!(curl(&bad).0, 400);
    assert_eq!(curl(&["-X", "DELETE", &base]).0, 405);
    assert_eq!(points(&t).len(), 3);

    // The registry lists the phones with their last fix; the counters count them.
    let (code, body) = t.get("/api/monitoring/metrics/devices");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let dev = v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["id"] == "phone-j")
        .expect("phone-j listed")
        .clone();
    assert_eq!(dev["protocol"], "osmand");
    assert_eq!(dev["connected"], false);
    assert_eq!(dev["last_fix"]["lat"], 48.8584);
    let m = t.wait_metrics(
        |m| value(m, "tallyd_gps_invalid_messages_total") == Some(3.0),
        "three invalid OsmAnd reports",
    );
    assert_eq!(value(&m, "tallyd_gps_messages_total"), Some(6.0));
    assert!(
        m.contains("tallyd_http_connections_total{server=\"gps_osmand\"}"),
        "the listener's connection counts are exported"
    );
}

// ---- commands ----

fn gt06_login() -> Vec<u8> {
    gt06_frame(
        0x01,
        &[
            0x08, 0x63, 0x58, 0x60, 0x38, 0x76, 0x09, 0x42, 0x00, 0x01, 0x00, 0x00,
        ],
        1,
    )
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    s.read_exact(&mut b).expect("read from tallyd");
    b
}

/// POSTs a command from another thread (the call waits for the device's answer).
fn post_command(
    http: SocketAddr,
    device: &str,
    body: &'static str,
) -> std::thread::JoinHandle<(u16, serde_json::Value)> {
    let path = format!("/api/monitoring/gps/devices/{device}/command");
    std::thread::spawn(move || {
        let (code, body) = http_request(
            http,
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            body,
        );
        (code, serde_json::from_str(&body).unwrap_or_default())
    })
}

#[test]
fn commands_reach_devices_and_their_answers_are_reported() {
    let t = Tallyd::start(
        r#"
[gps]
points_file = "@DIR@/points.ndjson"
command_timeout = "3s"
command_ttl = "1m"
"#,
    );
    let gps = t.gps.expect("gps address");

    // A GT06 device, connected: the command is sent at once, the answer reported.
    let mut dev = TcpStream::connect(gps).expect("connect");
    dev.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    dev.write_all(&gt06_login()).expect("login");
    assert_eq!(
        read_exact(&mut dev, 10),
        gt06_frame(0x01, &[], 1),
        "login ACK"
    );
    let imei = "863586038760942";
    let pending = post_command(t.http, imei, r#"{"type":"locate"}"#);
    // 78 78 | len | 80 | cmd_len | flag:4 | "WHERE#" | serial:2 | crc:2 | 0D 0A
    let head = read_exact(&mut dev, 3);
    assert_eq!(&head[..2], &[0x78, 0x78]);
    let rest = read_exact(&mut dev, usize::from(head[2]) + 2);
    let frame = [head.clone(), rest].concat();
    assert_eq!(frame[3], 0x80, "online command packet: {frame:02X?}");
    let cmd_len = usize::from(frame[4]);
    let flag = frame[5..9].to_vec();
    assert_eq!(&frame[9..5 + cmd_len], b"WHERE#");
    let n = frame.len();
    assert_eq!(
        crc_itu(&frame[2..n - 4]).to_be_bytes(),
        [frame[n - 4], frame[n - 3]]
    );
    assert_eq!(&frame[n - 2..], b"\r\n");
    // The device answers with packet 0x15: cmd_len | the server's flag | text.
    let text = b"Lat:N22.570336,Lon:E113.860148,Course:0.00,Speed:0.00";
    let mut content = vec![(4 + text.len()) as u8];
    content.extend_from_slice(&flag);
    content.extend_from_slice(text);
    dev.write_all(&gt06_frame(0x15, &content, 2))
        .expect("answer");
    let (code, v) = pending.join().expect("post");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["answered"], true, "{v}");
    assert_eq!(v["command"]["status"], "answered");
    assert_eq!(v["command"]["protocol"], "gt06");
    assert_eq!(
        v["command"]["answer"],
        String::from_utf8_lossy(text).as_ref()
    );

    // The connection still works: a heartbeat is acknowledged.
    dev.write_all(&gt06_frame(0x13, &[0x44, 0x06, 0x04, 0x00, 0x02], 3))
        .expect("heartbeat");
    assert_eq!(read_exact(&mut dev, 10), gt06_frame(0x13, &[], 3));

    // A command the device never answers ends as no_answer after gps.command_timeout.
    let pending = post_command(t.http, imei, r#"{"type":"interval","seconds":60}"#);
    let head = read_exact(&mut dev, 3);
    let rest = read_exact(&mut dev, usize::from(head[2]) + 2);
    assert_eq!(&rest[6..15], b"TIMER,60#");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, false.into()), "{v}");
    assert_eq!(v["command"]["status"], "no_answer");

    // A GPS103 device that is offline: the command waits (202) until it connects.
    let gps103 = "359710049092324";
    let (code, v) = post_command(t.http, gps103, r#"{"type":"locate"}"#)
        .join()
        .expect("post");
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["command"]["status"], "queued");
    let mut coban = TcpStream::connect(gps).expect("connect");
    coban
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    coban
        .write_all(format!("##,imei:{gps103},A;").as_bytes())
        .expect("login");
    let mut got = Vec::new();
    let want_cmd = format!("**,imei:{gps103},B");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains(&want_cmd) {
        assert!(
            Instant::now() < deadline,
            "no command: {:?}",
            String::from_utf8_lossy(&got)
        );
        let mut b = [0u8; 256];
        let n = coban.read(&mut b).expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    assert!(
        String::from_utf8_lossy(&got).starts_with("LOAD"),
        "login answered first"
    );
    // Its position report is the answer (GPS103 has no acknowledgement).
    let report = format!(
        "imei:{gps103},tracker,2311142213,,F,221323.000,A,5130.0000,N,00007.5000,W,0.00,0;"
    );
    coban.write_all(report.as_bytes()).expect("report");
    let list = wait_command_status(&t, gps103, "answered");
    assert_eq!(list[0]["answer"], report.as_str());
    assert_eq!(list[0]["protocol"], "gps103");
    // The report was still decoded as a position.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !points(&t).iter().any(|p| p["device_id"] == gps103) {
        assert!(Instant::now() < deadline, "GPS103 point not stored");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Refused: a value out of range, a type no protocol has.
    let (code, _) = post_command(t.http, imei, r#"{"type":"interval","seconds":0}"#)
        .join()
        .expect("post");
    assert_eq!(code, 400);
    let (code, _) = post_command(t.http, imei, r#"{"type":"reboot"}"#)
        .join()
        .expect("post");
    assert_eq!(code, 400);

    let m = t.wait_metrics(
        |m| value(m, "tallyd_gps_commands_total{result=\"answered\"}") == Some(2.0),
        "two answered commands",
    );
    for (result, want) in [("queued", 3.0), ("sent", 3.0), ("no_answer", 1.0)] {
        let series = format!("tallyd_gps_commands_total{{result=\"{result}\"}}");
        assert_eq!(value(&m, &series), Some(want), "{series}");
    }
    assert_eq!(value(&m, "tallyd_gps_commands_pending"), Some(0.0));
}

fn wait_command_status(t: &Tallyd, device: &str, status: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = t.get(&format!("/api/monitoring/gps/devices/{device}/commands"));
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let list = v["commands"].as_array().cloned().unwrap_or_default();
        if list.first().is_some_and(|c| c["status"] == status) {
            return list;
        }
        assert!(Instant::now() < deadline, "command not {status}: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Codec 12 packet of `kind` (5 command, 6 response) carrying `text`.
fn codec12(kind: u8, text: &[u8]) -> Vec<u8> {
    let mut data = vec![0x0C, 0x01, kind];
    data.extend_from_slice(&(text.len() as u32).to_be_bytes());
    data.extend_from_slice(text);
    data.push(0x01);
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&(data.len() as u32).to_be_bytes());
    p.extend_from_slice(&data);
    p.extend_from_slice(&u32::from(crc_ibm(&data)).to_be_bytes());
    p
}

#[test]
fn teltonika_and_h02_commands_and_their_answers() {
    let t = Tallyd::start("[gps]\ncommand_timeout = \"5s\"\n");
    let gps = t.gps.expect("gps address");

    // Teltonika: Codec 12 out, the type 06 response reported.
    let mut fmb = TcpStream::connect(gps).expect("connect");
    fmb.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    fmb.write_all(b"\x00\x0f356307042441013").expect("imei");
    assert_eq!(read_exact(&mut fmb, 1), vec![0x01], "IMEI accepted");
    let pending = post_command(
        t.http,
        "356307042441013",
        r#"{"type":"custom","text":"getinfo"}"#,
    );
    let want = codec12(0x05, b"getinfo");
    assert_eq!(read_exact(&mut fmb, want.len()), want);
    let info = b"RTC:2024/3/1 12:00 Init:2024/3/1 11:00 UpTime:3600s PWR:PwrVoltage RST:0 GPS:3";
    fmb.write_all(&codec12(0x06, info)).expect("response");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, true.into()), "{v}");
    assert_eq!(
        v["command"]["answer"],
        String::from_utf8_lossy(info).as_ref()
    );
    assert_eq!(v["command"]["protocol"], "teltonika");
    // Teltonika has no interval command: refused up front, the device being known.
    let (code, v) = post_command(
        t.http,
        "356307042441013",
        r#"{"type":"interval","seconds":30}"#,
    )
    .join()
    .expect("post");
    assert_eq!(code, 422, "{v}");

    // H02: the device names itself in its first report; D1 out, the V4 confirmation back.
    let mut h02 = TcpStream::connect(gps).expect("connect");
    h02.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    h02.write_all(
        b"*HQ,4970105243,V1,104002,A,2235.1777,N,11357.8913,E,000.00,235,130721,FFFFFBFF#\r\n",
    )
    .expect("report");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"#") {
        h02.read_exact(&mut b).expect("ack");
        line.push(b[0]);
    }
    assert!(line.starts_with(b"*HQ,4970105243,V4,V1,"));
    let pending = post_command(t.http, "4970105243", r#"{"type":"interval","seconds":30}"#);
    let mut cmd = Vec::new();
    while !cmd.ends_with(b"#") {
        h02.read_exact(&mut b).expect("command");
        cmd.push(b[0]);
    }
    let cmd = String::from_utf8_lossy(&cmd).to_string();
    let fields: Vec<&str> = cmd.trim_end_matches('#').split(',').collect();
    assert_eq!(fields[..3], ["*HQ", "4970105243", "D1"], "{cmd}");
    assert_eq!(fields[3].len(), 6, "HHMMSS: {cmd}");
    assert_eq!(fields[4..], ["30", "1"], "{cmd}");
    let confirm = format!("*HQ,4970105243,V4,D1,30,1,{},130721,A#", fields[3]);
    h02.write_all(confirm.as_bytes()).expect("confirm");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, true.into()), "{v}");
    assert_eq!(v["command"]["answer"], confirm.as_str());
    // H02 documents no locate command.
    let (code, _) = post_command(t.http, "4970105243", r#"{"type":"locate"}"#)
        .join()
        .expect("post");
    assert_eq!(code, 422);
    let m = t.wait_metrics(
        |m| value(m, "tallyd_gps_commands_total{result=\"unsupported\"}") == Some(2.0),
        "two unsupported commands",
    );
    assert_eq!(
        value(&m, "tallyd_gps_commands_total{result=\"answered\"}"),
        Some(2.0)
    );
}

#[test]
fn osmand_is_not_answered_200_when_the_point_cannot_be_stored() {
    // Every write to /dev/full fails (ENOSPC): the phone must get no 200, so it keeps the
    // position and sends it again.
    let t = Tallyd::start(
        r#"
[gps]
osmand_enabled = true
osmand_listen = "127.0.0.1:0"
points_file = "/dev/full"
points_fsync = false
"#,
    );
    let addr = osmand_addr(&t);
    let (code, body) = curl(&[&format!("http://{addr}/?id=p&lat=1&lon=2")]);
    assert_eq!(code, 503, "{body}");
    // A report without a position stores nothing and is answered.
    assert_eq!(curl(&[&format!("http://{addr}/?id=p&batt=50")]).0, 200);
    t.wait_metrics(
        |m| value(m, "live_points_failed_total") == Some(1.0),
        "the failed point counted",
    );
}

#[test]
fn the_command_route_is_behind_the_admin_rule() {
    let t = Tallyd::start("[http]\nadmin_token = \"tok-cmd\"\ntrust_loopback = false\n");
    let path = "/api/monitoring/gps/devices/d1/command";
    let body = r#"{"type":"locate"}"#;
    let json = ("Content-Type", "application/json");
    let (code, _) = http_request(t.http, "POST", path, &[json], body);
    assert_eq!(code, 401, "no token");
    let bearer = ("Authorization", "Bearer tok-cmd");
    let (code, reply) = http_request(t.http, "POST", path, &[json, bearer], body);
    assert_eq!(code, 202, "queued for an offline device: {reply}");
}

/// The Meitrack server frame `@@<flag><length>,<fields>*<checksum>\r\n`, built here from the
/// protocol document (length from the comma through CR LF, byte sum through `*`).
fn meitrack_command(flag: char, fields: &str) -> Vec<u8> {
    let length = 1 + fields.len() + 1 + 2 + 2;
    let mut f = format!("@@{flag}{length},{fields}*").into_bytes();
    let sum = f.iter().map(|&b| u32::from(b)).sum::<u32>() % 256;
    f.extend(format!("{sum:02X}\r\n").bytes());
    f
}

#[test]
fn meitrack_and_watch_commands_and_their_answers() {
    let t = Tallyd::start(
        "[gps]\npoints_file = \"@DIR@/points.ndjson\"\ncommand_timeout = \"5s\"\ncommand_ttl = \"1m\"\n",
    );
    let gps = t.gps.expect("gps address");

    // Meitrack, offline: the locate (A10) waits, is sent once the device reports, and the
    // AAA report with event 34 it draws is the answer.
    let imei = "862170010187175";
    let (code, v) = post_command(t.http, imei, r#"{"type":"locate"}"#)
        .join()
        .expect("post");
    assert_eq!(code, 202, "{v}");
    let mut mt = TcpStream::connect(gps).expect("connect");
    mt.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let aaa = |event: &str, lat: &str| {
        meitrack(&format!(
            "{imei},AAA,{event},{lat},-51.655455,240301120000,A,8,9,20,107,0.9,7,169322,126582,724|6|0547|132B,0000,0009|000A||0278|0000,"
        ))
    };
    mt.write_all(&aaa("35", "-29.960365")).expect("AAA");
    let want = meitrack_command('Q', &format!("{imei},A10"));
    assert_eq!(
        String::from_utf8_lossy(&read_exact(&mut mt, want.len())),
        String::from_utf8_lossy(&want)
    );
    let reply = aaa("34", "-29.960366");
    mt.write_all(&reply).expect("A10 answer");
    let list = wait_command_status(&t, imei, "answered");
    let text = String::from_utf8_lossy(&reply).trim_end().to_string();
    assert_eq!(list[0]["answer"], text.as_str());
    assert_eq!(list[0]["protocol"], "meitrack");
    // The answer is a report too: both positions reach the points file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !points(&t)
        .iter()
        .any(|p| p["device_id"] == imei && close(p["lat"].as_f64().unwrap_or(0.0), -29.960366))
    {
        assert!(
            Instant::now() < deadline,
            "no A10 position: {:?}",
            points(&t)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The interval, connected: A12 in tens of seconds, answered A12,OK.
    let pending = post_command(t.http, imei, r#"{"type":"interval","seconds":60}"#);
    let want = meitrack_command('V', &format!("{imei},A12,6"));
    assert_eq!(read_exact(&mut mt, want.len()), want);
    let ok = meitrack(&format!("{imei},A12,OK"));
    mt.write_all(&ok).expect("A12,OK");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, true.into()), "{v}");

    // A watch, connected: link answered, then the interval in its own framing (`SG`), echoed.
    let mut w = TcpStream::connect(gps).expect("connect");
    w.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    w.write_all(b"[SG*8800000015*0002*LK]").expect("LK");
    assert_eq!(read_until(&mut w, b']'), "[SG*8800000015*0002*LK]");
    let pending = post_command(t.http, "8800000015", r#"{"type":"interval","seconds":600}"#);
    assert_eq!(read_until(&mut w, b']'), "[SG*8800000015*000A*UPLOAD,600]");
    // A link crossing the command is no answer; the echo is.
    w.write_all(b"[SG*8800000015*0002*LK]").expect("LK");
    assert_eq!(read_until(&mut w, b']'), "[SG*8800000015*0002*LK]");
    w.write_all(b"[SG*8800000015*0006*UPLOAD]").expect("echo");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, true.into()), "{v}");
    assert_eq!(v["command"]["answer"], "[SG*8800000015*0006*UPLOAD]");
    assert_eq!(v["command"]["protocol"], "watch");
    let pending = post_command(t.http, "8800000015", r#"{"type":"locate"}"#);
    assert_eq!(read_until(&mut w, b']'), "[SG*8800000015*0002*CR]");
    w.write_all(b"[SG*8800000015*0002*CR]").expect("echo");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, true.into()), "{v}");
    t.wait_metrics(
        |m| value(m, "tallyd_gps_commands_total{result=\"answered\"}") == Some(4.0),
        "four answered commands",
    );
}

#[test]
fn tk103_and_queclink_commands_and_their_answers() {
    let t = Tallyd::start("[gps]\ncommand_timeout = \"5s\"\n");
    let gps = t.gps.expect("gps address");

    // TK103 (parenthesised): login answered AP05, then AP00; the heartbeat crossing it is no
    // answer (it is answered AP01HSO as always), the BP04 position is.
    let mut tk = TcpStream::connect(gps).expect("connect");
    tk.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tk.write_all(b"(027044702512BP05000027044702512240301A5130.0000N00007.5000W012.3120000090.0000000000L00000000)")
        .expect("login");
    assert_eq!(read_until(&mut tk, b')'), "(027044702512AP05)");
    let pending = post_command(t.http, "027044702512", r#"{"type":"locate"}"#);
    assert_eq!(read_until(&mut tk, b')'), "(027044702512AP00)");
    tk.write_all(b"(027044702512BP00HSO)").expect("heartbeat");
    assert_eq!(read_until(&mut tk, b')'), "(027044702512AP01HSO)");
    let bp04 = "(027044702512BP04240301A5130.0001N00007.5000W000.0120000090.0000000000L00000000)";
    tk.write_all(bp04.as_bytes()).expect("BP04");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, true.into()), "{v}");
    assert_eq!(v["command"]["answer"], bp04);
    assert_eq!(v["command"]["protocol"], "tk103");
    // The interval: seconds in four hex digits, then 0000 (no time limit).
    let pending = post_command(
        t.http,
        "027044702512",
        r#"{"type":"interval","seconds":30}"#,
    );
    assert_eq!(read_until(&mut tk, b')'), "(027044702512AR00001E0000)");
    tk.write_all(b"(027044702512BS08)").expect("BS08");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, true.into()), "{v}");
    assert_eq!(v["command"]["answer"], "(027044702512BS08)");

    // Queclink: the heartbeat is answered SACK; locate is AT+GTRTO (serial 0001, the first
    // command on this connection), answered by its +ACK:GTRTO.
    let mut q = TcpStream::connect(gps).expect("connect");
    q.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    q.write_all(b"+ACK:GTHBD,060100,135790246811220,,20240301120400,11F0$")
        .expect("HBD");
    assert_eq!(read_until(&mut q, b'$'), "+SACK:GTHBD,060100,11F0$");
    let pending = post_command(t.http, "135790246811220", r#"{"type":"locate"}"#);
    assert_eq!(read_until(&mut q, b'$'), "AT+GTRTO=,1,,,,,,0001$");
    let ack = "+ACK:GTRTO,060100,135790246811220,,GPS,0001,20240301120500,11F1$";
    q.write_all(ack.as_bytes()).expect("ACK");
    let (code, v) = pending.join().expect("post");
    assert_eq!((code, v["answered"].clone()), (200, true.into()), "{v}");
    assert_eq!(v["command"]["answer"], ack);
    // No single interval command in @Track: refused, the device being known.
    let (code, _) = post_command(
        t.http,
        "135790246811220",
        r#"{"type":"interval","seconds":30}"#,
    )
    .join()
    .expect("post");
    assert_eq!(code, 422);
}
