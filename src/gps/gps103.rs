//! GPS103 (Coban) text frames, terminated by `;` or a newline. This is what tallyd called
//! `tk103` before the parenthesised TK103 protocol (`tk103.rs`) was added.
//!
//! - Login `##,imei:<imei>,A;` is answered `LOAD`.
//! - Heartbeat: the bare IMEI digits (`359586015829802;`), answered `ON`. Some devices glue it
//!   to the next report (`359769031878322imei:359769031878322,tracker,...`): both are read,
//!   and the heartbeat is answered.
//! - Position: `imei:<imei>,<keyword>,<local yyMMddHHmm[ss] or yy/MM/dd HH:mm>,<phone>,<F|L>,
//!   <hhmmss.sss UTC>,<A|V>,<ddmm.mmmm>,<N|S>,<dddmm.mmmm>,<E|W>,<speed knots>,<course>
//!   [,<altitude>,...];`. `F` carries a GPS fix; `L` is a cell-tower report without
//!   coordinates. The keyword (`tracker`, `help me`, `low battery`, ...) is kept as the
//!   `event` attribute. Variants seen on real devices are read too: the hemisphere letter
//!   before the number (`N,5306.64155,E,00700.77848`), no E/W letter (east), and a UTC field
//!   that is not a time of day (`31.0`: the local date-time is then taken as the time).
//! - `help me` (SOS) is answered `**,imei:<imei>,E;`, or the device repeats it.
//! - `OBD` reports (engine data, no position) are well-formed but not decoded: counted as
//!   `unsupported`, which never counts towards a blacklist.
//!
//! The devices send the date only in local time and the time of day in UTC, so the UTC date is
//! the local date moved by at most one day: the one that puts the UTC time nearest the local
//! one (`151027025958` local with `235957.000` UTC is 2015-10-26T23:59:57Z).
//!
//! Sources: Traccar's Gps103ProtocolDecoder and its tests (answers, variants), and the Coban
//! TK103 manual's message table.

use std::collections::BTreeMap;

use nom::bytes::complete::{tag, take_till, take_while1};
use nom::character::complete::char;
use nom::sequence::{preceded, terminated, tuple};
use nom::IResult;

