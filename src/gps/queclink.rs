//! Queclink @Track ASCII frames (GL300, GV series, ...), terminated by `$` (or a newline).
//!
//! `+RESP:GTxxx,<protocol version>,<imei>,...` are reports, `+BUFF:GTxxx,...` the same reports
//! sent late from the device's buffer, `+ACK:GTxxx,...` acknowledgements. Position reports
//! (`GTFRI` fixed-interval, `GTGEO`, `GTSPD`, `GTSOS`, `GTRTL`, ...) carry one or more points
//! of `<hdop/accuracy>,<speed km/h>,<azimuth>,<altitude m>,<longitude>,<latitude>,
//! <yyyyMMddHHmmss UTC>,<mcc>,<mnc>,<lac>,<cell>,<reserved>`; the number of points comes just
//! before the first. A point with accuracy 0 is not fixed (`valid: false`).
//!
//! The heartbeat `+ACK:GTHBD,<protocol version>,<imei>,...,<send time>,<count>$` is answered
//! `+SACK:GTHBD,<protocol version>,<count>$` (@Track protocol, "GTHBD"; Traccar's
//! Gl200TextProtocolDecoder answers the same). Reports are not answered (the device's SACK
//! option is off by default). Other messages are accepted without a fix.

use std::collections::BTreeMap;

use super::fix::{text_frame, unix_ms, Attr, Fix, FrameError, Kind, Message, Step};
use super::nmea::valid_id;

/// Decodes the next `$`-terminated frame.
pub fn decode(buf: &[u8], max_line: usize) -> Step {
    match text_frame(buf, |b| b == b'$' || b == b'\n', max_line) {
        Err(e) => Step::Fatal(e),
        Ok(None) => Step::Incomplete,
        Ok(Some((&[], len))) => Step::Skip(len),
        Ok(Some((frame, len))) => Step::Frame {
            len,
            msg: frame_message(frame),
        },
    }
}

fn frame_message(frame: &[u8]) -> Result<Message, FrameError> {
    let text = std::str::from_utf8(frame).map_err(|_| FrameError::Malformed)?;
    let f: Vec<&str> = text.split(',').collect();
    let (head, kind) = f[0].split_once(':').ok_or(FrameError::Malformed)?;
    if !matches!(head, "+RESP" | "+BUFF" | "+ACK") || !kind.starts_with("GT") || f.len() < 3 {
        return Err(FrameError::Malformed);
    }
    let (version, imei) = (f[1], f[2]);
    if !valid_id(imei) || !version.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(FrameError::Malformed);
    }
    let mut msg = Message {
        device_id: Some(imei.to_string()),
        ..Message::new(Kind::Other)
    };
    if head == "+ACK" {
        if kind == "GTHBD" {
            let count = f[f.len() - 1];
            if count.len() != 4 || !count.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(FrameError::Malformed);
            }
            msg.kind = Kind::Heartbeat;
            msg.reply = Some(format!("+SACK:GTHBD,{version},{count}$").into_bytes());
        }
        return Ok(msg);
    }
    let Some(first) = (3..f.len()).find(|&i| is_point(&f, i)) else {
        return Ok(msg);
    };
    msg.kind = if kind == "GTSOS" {
        Kind::Alarm
    } else {
        Kind::Location
    };
    let count = f[first - 1].parse::<usize>().unwrap_or(1).clamp(1, 64);
    let mut at = first;
    for _ in 0..count {
        msg.fixes.push(point(&f, at, kind)?);
        // The next point starts within a few fields after this one's reserved field.
        match (at + 7..(at + 20).min(f.len())).find(|&i| is_point(&f, i)) {
            Some(next) => at = next,
            None => break,
        }
    }
    Ok(msg)
}

