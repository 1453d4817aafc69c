//! NMEA 0183 sentences on a plain TCP stream: `$GPRMC`/`$GNRMC` (positions) and
//! `$GPGGA`/`$GNGGA` (altitude, satellites, and positions of their own), one sentence per line.
//!
//! Sentence: `$<talker:2><type:3>,<fields>*<hh>\r\n`, where `hh` is the XOR of every byte
//! between `$` and `*` in two hex digits (NMEA 0183; the Traccar client documentation at
//! traccar.org/docs/client.jsp shows `$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68`).
//! A checksum that is present is verified; many receivers send none, which is accepted unless
//! `gps.nmea_require_checksum` is set.
//!
//! Plain NMEA carries no device identity. A device names itself with `$PGID,<id>*hh` (the
//! login sentence of the old Traccar client) at any point, or puts its id before every
//! sentence (`660420156A0066AA$GPRMC,...`); until it does, its id is `nmea:<ip>:<port>` of the
//! connection (see `server.rs`). Other well-formed sentences (GSA, GSV, VTG, ...) are accepted
//! and ignored.
//!
//! GGA has no date. Its altitude and satellite count are attached to the RMC of the same
//! second. A GGA that no RMC of its second follows (the next GGA or RMC is of another second)
//! becomes a point of its own; a receiver that sends two GGAs without an RMC between is taken
//! as GGA-only, and its GGAs become points at once. A GGA's date is that of the last position
//! of the connection (RMC or GGA), else the receive date, whichever day puts its time nearest
//! (so a fix at 23:59:59 received at 00:00:01 is dated the day before). GGA fix quality 0 is
//! an invalid fix; speed and course are 0, the `source` attribute is `gga`.

use std::collections::BTreeMap;

use nom::bytes::complete::{take_till1, take_while_m_n};
use nom::character::complete::char;
use nom::combinator::{all_consuming, map_res};
use nom::sequence::{preceded, separated_pair};
use nom::IResult;

use super::fix::{
    nearest_day, nmea_coord, text_frame, unix_ms, Attr, Fix, FrameError, Kind, Message, Step,
    KNOT_KMH,
};

/// Connection state: the last GGA waiting for its RMC, and the date reference.
#[derive(Debug, Default)]
pub struct Nmea {
    pending_gga: Option<Gga>,
    /// Two GGAs came without an RMC between: GGAs are points at once.
    gga_only: bool,
    /// Time of the connection's last position, Unix ms, to date GGAs.
    last_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Gga {
    /// Milliseconds since midnight UTC.
    tod_ms: u32,
    altitude: Option<f64>,
    satellites: Option<u32>,
    quality: u32,
    /// Latitude and longitude, when the sentence has them.
    position: Option<(f64, f64)>,
}

impl Nmea {
    /// Decodes the next line of `buf`, received at `now_ms`; `require_checksum` refuses
    /// sentences without `*hh`.
    pub fn decode(
        &mut self,
        buf: &[u8],
        max_line: usize,
        now_ms: i64,
        require_checksum: bool,
    ) -> Step {
        match text_frame(buf, |b| b == b'\n', max_line) {
            Err(e) => Step::Fatal(e),
            Ok(None) => Step::Incomplete,
            Ok(Some((&[], len))) => Step::Skip(len),
            Ok(Some((line, len))) => Step::Frame {
                len,
                msg: self.sentence(line, now_ms, require_checksum),
            },
        }
    }

