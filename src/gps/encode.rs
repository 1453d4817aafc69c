//! Server-to-device command frames and the device's answers, per protocol.
//!
//! What each protocol documents (as Traccar's encoders send them):
//! - **GT06** (Concox): the online command, packet 0x80:
//!   `78 78 | len | 80 | cmd_len | server_flag:u32 | ASCII command | serial:u16 | crc16 X25 | 0D 0A`,
//!   `cmd_len` counting the flag and the text. Locate is `WHERE#`, the interval `TIMER,<s>#`,
//!   custom text is sent as written. The device answers with packet 0x15
//!   (`78 78 | len | 15 | cmd_len | server_flag | text | serial | crc | 0D 0A`) or, on newer
//!   firmware, 0x21 in the long form (`79 79 | len:u16 | 21 | server_flag | encoding | text |
//!   serial | crc | 0D 0A`).
//! - **H02**: `*HQ,<id>,<cmd>,<HHMMSS>[,params]#`: the interval is `D1,<s>,1`, custom text is
//!   the `<cmd>[,params]` part. The device confirms with `*HQ,<id>,V4,<cmd>,...#`. No locate
//!   command is documented.
//! - **GPS103** (Coban, `imei:` frames): `**,imei:<imei>,B` (one position now),
//!   `**,imei:<imei>,C,<interval>` (`30s`, `05m`, `01h`), custom `**,imei:<imei>,<text>`.
//!   The protocol has no acknowledgement: the device's next frame counts as its answer.
//! - **Teltonika**: Codec 12, `00000000 | len:u32 | 0C | 01 | 05 | text_len:u32 | text | 01 |
//!   crc16 IBM as u32`; locate is `getgps`, custom text is sent as written; the answer is a
//!   Codec 12 packet of type 06. No single interval command is documented (the period is a set
//!   of parameters), so the interval is refused.
//! - **TK103** (parenthesised, `encode_more.rs`): `(<id>AP00)` one position now,
//!   `(<id>AR00<interval:4 hex>0000)` a report every interval seconds without a time limit
//!   (at most 0xFFFF s), custom `(<id><text>)`. The device answers locate with `BP04`/`BR01`
//!   (a position) and the interval with `BS08`: any frame but its unsolicited ones (`BP00`,
//!   `BP05`, `BR00`, `BR02`, `BO01`) is taken as the answer.
//! - **Queclink @Track**: locate is `AT+GTRTO=<password>,1,,,,,,<serial:4 hex>$` with the
//!   empty password Traccar sends (a device with a password takes the command as custom
//!   text, which is sent as written); the answer is `+ACK:GTRTO,...$` (`+ACK:<command>` for
//!   custom text). The reporting interval (`AT+GTFRI`) takes a model-specific list of
//!   parameters, so the interval is refused: send it as custom text.
//! - **Meitrack**: `@@<flag><length>,<imei>,<content>*<checksum>\r\n` (length and byte-sum
//!   checksum as the device's own `$$` frames); locate `A10`, answered by an `AAA` report with
//!   event 34; interval `A12,<tens of seconds>` (the document's "tracking by time
//!   interval"), answered `A12,OK`; custom text is the content, answered by its command code.
//! - **Watch**: `[<maker>*<id>*<length:4 hex>*<content>]` in the maker's framing the device
//!   uses (with its index field if its frames have one); locate `CR`, interval
//!   `UPLOAD,<seconds>`, custom text the content; the watch echoes the command's name.
//! - NMEA and OsmAnd connections take no commands over the socket (an OsmAnd device gets a
//!   custom command as the body of its next 200 answer, as Traccar does).

use super::encode_more as more;
pub use super::encode_more::Peer;
use super::fix::Protocol;
use super::gt06::CRC_ITU;
use super::teltonika::CRC_IBM;

/// What the operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// Report the position now.
    Locate,
    /// Report every `seconds`.
    Interval {
        /// The period, 1..=86400 seconds.
        seconds: u32,
    },
    /// Protocol-specific text, sent as written inside the protocol's command frame.
    Custom {
        /// The command (at most 200 printable ASCII characters).
        text: String,
    },
}

