//! H02 text frames: `*<maker:2>,<id>,<command>,<fields...>#`.
//!
//! `V1` is the position report: `hhmmss,A|V,ddmm.mmmm,N|S,dddmm.mmmm,E|W,speed knots,course,
//! ddmmyy,status (8 hex, active-low alarm bits),...`, e.g.
//! `*HQ,4970105243,V1,104000,A,2235.1777,N,11357.8913,E,000.27,235,130721,FFFFFBFF,460,11,d18e105,7752,6#`.
//! It is acknowledged with `*HQ,<id>,V4,V1,<yyyyMMddHHmmss server UTC>#` (the answer Traccar's
//! H02ProtocolDecoder gives). `XT`/`HTBT` are heartbeats and are not answered. Other commands
//! (`V4` replies, `NBR` cell lists, `LINK`) are accepted without a fix. The binary H02 variant
//! (frames starting with `$`) is not decoded.

use std::collections::BTreeMap;

use nom::bytes::complete::{take_while1, take_while_m_n};
use nom::character::complete::char;
use nom::sequence::{delimited, terminated, tuple};
use nom::IResult;

use super::fix::{
    nmea_coord, rfc3339_ms, text_frame, unix_ms, Attr, Fix, FrameError, Kind, Message, Step,
    KNOT_KMH,
};
use super::nmea::{ddmmyy, time_of_day, valid_id};

/// Decodes the next `#`-terminated frame. `now_ms` (Unix ms) stamps the V1 acknowledgement.
pub fn decode(buf: &[u8], max_line: usize, now_ms: i64) -> Step {
    match text_frame(buf, |b| b == b'#', max_line) {
        Err(e) => Step::Fatal(e),
        Ok(None) => Step::Incomplete,
        Ok(Some((frame, len))) => Step::Frame {
            len,
            msg: frame_message(frame, now_ms),
        },
    }
}

/// `*XX,id,CMD,` then the rest.
/// Maker code, device id and command of an H02 frame.
type Header<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn header(i: &[u8]) -> IResult<&[u8], Header<'_>> {
    let field = |i| take_while1(|b: u8| b.is_ascii_alphanumeric())(i);
    tuple((
        delimited(
            char('*'),
            take_while_m_n(2, 2, |b: u8| b.is_ascii_alphabetic()),
            char(','),
        ),
        terminated(field, char(',')),
        field,
    ))(i)
}

fn frame_message(frame: &[u8], now_ms: i64) -> Result<Message, FrameError> {
    let (rest, (_maker, id, cmd)) = header(frame).map_err(|_| FrameError::Malformed)?;
    let id = std::str::from_utf8(id).map_err(|_| FrameError::Malformed)?;
    if !valid_id(id) {
        return Err(FrameError::Malformed);
    }
    let rest = std::str::from_utf8(rest).map_err(|_| FrameError::Malformed)?;
    let device_id = Some(id.to_string());
    match cmd {
        b"V1" => {
            let fields: Vec<&str> = rest
                .strip_prefix(',')
                .ok_or(FrameError::Malformed)?
                .split(',')
                .collect();
            let fix = v1(&fields)?;
            let stamp: String = rfc3339_ms(now_ms)
                .bytes()
                .filter(u8::is_ascii_digit)
                .take(14)
                .map(char::from)
                .collect();
            let reply = format!("*HQ,{id},V4,V1,{stamp}#").into_bytes();
            Ok(Message {
                device_id,
                kind: Kind::Location,
                fixes: vec![fix],
                reply: Some(reply),
            })
        }
        b"XT" | b"HTBT" => Ok(Message {
            device_id,
            ..Message::new(Kind::Heartbeat)
        }),
        _ => Ok(Message {
            device_id,
            ..Message::new(Kind::Other)
        }),
    }
}

