//! Meitrack GPRS frames: `$$<flag><length>,<imei>,<command>,<data>*<checksum>\r\n`.
//!
//! `length` (decimal) counts the bytes from the `,` after it through the closing `\r\n`;
//! `checksum` is the sum of every byte from `$$` through `*`, modulo 256, in two upper-case
//! hex digits (Meitrack GPRS protocol; the example
//! `$$X138,862170010187175,AAA,35,-29.960365,-51.655455,130507201625,A,8,9,0,107,0.9,7,...,*BE`
//! checks out). The flag is any byte.
//!
//! `AAA` is the position report: event code, latitude, longitude (signed decimal degrees),
//! `yyMMddHHmmss` UTC, `A|V`, satellites, GSM signal, speed km/h, direction, HDOP, altitude
//! (m), mileage, run time, base station, I/O, analog inputs, ... Event 1 (SOS) is an alarm.
//! The device waits for no answer to it. Other commands are accepted without a fix. A frame of
//! known length that fails its checksum is counted and skipped.

use std::collections::BTreeMap;

use super::fix::{leading_blank, unix_ms, Attr, Fix, FrameError, Kind, Message, Step};
use super::nmea::valid_id;

/// Decodes the next frame.
pub fn decode(buf: &[u8], max_line: usize) -> Step {
    if let Some(skip) = leading_blank(buf) {
        return skip;
    }
    let digits = buf
        .iter()
        .skip(3)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let comma = 3 + digits;
    match buf {
        [] | [b'$'] | [b'$', b'$'] | [b'$', b'$', _] => return Step::Incomplete,
        [b'$', b'$', ..] if buf.len() == comma && digits < 5 => return Step::Incomplete,
        [b'$', b'$', ..] if (1..=4).contains(&digits) && buf[comma] == b',' => {}
        // Framing lost: no length to resynchronise on.
        _ => return Step::Fatal(FrameError::Malformed),
    }
    let length: usize = std::str::from_utf8(&buf[3..comma])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let total = comma + length;
    if total > max_line {
        return Step::Fatal(FrameError::TooLong);
    }
    if buf.len() < total {
        return Step::Incomplete;
    }
    Step::Frame {
        len: total,
        msg: frame_message(&buf[..total]),
    }
}

fn frame_message(frame: &[u8]) -> Result<Message, FrameError> {
    let body = frame.strip_suffix(b"\r\n").ok_or(FrameError::Malformed)?;
    let star = body.len().checked_sub(3).ok_or(FrameError::Malformed)?;
    if body[star] != b'*' {
        return Err(FrameError::Malformed);
    }
    let sent = std::str::from_utf8(&body[star + 1..])
        .ok()
        .and_then(|h| u8::from_str_radix(h, 16).ok())
        .ok_or(FrameError::Malformed)?;
    let sum = body[..=star].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    if sum != sent {
        return Err(FrameError::Checksum);
    }
    let text = std::str::from_utf8(&body[..star]).map_err(|_| FrameError::Malformed)?;
    let f: Vec<&str> = text.split(',').collect();
    let (imei, command) = match f.as_slice() {
        [_, imei, command, ..] => (*imei, *command),
        _ => return Err(FrameError::Malformed),
    };
    if !valid_id(imei) {
        return Err(FrameError::Malformed);
    }
    let mut msg = Message {
        device_id: Some(imei.to_string()),
        ..Message::new(Kind::Other)
    };
    if command == "AAA" {
        let d = f.get(3..).ok_or(FrameError::Malformed)?;
        let fix = aaa(d)?;
        msg.kind = if d[0] == "1" {
            Kind::Alarm
        } else {
            Kind::Location
        };
        msg.fixes.push(fix);
    }
    Ok(msg)
}

