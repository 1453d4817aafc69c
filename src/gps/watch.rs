//! The watch protocol (kids' and elderly watches, 3G/4G "SG"/"3G"/"CS"/"ZJ" makers):
//! `[<maker:2>*<device id>*[<index:4>*]<length:4 hex>*<content>]`.
//!
//! The content is `<type>[,<fields>]`. Frames are taken up to their `]`, as Traccar's
//! WatchFrameDecoder takes them (devices do not all fill the length in consistently).
//!
//! - `LK` link (heartbeat): answered `[<maker>*<id>*[<index>*]0002*LK]`.
//! - `UD`, `UD2` (sent late), `UD3` position reports and `AL` alarms: `ddMMyy, HHmmss UTC,
//!   A|V, latitude (decimal degrees), N|S, longitude, E|W, speed km/h, course, altitude,
//!   satellites, GSM signal, battery %, steps, ...`. `AL` is answered `[...*0002*AL]` (the
//!   watch repeats the alarm otherwise).
//! - Other types are accepted without a fix.

use std::collections::BTreeMap;

use super::fix::{
    leading_blank, noise, text_frame, unix_ms, Attr, Fix, FrameError, Kind, Message, Step,
};
use super::nmea::{time_of_day, valid_id};

/// Decodes the next `[`...`]` frame.
pub fn decode(buf: &[u8], max_line: usize) -> Step {
    if let Some(skip) = leading_blank(buf) {
        return skip;
    }
    if !buf.is_empty() && buf[0] != b'[' {
        return noise(buf, b"[", b']', max_line);
    }
    match text_frame(buf, |b| b == b']', max_line) {
        Err(e) => Step::Fatal(e),
        Ok(None) => Step::Incomplete,
        Ok(Some((frame, len))) => Step::Frame {
            len,
            msg: frame_message(frame),
        },
    }
}

