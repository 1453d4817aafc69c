//! H02 text frames: `*<maker:2>,<id>,<command>,<fields...>#`.
//!
//! `V1` is the position report: `hhmmss,A|V,ddmm.mmmm,N|S,dddmm.mmmm,E|W,speed knots,course,
//! ddmmyy,status (8 hex, active-low alarm bits),...`, e.g.
//! `*HQ,4970105243,V1,104000,A,2235.1777,N,11357.8913,E,000.27,235,130721,FFFFFBFF,460,11,d18e105,7752,6#`.
//! It is acknowledged with `*HQ,<id>,V4,V1,<yyyyMMddHHmmss server UTC>#` (the answer Traccar's
//! H02ProtocolDecoder gives), also when it carries no coordinates (the device resends it
//! otherwise). Variants read as Traccar's tests show them: a one-digit battery level before the
//! date, coordinates written `-23-29.0095` (degrees, minutes; the sign is the hemisphere's),
//! empty time and date (the receive time), empty coordinates or a `0` hemisphere (no fix).
//! `V19`, `V2` and `VI1` carry the same fields (a digit for validity is their coding scheme,
//! read as a fix) and `VP1` has no time of day (the receive time's is used); they are not
//! answered. `NBR` (cell towers) is a position report without a fix. `XT`/`HTBT` are
//! heartbeats and are not answered. Other commands (`V4` replies, `LINK`) are accepted without
//! a fix.
//!
//! Binary position frames start with `$` and carry the same report in packed BCD, 32 bytes:
//! `$`, device id (5 bytes, 10 digits), hhmmss, ddmmyy, latitude `ddmm.mmmm` (8 digits), one
//! battery byte, longitude `dddmm.mmmm` (9 digits) sharing its last byte with a flags nibble
//! (bit 1 valid, bit 2 north, bit 3 east), speed in knots (3 digits), course (3 digits), the
//! 32-bit status word, then 3 bytes this decoder does not read. Some devices send 45-byte frames
//! (13 more bytes after those), and devices with a 15-digit id 42-byte frames whose id takes 8
//! bytes (the fields 3 bytes later, 10 bytes not read at the end). Binary frames are not
//! acknowledged. The layout follows Traccar's H02ProtocolDecoder and H02FrameDecoder, which name
//! no length field either: a frame is taken as 42 bytes when its first 32 do not decode with a
//! 10-digit id and all 42 do with a 15-digit one, else as 45 bytes when the byte after the
//! first 32 does not start another frame.

use std::collections::BTreeMap;

use nom::bytes::complete::{take_while1, take_while_m_n};
use nom::character::complete::char;
use nom::sequence::{delimited, terminated, tuple};
use nom::IResult;

use super::fix::{
    bcd_digits, leading_blank, nearest_day, nmea_coord, noise, rfc3339_ms, text_frame, unix_ms,
    Attr, Fix, FrameError, Kind, Message, Step, KNOT_KMH,
};
use super::nmea::{ddmmyy, time_of_day, valid_id};

