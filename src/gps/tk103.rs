//! TK103 / GPS103 (Coban) text frames, terminated by `;` or a newline.
//!
//! - Login `##,imei:<imei>,A;` is answered `LOAD`.
//! - Heartbeat: the bare IMEI digits (`359586015829802;`), answered `ON`.
//! - Position: `imei:<imei>,<keyword>,<yyMMddHHmm[ss] local>,<phone>,<F|L>,<hhmmss.sss UTC>,
//!   <A|V>,<ddmm.mmmm>,<N|S>,<dddmm.mmmm>,<E|W>,<speed knots>,<course>[,<altitude>,...];`
//!   `F` carries a GPS fix; `L` is a cell-tower report without coordinates. The keyword
//!   (`tracker`, `help me`, `low battery`, ...) is kept as the `event` attribute.
//!
//! Sources: Traccar's Gps103ProtocolDecoder and its tests (handshake and heartbeat answers),
//! and the Coban TK103 manual's message table. The date comes from the device's local date
//! field and the time from its UTC field, as those devices send no UTC date.

use std::collections::BTreeMap;

use nom::bytes::complete::{tag, take_till, take_while1};
use nom::character::complete::char;
use nom::sequence::{preceded, terminated, tuple};
use nom::IResult;

use super::fix::{
    nmea_coord, text_frame, unix_ms, Attr, Fix, FrameError, Kind, Message, Step, KNOT_KMH,
};
use super::nmea::{time_of_day, valid_id};

/// Decodes the next `;`- or newline-terminated frame.
pub fn decode(buf: &[u8], max_line: usize) -> Step {
    match text_frame(buf, |b| b == b';' || b == b'\n', max_line) {
        Err(e) => Step::Fatal(e),
        Ok(None) => Step::Incomplete,
        Ok(Some((&[], len))) => Step::Skip(len),
        Ok(Some((frame, len))) => Step::Frame {
            len,
            msg: frame_message(frame),
        },
    }
}

fn digits(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while1(|b: u8| b.is_ascii_digit())(i)
}

/// `##,imei:<digits>,` and anything after.
fn login(i: &[u8]) -> IResult<&[u8], &[u8]> {
    preceded(tag("##,imei:"), digits)(i)
}

/// `imei:<digits>,<keyword>,` then the rest.
fn report(i: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    tuple((
        preceded(tag("imei:"), terminated(digits, char(','))),
        terminated(take_till(|b| b == b','), char(',')),
    ))(i)
}

