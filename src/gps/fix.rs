//! What every decoder produces: the protocol, the decoded message (with its acknowledgement
//! bytes and its fixes) and the errors a frame can have. No I/O here; decoders are pure.

use std::collections::BTreeMap;

/// The tracker protocols spoken on the GPS port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// NMEA 0183 sentences (`$GPRMC`, ...).
    Nmea,
    /// H02 (`*HQ,...#` text frames and their binary `$` form).
    H02,
    /// GPS103 (Coban) text frames: `##,imei:`, `imei:...;` (called `tk103` before 0.x).
    Gps103,
    /// GT06 (Concox) binary frames.
    Gt06,
    /// Teltonika Codec 8, 8E and 16.
    Teltonika,
    /// TK103 parenthesised frames: `(<id:12><command:4>...)`.
    Tk103,
    /// Queclink @Track ASCII (`+RESP:GTFRI`, `+BUFF:`, `+ACK:GTHBD`).
    Queclink,
    /// Meitrack `$$` frames with length and checksum.
    Meitrack,
    /// The watch protocol: `[SG*id*len*UD,...]`, `[3G*...]`.
    Watch,
    /// OsmAnd / Traccar Client over HTTP (`gps.osmand_listen`), never on the TCP port.
    Osmand,
}

impl Protocol {
    /// How many protocols there are.
    pub const COUNT: usize = 10;

    /// Every protocol, in [`Protocol::index`] order.
    pub const ALL: [Protocol; Protocol::COUNT] = [
        Protocol::Nmea,
        Protocol::H02,
        Protocol::Gps103,
        Protocol::Gt06,
        Protocol::Teltonika,
        Protocol::Tk103,
        Protocol::Queclink,
        Protocol::Meitrack,
        Protocol::Watch,
        Protocol::Osmand,
    ];

    /// The lower-case name used in labels, logs and the API (`nmea`, `h02`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Nmea => "nmea",
            Protocol::H02 => "h02",
            Protocol::Gps103 => "gps103",
            Protocol::Gt06 => "gt06",
            Protocol::Teltonika => "teltonika",
            Protocol::Tk103 => "tk103",
            Protocol::Queclink => "queclink",
            Protocol::Meitrack => "meitrack",
            Protocol::Watch => "watch",
            Protocol::Osmand => "osmand",
        }
    }

    /// Position in [`Protocol::ALL`], for per-protocol counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A raw attribute value kept with a fix (status words, IO elements, alarm names).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Attr {
    /// A number (IO element values, status words).
    Int(i64),
    /// Text (alarm names, raw fields).
    Text(String),
    /// A fractional number (OsmAnd accuracy, battery level).
    Float(f64),
}

/// One position report. Units are fixed across protocols: degrees (WGS84), metres, km/h,
/// degrees clockwise from true north; `time_ms` is Unix milliseconds UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct Fix {
    /// The device's time of the position, Unix milliseconds UTC.
    pub time_ms: i64,
    /// Latitude in degrees, north positive.
    pub lat: f64,
    /// Longitude in degrees, east positive.
    pub lon: f64,
    /// Altitude in metres; `None` when the protocol does not carry it.
    pub altitude: Option<f64>,
    /// Ground speed in km/h.
    pub speed_kmh: f64,
    /// Heading in degrees clockwise from true north.
    pub course: f64,
    /// Satellites used; `None` when the protocol does not report them.
    pub satellites: Option<u32>,
    /// The device's own judgement (NMEA/H02/TK103 `A`, GT06 "GPS fixed", Teltonika satellites > 0).
    pub valid: bool,
    /// Protocol-specific values kept as sent, by name.
    pub attributes: BTreeMap<String, Attr>,
}

/// What a message is, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The device identifies itself.
    Login,
    /// A keep-alive or status report without a position.
    Heartbeat,
    /// A position report.
    Location,
    /// An alarm (SOS, power cut, ...), with the position when the device sent one.
    Alarm,
    /// Understood but carries no position (LBS-only, command replies, unsupported types).
    Other,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The device identity when the message carries it (logins, and every text-protocol frame).
    pub device_id: Option<String>,
    /// What the message is.
    pub kind: Kind,
    /// The positions it carries (a Teltonika packet carries many).
    pub fixes: Vec<Fix>,
    /// Bytes the device waits for, if any. Sent after the fixes are stored (see server.rs).
    pub reply: Option<Vec<u8>>,
}