impl Kind {
    /// A short label for logs.
    pub fn label(&self) -> &'static str {
        match self {
            Kind::Locate => "locate",
            Kind::Interval { .. } => "interval",
            Kind::Custom { .. } => "custom",
        }
    }

    /// Checks the values an operator gave.
    ///
    /// # Errors
    /// What is wrong, for the 400 answer.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Kind::Interval { seconds } if !(1..=86_400).contains(seconds) => {
                Err("seconds must be between 1 and 86400".into())
            }
            Kind::Custom { text }
                if text.is_empty()
                    || text.len() > 200
                    || !text.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
            {
                Err("text must be 1 to 200 printable ASCII characters".into())
            }
            _ => Ok(()),
        }
    }
}

/// Whether `protocol` has a documented command for `kind` over its socket. Custom text that
/// holds the bytes framing the protocol's commands (`(`/`)` for TK103, `[`/`]` for watches,
/// `*` for Meitrack) cannot be sent whole and has none.
pub fn supported(protocol: Protocol, kind: &Kind) -> bool {
    if let Kind::Custom { text } = kind {
        if more::breaks_framing(protocol, text) {
            return false;
        }
    }
    match protocol {
        Protocol::Gt06 | Protocol::Gps103 | Protocol::Meitrack | Protocol::Watch => true,
        Protocol::H02 => !matches!(kind, Kind::Locate),
        Protocol::Teltonika | Protocol::Queclink => !matches!(kind, Kind::Interval { .. }),
        Protocol::Tk103 => !matches!(kind, Kind::Interval { seconds } if *seconds > 0xFFFF),
        Protocol::Osmand => matches!(kind, Kind::Custom { .. }),
        Protocol::Nmea => false,
    }
}

/// The frame that carries `kind` to `device` over `protocol`; `serial` numbers GT06 frames,
/// `now_ms` stamps H02 ones, `peer` frames watch ones. `None` when the protocol has no such
/// command.
pub fn encode(
    protocol: Protocol,
    device: &str,
    kind: &Kind,
    serial: u16,
    now_ms: i64,
    peer: &Peer,
) -> Option<Vec<u8>> {
    if !supported(protocol, kind) {
        return None;
    }
    match protocol {
        Protocol::Gt06 => Some(gt06(
            &match kind {
                Kind::Locate => "WHERE#".to_string(),
                Kind::Interval { seconds } => format!("TIMER,{seconds}#"),
                Kind::Custom { text } => text.clone(),
            },
            serial,
        )),
        Protocol::H02 => {
            let secs = now_ms.div_euclid(1000).rem_euclid(86_400);
            let hms = format!("{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60);
            let (cmd, params) = match kind {
                Kind::Interval { seconds } => ("D1".to_string(), format!(",{seconds},1")),
                Kind::Custom { text } => match text.split_once(',') {
                    Some((c, p)) => (c.to_string(), format!(",{p}")),
                    None => (text.clone(), String::new()),
                },
                Kind::Locate => return None,
            };
            Some(format!("*HQ,{device},{cmd},{hms}{params}#").into_bytes())
        }
        Protocol::Gps103 => Some(
            match kind {
                Kind::Locate => format!("**,imei:{device},B"),
                Kind::Interval { seconds } => {
                    format!("**,imei:{device},C,{}", gps103_interval(*seconds))
                }
                Kind::Custom { text } => format!("**,imei:{device},{text}"),
            }
            .into_bytes(),
        ),
        Protocol::Teltonika => Some(codec12(match kind {
            Kind::Custom { text } => text,
            _ => "getgps",
        })),
        Protocol::Tk103 => more::tk103(device, kind),
        Protocol::Queclink => more::queclink(kind, serial),
        Protocol::Meitrack => Some(more::meitrack(device, kind)),
        Protocol::Watch => Some(more::watch(device, kind, peer)),
        Protocol::Nmea | Protocol::Osmand => None,
    }
}

/// GPS103's interval notation: two digits and a unit (`30s`, `05m`, `01h`).
fn gps103_interval(seconds: u32) -> String {
    if seconds < 60 {
        format!("{seconds:02}s")
    } else if seconds < 3600 {
        format!("{:02}m", seconds / 60)
    } else {
        format!("{:02}h", seconds / 3600)
    }
}

/// A GT06 0x80 online command carrying `text`.
pub fn gt06(text: &str, serial: u16) -> Vec<u8> {
    let text = &text.as_bytes()[..text.len().min(200)];
    let mut f = vec![0x78, 0x78, (1 + 1 + 4 + text.len() + 2 + 2) as u8, 0x80];
    f.push((4 + text.len()) as u8);
    f.extend_from_slice(&[0, 0, 0, 1]);
    f.extend_from_slice(text);
    f.extend_from_slice(&serial.to_be_bytes());
    let crc = CRC_ITU.checksum(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(b"\r\n");
    f
}

/// A Teltonika Codec 12 command packet carrying `text`.
pub fn codec12(text: &str) -> Vec<u8> {
    let mut data = vec![0x0C, 0x01, 0x05];
    data.extend_from_slice(&(text.len() as u32).to_be_bytes());
    data.extend_from_slice(text.as_bytes());
    data.push(0x01);
    let mut f = vec![0, 0, 0, 0];
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(&data);
    f.extend_from_slice(&u32::from(CRC_IBM.checksum(&data)).to_be_bytes());
    f
}

/// A device's answer to a command found at the head of its connection's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Bytes the answer frame takes, removed before the decoder runs; 0 when the frame is an
    /// ordinary one the decoder must still see (GPS103's next frame).
    pub consumed: usize,
    /// The answer's text, for the API.
    pub text: String,
}

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect()
}

