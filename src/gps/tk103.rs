//! TK103 parenthesised frames: `(<device id><command:4><data>)`.
//!
//! The device id is the serial the device sends first (12 digits, `0` + 11 on most models;
//! some send 11), the command two letters and two digits. Messages read here, as Traccar's
//! Tk103ProtocolDecoder and the TK103 GPRS protocol document describe them:
//!
//! - `BP05` login, `<imei:15><position>`: answered `(<id>AP05)`.
//! - `BP00` heartbeat (handshake): answered `(<id>AP01HSO)`.
//! - `BR00` position, `BR01` (answer to a one-time locate), `BR02` (interval report): not
//!   answered.
//! - `BO01` alarm, `<alarm type digit><position>`: answered `(<id>AS01<alarm type>)` (the
//!   document's alarm acknowledgement; Traccar sends none, a device without it repeats the
//!   alarm).
//! - Anything else well-formed (`BP04`, `BQ86`, `BS50`, `BV00`, `ZC20`, ...) is accepted
//!   without a fix.
//!
//! Position: `yyMMdd`, `A|V`, `ddmm.mmmm`, `N|S`, `dddmm.mmmm`, `E|W`, speed km/h (5 chars,
//! `000.0`), `hhmmss` UTC, course (6 chars), then optionally 8 status characters (charge,
//! ignition, three I/O nibbles, fuel) and `L` with the odometer in hex, e.g.
//! `(088045133878BR00130228A5124.5526N00117.7152W000.0233614352.2200000000L01B0CF1C)`.

use std::collections::BTreeMap;

use super::fix::{
    leading_blank, nmea_coord, noise, text_frame, unix_ms, Attr, Fix, FrameError, Kind, Message,
    Step,
};
use super::nmea::time_of_day;

/// Decodes the next `(`...`)` frame.
pub fn decode(buf: &[u8], max_line: usize) -> Step {
    if let Some(skip) = leading_blank(buf) {
        return skip;
    }
    if !buf.is_empty() && buf[0] != b'(' {
        return noise(buf, b"(", b')', max_line);
    }
    match text_frame(buf, |b| b == b')', max_line) {
        Err(e) => Step::Fatal(e),
        Ok(None) => Step::Incomplete,
        Ok(Some((frame, len))) => Step::Frame {
            len,
            msg: frame_message(frame),
        },
    }
}

fn frame_message(frame: &[u8]) -> Result<Message, FrameError> {
    let text = std::str::from_utf8(frame).map_err(|_| FrameError::Malformed)?;
    let body = text.strip_prefix('(').ok_or(FrameError::Malformed)?;
    let id_len = body.bytes().take_while(u8::is_ascii_digit).count();
    if !(8..=16).contains(&id_len) || body.len() < id_len + 4 {
        return Err(FrameError::Malformed);
    }
    let (id, rest) = body.split_at(id_len);
    let (command, data) = rest.split_at_checked(4).ok_or(FrameError::Malformed)?;
    let c = command.as_bytes();
    if !(c[0].is_ascii_uppercase()
        && c[1].is_ascii_uppercase()
        && c[2..].iter().all(u8::is_ascii_alphanumeric))
    {
        return Err(FrameError::Malformed);
    }
    let mut msg = Message {
        device_id: Some(id.to_string()),
        ..Message::new(Kind::Other)
    };
    match command {
        "BP00" => {
            msg.kind = Kind::Heartbeat;
            msg.reply = Some(format!("({id}AP01HSO)").into_bytes());
        }
        "BP05" => {
            msg.kind = Kind::Login;
            msg.reply = Some(format!("({id}AP05)").into_bytes());
            // The IMEI, then the position (Traccar's tests show devices that send none).
            if let Some((_, fix)) = position(data, command)? {
                msg.fixes.push(fix);
            }
        }
        "BR00" | "BR01" | "BR02" => {
            msg.kind = Kind::Location;
            let (_, fix) = position(data, command)?.ok_or(FrameError::Malformed)?;
            msg.fixes.push(fix);
        }
        "BO01" => {
            msg.kind = Kind::Alarm;
            let (prefix, mut fix) = position(data, command)?.ok_or(FrameError::Malformed)?;
            let alarm = prefix
                .chars()
                .next()
                .filter(char::is_ascii_digit)
                .ok_or(FrameError::Malformed)?;
            fix.attributes
                .insert("alarm".to_string(), Attr::Text(alarm.to_string()));
            msg.fixes.push(fix);
            msg.reply = Some(format!("({id}AS01{alarm})").into_bytes());
        }
        _ => {}
    }
    Ok(msg)
}