impl Message {
    /// A message of `kind` with no identity, fixes or reply.
    pub fn new(kind: Kind) -> Message {
        Message {
            device_id: None,
            kind,
            fixes: Vec::new(),
            reply: None,
        }
    }
}

/// Why a frame was rejected. `as_label` gives the `reason` tag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Checksum or CRC does not match the content.
    Checksum,
    /// The frame does not follow the grammar.
    Malformed,
    /// Longer than `gps.max_frame_bytes` / `gps.max_line_bytes`.
    TooLong,
    /// Well-formed but of a kind this server does not decode.
    Unsupported,
    /// A position arrived before the device identified itself.
    Unidentified,
}

impl FrameError {
    /// Every error, in [`FrameError::index`] order.
    pub const ALL: [FrameError; 5] = [
        FrameError::Checksum,
        FrameError::Malformed,
        FrameError::TooLong,
        FrameError::Unsupported,
        FrameError::Unidentified,
    ];

    /// The `reason` tag value (`bad_checksum`, `malformed`, ...).
    pub fn as_label(self) -> &'static str {
        match self {
            FrameError::Checksum => "bad_checksum",
            FrameError::Malformed => "malformed",
            FrameError::TooLong => "too_long",
            FrameError::Unsupported => "unsupported",
            FrameError::Unidentified => "unidentified",
        }
    }

    /// Position in [`FrameError::ALL`], for per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_label())
    }
}

/// One step of decoding a byte stream.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Not a whole frame yet.
    Incomplete,
    /// A whole frame of `len` bytes was consumed, good or bad.
    Frame {
        /// Bytes consumed, terminator included.
        len: usize,
        /// The decoded message, or why the frame is invalid.
        msg: Result<Message, FrameError>,
    },
    /// `len` bytes that are not a message (blank lines, a Teltonika ping byte).
    Skip(usize),
    /// The stream cannot be resynchronised (binary framing lost, or a frame over the limit).
    Fatal(FrameError),
}

/// For decoders' unit tests: `step` must be one frame of `len` bytes; its message.
#[cfg(test)]
pub fn whole_frame(step: Step, len: usize) -> Result<Message, FrameError> {
    match step {
        Step::Frame { len: n, msg } => {
            assert_eq!(n, len, "frame length");
            msg
        }
        other => panic!("not one whole frame: {other:?}"),
    }
}

/// Leading whitespace (line ends after a frame) as one skip, whatever follows, so that where
/// TCP cut the stream does not change where the next frame is measured from.
pub fn leading_blank(buf: &[u8]) -> Option<Step> {
    let blank = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
    (blank > 0).then_some(Step::Skip(blank))
}

/// Bytes that start no frame (the rest of a frame cut short, line noise) as one malformed
/// frame: up to the next byte in `starts`, or through the next `close`. It waits for either
/// (at most `max_line` bytes), so that it counts once however TCP cut it.
pub fn noise(buf: &[u8], starts: &[u8], close: u8, max_line: usize) -> Step {
    let len = match buf.iter().position(|b| *b == close || starts.contains(b)) {
        Some(p) if buf[p] == close => p + 1,
        Some(p) => p,
        None if buf.len() > max_line => buf.len(),
        None => return Step::Incomplete,
    };
    Step::Frame {
        len,
        msg: Err(FrameError::Malformed),
    }
}

/// Finds the next text frame ending at a byte for which `is_end` holds. Returns the frame
/// without its terminator and without surrounding whitespace, and the bytes consumed; `None`
/// when no terminator has arrived yet. A frame longer than `max` (or `max` bytes without a
/// terminator) is `Err(TooLong)`.
pub fn text_frame(
    buf: &[u8],
    is_end: impl Fn(u8) -> bool,
    max: usize,
) -> Result<Option<(&[u8], usize)>, FrameError> {
    let window = &buf[..buf.len().min(max.saturating_add(1))];
    match window.iter().position(|&b| is_end(b)) {
        Some(p) => Ok(Some((window[..p].trim_ascii(), p + 1))),
        None if buf.len() > max => Err(FrameError::TooLong),
        None => Ok(None),
    }
}

