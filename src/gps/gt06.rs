//! GT06 / Concox binary frames.
//!
//! Frame: `78 78 | len:u8 | protocol:u8 | content | serial:u16 | crc:u16 | 0D 0A`, or
//! `79 79 | len:u16 | ...` for long frames. `len` counts protocol, content, serial and CRC.
//! The CRC is CRC-ITU (CRC-16/X-25: poly 0x1021 reflected, init and xorout 0xFFFF) over the
//! bytes from `len` through `serial` (GT06 protocol document §"Error check"; Traccar
//! Gt06FrameDecoder / Checksum.CRC16_X25). Login `78 78 11 01 08 63 58 60 38 76 09 42 a0 01
//! 00 00 01 0a a4 00 0d 0a` has CRC 0xA400.
//!
//! - `0x01` login: 8-byte BCD IMEI (one leading 0 nibble). Answered `78 78 05 01 <serial> <crc> 0D 0A`;
//!   a device without this answer keeps logging in and never sends positions.
//! - `0x13` status/heartbeat: answered the same way with protocol `0x13`.
//! - `0x10 0x11 0x12 0x22` location and `0x16 0x26` alarm: date `YY MM DD hh mm ss` (UTC),
//!   `info:u8` (high nibble GPS data length, low nibble satellites), latitude and longitude
//!   `u32` in 1/30000 minutes, speed `u8` km/h, course/status `u16` (bits 0-9 course, bit 10
//!   north, bit 11 west, bit 12 GPS fixed). Alarms are answered like heartbeats.
//! - `0x8A` time request (devices without a clock source ask before sending positions):
//!   answered `78 78 0B 8A YY MM DD hh mm ss <serial> <crc> 0D 0A` with the server's UTC time
//!   (Traccar `MSG_TIME_REQUEST`).
//! - Anything else is accepted without a fix or an answer.
//!
//! A bad CRC rejects that frame only (its length is known); lost framing (no `78 78`/`79 79`
//! start or no `0D 0A` stop) ends the stream.

use std::collections::BTreeMap;

use crc::{Crc, CRC_16_IBM_SDLC};
use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u8};
use nom::sequence::tuple;
use nom::IResult;

use super::fix::{bcd_digits, civil, unix_ms, Attr, Fix, FrameError, Kind, Message, Step};

/// CRC-ITU as GT06 uses it (the catalogue's CRC-16/IBM-SDLC is CRC-16/X-25).
pub const CRC_ITU: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_SDLC);

/// Decodes the next frame of `buf`, rejecting frames longer than `max_frame` bytes.
pub fn decode(buf: &[u8], max_frame: usize) -> Step {
    let (header, body_len) = match buf {
        [0x78, 0x78, len, ..] => (3, usize::from(*len)),
        [0x79, 0x79, hi, lo, ..] => (4, usize::from(u16::from_be_bytes([*hi, *lo]))),
        [] | [0x78] | [0x79] | [0x78, 0x78] | [0x79, 0x79] | [0x79, 0x79, _] => {
            return Step::Incomplete
        }
        _ => return Step::Fatal(FrameError::Malformed),
    };
    if body_len < 5 {
        return Step::Fatal(FrameError::Malformed);
    }
    let total = header + body_len + 2;
    if total > max_frame {
        return Step::Fatal(FrameError::TooLong);
    }
    if buf.len() < total {
        return Step::Incomplete;
    }
    if buf[total - 2..total] != [0x0D, 0x0A] {
        return Step::Fatal(FrameError::Malformed);
    }
    let checked = &buf[2..total - 4];
    let crc = u16::from_be_bytes([buf[total - 4], buf[total - 3]]);
    if CRC_ITU.checksum(checked) != crc {
        return Step::Frame {
            len: total,
            msg: Err(FrameError::Checksum),
        };
    }
    let body = &buf[header..total - 4];
    let (protocol, content, serial) = (
        body[0],
        &body[1..body.len() - 2],
        [body[body.len() - 2], body[body.len() - 1]],
    );
    Step::Frame {
        len: total,
        msg: message(protocol, content, serial),
    }
}