/// Finds the position block in `data` (after whatever precedes its date: an IMEI, an alarm
/// type): the prefix and the fix, `None` when there is no block at all.
fn position<'a>(data: &'a str, command: &str) -> Result<Option<(&'a str, Fix)>, FrameError> {
    let b = data.as_bytes();
    let start = (6..b.len()).find(|&p| {
        matches!(b[p], b'A' | b'V')
            && b[p - 6..p].iter().all(u8::is_ascii_digit)
            && b.get(p + 1).is_some_and(u8::is_ascii_digit)
    });
    let Some(p) = start else {
        return Ok(None);
    };
    let bad = || FrameError::Malformed;
    let date = &data[p - 6..p];
    let n = |s: &str| s.parse::<u32>().map_err(|_| bad());
    let (yy, mo, dd) = (n(&date[0..2])?, n(&date[2..4])?, n(&date[4..6])?);
    let valid = b[p] == b'A';
    let rest = &data[p + 1..];
    let ns = rest.find(['N', 'S']).ok_or_else(bad)?;
    let lat = nmea_coord(&rest[..ns], rest.as_bytes()[ns]).ok_or_else(bad)?;
    let rest = &rest[ns + 1..];
    let ew = rest.find(['E', 'W']).ok_or_else(bad)?;
    let lon = nmea_coord(&rest[..ew], rest.as_bytes()[ew]).ok_or_else(bad)?;
    let rest = &rest[ew + 1..];
    let speed = rest
        .get(..5)
        .ok_or_else(bad)?
        .trim()
        .parse::<f64>()
        .map_err(|_| bad())?;
    let tod = time_of_day(rest.get(5..11).ok_or_else(bad)?).ok_or_else(bad)?;
    let time_ms =
        unix_ms(2000 + i64::from(yy), mo, dd, 0, 0, 0, 0).ok_or_else(bad)? + i64::from(tod);
    let course = rest
        .get(11..17)
        .and_then(|c| c.trim().parse::<f64>().ok())
        .filter(|c| c.is_finite())
        .unwrap_or(0.0);
    let mut attributes = BTreeMap::new();
    attributes.insert("event".to_string(), Attr::Text(command.to_string()));
    if let Some(status) = rest
        .get(17..25)
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        attributes.insert("status".to_string(), Attr::Text(status.to_string()));
    }
    if let Some(odo) = rest.get(25..).and_then(|s| s.strip_prefix('L')) {
        if let Ok(v) = i64::from_str_radix(odo.trim_end_matches(')'), 16) {
            attributes.insert("odometer".to_string(), Attr::Int(v));
        }
    }
    Ok(Some((
        &data[..p - 6],
        Fix {
            time_ms,
            lat,
            lon,
            altitude: None,
            speed_kmh: speed.max(0.0),
            course,
            satellites: None,
            valid,
            attributes,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Message, FrameError> {
        crate::gps::fix::whole_frame(decode(bytes, 512), bytes.len())
    }

    #[test]
    fn a_command_cut_inside_a_multibyte_character_is_malformed() {
        // Found by the gps_stream fuzz target: the 4-byte command ended inside 'г'.
        let frame = "(027044702512BP0\u{433}SO)".as_bytes();
        assert_eq!(
            decode(frame, 1024),
            Step::Frame {
                len: frame.len(),
                msg: Err(FrameError::Malformed)
            }
        );
    }

    #[test]
    fn login_is_answered_ap05() {
        let m = one(b"(035988863964BP05000035988863964110524A4241.7977N02318.7561E000.0123536356.5100000000L000946BB)").expect("login");
        assert_eq!(m.kind, Kind::Login);
        assert_eq!(m.device_id.as_deref(), Some("035988863964"));
        assert_eq!(m.reply.as_deref(), Some(&b"(035988863964AP05)"[..]));
        let f = &m.fixes[0];
        assert_eq!(
            f.time_ms,
            unix_ms(2011, 5, 24, 12, 35, 36, 0).expect("date")
        );
        assert!((f.lat - (42.0 + 41.7977 / 60.0)).abs() < 1e-9);
        assert!((f.lon - (23.0 + 18.7561 / 60.0)).abs() < 1e-9);
        assert_eq!((f.course, f.valid), (356.51, true));
        assert_eq!(f.attributes.get("odometer"), Some(&Attr::Int(0x946BB)));
    }

    #[test]
    fn the_issue_login_frame() {
        // The frame tallyd used to close the connection on.
        let m = one(b"(027044702512BP05000027044702512210101A5130.0000N00007.5000W012.3100000090.0000000000L00000000)").expect("login");
        assert_eq!(m.reply.as_deref(), Some(&b"(027044702512AP05)"[..]));
        let f = &m.fixes[0];
        assert!(f.lon < 0.0 && (f.speed_kmh - 12.3).abs() < 1e-9);
    }

    #[test]
    fn heartbeat_is_answered_ap01hso() {
        let m = one(b"(087073005534BP00HSO)").expect("heartbeat");
        assert_eq!((m.kind, m.fixes.len()), (Kind::Heartbeat, 0));
        assert_eq!(m.reply.as_deref(), Some(&b"(087073005534AP01HSO)"[..]));
    }

    #[test]
    fn positions_and_alarm() {
        assert_eq!(decode(b"\n\n(0", 512), Step::Skip(2));
        let m = one(
            b"(088045133878BR00130228A5124.5526N00117.7152W000.0233614352.2200000000L01B0CF1C)",
        )
        .expect("BR00");
        assert_eq!((m.kind, m.reply.clone()), (Kind::Location, None));
        assert_eq!(
            m.fixes[0].time_ms,
            unix_ms(2013, 2, 28, 23, 36, 14, 0).expect("date")
        );
        assert!(m.fixes[0].lon < 0.0);
        // An 11-digit id.
        let m =
            one(b"(01029131573BR00150428A3801.6382N02351.0159E000.0080729278.7800000000LEF9ECB9C)")
                .expect("11 digits");
        assert_eq!(m.device_id.as_deref(), Some("01029131573"));
        for cmd in ["BR01", "BR02"] {
            let f = format!(
                "(013012345678{cmd}130515A4843.9703N01907.6211E000.019232800000000000000L00009239)"
            );
            assert_eq!(one(f.as_bytes()).expect(cmd).fixes.len(), 1);
        }
        let m = one(
            b"(013666666666BO012110925A1234.5678N01234.5678W000.0025948118.7200000000L000024DE)",
        )
        .expect("alarm");
        assert_eq!(m.kind, Kind::Alarm);
        assert_eq!(m.reply.as_deref(), Some(&b"(013666666666AS012)"[..]));
        assert_eq!(
            m.fixes[0].attributes.get("alarm"),
            Some(&Attr::Text("2".into()))
        );
        // South and west, not valid.
        let m = one(
            b"(012345678901BR00130520V3439.9629S05826.3504W000.1175622323.8700000000L000450AC)",
        )
        .expect("south");
        let f = &m.fixes[0];
        assert!(f.lat < 0.0 && f.lon < 0.0 && !f.valid);
    }

    #[test]
    fn other_commands_and_bad_frames() {
        let m = one(b"(027028258309BQ86,0,05550c21b10d1d0f431008bd114c0ea5078400010007a100423932,161117005322,01000001)").expect("BQ86");
        assert_eq!((m.kind, m.reply), (Kind::Other, None));
        assert_eq!(
            one(b"(088045133878BR00130228A51)"),
            Err(FrameError::Malformed)
        );
        assert_eq!(one(b"(12BR00)"), Err(FrameError::Malformed));
        assert_eq!(one(b"(088045133878br00)"), Err(FrameError::Malformed));
        assert_eq!(decode(b"(0880451", 512), Step::Incomplete);
        assert_eq!(decode(&[b'('; 600], 512), Step::Fatal(FrameError::TooLong));
        let Step::Frame { len, msg } = decode(b"xx(0", 512) else {
            panic!("noise")
        };
        assert_eq!((len, msg), (2, Err(FrameError::Malformed)));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decode(&bytes, 200);
            let mut framed = b"(088045133878BR00".to_vec();
            framed.extend_from_slice(&bytes);
            framed.push(b')');
            let _ = decode(&framed, 500);
        }
    }
}