    fn sentence(
        &mut self,
        line: &[u8],
        now_ms: i64,
        require_checksum: bool,
    ) -> Result<Message, FrameError> {
        let dollar = line
            .iter()
            .position(|&b| b == b'$')
            .ok_or(FrameError::Malformed)?;
        let prefix = std::str::from_utf8(&line[..dollar]).map_err(|_| FrameError::Malformed)?;
        if !prefix.is_empty() && !valid_id(prefix) {
            return Err(FrameError::Malformed);
        }
        let (body, sum) = split_sentence(&line[dollar..], require_checksum)?;
        if sum.is_some_and(|sum| body.iter().fold(0u8, |a, b| a ^ b) != sum) {
            return Err(FrameError::Checksum);
        }
        let text = std::str::from_utf8(body).map_err(|_| FrameError::Malformed)?;
        let mut fields = text.split(',');
        let address = fields.next().unwrap_or_default();
        let fields: Vec<&str> = fields.collect();
        let mut msg = match address {
            "PGID" => {
                let id = fields.first().copied().unwrap_or_default();
                if !valid_id(id) {
                    return Err(FrameError::Malformed);
                }
                return Ok(Message {
                    device_id: Some(id.to_string()),
                    ..Message::new(Kind::Login)
                });
            }
            a if a.len() == 5 && a.get(2..) == Some("RMC") => self.rmc(&fields, now_ms)?,
            a if a.len() == 5 && a.get(2..) == Some("GGA") => self.gga(gga(&fields)?, now_ms),
            a if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Message::new(Kind::Other)
            }
            _ => return Err(FrameError::Malformed),
        };
        if !prefix.is_empty() {
            msg.device_id = Some(prefix.to_string());
        }
        Ok(msg)
    }

    /// A GGA: held for its RMC, or a point of its own (see the module documentation).
    fn gga(&mut self, g: Gga, now_ms: i64) -> Message {
        let mut fixes = Vec::new();
        if let Some(prev) = self.pending_gga.take() {
            // No RMC came for the previous one: this receiver sends GGA only.
            self.gga_only = true;
            fixes.extend(self.gga_fix(prev, now_ms));
        }
        if self.gga_only {
            fixes.extend(self.gga_fix(g, now_ms));
            // Without coordinates: a position report without a fix.
            return Message {
                fixes,
                ..Message::new(Kind::Location)
            };
        }
        self.pending_gga = Some(g);
        Message::new(Kind::Other)
    }

    /// The fix of a GGA that stands alone, dated from the connection's last position or
    /// `now_ms`; `None` when it has no coordinates.
    fn gga_fix(&mut self, g: Gga, now_ms: i64) -> Option<Fix> {
        let (lat, lon) = g.position?;
        let time_ms = nearest_day(self.last_ms.unwrap_or(now_ms), i64::from(g.tod_ms));
        self.last_ms = Some(time_ms);
        let mut attributes = BTreeMap::new();
        attributes.insert("source".to_string(), Attr::Text("gga".to_string()));
        attributes.insert("fix_quality".to_string(), Attr::Int(i64::from(g.quality)));
        Some(Fix {
            time_ms,
            lat,
            lon,
            altitude: g.altitude,
            speed_kmh: 0.0,
            course: 0.0,
            satellites: g.satellites,
            valid: g.quality > 0,
            attributes,
        })
    }