/// Decodes the next frame: a `#`-terminated text frame, or a binary one starting with `$`.
/// `now_ms` (Unix ms) stamps the V1 acknowledgement.
pub fn decode(buf: &[u8], max_line: usize, now_ms: i64) -> Step {
    if let Some(skip) = leading_blank(buf) {
        return skip;
    }
    match buf.first() {
        None => return Step::Incomplete,
        Some(b'$') => return binary_frame(buf),
        Some(b'*') => {}
        // Noise up to the next `*` or `$`, or through a `#`, so that the frames after it are read.
        Some(_) => return noise(buf, b"*$", b'#', max_line),
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
    let fields: Vec<&str> = rest.strip_prefix(',').unwrap_or(rest).split(',').collect();
    let mut msg = Message {
        device_id: Some(id.to_string()),
        ..Message::new(Kind::Other)
    };
    match cmd {
        b"V1" | b"V19" | b"V2" | b"VI1" => {
            msg.kind = Kind::Location;
            msg.fixes.extend(v1(&fields, now_ms)?);
            if cmd == b"V1" {
                let stamp: String = rfc3339_ms(now_ms)
                    .bytes()
                    .filter(u8::is_ascii_digit)
                    .take(14)
                    .map(char::from)
                    .collect();
                msg.reply = Some(format!("*HQ,{id},V4,V1,{stamp}#").into_bytes());
            }
        }
        b"VP1" => {
            msg.kind = Kind::Location;
            msg.fixes.extend(vp1(&fields, now_ms)?);
        }
        // Cell towers only: a position report without a fix.
        b"NBR" => msg.kind = Kind::Location,
        b"XT" | b"HTBT" => msg.kind = Kind::Heartbeat,
        _ => {}
    }
    Ok(msg)
}

/// `hhmmss,A|V,lat,N|S,lon,E|W,speed,course,[battery,]ddmmyy,status,...`. Empty time and date
/// mean the receive time; no coordinates (or a hemisphere that is no letter) mean no fix.
fn v1(f: &[&str], now_ms: i64) -> Result<Option<Fix>, FrameError> {
    if f.len() < 9 {
        return Err(FrameError::Malformed);
    }
    // Some devices put a one-digit battery level between course and date.
    let battery = f[8].len() < 6 && f.get(9).is_some_and(|d| d.len() == 6);
    let (date, status) = if battery {
        (f[9], f.get(10))
    } else {
        (f[8], f.get(9))
    };
    let Some((lat, lon)) = coordinates(&f[2..6])? else {
        return Ok(None);
    };
    let time_ms = match (f[0], date) {
        ("", "") => now_ms,
        (t, "") => nearest_day(
            now_ms,
            i64::from(time_of_day(t).ok_or(FrameError::Malformed)?),
        ),
        ("", d) => {
            let (d, mo, y) = ddmmyy(d).ok_or(FrameError::Malformed)?;
            unix_ms(y, mo, d, 0, 0, 0, 0).ok_or(FrameError::Malformed)?
        }
        (t, d) => {
            let tod = time_of_day(t).ok_or(FrameError::Malformed)?;
            let (d, mo, y) = ddmmyy(d).ok_or(FrameError::Malformed)?;
            unix_ms(y, mo, d, 0, 0, 0, 0).ok_or(FrameError::Malformed)? + i64::from(tod)
        }
    };
    let mut attributes = BTreeMap::new();
    attributes.insert("validity".to_string(), Attr::Text(f[1].to_string()));
    if let Some(status) = status.and_then(|s| i64::from_str_radix(s, 16).ok()) {
        attributes.insert("status".to_string(), Attr::Int(status));
    }
    if battery {
        attributes.insert("battery".to_string(), Attr::Text(f[8].to_string()));
    }
    Ok(Some(Fix {
        time_ms,
        lat,
        lon,
        altitude: None,
        speed_kmh: speed(f[6])? * KNOT_KMH,
        course: speed(f[7])?,
        satellites: None,
        valid: validity(f[1]),
        attributes,
    }))
}

/// `VP1`: `A|V,lat,N|S,lon,E|W,speed,course,ddmmyy` with no time of day (the receive time's
/// is taken); `V` followed by cell data carries no fix.
fn vp1(f: &[&str], now_ms: i64) -> Result<Option<Fix>, FrameError> {
    if f.len() < 8 || !f[1].contains('.') {
        return Ok(None);
    }
    let Some((lat, lon)) = coordinates(&f[1..5])? else {
        return Ok(None);
    };
    let (d, mo, y) = ddmmyy(f[7]).ok_or(FrameError::Malformed)?;
    let time_ms =
        unix_ms(y, mo, d, 0, 0, 0, 0).ok_or(FrameError::Malformed)? + now_ms.rem_euclid(86_400_000);
    let attributes = BTreeMap::from([("validity".to_string(), Attr::Text(f[0].to_string()))]);
    Ok(Some(Fix {
        time_ms,
        lat,
        lon,
        altitude: None,
        speed_kmh: speed(f[5])? * KNOT_KMH,
        course: speed(f[6])?,
        satellites: None,
        valid: validity(f[0]),
        attributes,
    }))
}

/// `A` is a fix; a digit is V2/VI1's coding scheme, sent with a fix (as Traccar reads it).
fn validity(s: &str) -> bool {
    s == "A" || (s.len() == 1 && s.bytes().all(|b| b.is_ascii_digit()))
}

fn speed(s: &str) -> Result<f64, FrameError> {
    if s.trim().is_empty() {
        return Ok(0.0);
    }
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or(FrameError::Malformed)
}

/// `lat,N|S,lon,E|W`; `None` when the coordinates or hemispheres are empty or not letters.
/// A coordinate may be written `-23-29.0095` (degrees, minutes; the sign is the hemisphere's).
fn coordinates(f: &[&str]) -> Result<Option<(f64, f64)>, FrameError> {
    let hemi = |s: &str| match s.as_bytes() {
        [h @ (b'N' | b'S' | b'E' | b'W')] => Some(*h),
        _ => None,
    };
    let (Some(ns), Some(ew)) = (hemi(f[1]), hemi(f[3])) else {
        return Ok(None);
    };
    if f[0].is_empty() || f[2].is_empty() {
        return Ok(None);
    }
    let coord = |v: &str, h: u8| -> Option<f64> {
        match v.strip_prefix('-').and_then(|r| r.split_once('-')) {
            Some((deg, min)) => {
                let (deg, min) = (deg.parse::<u32>().ok()?, min.parse::<f64>().ok()?);
                nmea_coord(&format!("{deg}{:07.4}", min), h)
            }
            None => nmea_coord(v, h),
        }
    };
    match (coord(f[0], ns), coord(f[2], ew)) {
        (Some(lat), Some(lon)) => Ok(Some((lat, lon))),
        _ => Err(FrameError::Malformed),
    }
}

/// Length of a binary frame.
const BINARY_LEN: usize = 32;
/// Length of the binary variant with 13 bytes of extra data.
const BINARY_LONG_LEN: usize = 45;
/// Length of the binary frame with an 8-byte (15-digit) device id.
const BINARY_LONG_ID_LEN: usize = 42;

fn starts_frame(b: Option<&u8>) -> bool {
    matches!(b, None | Some(b'$' | b'*' | b'\r' | b'\n'))
}

fn binary_frame(buf: &[u8]) -> Step {
    if buf.len() < BINARY_LEN {
        return Step::Incomplete;
    }
    let short = binary_message(&buf[..BINARY_LEN], 5);
    if short.is_err() {
        // A 15-digit id takes 8 bytes: the frame is 42 bytes, its fields 3 bytes later.
        let Some(f) = buf.get(..BINARY_LONG_ID_LEN) else {
            return Step::Incomplete;
        };
        let long = binary_message(f, 8);
        if long.is_ok() && starts_frame(buf.get(BINARY_LONG_ID_LEN)) {
            return Step::Frame {
                len: BINARY_LONG_ID_LEN,
                msg: long,
            };
        }
    }
    let len = match buf.get(BINARY_LEN) {
        b if starts_frame(b) => BINARY_LEN,
        Some(_) if buf.len() >= BINARY_LONG_LEN => BINARY_LONG_LEN,
        Some(_) => return Step::Incomplete,
        None => BINARY_LEN,
    };
    Step::Frame { len, msg: short }
}

/// A binary frame whose device id takes `id_bytes` bytes (5, or 8 for a 15-digit IMEI).
fn binary_message(f: &[u8], id_bytes: usize) -> Result<Message, FrameError> {
    let bad = || FrameError::Malformed;
    let digits = bcd_digits(&f[1..1 + id_bytes]).ok_or_else(bad)?;
    let id = if id_bytes == 8 {
        &digits[..15]
    } else {
        &digits[..]
    };
    if !valid_id(id) {
        return Err(bad());
    }
    let id = id.to_string();
    let f = &f[1 + id_bytes..];
    // hhmmss then ddmmyy, as in a text frame.
    let when = bcd_digits(&f[0..6]).ok_or_else(bad)?;
    let tod = time_of_day(&when[..6]).ok_or_else(bad)?;
    let (d, mo, y) = ddmmyy(&when[6..]).ok_or_else(bad)?;
    let time_ms = unix_ms(y, mo, d, 0, 0, 0, 0).ok_or_else(bad)? + i64::from(tod);
    let flags = f[15] & 0x0f;
    let lat = bcd_digits(&f[6..10]).ok_or_else(bad)?;
    // The longitude's ninth digit is the high nibble of the byte whose low nibble is `flags`.
    let lon = bcd_digits(&[f[11], f[12], f[13], f[14], f[15] & 0xf0]).ok_or_else(bad)?;
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
    let speed_course = bcd_digits(&f[16..19]).ok_or_else(bad)?;
    let knots: u32 = speed_course[..3].parse().map_err(|_| bad())?;
    let course: u32 = speed_course[3..].parse().map_err(|_| bad())?;
    let valid = flags & 0x02 != 0;
    let status = u32::from_be_bytes([f[19], f[20], f[21], f[22]]);
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
        crate::gps::fix::whole_frame(decode(bytes, 512, NOW), bytes.len())
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
            // Not a 10-digit-id frame: it may be the start of a 15-digit one, so it is judged
            // once 42 bytes are there (here, the next frame's).
            assert_eq!(decode(&frame, 512, NOW), Step::Incomplete);
            let mut more = frame.clone();
            more.extend_from_slice(b"*HQ,4970105243,XT#");
            assert_eq!(
                decode(&more, 512, NOW),
                Step::Frame {
                    len: BINARY_LEN,
                    msg: Err(FrameError::Malformed)
                }
            );
        }
    }

    /// Reports from Traccar's H02 tests that used to be counted malformed or did nothing.
    #[test]
    fn v1_variants_real_devices_send() {
        // The battery level before the date.
        let m = one(b"*HQ,4210209006,V1,054048,A,2828.2297,N,07733.4332,E,000.5,047,4,080918,EEE7FBDF,4261193,0#").expect("battery");
        let f = &m.fixes[0];
        assert_eq!(f.time_ms, unix_ms(2018, 9, 8, 5, 40, 48, 0).expect("date"));
        assert_eq!(f.attributes.get("status"), Some(&Attr::Int(0xEEE7_FBDF)));
        assert!(m.reply.is_some());
        // Degrees and minutes with minus signs.
        let m =
            one(b"*HQ,1451316409,V1,030149,A,-23-29.0095,S,-46-51.5852,W,2.4,065,070315,FFFFFFFF#")
                .expect("minus");
        let f = &m.fixes[0];
        assert!((f.lat + 23.48349).abs() < 1e-5 && (f.lon + 46.85975).abs() < 1e-5);
        assert_eq!(f.time_ms, unix_ms(2015, 3, 7, 3, 1, 49, 0).expect("date"));
        let m =
            one(b"*HQ,1451316485,V1,121557,A,-23-3.3408,S,-48-2.8926,W,0.1,158,241115,FFFFFFFF#")
                .expect("one-digit minutes");
        assert!((m.fixes[0].lat + (23.0 + 3.3408 / 60.0)).abs() < 1e-9);
        // Empty time and date: the receive time; answered.
        let m = one(b"*HQ,353505221264507,V1,,V,4605.75732,N,01430.73863,E,0.00,0,,FFFFFFEF,125,194,  64,d3#").expect("no time");
        assert_eq!((m.fixes[0].time_ms, m.fixes[0].valid), (NOW, false));
        assert!(m.reply.is_some());
        // No coordinates at all: a position report without a fix, still answered.
        let m = one(b"*HQ,353505510948929,V1,,V,,N,,E,0.00,0,,FFFFF7FF,f0,a,11a0,c0c6#")
            .expect("no fix");
        assert_eq!((m.kind, m.fixes.len()), (Kind::Location, 0));
        assert!(m.reply.is_some());
        let m = one(b"*HQ,353588020068342,V1,000000,V,0.0000,0,0.0000,0,0.00,0.00,000000,ffffffff,000106,000002,000203,004c87,16#").expect("zero hemispheres");
        assert!(m.fixes.is_empty());
        // An empty validity field: not valid.
        let m = one(
            b"*HQ,355488020119695,V1,050418,,2827.61232,N,07703.84822,E,0.00,0,031015,FFFEFBFF#",
        )
        .expect("empty validity");
        assert!(!m.fixes[0].valid);
    }

    #[test]
    fn other_position_commands() {
        let m = one(b"*HQ,4209951296,V19,214452,A,5201.0178,N,01830.5029,E,000.00,000,200417,,195.63.13.195,89480610500392633029,BFFFFBFF#").expect("V19");
        assert_eq!(
            m.fixes[0].time_ms,
            unix_ms(2017, 4, 20, 21, 44, 52, 0).expect("date")
        );
        assert_eq!(m.reply, None);
        let m = one(b"*HQ,353505221264507,V2,100220,0,5238.26259,N,00507.33983,E,0.25,0,280917,FFFFFFFF,cc,28,  db,d75b#").expect("V2");
        assert!(m.fixes[0].valid);
        let m = one(b"*HQ,353505221264507,VI1,075146,0,5238.25900,N,00507.33429,E,0.54,0,250917,FFFFFFFF,cc,28,  db,d75b#").expect("VI1");
        assert_eq!(m.fixes.len(), 1);
        let m = one(b"*hq,356327080425330,VP1,A,2702.7245,S,15251.9311,E,0.48,0.0000,080917#")
            .expect("VP1");
        let f = &m.fixes[0];
        assert!(f.lat < 0.0 && f.valid);
        assert_eq!(f.time_ms, unix_ms(2017, 9, 8, 10, 40, 5, 0).expect("date"));
        let m = one(b"*hq,356327081001239,VP1,V,470,002,92,3565,0Y92,19433,30Y92,1340,29#")
            .expect("VP1 cells");
        assert_eq!((m.kind, m.fixes.len()), (Kind::Location, 0));
        let m = one(b"*HQ,4109179024,NBR,103732,722,310,0,6,8106,32010,23,8101,22007,25,8106,12010,23,8106,22105,22,8101,22012,16,8106,42010,5,100217,FFFFFBFF,5#").expect("NBR");
        assert_eq!((m.kind, m.fixes.len()), (Kind::Location, 0));
    }

    #[test]
    fn binary_frame_with_a_long_id() {
        let f = hex(
            "2435248308419329301047591808172627335900074412294E024138FEFFFFFFFF01120064BA73005ECC",
        );
        assert_eq!(f.len(), BINARY_LONG_ID_LEN);
        let m = one(&f).expect("long id");
        assert_eq!(m.device_id.as_deref(), Some("352483084193293"));
        let x = &m.fixes[0];
        assert_eq!(
            x.time_ms,
            unix_ms(2017, 8, 18, 10, 47, 59, 0).expect("date")
        );
        assert!((x.lat - (26.0 + 27.3359 / 60.0)).abs() < 1e-9);
        assert!((x.lon - (74.0 + 41.2294 / 60.0)).abs() < 1e-9);
        // Followed by another frame, or cut short.
        let mut two = f.clone();
        two.extend_from_slice(b"*HQ,4970105243,XT#");
        assert!(matches!(
            decode(&two, 512, NOW),
            Step::Frame {
                len: 42,
                msg: Ok(_)
            }
        ));
        assert_eq!(decode(&f[..40], 512, NOW), Step::Incomplete);
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