fn frame_message(frame: &[u8]) -> Result<Message, FrameError> {
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| FrameError::Malformed)
    };
    if let Ok((_, imei)) = login(frame) {
        return Ok(Message {
            device_id: Some(text(imei)?),
            reply: Some(b"LOAD".to_vec()),
            ..Message::new(Kind::Login)
        });
    }
    if frame.iter().all(u8::is_ascii_digit) {
        let id = text(frame)?;
        if !valid_id(&id) {
            return Err(FrameError::Malformed);
        }
        return Ok(Message {
            device_id: Some(id),
            reply: Some(b"ON".to_vec()),
            ..Message::new(Kind::Heartbeat)
        });
    }
    let (rest, (imei, keyword)) = report(frame).map_err(|_| FrameError::Malformed)?;
    let (imei, keyword) = (text(imei)?, text(keyword)?);
    if !valid_id(&imei) {
        return Err(FrameError::Malformed);
    }
    let rest = std::str::from_utf8(rest).map_err(|_| FrameError::Malformed)?;
    let f: Vec<&str> = rest.split(',').collect();
    // f: 0 local time, 1 phone, 2 F|L, 3 utc time, 4 A|V, 5 lat, 6 N|S, 7 lon, 8 E|W, 9 speed, 10 course, 11 altitude
    let kind = if keyword == "tracker" {
        Kind::Location
    } else {
        Kind::Alarm
    };
    if f.get(2) == Some(&"L") {
        return Ok(Message {
            device_id: Some(imei),
            ..Message::new(kind)
        });
    }
    if f.len() < 11 || f[2] != "F" {
        return Err(FrameError::Malformed);
    }
    let local = f[0];
    if !(local.len() == 10 || local.len() == 12) || !local.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::Malformed);
    }
    let n = |r: std::ops::Range<usize>| local[r].parse::<u32>().map_err(|_| FrameError::Malformed);
    let tod = time_of_day(f[3]).ok_or(FrameError::Malformed)?;
    let time_ms = unix_ms(2000 + i64::from(n(0..2)?), n(2..4)?, n(4..6)?, 0, 0, 0, 0)
        .ok_or(FrameError::Malformed)?
        + i64::from(tod);
    let hemi = |s: &str| {
        s.bytes()
            .next()
            .filter(|_| s.len() == 1)
            .ok_or(FrameError::Malformed)
    };
    let lat = nmea_coord(f[5], hemi(f[6])?).ok_or(FrameError::Malformed)?;
    let lon = nmea_coord(f[7], hemi(f[8])?).ok_or(FrameError::Malformed)?;
    let num = |s: &str| -> Result<Option<f64>, FrameError> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or(FrameError::Malformed)
    };
    let mut attributes = BTreeMap::new();
    attributes.insert("event".to_string(), Attr::Text(keyword));
    let fix = Fix {
        time_ms,
        lat,
        lon,
        altitude: f.get(11).map(|s| num(s)).transpose()?.flatten(),
        speed_kmh: num(f[9])?.unwrap_or(0.0).max(0.0) * KNOT_KMH,
        course: num(f[10])?.unwrap_or(0.0),
        satellites: None,
        valid: f[4] == "A",
        attributes,
    };
    Ok(Message {
        device_id: Some(imei),
        kind,
        fixes: vec![fix],
        reply: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Message, FrameError> {
        match decode(bytes, 512) {
            Step::Frame { len, msg } => {
                assert_eq!(len, bytes.len());
                msg
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn login_is_answered_load() {
        let msg = one(b"##,imei:359586015829802,A;").expect("login");
        assert_eq!(msg.kind, Kind::Login);
        assert_eq!(msg.device_id.as_deref(), Some("359586015829802"));
        assert_eq!(msg.reply.as_deref(), Some(&b"LOAD"[..]));
    }

    #[test]
    fn heartbeat_is_answered_on() {
        let msg = one(b"359586015829802;").expect("heartbeat");
        assert_eq!(msg.kind, Kind::Heartbeat);
        assert_eq!(msg.reply.as_deref(), Some(&b"ON"[..]));
    }

    #[test]
    fn position_report() {
        let msg = one(b"imei:864035050002451,tracker,201223064947,,F,064947,A,1935.70640,N,09859.94436,W,0.025,;")
            .expect("position");
        assert_eq!(msg.kind, Kind::Location);
        assert_eq!(msg.device_id.as_deref(), Some("864035050002451"));
        let f = &msg.fixes[0];
        assert_eq!(
            f.time_ms,
            unix_ms(2020, 12, 23, 6, 49, 47, 0).expect("date")
        );
        assert!((f.lat - (19.0 + 35.7064 / 60.0)).abs() < 1e-9);
        assert!((f.lon + (98.0 + 59.94436 / 60.0)).abs() < 1e-9);
        assert!((f.speed_kmh - 0.025 * 1.852).abs() < 1e-9);
        assert!(f.valid);
        assert_eq!(msg.reply, None);
    }

    #[test]
    fn alarm_with_altitude_and_lbs_report() {
        let msg = one(b"imei:359586015829802,help me,2401011200,+100,F,120000.000,A,5130.0000,N,00007.5000,W,10,90,35.5;")
            .expect("alarm");
        assert_eq!(msg.kind, Kind::Alarm);
        assert_eq!(msg.fixes[0].altitude, Some(35.5));
        assert_eq!(
            msg.fixes[0].attributes.get("event"),
            Some(&Attr::Text("help me".into()))
        );
        let msg = one(b"imei:359586015829802,tracker,2401011200,,L,,,1a2b,,3c4d,,,;").expect("lbs");
        assert!(msg.fixes.is_empty());
    }

    #[test]
    fn bad_frames() {
        assert_eq!(
            one(b"imei:35958601582980x,tracker;"),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            one(b"imei:359586015829802,tracker,2401011200,,F,120000,A,5130.0000;"),
            Err(FrameError::Malformed)
        );
        assert_eq!(one(b"hello;"), Err(FrameError::Malformed));
        assert_eq!(decode(b"\n", 10), Step::Skip(1));
        assert_eq!(decode(&[b'1'; 40], 32), Step::Fatal(FrameError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode(&bytes, 200);
            let mut framed = b"imei:1,tracker,".to_vec();
            framed.extend_from_slice(&bytes);
            framed.push(b';');
            let _ = decode(&framed, 500);
        }
    }
}