fn v1(f: &[&str]) -> Result<Fix, FrameError> {
    if f.len() < 9 {
        return Err(FrameError::Malformed);
    }
    let tod = time_of_day(f[0]).ok_or(FrameError::Malformed)?;
    let (d, mo, y) = ddmmyy(f[8]).ok_or(FrameError::Malformed)?;
    let time_ms = unix_ms(y, mo, d, 0, 0, 0, 0).ok_or(FrameError::Malformed)? + i64::from(tod);
    let hemi = |s: &str| {
        s.bytes()
            .next()
            .filter(|_| s.len() == 1)
            .ok_or(FrameError::Malformed)
    };
    let lat = nmea_coord(f[2], hemi(f[3])?).ok_or(FrameError::Malformed)?;
    let lon = nmea_coord(f[4], hemi(f[5])?).ok_or(FrameError::Malformed)?;
    let num = |s: &str| -> Result<f64, FrameError> {
        if s.is_empty() {
            return Ok(0.0);
        }
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or(FrameError::Malformed)
    };
    let mut attributes = BTreeMap::new();
    attributes.insert("validity".to_string(), Attr::Text(f[1].to_string()));
    if let Some(status) = f.get(9).and_then(|s| i64::from_str_radix(s, 16).ok()) {
        attributes.insert("status".to_string(), Attr::Int(status));
    }
    Ok(Fix {
        time_ms,
        lat,
        lon,
        altitude: None,
        speed_kmh: num(f[6])? * KNOT_KMH,
        course: num(f[7])?,
        satellites: None,
        valid: f[1] == "A",
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_626_172_805_000; // 2021-07-13T10:40:05Z

    fn one(bytes: &[u8]) -> Result<Message, FrameError> {
        match decode(bytes, 512, NOW) {
            Step::Frame { len, msg } => {
                assert_eq!(len, bytes.len());
                msg
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_position_and_its_acknowledgement() {
        let frame = b"*HQ,4970105243,V1,104000,A,2235.1777,N,11357.8913,E,000.27,235,130721,FFFFFBFF,460,11,d18e105,7752,6#";
        let msg = one(frame).expect("valid");
        assert_eq!(msg.device_id.as_deref(), Some("4970105243"));
        assert_eq!(
            msg.reply.as_deref(),
            Some(&b"*HQ,4970105243,V4,V1,20210713104005#"[..])
        );
        let f = &msg.fixes[0];
        assert_eq!(f.time_ms, unix_ms(2021, 7, 13, 10, 40, 0, 0).expect("date"));
        assert!((f.lat - (22.0 + 35.1777 / 60.0)).abs() < 1e-9);
        assert!((f.lon - (113.0 + 57.8913 / 60.0)).abs() < 1e-9);
        assert!((f.speed_kmh - 0.27 * 1.852).abs() < 1e-9);
        assert_eq!(f.course, 235.0);
        assert!(f.valid);
        assert_eq!(f.attributes.get("status"), Some(&Attr::Int(0xFFFF_FBFF)));
    }

    #[test]
    fn southern_western_invalid() {
        let msg = one(b"*HQ,1234567890,V1,000001,V,3350.0000,S,07030.0000,W,0,0,010124,FFFFFFFF#")
            .expect("valid frame");
        let f = &msg.fixes[0];
        assert!(f.lat < 0.0 && f.lon < 0.0 && !f.valid);
    }

    #[test]
    fn heartbeat_and_other_commands() {
        let msg = one(b"*HQ,4970105243,XT,1,100#").expect("heartbeat");
        assert_eq!((msg.kind, msg.reply), (Kind::Heartbeat, None));
        assert_eq!(
            one(b"*HQ,4970105243,V4,S20,OK,104000,130721#")
                .expect("reply")
                .kind,
            Kind::Other
        );
    }

    #[test]
    fn bad_frames() {
        assert_eq!(
            one(b"*HQ,4970105243,V1,104000,A,2235.1777,N#"),
            Err(FrameError::Malformed)
        );
        assert_eq!(one(b"*HQ,49 70,V1#"), Err(FrameError::Malformed));
        assert_eq!(one(b"HQ,4970105243,XT#"), Err(FrameError::Malformed));
        assert_eq!(
            one(b"*HQ,4970105243,V1,104000,A,2299.0000,N,11357.8913,E,0,0,130721#"),
            Err(FrameError::Malformed)
        );
        assert_eq!(decode(b"*HQ,4970", 512, NOW), Step::Incomplete);
        assert_eq!(
            decode(&[b'*'; 600], 512, NOW),
            Step::Fatal(FrameError::TooLong)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode(&bytes, 200, NOW);
            let mut framed = b"*HQ,1,V1,".to_vec();
            framed.extend_from_slice(&bytes);
            framed.push(b'#');
            let _ = decode(&framed, 500, NOW);
        }
    }
}