fn is_hex4(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn frame_message(frame: &[u8]) -> Result<Message, FrameError> {
    let text = std::str::from_utf8(frame).map_err(|_| FrameError::Malformed)?;
    let body = text.strip_prefix('[').ok_or(FrameError::Malformed)?;
    let mut parts = body.splitn(5, '*');
    let maker = parts.next().unwrap_or_default();
    let id = parts.next().unwrap_or_default();
    let third = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    // `[maker*id*len*content]`, or `[maker*id*index*len*content]`.
    let (index, content) = match rest.as_slice() {
        [len, content] if is_hex4(third) && is_hex4(len) => (Some(third), content.to_string()),
        [a, b] if is_hex4(third) => (None, format!("{a}*{b}")),
        [content] if is_hex4(third) => (None, content.to_string()),
        _ => return Err(FrameError::Malformed),
    };
    if maker.len() != 2 || !maker.bytes().all(|b| b.is_ascii_alphanumeric()) || !valid_id(id) {
        return Err(FrameError::Malformed);
    }
    let f: Vec<&str> = content.split(',').collect();
    let kind = f[0];
    let answer = |what: &str| {
        let index = index.map(|i| format!("{i}*")).unwrap_or_default();
        format!("[{maker}*{id}*{index}{:04X}*{what}]", what.len()).into_bytes()
    };
    let mut msg = Message {
        device_id: Some(id.to_string()),
        ..Message::new(Kind::Other)
    };
    match kind {
        "LK" => {
            msg.kind = Kind::Heartbeat;
            msg.reply = Some(answer("LK"));
        }
        "UD" | "UD2" | "UD3" | "AL" => {
            msg.kind = if kind == "AL" {
                Kind::Alarm
            } else {
                Kind::Location
            };
            if kind == "AL" {
                msg.reply = Some(answer("AL"));
            }
            msg.fixes.push(position(kind, &f[1..])?);
        }
        _ => {}
    }
    Ok(msg)
}

fn position(kind: &str, d: &[&str]) -> Result<Fix, FrameError> {
    let bad = || FrameError::Malformed;
    if d.len() < 9 {
        return Err(bad());
    }
    let date = d[0];
    if date.len() != 6 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| date[r].parse::<u32>().map_err(|_| bad());
    let tod = time_of_day(d[1]).ok_or_else(bad)?;
    let time_ms = unix_ms(2000 + i64::from(n(4..6)?), n(2..4)?, n(0..2)?, 0, 0, 0, 0)
        .ok_or_else(bad)?
        + i64::from(tod);
    let float = |s: &str| s.parse::<f64>().ok().filter(|v| v.is_finite());
    let degrees = |v: &str, h: &str, neg: &str, limit: f64| -> Result<f64, FrameError> {
        let v = float(v)
            .filter(|v| (0.0..=limit).contains(v))
            .ok_or_else(bad)?;
        Ok(if h == neg { -v } else { v })
    };
    let lat = degrees(d[3], d[4], "S", 90.0)?;
    let lon = degrees(d[5], d[6], "W", 180.0)?;
    let mut attributes = BTreeMap::new();
    attributes.insert("event".to_string(), Attr::Text(kind.to_string()));
    if let Some(b) = d.get(12).and_then(|s| s.parse::<i64>().ok()) {
        attributes.insert("battery".to_string(), Attr::Int(b));
    }
    Ok(Fix {
        time_ms,
        lat,
        lon,
        altitude: d.get(9).and_then(|s| float(s)),
        speed_kmh: float(d[7]).unwrap_or(0.0).max(0.0),
        course: float(d[8]).unwrap_or(0.0),
        satellites: d.get(10).and_then(|s| s.parse().ok()),
        valid: d[2] == "A",
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
    fn link_is_answered() {
        let m = one(b"[SG*8800000015*0002*LK]").expect("LK");
        assert_eq!(m.kind, Kind::Heartbeat);
        assert_eq!(m.reply.as_deref(), Some(&b"[SG*8800000015*0002*LK]"[..]));
        let m = one(b"[3G*4700186508*000B*LK,0,10,100]").expect("3G LK");
        assert_eq!(m.reply.as_deref(), Some(&b"[3G*4700186508*0002*LK]"[..]));
        let m = one(b"[ZJ*014111001350304*0034*0009*LK,0,0,19]").expect("with index");
        assert_eq!(
            m.reply.as_deref(),
            Some(&b"[ZJ*014111001350304*0034*0002*LK]"[..])
        );
    }

    #[test]
    fn position_and_alarm() {
        let m = one(b"[SG*8800000015*0087*UD,220414,134652,A,22.571707,N,113.8613968,E,0.1,0.0,100,7,60,90,1000,50,0000,4,1,460,0,9360,4082,131,9360,4092,148,9360,4091,143,9360,4153,141]").expect("UD");
        assert_eq!((m.kind, m.reply.clone()), (Kind::Location, None));
        let f = &m.fixes[0];
        assert_eq!(
            f.time_ms,
            unix_ms(2014, 4, 22, 13, 46, 52, 0).expect("date")
        );
        assert_eq!(
            (f.lat, f.lon, f.speed_kmh, f.valid),
            (22.571707, 113.8613968, 0.1, true)
        );
        assert_eq!((f.altitude, f.satellites), (Some(100.0), Some(7)));
        let m = one(b"[3G*4700186508*00B1*UD,301015,084840,V,45.853100,N,14.6224899,E,0.00,0.0,0.0,0,84,61,0,11,00000008,7,255,293,70,60,6453,139]").expect("V");
        assert!(!m.fixes[0].valid);
        let m = one(b"[SG*8800000015*0087*AL,220414,134652,A,22.571707,S,113.8613968,W,0.1,0.0,100,7,60,90,1000,50,0001,4,1,460,0]").expect("AL");
        assert_eq!(m.kind, Kind::Alarm);
        assert_eq!(m.reply.as_deref(), Some(&b"[SG*8800000015*0002*AL]"[..]));
        assert!(m.fixes[0].lat < 0.0 && m.fixes[0].lon < 0.0);
        let m = one(b"[SG*9051000884*009B*UD,030117,161129,V,52.745450,N,0.369512,,0.1481,000,99,00,70,5,0,50,00000000]").expect("no E/W");
        assert!(m.fixes[0].lon > 0.0);
    }

    #[test]
    fn other_and_bad_frames() {
        let m = one(b"[3G*8308406279*0008*rcapture]").expect("other");
        assert_eq!((m.kind, m.reply), (Kind::Other, None));
        assert_eq!(one(b"[SG*1*LK]"), Err(FrameError::Malformed));
        assert_eq!(one(b"[SG*88*0010*UD,220414]"), Err(FrameError::Malformed));
        assert_eq!(
            one(b"[SG*88*0010*UD,220414,134652,A,99.5,N,1.0,E,0,0]"),
            Err(FrameError::Malformed)
        );
        assert_eq!(decode(b"[SG*8800", 64), Step::Incomplete);
        assert_eq!(decode(&[b'['; 100], 64), Step::Fatal(FrameError::TooLong));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode(&bytes, 200);
            let mut framed = b"[SG*8800000015*0087*UD,".to_vec();
            framed.extend_from_slice(&bytes);
            framed.push(b']');
            let _ = decode(&framed, 500);
        }
    }
}