use super::fix::{
    nearest_day, nmea_coord, text_frame, unix_ms, Attr, Fix, FrameError, Kind, Message, Step,
    KNOT_KMH,
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

fn text(b: &[u8]) -> Result<String, FrameError> {
    std::str::from_utf8(b)
        .map(str::to_string)
        .map_err(|_| FrameError::Malformed)
}

fn frame_message(frame: &[u8]) -> Result<Message, FrameError> {
    if let Ok((_, imei)) = login(frame) {
        return Ok(Message {
            device_id: Some(text(imei)?),
            reply: Some(b"LOAD".to_vec()),
            ..Message::new(Kind::Login)
        });
    }
    let glued = frame.iter().take_while(|b| b.is_ascii_digit()).count();
    if glued == frame.len() {
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
    let mut msg = position(&frame[glued..])?;
    if glued > 0 {
        // A heartbeat glued to the report: it is answered as if it had come alone.
        let mut reply = b"ON".to_vec();
        reply.extend(msg.reply.take().unwrap_or_default());
        msg.reply = Some(reply);
    }
    Ok(msg)
}

fn position(frame: &[u8]) -> Result<Message, FrameError> {
    let (rest, (imei, keyword)) = report(frame).map_err(|_| FrameError::Malformed)?;
    let (imei, keyword) = (text(imei)?, text(keyword)?);
    if !valid_id(&imei) {
        return Err(FrameError::Malformed);
    }
    if keyword == "OBD" {
        return Err(FrameError::Unsupported);
    }
    let rest = std::str::from_utf8(rest).map_err(|_| FrameError::Malformed)?;
    let f: Vec<&str> = rest.split(',').collect();
    // f: 0 local time, 1 phone, 2 F|L, 3 utc time, 4 A|V, 5 lat, 6 N|S, 7 lon, 8 E|W, 9 speed,
    // 10 course, 11 altitude
    let kind = if keyword == "tracker" {
        Kind::Location
    } else {
        Kind::Alarm
    };
    let reply = (keyword == "help me").then(|| format!("**,imei:{imei},E;").into_bytes());
    let mut msg = Message {
        device_id: Some(imei),
        kind,
        fixes: Vec::new(),
        reply,
    };
    if f.get(2) == Some(&"L") {
        return Ok(msg);
    }
    if f.len() < 11 || f[2] != "F" {
        return Err(FrameError::Malformed);
    }
    let local = local_time(f[0]).ok_or(FrameError::Malformed)?;
    let time_ms = match time_of_day(f[3]) {
        Some(tod) => nearest_day(local, i64::from(tod)),
        None if f[3].parse::<f64>().is_ok() => local,
        None => return Err(FrameError::Malformed),
    };
    let (lat, lon) = coordinates(&f[5..9]).ok_or(FrameError::Malformed)?;
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
    msg.fixes.push(Fix {
        time_ms,
        lat,
        lon,
        altitude: f.get(11).map(|s| num(s)).transpose()?.flatten(),
        speed_kmh: num(f[9])?.unwrap_or(0.0).max(0.0) * KNOT_KMH,
        course: num(f[10])?.unwrap_or(0.0),
        satellites: None,
        valid: f[4] == "A",
        attributes,
    });
    Ok(msg)
}

/// The local date-time field as if it were UTC, Unix ms: `yyMMddHHmm`, `yyMMddHHmmss` or
/// `yy/MM/dd HH:mm`.
fn local_time(s: &str) -> Option<i64> {
    let compact: String = s
        .chars()
        .filter(|c| !matches!(c, '/' | ' ' | ':'))
        .collect();
    let slashed = s.len() == 14 && s.as_bytes()[2] == b'/' && s.as_bytes()[8] == b' ';
    if !(compact.len() == 10 || compact.len() == 12)
        || !compact.bytes().all(|b| b.is_ascii_digit())
        || (compact.len() != s.len() && !slashed)
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| compact.get(r)?.parse::<u32>().ok();
    let sec = if compact.len() == 12 { n(10..12)? } else { 0 };
    unix_ms(
        2000 + i64::from(n(0..2)?),
        n(2..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        sec,
        0,
    )
}

/// Latitude and longitude from four fields: `value,hemisphere` pairs, or `hemisphere,value`
/// pairs; a missing hemisphere letter reads as north or east.
fn coordinates(f: &[&str]) -> Option<(f64, f64)> {
    let letter = |s: &str| matches!(s, "N" | "S" | "E" | "W");
    let (lat, ns, lon, ew) = if letter(f[0]) && !letter(f[1]) {
        (f[1], f[0], f[3], f[2])
    } else {
        (f[0], f[1], f[2], f[3])
    };
    let hemi = |s: &str, default: u8| match s.as_bytes() {
        [] => Some(default),
        [h] => Some(*h),
        _ => None,
    };
    Some((
        nmea_coord(lat, hemi(ns, b'N').filter(|h| matches!(h, b'N' | b'S'))?)?,
        nmea_coord(lon, hemi(ew, b'E').filter(|h| matches!(h, b'E' | b'W'))?)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Message, FrameError> {
        crate::gps::fix::whole_frame(decode(bytes, 512), bytes.len())
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

    /// Traccar's Gps103 test frames and the issue's: each was counted malformed or misdated.
    #[test]
    fn midnight_is_dated_from_the_utc_time() {
        let at = |frame: &[u8]| one(frame).expect("position").fixes[0].time_ms;
        let want = |y, mo, d, h, mi, s| unix_ms(y, mo, d, h, mi, s, 0).expect("date");
        assert_eq!(
            at(b"imei:359710049092324,tracker,151027025958,,F,235957.000,A,2429.5156,N,04424.5828,E,0.01,27.91,,0,0,,,;"),
            want(2015, 10, 26, 23, 59, 57)
        );
        assert_eq!(
            at(b"imei:359710045559474,tracker,151030080103,,F,000101.000,A,5443.3834,N,02512.9071,E,0.00,0;"),
            want(2015, 10, 30, 0, 1, 1)
        );
        assert_eq!(
            at(b"imei:865328021058861,tracker,151027041419,,F,011531.000,A,6020.2979,N,02506.1940,E,0.49,113.30,,0,0,0.0%,,;"),
            want(2015, 10, 27, 1, 15, 31)
        );
        // Local time west of UTC: the UTC day is the next one.
        assert_eq!(
            at(b"imei:359710049092324,tracker,1510262230,,F,033000.000,A,2429.5156,N,04424.5828,E,0,0;"),
            want(2015, 10, 27, 3, 30, 0)
        );
    }

    #[test]
    fn variants_real_devices_send() {
        // The date written 13/02/27 23:40.
        let m = one(b"imei:359710040656622,tracker,13/02/27 23:40,,F,125952.000,A,3450.9430,S,13828.6753,E,0.00,0;").expect("slashed date");
        let f = &m.fixes[0];
        assert_eq!(
            f.time_ms,
            unix_ms(2013, 2, 27, 12, 59, 52, 0).expect("date")
        );
        assert!((f.lat + (34.0 + 50.943 / 60.0)).abs() < 1e-9);
        // No E/W letter: east.
        let m = one(b"imei:012497000208821,tracker,1301072224,,F,142411.077,A,2227.0739,S,06855.2912,,0,0,;").expect("no E/W");
        assert!((m.fixes[0].lon - (68.0 + 55.2912 / 60.0)).abs() < 1e-9);
        // A UTC field that is no time of day: the local date-time is the time.
        let m = one(b"imei:353552045375005,tracker,150401165832,61.0,F,31.0,A,1050.73696,N,10636.49489,E,8.0,,22.0,;").expect("31.0");
        assert_eq!(
            m.fixes[0].time_ms,
            unix_ms(2015, 4, 1, 16, 58, 32, 0).expect("date")
        );
        // The hemisphere letter before the number.
        let m = one(b"imei:353552045403597,tracker,150420050648,53.0,F,0.0,A,N,5306.64155,E,00700.77848,0.0,,1.0,;").expect("letter first");
        let f = &m.fixes[0];
        assert!((f.lat - (53.0 + 6.64155 / 60.0)).abs() < 1e-9);
        assert!((f.lon - (7.0 + 0.77848 / 60.0)).abs() < 1e-9);
        // A heartbeat glued to the next report: both read, the heartbeat answered.
        let m = one(b"359769031878322imei:359769031878322,tracker,1602160718,2,F,221811.000,A,1655.2193,S,14546.6722,E,0.00,,;").expect("glued");
        assert_eq!(m.device_id.as_deref(), Some("359769031878322"));
        assert_eq!((m.fixes.len(), m.reply.as_deref()), (1, Some(&b"ON"[..])));
    }

    #[test]
    fn obd_is_unsupported_and_sos_is_answered() {
        assert_eq!(
            one(b"imei:868683027758113,OBD,180905200218,,,,0,0,0.39%,70,9.41%,494,0.00,P0137,P0430,,;"),
            Err(FrameError::Unsupported)
        );
        let m = one(b"imei:359586015829802,help me,0809231429,13554900601,F,062947.294,A,2234.4026,N,11354.3277,E,0.00,;").expect("sos");
        assert_eq!(m.reply.as_deref(), Some(&b"**,imei:359586015829802,E;"[..]));
        assert_eq!(m.kind, Kind::Alarm);
        let m = one(b"imei:359710049075097,help me,,,L,,,113b,,558f,,,,,0,0,,,;")
            .expect("sos without fix");
        assert!(m.fixes.is_empty());
        assert_eq!(m.reply.as_deref(), Some(&b"**,imei:359710049075097,E;"[..]));
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