    /// RMC: time, status, lat, N/S, lon, E/W, speed (knots), course, date (ddmmyy), ...
    /// An RMC without coordinates (no fix yet) is a position report with no fix.
    fn rmc(&mut self, f: &[&str], now_ms: i64) -> Result<Message, FrameError> {
        if f.len() < 9 {
            return Err(FrameError::Malformed);
        }
        self.gga_only = false;
        let status = f[1];
        let tod_ms = time_of_day(f[0]);
        let mut fixes = Vec::new();
        // A held GGA of another second had no RMC: a point of its own.
        if let Some(g) = self.pending_gga.filter(|g| Some(g.tod_ms) != tod_ms) {
            self.pending_gga = None;
            fixes.extend(self.gga_fix(g, now_ms));
        }
        if f[2].is_empty() && f[4].is_empty() {
            return if status == "V" {
                Ok(Message {
                    fixes,
                    ..Message::new(Kind::Location)
                })
            } else {
                Err(FrameError::Malformed)
            };
        }
        let tod_ms = tod_ms.ok_or(FrameError::Malformed)?;
        let (d, mo, y) = ddmmyy(f[8]).ok_or(FrameError::Malformed)?;
        let time_ms =
            unix_ms(y, mo, d, 0, 0, 0, 0).ok_or(FrameError::Malformed)? + i64::from(tod_ms);
        let lat = nmea_coord(f[2], hemisphere(f[3])?).ok_or(FrameError::Malformed)?;
        let lon = nmea_coord(f[4], hemisphere(f[5])?).ok_or(FrameError::Malformed)?;
        let speed = number_or_zero(f[6])?;
        let course = number_or_zero(f[7])?;
        // NMEA 2.3 adds a mode indicator (A/D/E/M/S/N) after the magnetic variation; N = no fix.
        let mode_ok = f.get(11).is_none_or(|m| !m.starts_with('N'));
        let mut attributes = BTreeMap::new();
        attributes.insert("status".to_string(), Attr::Text(status.to_string()));
        let mut fix = Fix {
            time_ms,
            lat,
            lon,
            altitude: None,
            speed_kmh: speed * KNOT_KMH,
            course,
            satellites: None,
            valid: status == "A" && mode_ok,
            attributes,
        };
        if let Some(g) = self.pending_gga.take().filter(|g| g.tod_ms == tod_ms) {
            fix.altitude = g.altitude;
            fix.satellites = g.satellites;
            fix.attributes
                .insert("fix_quality".to_string(), Attr::Int(i64::from(g.quality)));
        }
        self.last_ms = Some(time_ms);
        fixes.push(fix);
        Ok(Message {
            fixes,
            ..Message::new(Kind::Location)
        })
    }
}

/// `$` body `*` two hex digits, nothing after; without `*hh` when `require` is false.
fn split_sentence(line: &[u8], require: bool) -> Result<(&[u8], Option<u8>), FrameError> {
    fn parser(i: &[u8]) -> IResult<&[u8], (&[u8], u8)> {
        all_consuming(preceded(
            char('$'),
            separated_pair(take_till1(|b| b == b'*' || b == b'$'), char('*'), hex_byte),
        ))(i)
    }
    if let Ok((_, (body, sum))) = parser(line) {
        return Ok((body, Some(sum)));
    }
    match line {
        [b'$', body @ ..]
            if !require && !body.is_empty() && !body.contains(&b'*') && !body.contains(&b'$') =>
        {
            Ok((body, None))
        }
        _ => Err(FrameError::Malformed),
    }
}

fn hex_byte(i: &[u8]) -> IResult<&[u8], u8> {
    map_res(
        take_while_m_n(2, 2, |b: u8| b.is_ascii_hexdigit()),
        |h: &[u8]| u8::from_str_radix(std::str::from_utf8(h).unwrap_or("x"), 16),
    )(i)
}

/// GGA: time, lat, N/S, lon, E/W, quality, satellites, hdop, altitude, M, ...
fn gga(f: &[&str]) -> Result<Gga, FrameError> {
    if f.len() < 9 {
        return Err(FrameError::Malformed);
    }
    let tod_ms = time_of_day(f[0]).ok_or(FrameError::Malformed)?;
    let quality = if f[5].is_empty() {
        0
    } else {
        f[5].parse().map_err(|_| FrameError::Malformed)?
    };
    let satellites = if f[6].is_empty() {
        None
    } else {
        Some(f[6].parse().map_err(|_| FrameError::Malformed)?)
    };
    let altitude = if f[8].is_empty() {
        None
    } else {
        Some(f[8].parse().map_err(|_| FrameError::Malformed)?)
    };
    let position = if f[1].is_empty() && f[3].is_empty() {
        None
    } else {
        Some((
            nmea_coord(f[1], hemisphere(f[2])?).ok_or(FrameError::Malformed)?,
            nmea_coord(f[3], hemisphere(f[4])?).ok_or(FrameError::Malformed)?,
        ))
    };
    Ok(Gga {
        tod_ms,
        altitude,
        satellites,
        quality,
        position,
    })
}

