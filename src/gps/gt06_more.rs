//! GT06 packets beyond the basic set: the extra position types, Concox 4G packets, WiFi/LBS
//! packets and the 0x95 alarm. Layouts follow the Concox protocol documents as Traccar's
//! Gt06ProtocolDecoder reads them; every frame in the tests is a device capture from its tests.
//!
//! - `0x1E` (GPS/LBS extended), `0x37` (GPS/LBS 3), `0xA0` (4G GPS/LBS: the standard GPS
//!   block, then MCC, MNC, a 4-byte LAC and an 8-byte cell id): the standard GPS block first.
//!   Answered `78 78 05 <protocol> <serial> <crc> 0D 0A`, as Traccar answers them.
//! - `0x34` (X1): 4 bytes of data/alarm flags, then the GPS block; answered the same way.
//! - `0x32` (GPS/LBS/status 4): the GPS block; answered. In the long (`79 79`) form `0x32`
//!   (position) and `0x33` (alarm) carry the date, a GPS length byte (0: no fix) and, when
//!   it is not 0, satellites, coordinates, speed and course/status; answered in the long form
//!   `79 79 00 05 <protocol> <serial> <crc> 0D 0A`. The short `0x33` is a WiFi/LBS packet:
//!   a position without a fix, answered.
//! - `0x70` (modular): modules `type:u16 len:u16 data`; module `0x33` is the position (Unix
//!   time u32, satellites, altitude i16, coordinates, speed, course/status). Answered
//!   `78 78 05 70 <serial> <crc> 0D 0A`.
//! - `0x21` (long form, a command answer in text): `Current position!Lat:N54.739332,
//!   Lon:E25.273270,Course:126.53,Speed:0.0000,DateTime:2017-05-26  10:27:47` is a position,
//!   any other text carries none. Not answered.
//! - `0x94` information (external voltage, ICCID, door, ...): no position, not answered.
//! - `0x95` alarm (JC100): date and alarm type, or date, coordinates, course/status and alarm
//!   type. Answered `78 78 05 95 <serial> <crc> 0D 0A`; a device without it repeats the alarm.
//! - `0x17` / `0x69` WiFi/LBS: see `gt06.rs` for the framing; positions without a fix.
//! - The other LBS/WiFi-only packets, `0x18 0x19 0x24 0x28 0x2C 0x2E` and 4G `0xA1 0xA2`
//!   (cell towers and access points, no coordinates): positions without a fix, answered
//!   `78 78 05 <protocol> <serial> <crc> 0D 0A`; `0xF3` (WiFi) likewise, unanswered.

use super::fix::{bcd_digits, civil, Attr, Fix, FrameError, Kind, Message, Step};
use super::gt06::{ack, block, gps_fix, located, long_ack};

const STOP: [u8; 2] = [0x0D, 0x0A];

/// A `0x17`/`0x69` WiFi/LBS frame: `78 78 <wifi count> <protocol> <time:6> <wifi × 7>
/// <cell count> <mcc:2> <mnc:1> <cells × 5> 0D 0A`, no serial and no CRC.
pub fn wifi(buf: &[u8], max_frame: usize) -> Step {
    let cells_at = 10 + 7 * usize::from(buf[2]);
    if cells_at >= max_frame {
        return Step::Fatal(FrameError::TooLong);
    }
    let Some(&cells) = buf.get(cells_at) else {
        return Step::Incomplete;
    };
    let total = cells_at + 1 + 3 + 5 * usize::from(cells) + 2;
    if total > max_frame {
        return Step::Fatal(FrameError::TooLong);
    }
    if buf.len() < total {
        return Step::Incomplete;
    }
    if buf[total - 2..total] != STOP {
        // The counts do not add up: skip to the first stop bits.
        return match buf[4..total].windows(2).position(|w| w == STOP) {
            Some(p) => Step::Frame {
                len: p + 6,
                msg: Err(FrameError::Malformed),
            },
            None => Step::Frame {
                len: total,
                msg: Err(FrameError::Malformed),
            },
        };
    }
    let time = &buf[4..10];
    if bcd_digits(time).is_none() {
        return Step::Frame {
            len: total,
            msg: Err(FrameError::Malformed),
        };
    }
    let mut reply = vec![0x78, 0x78, 0x00, buf[3]];
    reply.extend_from_slice(time);
    reply.extend_from_slice(&STOP);
    Step::Frame {
        len: total,
        msg: Ok(Message {
            reply: Some(reply),
            ..Message::new(Kind::Location)
        }),
    }
}