/// The answer at the head of `buf` from a device of `protocol` that has a command (`kind`, the
/// oldest sent) waiting for one; `None` when the head is no (complete) answer.
pub fn answer(protocol: Protocol, buf: &[u8], kind: &Kind) -> Option<Answer> {
    match protocol {
        Protocol::Gt06 => gt06_answer(buf),
        Protocol::H02 => {
            let end = buf.iter().position(|&b| b == b'#')?;
            let frame = &buf[..=end];
            let mut fields = frame.strip_prefix(b"*HQ,")?.split(|&b| b == b',');
            let _id = fields.next()?;
            (fields.next()? == b"V4").then(|| Answer {
                consumed: end + 1,
                text: text(frame),
            })
        }
        Protocol::Gps103 => {
            let end = buf.iter().position(|&b| b == b';')?;
            Some(Answer {
                consumed: 0,
                text: text(&buf[..=end]),
            })
        }
        Protocol::Teltonika => {
            if buf.len() < 12 || buf[..4] != [0, 0, 0, 0] {
                return None;
            }
            let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
            let total = 8 + len + 4;
            if len < 8 || buf.len() < total || buf[8] != 0x0C || buf[10] != 0x06 {
                return None;
            }
            let n = u32::from_be_bytes([buf[11], buf[12], buf[13], buf[14]]) as usize;
            let body = buf.get(15..15 + n).filter(|_| 15 + n <= 8 + len)?;
            Some(Answer {
                consumed: total,
                text: text(body),
            })
        }
        Protocol::Tk103 => more::tk103_answer(buf),
        Protocol::Queclink => more::queclink_answer(buf, kind),
        Protocol::Meitrack => more::meitrack_answer(buf, kind),
        Protocol::Watch => more::watch_answer(buf, kind),
        Protocol::Nmea | Protocol::Osmand => None,
    }
}

fn gt06_answer(buf: &[u8]) -> Option<Answer> {
    let (total, body) = match buf {
        [0x78, 0x78, len, 0x15, rest @ ..] => {
            let total = usize::from(*len) + 5;
            let cmd_len = usize::from(*rest.first()?);
            // cmd_len | flag:4 | text, within the frame before serial, crc and stop bits.
            let end = 5 + cmd_len;
            if cmd_len < 4 || end > total.checked_sub(6)? {
                return None;
            }
            (total, 9..end)
        }
        [0x79, 0x79, hi, lo, 0x21, ..] => {
            let total = usize::from(u16::from_be_bytes([*hi, *lo])) + 6;
            // type | flag:4 | encoding | text | serial | crc | stop
            if total < 16 {
                return None;
            }
            (total, 10..total - 6)
        }
        _ => return None,
    };
    if buf.len() < total || &buf[total - 2..total] != b"\r\n" {
        return None;
    }
    Some(Answer {
        consumed: total,
        text: text(&buf[body]),
    })
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