fn hemisphere(s: &str) -> Result<u8, FrameError> {
    match s.as_bytes() {
        [h] => Ok(*h),
        _ => Err(FrameError::Malformed),
    }
}

fn number_or_zero(s: &str) -> Result<f64, FrameError> {
    if s.is_empty() {
        return Ok(0.0);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(FrameError::Malformed),
    }
}

/// `hhmmss` or `hhmmss.sss` to milliseconds since midnight.
pub fn time_of_day(s: &str) -> Option<u32> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    if hms.len() != 6
        || !hms.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| hms[r].parse::<u32>().ok();
    let (h, m, sec) = (n(0..2)?, n(2..4)?, n(4..6)?);
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let ms = match frac.len() {
        0 => 0,
        1 => frac.parse::<u32>().ok()? * 100,
        2 => frac.parse::<u32>().ok()? * 10,
        _ => frac[..3].parse::<u32>().ok()?,
    };
    Some(((h * 60 + m) * 60 + sec) * 1000 + ms)
}

/// `ddmmyy` to (day, month, year); two-digit years below 80 are 20xx.
pub fn ddmmyy(s: &str) -> Option<(u32, u32, i64)> {
    if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let yy = i64::from(n(4..6)?);
    Some((
        n(0..2)?,
        n(2..4)?,
        if yy < 80 { 2000 + yy } else { 1900 + yy },
    ))
}