/// The `AAA` fields after the command.
fn aaa(d: &[&str]) -> Result<Fix, FrameError> {
    let bad = || FrameError::Malformed;
    if d.len() < 11 {
        return Err(bad());
    }
    let float = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
    let lat = float(d[1]).filter(|v| v.abs() <= 90.0).ok_or_else(bad)?;
    let lon = float(d[2]).filter(|v| v.abs() <= 180.0).ok_or_else(bad)?;
    let t = d[3];
    if t.len() != 12 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| t[r].parse::<u32>().map_err(|_| bad());
    let time_ms = unix_ms(
        2000 + i64::from(n(0..2)?),
        n(2..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        0,
    )
    .ok_or_else(bad)?;
    let mut attributes = BTreeMap::new();
    attributes.insert("event".to_string(), Attr::Text(d[0].to_string()));
    Ok(Fix {
        time_ms,
        lat,
        lon,
        altitude: float(d[10]),
        speed_kmh: float(d[7]).unwrap_or(0.0).max(0.0),
        course: float(d[8]).unwrap_or(0.0),
        satellites: d[5].parse().ok(),
        valid: d[4] == "A",
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a frame from its text between the length's `,` and `*`, computing length and
    /// checksum as the protocol document defines them.
    fn frame(flag: char, fields: &str) -> Vec<u8> {
        let length = fields.len() + 1 + 1 + 2 + 2; // `,` fields `*` hh CR LF
        let mut f = format!("$${flag}{length},{fields}*").into_bytes();
        let sum = f.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        f.extend(format!("{sum:02X}\r\n").bytes());
        f
    }

    fn one(bytes: &[u8]) -> Result<Message, FrameError> {
        crate::gps::fix::whole_frame(decode(bytes, 1024), bytes.len())
    }

    #[test]
    fn published_position_report() {
        let f = b"$$X138,862170010187175,AAA,35,-29.960365,-51.655455,130507201625,A,8,9,0,107,0.9,7,169322,126582,724|6|0547|132B,0000,0009|000A||0278|0000,*BE\r\n";
        let m = one(f).expect("AAA");
        assert_eq!((m.kind, m.reply.clone()), (Kind::Location, None));
        assert_eq!(m.device_id.as_deref(), Some("862170010187175"));
        let x = &m.fixes[0];
        assert_eq!(x.time_ms, unix_ms(2013, 5, 7, 20, 16, 25, 0).expect("date"));
        assert_eq!(
            (x.lat, x.lon, x.satellites, x.valid),
            (-29.960365, -51.655455, Some(8), true)
        );
        assert_eq!((x.speed_kmh, x.course, x.altitude), (0.0, 107.0, Some(7.0)));
        assert_eq!(
            frame('X', &String::from_utf8_lossy(&f[7..f.len() - 5])),
            f.to_vec()
        );
    }

    #[test]
    fn sos_other_commands_and_bad_frames() {
        let sos = frame('A', "353358017784062,AAA,1,22.547670,114.022133,100320094500,A,7,12,30,90,1.2,50,0,0,460|0|E166|A08B,0000,000F|0000|0000|019D|0995,,,");
        assert_eq!(one(&sos).expect("sos").kind, Kind::Alarm);
        let other = frame('B', "353358017784062,AFF,OK");
        assert_eq!(one(&other).expect("AFF").kind, Kind::Other);
        let mut bad = sos.clone();
        let n = bad.len();
        bad[n - 4] = if bad[n - 4] == b'0' { b'1' } else { b'0' };
        assert_eq!(one(&bad), Err(FrameError::Checksum));
        // Truncated: waits; cut at every point, never a frame.
        for cut in 0..sos.len() {
            assert_eq!(decode(&sos[..cut], 1024), Step::Incomplete, "cut {cut}");
        }
        assert_eq!(decode(b"$$A9999,", 1024), Step::Fatal(FrameError::TooLong));
        assert_eq!(decode(b"$$Ax,", 1024), Step::Fatal(FrameError::Malformed));
        // A length that misses the CR LF: that many bytes, counted malformed.
        let Step::Frame { len, msg } = decode(b"$$A10,1,AAA*00\r\n", 1024) else {
            panic!("a frame of the stated length")
        };
        assert_eq!((len, msg), (15, Err(FrameError::Malformed)));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode(&bytes, 200);
            let mut framed = format!("$$A{},", bytes.len()).into_bytes();
            framed.extend_from_slice(&bytes);
            let _ = decode(&framed, 500);
        }
    }
}