/// The short-frame answer `78 78 05 <protocol> <serial> <crc> 0D 0A`.
pub fn ack(protocol: u8, serial: [u8; 2]) -> Vec<u8> {
    answer(protocol, &[], serial)
}

/// The answer to a `0x8A` time request: `unix_ms` as UTC `YY MM DD hh mm ss`.
pub fn time_reply(serial: [u8; 2], unix_ms: i64) -> Vec<u8> {
    let (y, mo, d, h, mi, s, _) = civil(unix_ms);
    // Two-digit years from 2000, as in the device's own positions; the casts keep the low byte
    // of fields that `civil` bounds to 0..=59 (the year to 0..=255 until 2255).
    let date = [
        (y - 2000) as u8,
        mo as u8,
        d as u8,
        h as u8,
        mi as u8,
        s as u8,
    ];
    answer(0x8A, &date, serial)
}

/// A short frame `78 78 <len> <protocol> <content> <serial> <crc> 0D 0A`.
fn answer(protocol: u8, content: &[u8], serial: [u8; 2]) -> Vec<u8> {
    // `len` counts protocol, content, serial and CRC; answers carry at most a few bytes.
    let len = (content.len() + 5) as u8;
    let mut out = Vec::with_capacity(content.len() + 10);
    out.extend_from_slice(&[0x78, 0x78, len, protocol]);
    out.extend_from_slice(content);
    out.extend_from_slice(&serial);
    let crc = CRC_ITU.checksum(&out[2..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&[0x0D, 0x0A]);
    out
}

fn message(protocol: u8, content: &[u8], serial: [u8; 2]) -> Result<Message, FrameError> {
    match protocol {
        0x01 => {
            let imei = content.get(..8).ok_or(FrameError::Malformed)?;
            let digits = bcd_digits(imei).ok_or(FrameError::Malformed)?;
            let id = digits.strip_prefix('0').unwrap_or(&digits).to_string();
            Ok(Message {
                device_id: Some(id),
                reply: Some(ack(0x01, serial)),
                ..Message::new(Kind::Login)
            })
        }
        0x13 | 0x23 => Ok(Message {
            reply: Some(ack(protocol, serial)),
            ..Message::new(Kind::Heartbeat)
        }),
        0x10 | 0x11 | 0x12 | 0x22 => {
            let fix = gps(content)
                .map_err(|_| FrameError::Malformed)?
                .1
                .ok_or(FrameError::Malformed)?;
            Ok(Message {
                fixes: vec![fix],
                ..Message::new(Kind::Location)
            })
        }
        0x16 | 0x26 => {
            let mut fix = gps(content)
                .map_err(|_| FrameError::Malformed)?
                .1
                .ok_or(FrameError::Malformed)?;
            fix.attributes
                .insert("alarm_protocol".to_string(), Attr::Int(i64::from(protocol)));
            Ok(Message {
                fixes: vec![fix],
                reply: Some(ack(protocol, serial)),
                ..Message::new(Kind::Alarm)
            })
        }
        0x8A => Ok(Message {
            reply: Some(time_reply(serial, super::server::now_ms())),
            ..Message::new(Kind::Other)
        }),
        _ => Ok(Message::new(Kind::Other)),
    }
}

/// The 18-byte GPS block; `None` when the date or coordinates are out of range.
fn gps(i: &[u8]) -> IResult<&[u8], Option<Fix>> {
    let (i, (date, info, lat, lon, speed, flags)) =
        tuple((take(6usize), be_u8, be_u32, be_u32, be_u8, be_u16))(i)?;
    let d = |k: usize| u32::from(date[k]);
    let Some(time_ms) = unix_ms(2000 + i64::from(date[0]), d(1), d(2), d(3), d(4), d(5), 0) else {
        return Ok((i, None));
    };
    let mut lat = f64::from(lat) / 30000.0 / 60.0;
    let mut lon = f64::from(lon) / 30000.0 / 60.0;
    if lat > 90.0 || lon > 180.0 {
        return Ok((i, None));
    }
    if flags & (1 << 10) == 0 {
        lat = -lat;
    }
    if flags & (1 << 11) != 0 {
        lon = -lon;
    }
    let mut attributes = BTreeMap::new();
    attributes.insert("course_status".to_string(), Attr::Int(i64::from(flags)));
    Ok((
        i,
        Some(Fix {
            time_ms,
            lat,
            lon,
            altitude: None,
            speed_kmh: f64::from(speed),
            course: f64::from(flags & 0x03FF),
            satellites: Some(u32::from(info & 0x0F)),
            valid: flags & (1 << 12) != 0,
            attributes,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn one(bytes: &[u8]) -> Result<Message, FrameError> {
        match decode(bytes, 1024) {
            Step::Frame { len, msg } => {
                assert_eq!(len, bytes.len());
                msg
            }
            other => panic!("{other:?}"),
        }
    }

    /// Builds a short frame around `protocol` and `content`, computing the CRC.
    fn frame(protocol: u8, content: &[u8], serial: u16) -> Vec<u8> {
        let mut f = vec![0x78, 0x78, (content.len() + 5) as u8, protocol];
        f.extend_from_slice(content);
        f.extend_from_slice(&serial.to_be_bytes());
        let crc = CRC_ITU.checksum(&f[2..]);
        f.extend_from_slice(&crc.to_be_bytes());
        f.extend_from_slice(&[0x0D, 0x0A]);
        f
    }

    #[test]
    fn crc_itu_matches_published_frames() {
        assert_eq!(CRC_ITU.checksum(&hex("0a 13 c4 06 04 00 02 01 29")), 0x8F5B);
        assert_eq!(
            CRC_ITU.checksum(&hex("11 01 08 63 58 60 38 76 09 42 a0 01 00 00 01 0a")),
            0xA400
        );
    }

    #[test]
    fn login_and_its_ack() {
        let msg = one(&hex(
            "78 78 11 01 08 63 58 60 38 76 09 42 a0 01 00 00 01 0a a4 00 0d 0a",
        ))
        .expect("login");
        assert_eq!(msg.kind, Kind::Login);
        assert_eq!(msg.device_id.as_deref(), Some("863586038760942"));
        // CRC-ITU of 05 01 01 0a is 0x7ED7 (computed independently of this crate).
        assert_eq!(msg.reply, Some(hex("78 78 05 01 01 0a 7e d7 0d 0a")));
    }

    #[test]
    fn heartbeat_and_its_ack() {
        let msg = one(&hex("78 78 0a 13 c4 06 04 00 02 01 29 8f 5b 0d 0a")).expect("heartbeat");
        assert_eq!(msg.kind, Kind::Heartbeat);
        assert_eq!(msg.reply, Some(hex("78 78 05 13 01 29 5d 63 0d 0a")));
    }

    #[test]
    fn location_block() {
        // 2021-07-13 10:40:00, 9 satellites, 22.5862950 N, 113.9648550 E, 60 km/h, course 235,
        // flags: GPS fixed (bit 12), north (bit 10), east.
        let lat = (22.586_295_f64 * 60.0 * 30000.0).round() as u32;
        let lon = (113.964_855_f64 * 60.0 * 30000.0).round() as u32;
        let mut content = vec![21, 7, 13, 10, 40, 0, 0xC9];
        content.extend_from_slice(&lat.to_be_bytes());
        content.extend_from_slice(&lon.to_be_bytes());
        content.push(60);
        content.extend_from_slice(&((1u16 << 12) | (1 << 10) | 235).to_be_bytes());
        content.extend_from_slice(&hex("01cc 00 287d 001fb8")); // MCC, MNC, LAC, cell id
        let msg = one(&frame(0x12, &content, 7)).expect("location");
        assert_eq!((msg.kind, msg.reply.clone()), (Kind::Location, None));
        let f = &msg.fixes[0];
        assert_eq!(f.time_ms, unix_ms(2021, 7, 13, 10, 40, 0, 0).expect("date"));
        assert!((f.lat - 22.586_295).abs() < 1e-6 && (f.lon - 113.964_855).abs() < 1e-6);
        assert_eq!(
            (f.speed_kmh, f.course, f.satellites, f.valid),
            (60.0, 235.0, Some(9), true)
        );

        // South, west, not fixed; an alarm is acknowledged with its own protocol number.
        content[16..18].copy_from_slice(&((1u16 << 11) | 90).to_be_bytes());
        let msg = one(&frame(0x16, &content, 8)).expect("alarm");
        let f = &msg.fixes[0];
        assert!(f.lat < 0.0 && f.lon < 0.0 && !f.valid);
        assert_eq!(msg.reply, Some(ack(0x16, [0, 8])));
    }

    #[test]
    fn bad_crc_rejects_the_frame_only() {
        let mut f = hex("78 78 0a 13 c4 06 04 00 02 01 29 8f 5b 0d 0a");
        f[11] ^= 0xFF;
        assert_eq!(one(&f), Err(FrameError::Checksum));
    }

    #[test]
    fn framing() {
        let f = hex("78 78 0a 13 c4 06 04 00 02 01 29 8f 5b 0d 0a");
        for cut in 0..f.len() {
            assert_eq!(decode(&f[..cut], 1024), Step::Incomplete, "cut at {cut}");
        }
        assert_eq!(
            decode(b"GET / HTTP/1.1", 1024),
            Step::Fatal(FrameError::Malformed)
        );
        assert_eq!(
            decode(&hex("78 78 02 13"), 1024),
            Step::Fatal(FrameError::Malformed)
        );
        assert_eq!(
            decode(&hex("79 79 ff ff"), 1024),
            Step::Fatal(FrameError::TooLong)
        );
        let mut bad_stop = f.clone();
        bad_stop[14] = 0;
        assert_eq!(decode(&bad_stop, 1024), Step::Fatal(FrameError::Malformed));
        let truncated_content = frame(0x12, &[21, 7, 13], 1);
        assert_eq!(one(&truncated_content), Err(FrameError::Malformed));
        let unknown = frame(0x2A, &[], 2);
        let other = one(&unknown).expect("other");
        assert_eq!((other.kind, other.reply), (Kind::Other, None));
    }

    #[test]
    fn time_request_is_answered_with_utc() {
        let at = unix_ms(2021, 7, 13, 10, 40, 5, 0).expect("date");
        let reply = time_reply([0x00, 0x2A], at);
        assert_eq!(reply[..12], hex("78 78 0b 8a 15 07 0d 0a 28 05 00 2a")[..]);
        // Its CRC is right: the frame decodes (as a time request of its own).
        assert!(matches!(
            decode(&reply, 64),
            Step::Frame {
                len: 16,
                msg: Ok(_)
            }
        ));

        let msg = one(&frame(0x8A, &[], 3)).expect("time request");
        let reply = msg.reply.expect("answered");
        assert_eq!(
            (reply.len(), &reply[..4], &reply[10..12]),
            (16, &hex("78 78 0b 8a")[..], &[0, 3][..])
        );
        let d = |k: usize| u32::from(reply[k]);
        let sent = unix_ms(2000 + i64::from(reply[4]), d(5), d(6), d(7), d(8), d(9), 0)
            .expect("valid date");
        assert!((sent - super::super::server::now_ms()).abs() < 60_000);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode(&bytes, 300);
            let mut framed = vec![0x78, 0x78, bytes.len().min(255) as u8];
            framed.extend_from_slice(&bytes);
            let _ = decode(&framed, 300);
            // Valid framing and CRC around random content reaches the content decoders.
            for p in [0x01, 0x12, 0x13, 0x16] {
                let _ = decode(&frame(p, &bytes[..bytes.len().min(240)], 1), 300);
            }
        }
    }
}