fn is_float(s: &str) -> bool {
    s.contains('.') && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Whether `f[i..]` starts a point: accuracy, speed, azimuth, altitude, lon, lat, time.
fn is_point(f: &[&str], i: usize) -> bool {
    let Some(p) = f.get(i..i + 7) else {
        return false;
    };
    p[0].parse::<u32>().is_ok()
        && is_float(p[4])
        && is_float(p[5])
        && p[6].len() == 14
        && p[6].bytes().all(|b| b.is_ascii_digit())
}

fn point(f: &[&str], i: usize, kind: &str) -> Result<Fix, FrameError> {
    let bad = || FrameError::Malformed;
    let num = |s: &str| -> Result<f64, FrameError> {
        if s.is_empty() {
            return Ok(0.0);
        }
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(bad)
    };
    let accuracy: u32 = f[i].parse().map_err(|_| bad())?;
    let (lon, lat) = (num(f[i + 4])?, num(f[i + 5])?);
    if lat.abs() > 90.0 || lon.abs() > 180.0 {
        return Err(bad());
    }
    let t = f[i + 6];
    let n = |r: std::ops::Range<usize>| t[r].parse::<u32>().map_err(|_| bad());
    let time_ms = unix_ms(
        i64::from(n(0..4)?),
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
        0,
    )
    .ok_or_else(bad)?;
    let mut attributes = BTreeMap::new();
    attributes.insert("event".to_string(), Attr::Text(kind.to_string()));
    attributes.insert("accuracy".to_string(), Attr::Int(i64::from(accuracy)));
    Ok(Fix {
        time_ms,
        lat,
        lon,
        altitude: (!f[i + 3].is_empty()).then(|| num(f[i + 3])).transpose()?,
        speed_kmh: num(f[i + 1])?.max(0.0),
        course: num(f[i + 2])?,
        satellites: None,
        valid: accuracy > 0,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Message, FrameError> {
        crate::gps::fix::whole_frame(decode(bytes, 1024), bytes.len())
    }

    #[test]
    fn fixed_interval_report() {
        // The @Track protocol document's GTFRI example (GL200).
        let m = one(b"+RESP:GTFRI,020102,135790246811220,,0,0,1,1,4.3,92,70.0,121.354335,31.222073,20090214013254,0460,0000,18d8,6141,00,,20090214093254,11F0$").expect("FRI");
        assert_eq!((m.kind, m.reply.clone()), (Kind::Location, None));
        assert_eq!(m.device_id.as_deref(), Some("135790246811220"));
        let f = &m.fixes[0];
        assert_eq!(f.time_ms, unix_ms(2009, 2, 14, 1, 32, 54, 0).expect("date"));
        assert_eq!(
            (f.lat, f.lon, f.speed_kmh, f.course),
            (31.222073, 121.354335, 4.3, 92.0)
        );
        assert_eq!((f.altitude, f.valid), (Some(70.0), true));
        // Two points, the second not fixed; a buffered report reads the same.
        let m = one(b"+BUFF:GTFRI,020102,135790246811220,,0,0,2,1,4.3,92,70.0,121.354335,31.222073,20090214013254,0460,0000,18d8,6141,00,0,4.3,92,70.0,121.354335,31.222073,20090101000000,0460,0000,18d8,6141,00,,20090214093254,11F0$").expect("BUFF");
        assert_eq!(m.fixes.len(), 2);
        assert!(m.fixes[0].valid && !m.fixes[1].valid);
        assert_eq!(
            m.fixes[1].time_ms,
            unix_ms(2009, 1, 1, 0, 0, 0, 0).expect("date")
        );
        // GV-series layout (another field before the point count).
        let m = one(b"+RESP:GTFRI,04040C,359231038939904,,,10,1,2,0.0,117,346.0,8.924243,50.798077,20130618122040,0262,0002,0299,109C,00,0.0,,,,,,,,,20130618122045,00F6$").expect("GV");
        assert_eq!(m.fixes.len(), 1);
        assert_eq!((m.fixes[0].lat, m.fixes[0].lon), (50.798077, 8.924243));
    }

    #[test]
    fn heartbeat_is_answered_sack() {
        let m = one(b"+ACK:GTHBD,060100,135790246811220,,20100214093254,11F0$").expect("HBD");
        assert_eq!(m.kind, Kind::Heartbeat);
        assert_eq!(m.reply.as_deref(), Some(&b"+SACK:GTHBD,060100,11F0$"[..]));
        let m = one(b"+ACK:GTRTO,060100,135790246811220,,RESET,0001,20100214093254,11F1$")
            .expect("ACK");
        assert_eq!((m.kind, m.reply), (Kind::Other, None));
    }

    #[test]
    fn bad_frames() {
        assert_eq!(one(b"+RESP:GTFRI$"), Err(FrameError::Malformed));
        assert_eq!(one(b"+NOPE:GTFRI,1,2$"), Err(FrameError::Malformed));
        assert_eq!(
            one(b"+ACK:GTHBD,060100,135790246811220,,20100214093254,XYZ$"),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            one(b"+RESP:GTFRI,020102,135790246811220,,0,0,1,1,4.3,92,70.0,121.354335,91.222073,20090214013254,0460$"),
            Err(FrameError::Malformed)
        );
        assert_eq!(decode(b"+RESP:GTF", 64), Step::Incomplete);
        assert_eq!(decode(&[b'+'; 100], 64), Step::Fatal(FrameError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode(&bytes, 200);
            let mut framed = b"+RESP:GTFRI,1,2,".to_vec();
            framed.extend_from_slice(&bytes);
            framed.push(b'$');
            let _ = decode(&framed, 500);
        }
    }
}