/// A device id from the wire: 1 to 64 of `[A-Za-z0-9_.:-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2021-07-13T10:40:05Z.
    const NOW: i64 = 1_626_172_805_000;

    /// Builds a sentence from its body: `$`, body, `*`, XOR of the body in hex, CR LF.
    fn sentence(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |a, b| a ^ b);
        format!("${body}*{sum:02X}\r\n").into_bytes()
    }

    fn one(n: &mut Nmea, bytes: &[u8]) -> Result<Message, FrameError> {
        match n.decode(bytes, 200, NOW, true) {
            Step::Frame { len, msg } => {
                assert_eq!(len, bytes.len());
                msg
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn published_rmc_example() {
        let line = b"$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*68\r\n";
        let msg = one(&mut Nmea::default(), line).expect("valid");
        assert_eq!(msg.kind, Kind::Location);
        let f = &msg.fixes[0];
        assert_eq!(
            f.time_ms,
            unix_ms(1994, 11, 19, 22, 54, 46, 0).expect("date")
        );
        assert!((f.lat - 49.274_166_666).abs() < 1e-6);
        assert!((f.lon + 123.185_333_333).abs() < 1e-6);
        assert!((f.speed_kmh - 0.5 * 1.852).abs() < 1e-9);
        assert_eq!(f.course, 54.7);
        assert!(f.valid);
    }

    #[test]
    fn checksum_is_verified() {
        let line = b"$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E*69\r\n";
        assert_eq!(one(&mut Nmea::default(), line), Err(FrameError::Checksum));
        let missing = b"$GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E\r\n";
        assert_eq!(
            one(&mut Nmea::default(), missing),
            Err(FrameError::Malformed)
        );
    }

    #[test]
    fn gga_then_rmc_of_the_same_second_merge() {
        let mut n = Nmea::default();
        let gga = sentence("GNGGA,104000.00,2235.1777,N,11357.8913,E,1,09,0.9,545.4,M,46.9,M,,");
        assert_eq!(one(&mut n, &gga).expect("gga").fixes.len(), 0);
        let rmc = sentence("GNRMC,104000.00,A,2235.1777,N,11357.8913,E,10.0,235.0,130721,,,A");
        let msg = one(&mut n, &rmc).expect("rmc");
        let f = &msg.fixes[0];
        assert_eq!(f.time_ms, unix_ms(2021, 7, 13, 10, 40, 0, 0).expect("date"));
        assert_eq!((f.altitude, f.satellites), (Some(545.4), Some(9)));
        assert!((f.speed_kmh - 18.52).abs() < 1e-9);
        // A GGA of another second is not attached.
        one(
            &mut n,
            &sentence("GPGGA,104001,2235.1777,N,11357.8913,E,1,09,0.9,545.4,M,46.9,M,,"),
        )
        .expect("gga");
        let msg = one(
            &mut n,
            &sentence("GPRMC,104002,A,2235.1777,N,11357.8913,E,0,0,130721,,"),
        )
        .expect("rmc");
        // The GGA of 10:40:01 had no RMC: it is a point of its own, before the RMC's.
        assert_eq!(msg.fixes.len(), 2);
        assert_eq!(
            msg.fixes[0].attributes.get("source"),
            Some(&Attr::Text("gga".into()))
        );
        assert_eq!(
            msg.fixes[0].time_ms,
            unix_ms(2021, 7, 13, 10, 40, 1, 0).expect("date")
        );
        assert_eq!(msg.fixes[1].altitude, None);
    }

    #[test]
    fn gga_only_receivers_deliver_every_fix() {
        let mut n = Nmea::default();
        let gga = |t: &str| {
            sentence(&format!(
                "GPGGA,{t},2235.1777,N,11357.8913,E,1,09,0.9,545.4,M,46.9,M,,"
            ))
        };
        // The first is held for an RMC that never comes; the second shows the receiver
        // sends GGA only: both become points, and every later one at once.
        let first = one(&mut n, &gga("104000")).expect("gga");
        assert_eq!((first.kind, first.fixes.len()), (Kind::Other, 0));
        let second = one(&mut n, &gga("104001")).expect("gga");
        let times: Vec<i64> = second.fixes.iter().map(|f| f.time_ms).collect();
        assert_eq!(
            times,
            [
                unix_ms(2021, 7, 13, 10, 40, 0, 0).expect("d"),
                unix_ms(2021, 7, 13, 10, 40, 1, 0).expect("d")
            ]
        );
        let f = &second.fixes[1];
        assert_eq!(
            (f.altitude, f.satellites, f.valid),
            (Some(545.4), Some(9), true)
        );
        assert_eq!(one(&mut n, &gga("104002")).expect("gga").fixes.len(), 1);
        // No fix (quality 0, no coordinates): a position report without a fix.
        let none = one(&mut n, &sentence("GPGGA,104003,,,,,0,00,,,M,,M,,")).expect("no fix");
        assert_eq!((none.kind, none.fixes.len()), (Kind::Location, 0));
    }

    #[test]
    fn gga_dates_across_midnight() {
        let gga = |t: &str| {
            sentence(&format!(
                "GPGGA,{t},2235.1777,N,11357.8913,E,1,09,0.9,545.4,M,46.9,M,,"
            ))
        };
        // Received just after midnight, the fix of 23:59:59 is of the day before.
        let after_midnight = unix_ms(2021, 7, 14, 0, 0, 1, 0).expect("d");
        let mut n = Nmea::default();
        let mut line = |b: &[u8]| match n.decode(b, 200, after_midnight, true) {
            Step::Frame { msg, .. } => msg.expect("valid"),
            other => panic!("{other:?}"),
        };
        line(&gga("235958"));
        let m = line(&gga("235959"));
        assert_eq!(
            m.fixes[1].time_ms,
            unix_ms(2021, 7, 13, 23, 59, 59, 0).expect("d")
        );
        // And from the last position on: the next second is the next day.
        let m = line(&gga("000000"));
        assert_eq!(
            m.fixes[0].time_ms,
            unix_ms(2021, 7, 14, 0, 0, 0, 0).expect("d")
        );
        // After an RMC, its date is the reference.
        let mut n = Nmea::default();
        let rmc = sentence("GPRMC,235959,A,2235.1777,N,11357.8913,E,0,0,010120,,");
        assert!(matches!(
            n.decode(&rmc, 200, NOW, true),
            Step::Frame { msg: Ok(_), .. }
        ));
        for t in ["000001", "000002"] {
            let _ = n.decode(&gga(t), 200, NOW, true);
        }
        let Step::Frame { msg: Ok(m), .. } = n.decode(&gga("000003"), 200, NOW, true) else {
            panic!("gga")
        };
        assert_eq!(
            m.fixes[0].time_ms,
            unix_ms(2020, 1, 2, 0, 0, 3, 0).expect("d")
        );
    }

    #[test]
    fn device_id_prefix_and_checksum_less_sentences() {
        let body = "GPRMC,104000,A,2235.1777,N,11357.8913,E,0,0,130721,,";
        let mut prefixed = b"660420156A0066AA".to_vec();
        prefixed.extend(sentence(body));
        let m = one(&mut Nmea::default(), &prefixed).expect("prefixed");
        assert_eq!(m.device_id.as_deref(), Some("660420156A0066AA"));
        assert_eq!(m.fixes.len(), 1);
        let bare = format!("${body}\r\n").into_bytes();
        let mut n = Nmea::default();
        let Step::Frame { msg, .. } = n.decode(&bare, 200, NOW, false) else {
            panic!("line")
        };
        assert_eq!(msg.expect("accepted").fixes.len(), 1);
        assert_eq!(
            one(&mut n, &bare),
            Err(FrameError::Malformed),
            "refused when required"
        );
        assert_eq!(
            one(&mut n, b"bad id!$GPRMC,1*00\r\n"),
            Err(FrameError::Malformed)
        );
    }

    #[test]
    fn rmc_without_fix_and_mode_n() {
        let mut n = Nmea::default();
        let msg = one(&mut n, &sentence("GPRMC,104000,V,,,,,,,130721,,,N")).expect("no fix yet");
        assert!(msg.fixes.is_empty());
        let msg = one(
            &mut n,
            &sentence("GPRMC,104000,A,2235.1777,N,11357.8913,E,0,0,130721,,,N"),
        )
        .expect("mode N");
        assert!(!msg.fixes[0].valid);
    }

    #[test]
    fn pgid_identifies_the_device() {
        let msg = one(&mut Nmea::default(), &sentence("PGID,123456789012345")).expect("login");
        assert_eq!(msg.kind, Kind::Login);
        assert_eq!(msg.device_id.as_deref(), Some("123456789012345"));
        assert_eq!(
            one(&mut Nmea::default(), &sentence("PGID,bad id")),
            Err(FrameError::Malformed)
        );
    }

    #[test]
    fn framing() {
        let mut n = Nmea::default();
        assert_eq!(n.decode(b"$GPRMC,2254", 200, NOW, true), Step::Incomplete);
        assert_eq!(n.decode(b"\r\n", 200, NOW, true), Step::Skip(2));
        assert_eq!(
            n.decode(&[b'x'; 300], 200, NOW, true),
            Step::Fatal(FrameError::TooLong)
        );
        assert!(matches!(
            one(&mut n, &sentence("GPGSV,1,1,00")),
            Ok(Message {
                kind: Kind::Other,
                ..
            })
        ));
        assert_eq!(one(&mut n, b"garbage\n"), Err(FrameError::Malformed));
        assert_eq!(
            one(&mut n, &sentence("GPRMC,99,A")),
            Err(FrameError::Malformed)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let mut n = Nmea::default();
            let _ = n.decode(&bytes, 200, NOW, false);
            let mut with_dollar = b"$GPRMC,".to_vec();
            with_dollar.extend_from_slice(&bytes);
            with_dollar.push(b'\n');
            let _ = n.decode(&with_dollar, 500, NOW, false);
        }
    }
}
