//! Simulated-tracker helpers for the GPS end-to-end tests: sockets from distinct loopback
//! addresses, reading answers, and the NDJSON points file. Frames are built by each test from
//! the protocol documents, never with `src/gps`.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::Tallyd;

/// Connects to `to` from 127.0.0.`host` (so per-IP limits apply to one device at a time).
pub fn connect_from(to: SocketAddr, host: u8) -> TcpStream {
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

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read reply");
    buf
}

/// Reads up to and including `end`.
pub fn read_until(s: &mut TcpStream, end: u8) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.last() != Some(&end) {
        s.read_exact(&mut b).expect("read reply");
        out.push(b[0]);
        assert!(out.len() < 256, "reply too long: {out:?}");
    }
    String::from_utf8(out).expect("utf8 reply")
}

/// True when the server closed the connection (EOF or reset) within the read timeout.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
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

/// The points file's lines, parsed.
pub fn points(t: &Tallyd) -> Vec<serde_json::Value> {
    std::fs::read_to_string(t.path("points.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// Waits (10 s at most) until the points file satisfies `pred`.
pub fn wait_points(
    t: &Tallyd,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
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

/// The points of one device.
pub fn of_device<'a>(points: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    points.iter().filter(|p| p["device_id"] == id).collect()
}

/// An NMEA sentence: `$`, body, `*`, the XOR of the body in hex, CR LF.
pub fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

/// A Meitrack frame around `fields` (imei, command, data): the length counts from the `,`
/// after it through CR LF, the checksum is the byte sum through `*` (Meitrack GPRS protocol).
pub fn meitrack(fields: &str) -> Vec<u8> {
    let length = 1 + fields.len() + 1 + 2 + 2;
    let mut f = format!("$$A{length},{fields}*").into_bytes();
    let sum = f.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    f.extend(format!("{sum:02X}\r\n").bytes());
    f
}

/// Bytes from hex, whitespace ignored.
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// CRC-16/ARC (Teltonika "CRC-16/IBM"), bit by bit.
pub fn crc_ibm(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in data {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// A Teltonika Codec 8 AVL packet of records `(unix ms, lon, lat, altitude, angle,
/// satellites, speed)`, coordinates in 1e-7 degrees, one IO element each (Teltonika's Codec 8
/// document).
pub fn teltonika8(records: &[(u64, i32, i32, i16, u16, u8, u16)]) -> Vec<u8> {
    let mut data = vec![0x08, records.len() as u8];
    for (ts, lon, lat, alt, angle, sats, speed) in records {
        data.extend_from_slice(&ts.to_be_bytes());
        data.push(0);
        data.extend_from_slice(&lon.to_be_bytes());
        data.extend_from_slice(&lat.to_be_bytes());
        data.extend_from_slice(&alt.to_be_bytes());
        data.extend_from_slice(&angle.to_be_bytes());
        data.push(*sats);
        data.extend_from_slice(&speed.to_be_bytes());
        // event 0, total 1, N1 = 1 (id 239 = 1), N2 = N4 = N8 = 0
        data.extend_from_slice(&[0, 1, 1, 239, 1, 0, 0, 0]);
    }
    data.push(records.len() as u8);
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&(data.len() as u32).to_be_bytes());
    p.extend_from_slice(&data);
    p.extend_from_slice(&u32::from(crc_ibm(&data)).to_be_bytes());
    p
}
