//! H02 text frames: `*<maker:2>,<id>,<command>,<fields...>#`.
//!
//! `V1` is the position report: `hhmmss,A|V,ddmm.mmmm,N|S,dddmm.mmmm,E|W,speed knots,course,
//! ddmmyy,status (8 hex, active-low alarm bits),...`, e.g.
//! `*HQ,4970105243,V1,104000,A,2235.1777,N,11357.8913,E,000.27,235,130721,FFFFFBFF,460,11,d18e105,7752,6#`.
//! It is acknowledged with `*HQ,<id>,V4,V1,<yyyyMMddHHmmss server UTC>#` (the answer Traccar's
//! H02ProtocolDecoder gives). `XT`/`HTBT` are heartbeats and are not answered. Other commands
//! (`V4` replies, `NBR` cell lists, `LINK`) are accepted without a fix.
//!
//! Binary position frames start with `$` and carry the same report in packed BCD, 32 bytes:
//! `$`, device id (5 bytes, 10 digits), hhmmss, ddmmyy, latitude `ddmm.mmmm` (8 digits), one
//! battery byte, longitude `dddmm.mmmm` (9 digits) sharing its last byte with a flags nibble
//! (bit 1 valid, bit 2 north, bit 3 east), speed in knots (3 digits), course (3 digits), the
//! 32-bit status word, then 3 bytes this decoder does not read. Some devices send 45-byte frames
//! (13 more bytes after those). Binary frames are not acknowledged. The layout follows Traccar's
//! H02ProtocolDecoder and H02FrameDecoder, which name no length field either: a frame is taken
//! as 45 bytes when the byte after the first 32 does not start another frame.

use std::collections::BTreeMap;

use nom::bytes::complete::{take_while1, take_while_m_n};
use nom::character::complete::char;
use nom::sequence::{delimited, terminated, tuple};
use nom::IResult;

use super::fix::{
    bcd_digits, nmea_coord, rfc3339_ms, text_frame, unix_ms, Attr, Fix, FrameError, Kind, Message,
    Step, KNOT_KMH,
};
use super::nmea::{ddmmyy, time_of_day, valid_id};