/// A frame whose length byte was wrong and whose CRC did not match anywhere: location
/// types sent without serial and CRC are still decoded; anything else is a bad CRC.
pub fn without_trailer(protocol: u8, content: &[u8]) -> Result<Message, FrameError> {
    match protocol {
        0x10 | 0x11 | 0x12 | 0x22 | 0x1E | 0x37 | 0xA0 if content.len() >= 18 => {
            let mut fix = gps_fix(content)?;
            fix.attributes
                .insert("framing".to_string(), Attr::Text("no_crc".to_string()));
            Ok(located(Kind::Location, fix, None))
        }
        _ => Err(FrameError::Checksum),
    }
}

/// The packets `gt06::message` leaves to this file.
pub fn message(
    protocol: u8,
    content: &[u8],
    serial: [u8; 2],
    long: bool,
) -> Result<Message, FrameError> {
    let bad = || FrameError::Malformed;
    match (protocol, long) {
        (0x1E | 0x37 | 0xA0, _) | (0x32, false) => Ok(located(
            Kind::Location,
            gps_fix(content)?,
            Some(ack(protocol, serial)),
        )),
        (0x34, _) => Ok(located(
            Kind::Location,
            gps_fix(content.get(4..).ok_or_else(bad)?)?,
            Some(ack(protocol, serial)),
        )),
        // LBS/WiFi-only packets: positions without a fix, answered as Traccar answers them.
        (0x33 | 0x18 | 0x19 | 0x24 | 0x28 | 0x2C | 0x2E | 0xA1 | 0xA2, false) => Ok(Message {
            reply: Some(ack(protocol, serial)),
            ..Message::new(Kind::Location)
        }),
        (0xF3, false) => Ok(Message::new(Kind::Location)),
        (0x32 | 0x33, true) => {
            let kind = if protocol == 0x32 {
                Kind::Location
            } else {
                Kind::Alarm
            };
            let date = content.get(..6).ok_or_else(bad)?;
            let gps_len = *content.get(6).ok_or_else(bad)?;
            let mut msg = Message {
                reply: Some(long_ack(protocol, serial)),
                ..Message::new(kind)
            };
            if gps_len > 0 {
                let g = content.get(7..19).ok_or_else(bad)?;
                let fix = block(
                    date,
                    Some(g[0]),
                    be32(&g[1..5]),
                    be32(&g[5..9]),
                    g[9],
                    be16(&g[10..12]),
                )
                .ok_or_else(bad)?;
                msg.fixes.push(fix);
            }
            Ok(msg)
        }
        (0x70, _) => modular(content, serial),
        (0x21, true) => current_position(content),
        (0x95, _) => alarm(content, serial),
        _ => Ok(Message::new(Kind::Other)),
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// `0x70`: modules until the content ends; module `0x33` is the position.
fn modular(content: &[u8], serial: [u8; 2]) -> Result<Message, FrameError> {
    let mut msg = Message {
        reply: Some(ack(0x70, serial)),
        ..Message::new(Kind::Location)
    };
    let mut i = 0;
    while i + 4 <= content.len() {
        let kind = be16(&content[i..]);
        let len = usize::from(be16(&content[i + 2..]));
        let data = content
            .get(i + 4..i + 4 + len)
            .ok_or(FrameError::Malformed)?;
        if kind == 0x33 && len >= 18 {
            let secs = be32(data);
            let (y, mo, d, h, mi, s, _) = civil(i64::from(secs) * 1000);
            // Dates from 2000 to 2255 fit the GPS block's one-byte year.
            let date = [
                (y - 2000) as u8,
                mo as u8,
                d as u8,
                h as u8,
                mi as u8,
                s as u8,
            ];
            let mut fix: Fix = block(
                &date,
                Some(data[4]),
                be32(&data[7..11]),
                be32(&data[11..15]),
                data[15],
                be16(&data[16..18]),
            )
            .filter(|_| (2000..2256).contains(&y))
            .ok_or(FrameError::Malformed)?;
            fix.satellites = Some(u32::from(data[4]));
            fix.altitude = Some(f64::from(i16::from_be_bytes([data[5], data[6]])));
            msg.fixes.push(fix);
        }
        i += 4 + len;
    }
    Ok(msg)
}

/// `0x21`, long form: server flag (4), encoding (1: ASCII, else UTF-16BE), text.
fn current_position(content: &[u8]) -> Result<Message, FrameError> {
    let (&encoding, raw) = content
        .get(4..)
        .and_then(<[u8]>::split_first)
        .ok_or(FrameError::Malformed)?;
    let text = if encoding == 1 {
        String::from_utf8_lossy(raw).into_owned()
    } else {
        let units: Vec<u16> = raw.chunks_exact(2).map(be16).collect();
        String::from_utf16_lossy(&units)
    };
    let Some(rest) = text.strip_prefix("Current position!") else {
        return Ok(Message::new(Kind::Other));
    };
    let field = |name: &str| -> Option<&str> {
        let at = rest.find(name)? + name.len();
        let end = rest[at..].find(',').map_or(rest.len(), |e| at + e);
        Some(rest[at..end].trim())
    };
    let bad = || FrameError::Malformed;
    let signed = |s: &str, neg: char| -> Option<f64> {
        let (h, v) = s.split_at(s.char_indices().nth(1)?.0);
        let v: f64 = v.parse().ok()?;
        Some(if h.starts_with(neg) { -v } else { v })
    };
    let lat = field("Lat:")
        .and_then(|s| signed(s, 'S'))
        .filter(|v| v.abs() <= 90.0);
    let lon = field("Lon:")
        .and_then(|s| signed(s, 'W'))
        .filter(|v| v.abs() <= 180.0);
    let when = field("DateTime:").ok_or_else(bad)?;
    let digits: String = when.chars().filter(char::is_ascii_digit).collect();
    let n = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    let time_ms = (|| {
        super::fix::unix_ms(
            i64::from(n(0..4)?),
            n(4..6)?,
            n(6..8)?,
            n(8..10)?,
            n(10..12)?,
            n(12..14)?,
            0,
        )
    })()
    .ok_or_else(bad)?;
    let num = |name: &str| {
        field(name)
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let fix = Fix {
        time_ms,
        lat: lat.ok_or_else(bad)?,
        lon: lon.ok_or_else(bad)?,
        altitude: None,
        speed_kmh: num("Speed:").unwrap_or(0.0).max(0.0),
        course: num("Course:").unwrap_or(0.0),
        satellites: None,
        valid: true,
        attributes: std::collections::BTreeMap::new(),
    };
    Ok(located(Kind::Location, fix, None))
}

/// `0x95`: date and alarm type, or date, coordinates, course/status and alarm type.
fn alarm(content: &[u8], serial: [u8; 2]) -> Result<Message, FrameError> {
    let bad = || FrameError::Malformed;
    let date = content.get(..6).ok_or_else(bad)?;
    let mut msg = Message {
        reply: Some(ack(0x95, serial)),
        ..Message::new(Kind::Alarm)
    };
    if content.len() > 7 {
        let g = content.get(6..17).ok_or_else(bad)?;
        let mut fix = block(
            date,
            None,
            be32(&g[0..4]),
            be32(&g[4..8]),
            0,
            be16(&g[8..10]),
        )
        .ok_or_else(bad)?;
        fix.attributes
            .insert("alarm_type".to_string(), Attr::Int(i64::from(g[10])));
        msg.fixes.push(fix);
    }
    Ok(msg)
}