/// The decimal digits of packed BCD bytes (two per byte, high nibble first), or None when a
/// nibble is not a digit. GT06 IMEIs and H02 binary frames are packed this way.
pub fn bcd_digits(bytes: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 10)?);
        }
    }
    Some(out)
}

/// Knots to km/h (exact by definition of the nautical mile).
pub const KNOT_KMH: f64 = 1.852;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
/// Hand-written because it is the only calendar arithmetic decoders need.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds for a UTC date and time, or None when a field is out of range.
pub fn unix_ms(year: i64, month: u32, day: u32, h: u32, m: u32, s: u32, ms: u32) -> Option<i64> {
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || s > 60
        || ms > 999
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(
        ((days * 86_400 + i64::from(h) * 3600 + i64::from(m) * 60 + i64::from(s)) * 1000)
            + i64::from(ms),
    )
}

/// The UTC calendar date and time of `unix_ms`: year, month, day, hour, minute, second and
/// millisecond.
pub fn civil(unix_ms: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let days = unix_ms.div_euclid(86_400_000);
    let rem = unix_ms.rem_euclid(86_400_000);
    // civil_from_days, the inverse of days_from_civil.
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    )
}

const DAY_MS: i64 = 86_400_000;

/// The UTC time `tod_ms` after midnight on the day (of the local date, or one either side)
/// that puts it nearest `local_ms`: no time zone is more than 14 hours from UTC.
pub fn nearest_day(local_ms: i64, tod_ms: i64) -> i64 {
    let day = local_ms.div_euclid(DAY_MS) * DAY_MS;
    [day - DAY_MS, day, day + DAY_MS]
        .into_iter()
        .map(|d| d + tod_ms)
        .min_by_key(|t| (t - local_ms).abs())
        .unwrap_or(day + tod_ms)
}

/// RFC 3339 UTC with milliseconds, e.g. `2021-07-13T10:40:00.000Z`.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let (y, m, d, h, mi, s, ms) = civil(unix_ms);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// `ddmm.mmmm` (or `dddmm.mmmm`) and a hemisphere letter to signed degrees.
pub fn nmea_coord(raw: &str, hemi: u8) -> Option<f64> {
    let dot = raw.find('.').unwrap_or(raw.len());
    if dot < 3 || !raw.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let deg: f64 = raw[..dot - 2].parse().ok()?;
    let min: f64 = raw[dot - 2..].parse().ok()?;
    if min >= 60.0 {
        return None;
    }
    let v = deg + min / 60.0;
    let (v, limit) = match hemi {
        b'N' => (v, 90.0),
        b'S' => (-v, 90.0),
        b'E' => (v, 180.0),
        b'W' => (-v, 180.0),
        _ => return None,
    };
    (v.abs() <= limit).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_bcd() {
        assert_eq!(bcd_digits(&[0x08, 0x63, 0x58]).as_deref(), Some("086358"));
        assert_eq!(bcd_digits(&[]).as_deref(), Some(""));
        // A nibble above 9 in either half is not BCD.
        assert_eq!(bcd_digits(&[0x12, 0x3a]), None);
        assert_eq!(bcd_digits(&[0xa1]), None);
    }

    #[test]
    fn calendar_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(unix_ms(2021, 7, 13, 10, 40, 0, 0), Some(1_626_172_800_000));
        assert_eq!(rfc3339_ms(1_626_172_800_123), "2021-07-13T10:40:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(unix_ms(2021, 13, 1, 0, 0, 0, 0), None);
    }

    #[test]
    fn coordinates() {
        let v = nmea_coord("4916.45", b'N').expect("lat");
        assert!((v - (49.0 + 16.45 / 60.0)).abs() < 1e-12);
        let v = nmea_coord("12311.12", b'W').expect("lon");
        assert!((v + (123.0 + 11.12 / 60.0)).abs() < 1e-12);
        assert_eq!(nmea_coord("4960.00", b'N'), None);
        assert_eq!(nmea_coord("9100.00", b'N'), None);
        assert_eq!(nmea_coord("12.5", b'N'), None);
        assert_eq!(nmea_coord("4916.45", b'X'), None);
    }
}