/// Decodes the next frame: a `#`-terminated text frame, or a binary one starting with `$`.
/// `now_ms` (Unix ms) stamps the V1 acknowledgement.
pub fn decode(buf: &[u8], max_line: usize, now_ms: i64) -> Step {
    // Line ends after a frame are skipped first, whatever follows, so that where TCP cut
    // the stream does not change where the next frame is measured from.
    let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
    if blank > 0 {
        return Step::Skip(blank);
    }
    match buf.first() {
        None => return Step::Incomplete,
        Some(b'$') => return binary_frame(buf),
        Some(b'*') => {}
        // Bytes that start no frame (the rest of a frame cut short, line noise): one malformed
        // frame up to the next `*` or `$`, or through a `#`, so that the frames after it are
        // read. Like a text frame it waits for its end (at most `max_line` bytes), so that it
        // counts once however TCP cut it.
        Some(_) => {
            let end = buf
                .iter()
                .position(|&b| b == b'*' || b == b'$' || b == b'#');
            let len = match end {
                Some(p) if buf[p] == b'#' => p + 1,
                Some(p) => p,
                None if buf.len() > max_line => buf.len(),
                None => return Step::Incomplete,
            };
            return Step::Frame {
                len,
                msg: Err(FrameError::Malformed),
            };
        }
    }
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

/// Length of a binary frame.
const BINARY_LEN: usize = 32;
/// Length of the binary variant with 13 bytes of extra data.
const BINARY_LONG_LEN: usize = 45;

fn binary_frame(buf: &[u8]) -> Step {
    if buf.len() < BINARY_LEN {
        return Step::Incomplete;
    }
    let len = match buf.get(BINARY_LEN) {
        None | Some(b'$' | b'*' | b'\r' | b'\n') => BINARY_LEN,
        Some(_) if buf.len() >= BINARY_LONG_LEN => BINARY_LONG_LEN,
        Some(_) => return Step::Incomplete,
    };
    Step::Frame {
        len,
        msg: binary_message(&buf[..BINARY_LEN]),
    }
}

fn binary_message(f: &[u8]) -> Result<Message, FrameError> {
    let bad = || FrameError::Malformed;
    let id = bcd_digits(&f[1..6])
        .filter(|id| valid_id(id))
        .ok_or_else(bad)?;
    // hhmmss then ddmmyy, as in a text frame.
    let when = bcd_digits(&f[6..12]).ok_or_else(bad)?;
    let tod = time_of_day(&when[..6]).ok_or_else(bad)?;
    let (d, mo, y) = ddmmyy(&when[6..]).ok_or_else(bad)?;
    let time_ms = unix_ms(y, mo, d, 0, 0, 0, 0).ok_or_else(bad)? + i64::from(tod);
    let flags = f[21] & 0x0f;
    let lat = bcd_digits(&f[12..16]).ok_or_else(bad)?;
    // The longitude's ninth digit is the high nibble of the byte whose low nibble is `flags`.
    let lon = bcd_digits(&[f[17], f[18], f[19], f[20], f[21] & 0xf0]).ok_or_else(bad)?;
    let lat = nmea_coord(
        &format!("{}.{}", &lat[..4], &lat[4..]),
        if flags & 0x04 != 0 { b'N' } else { b'S' },
    )
    .ok_or_else(bad)?;
    let lon = nmea_coord(
        &format!("{}.{}", &lon[..5], &lon[5..9]),
        if flags & 0x08 != 0 { b'E' } else { b'W' },
    )
    .ok_or_else(bad)?;
    let speed_course = bcd_digits(&f[22..25]).ok_or_else(bad)?;
    let knots: u32 = speed_course[..3].parse().map_err(|_| bad())?;
    let course: u32 = speed_course[3..].parse().map_err(|_| bad())?;
    let valid = flags & 0x02 != 0;
    let status = u32::from_be_bytes([f[25], f[26], f[27], f[28]]);
    let attributes = BTreeMap::from([
        (
            "validity".to_string(),
            Attr::Text(if valid { "A" } else { "V" }.to_string()),
        ),
        ("status".to_string(), Attr::Int(i64::from(status))),
    ]);
    Ok(Message {
        device_id: Some(id),
        kind: Kind::Location,
        fixes: vec![Fix {
            time_ms,
            lat,
            lon,
            altitude: None,
            speed_kmh: f64::from(knots) * KNOT_KMH,
            course: f64::from(course),
            satellites: None,
            valid,
            attributes,
        }],
        reply: None,
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

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// The V1 text example above, packed: `$`, id, 10:40:00 13/07/21, 2235.1777 N, battery 6,
    /// 11357.8913 E with flags e (valid, north, east), 000 knots, course 235, status FFFFFBFF,
    /// 3 bytes not read.
    fn binary() -> Vec<u8> {
        hex(&[
            "24",
            "4970105243",
            "104000",
            "130721",
            "22351777",
            "06",
            "113578913e",
            "000235",
            "fffffbff",
            "ff0000",
        ]
        .concat())
    }

    #[test]
    fn binary_position_is_the_text_report_packed() {
        let frame = binary();
        assert_eq!(frame.len(), BINARY_LEN);
        let msg = one(&frame).expect("valid");
        assert_eq!(msg.device_id.as_deref(), Some("4970105243"));
        assert_eq!((msg.kind, msg.reply), (Kind::Location, None));
        let text =
            one(b"*HQ,4970105243,V1,104000,A,2235.1777,N,11357.8913,E,000,235,130721,FFFFFBFF#")
                .expect("text");
        assert_eq!(msg.fixes, text.fixes);
    }

    #[test]
    fn binary_south_west_invalid_and_speed() {
        // 33°50.0000' S, 070°30.0000' W (flags 0), 12 knots, course 090.
        let frame = hex("24123456789000000101012433500000000703000000012090ffffffff000000");
        let msg = one(&frame).expect("valid");
        let f = &msg.fixes[0];
        assert_eq!(f.time_ms, unix_ms(2024, 1, 1, 0, 0, 1, 0).expect("date"));
        assert!((f.lat + (33.0 + 50.0 / 60.0)).abs() < 1e-9);
        assert!((f.lon + (70.0 + 30.0 / 60.0)).abs() < 1e-9);
        assert!((f.speed_kmh - 12.0 * KNOT_KMH).abs() < 1e-9);
        assert_eq!(f.course, 90.0);
        assert!(!f.valid);
        assert_eq!(f.attributes.get("validity"), Some(&Attr::Text("V".into())));
    }

    #[test]
    fn binary_framing() {
        let short = binary();
        let mut long = short.clone();
        long.extend_from_slice(&[0x01; 13]);
        assert_eq!(long.len(), BINARY_LONG_LEN);
        // Alone, or followed by another frame of either kind.
        assert_eq!(
            one(&long).expect("long").device_id.as_deref(),
            Some("4970105243")
        );
        for next in [&short[..], b"*HQ,4970105243,XT#", b"\r\n"] {
            for first in [&short, &long] {
                let mut two = first.clone();
                two.extend_from_slice(next);
                match decode(&two, 512, NOW) {
                    Step::Frame { len, msg } => {
                        assert_eq!(len, first.len());
                        assert!(msg.is_ok());
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        // Not enough bytes to tell, or to decode.
        assert_eq!(decode(&short[..31], 512, NOW), Step::Incomplete);
        assert_eq!(decode(&long[..40], 512, NOW), Step::Incomplete);
        // Line ends left after a text frame.
        let mut after_text = b"\r\n".to_vec();
        after_text.extend_from_slice(&short);
        assert_eq!(decode(&after_text, 512, NOW), Step::Skip(2));
        assert_eq!(decode(b"\r\n", 512, NOW), Step::Skip(2));
    }

    #[test]
    fn bytes_that_start_no_frame_are_one_malformed_frame_and_the_next_is_read() {
        // The 13 extra bytes of a 45-byte frame that arrived after its first 32 were read as
        // a short frame, then a binary frame; noise, then a text frame.
        let mut cut = vec![0x01; 13];
        cut.extend_from_slice(&binary());
        let mut noise = b"\x00\x07ab".to_vec();
        noise.extend_from_slice(b"*HQ,4970105243,XT#");
        for (bytes, junk) in [(cut, 13), (noise, 4)] {
            let Step::Frame { len, msg } = decode(&bytes, 512, NOW) else {
                panic!("{bytes:?}")
            };
            assert_eq!((len, msg), (junk, Err(FrameError::Malformed)));
            let Step::Frame { len, msg } = decode(&bytes[junk..], 512, NOW) else {
                panic!("{bytes:?}")
            };
            assert_eq!(len, bytes.len() - junk);
            assert_eq!(
                msg.expect("frame after the junk").device_id.as_deref(),
                Some("4970105243")
            );
        }
    }

    #[test]
    fn noise_counts_once_however_it_is_cut() {
        // Found by fuzz/fuzz_targets/gps_stream.rs: noise without a frame start after it was
        // taken whole as far as it had arrived, so TCP cutting it in n pieces counted n
        // malformed frames (towards the peer's blacklist) instead of one.
        assert_eq!(decode(b"\x00\x07ab", 512, NOW), Step::Incomplete);
        assert_eq!(decode(b"\x00\x07ab\r\n", 512, NOW), Step::Incomplete);
        let Step::Frame { len, msg } = decode(b"\x00\x07ab\r\n$", 512, NOW) else {
            panic!("noise")
        };
        assert_eq!((len, msg), (6, Err(FrameError::Malformed)));
        let Step::Frame { len, .. } = decode(b"A,2235.1777,N#*HQ", 512, NOW) else {
            panic!("the tail of a text frame")
        };
        assert_eq!(len, 14);
        let Step::Frame { len, msg } = decode(&[b'x'; 600], 512, NOW) else {
            panic!("noise over the line limit")
        };
        assert_eq!((len, msg), (600, Err(FrameError::Malformed)));
        // Blanks are skipped before whatever follows them, so a cut after them changes nothing.
        assert_eq!(decode(b" \x90", 512, NOW), Step::Skip(1));
        assert_eq!(decode(b"\r\n*HQ,1", 512, NOW), Step::Skip(2));
    }

    #[test]
    fn bad_binary_frames() {
        let mut id = binary();
        id[3] = 0x4a;
        let mut minutes = binary();
        minutes[13] = 0x75;
        let mut month = binary();
        month[10] = 0x13;
        for frame in [id, minutes, month] {
            assert_eq!(one(&frame), Err(FrameError::Malformed));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode(&bytes, 200, NOW);
            let mut framed = b"*HQ,1,V1,".to_vec();
            framed.extend_from_slice(&bytes);
            framed.push(b'#');
            let _ = decode(&framed, 500, NOW);
            let mut binary = vec![b'$'];
            binary.extend_from_slice(&bytes);
            let _ = decode(&binary, 500, NOW);
        }
    }
}
