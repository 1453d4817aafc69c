//! Command frames and answers of the text protocols added beside the first five: TK103
//! (parenthesised), Queclink @Track, Meitrack and the watch protocol. `encode.rs` dispatches
//! here; the protocol notes are in its module documentation.
//!
//! Every answer recognised here is a frame the protocol's decoder also reads (a position, an
//! acknowledgement it accepts without a fix), so none is consumed: [`Answer::consumed`] is 0.
//! Queclink, Meitrack and watch answers name the command they answer, and only that one is
//! taken; TK103 answers with codes of their own, so any frame but those the device sends
//! unasked (heartbeat, login, reports, alarms) is taken, and a report that crosses the command
//! on the wire is not mistaken for its answer.

use super::encode::{Answer, Kind};
use super::fix::Protocol;

/// What a connection's frames told about how the device wants its commands framed (the watch
/// protocol's maker code and whether its frames carry an index field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    maker: Option<String>,
    index: bool,
}

impl Peer {
    /// Learns from the frame at the head of `buf` (a watch frame; others are ignored).
    pub fn learn(&mut self, buf: &[u8]) {
        let Some(frame) = watch_frame(buf) else {
            return;
        };
        let mut parts = frame.splitn(5, '*');
        let (Some(maker), Some(_id), Some(third)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if maker.len() == 2 && maker.bytes().all(|b| b.is_ascii_alphanumeric()) {
            self.maker = Some(maker.to_string());
            // `[maker*id*index*len*content]`: two 4-hex fields in a row.
            let fourth = parts.next().unwrap_or_default();
            self.index = is_hex4(third) && is_hex4(fourth) && parts.next().is_some();
        }
    }
}

/// Whether custom `text` holds a byte that frames `protocol`'s commands.
pub fn breaks_framing(protocol: Protocol, text: &str) -> bool {
    let framing: &[char] = match protocol {
        Protocol::Tk103 => &['(', ')'],
        Protocol::Watch => &['[', ']'],
        Protocol::Meitrack => &['*'],
        _ => &[],
    };
    text.contains(framing)
}

fn is_hex4(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The text between `[` and `]` of a complete watch frame at the head of `buf`.
fn watch_frame(buf: &[u8]) -> Option<&str> {
    let body = buf.strip_prefix(b"[")?;
    let end = body.iter().position(|&b| b == b']')?;
    std::str::from_utf8(&body[..end]).ok()
}

/// TK103: `(<id>AP00)` locate, `(<id>AR00<interval:4 hex>0000)` report every interval seconds
/// with no time limit, custom `(<id><text>)`. The interval field holds at most 0xFFFF seconds.
pub fn tk103(device: &str, kind: &Kind) -> Option<Vec<u8>> {
    let body = match kind {
        Kind::Locate => "AP00".to_string(),
        Kind::Interval { seconds } => format!("AR00{:04X}0000", u16::try_from(*seconds).ok()?),
        Kind::Custom { text } => text.clone(),
    };
    Some(format!("({device}{body})").into_bytes())
}

/// Queclink: `AT+GTRTO=<password>,1,,,,,,<serial:4 hex>$` (real-time operation 1, "GPS":
/// report the position now), with the empty password Traccar sends; custom text as written.
pub fn queclink(kind: &Kind, serial: u16) -> Option<Vec<u8>> {
    match kind {
        Kind::Locate => Some(format!("AT+GTRTO=,1,,,,,,{serial:04X}$").into_bytes()),
        Kind::Custom { text } => Some(text.clone().into_bytes()),
        Kind::Interval { .. } => None,
    }
}

/// Meitrack: `@@<flag><length>,<imei>,<content>*<checksum>\r\n`, `length` counting from the
/// comma after it through `\r\n`, `checksum` the byte sum from `@@` through `*` modulo 256 in
/// two upper-case hex digits. Locate is `A10` (flag `Q`), the interval `A12,<tens of
/// seconds>` (flag `V`, rounded up, at least 1), custom text is the content (flag `C`).
pub fn meitrack(device: &str, kind: &Kind) -> Vec<u8> {
    let (flag, content) = match kind {
        Kind::Locate => ('Q', "A10".to_string()),
        Kind::Interval { seconds } => ('V', format!("A12,{}", seconds.div_ceil(10).max(1))),
        Kind::Custom { text } => ('C', text.clone()),
    };
    // `,` imei `,` content `*` checksum:2 `\r\n`
    let length = 1 + device.len() + 1 + content.len() + 1 + 2 + 2;
    let mut f = format!("@@{flag}{length:02},{device},{content}*").into_bytes();
    let sum = f.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    f.extend_from_slice(format!("{sum:02X}\r\n").as_bytes());
    f
}

/// Watch: `[<maker>*<id>*[0001*]<length:4 hex>*<content>]` in the maker's framing the device
/// uses (`CS` until it is known); locate is `CR`, the interval `UPLOAD,<seconds>`, custom text
/// the content.
pub fn watch(device: &str, kind: &Kind, peer: &Peer) -> Vec<u8> {
    let content = match kind {
        Kind::Locate => "CR".to_string(),
        Kind::Interval { seconds } => format!("UPLOAD,{seconds}"),
        Kind::Custom { text } => text.clone(),
    };
    let maker = peer.maker.as_deref().unwrap_or("CS");
    let index = if peer.index { "0001*" } else { "" };
    format!("[{maker}*{device}*{index}{:04X}*{content}]", content.len()).into_bytes()
}

fn answer(frame: &[u8]) -> Answer {
    Answer {
        consumed: 0,
        text: super::encode::text(frame),
    }
}

/// TK103: any complete frame but the unsolicited ones (`BP00` heartbeat, `BP05` login,
/// `BR00`/`BR02` reports, `BO01` alarm): `BP04` or `BR01` after a locate, `BS08` after the
/// interval, whatever a custom command draws.
pub fn tk103_answer(buf: &[u8]) -> Option<Answer> {
    let body = buf.strip_prefix(b"(")?;
    let end = body.iter().position(|&b| b == b')')?;
    let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
    let command = body.get(digits..digits + 4)?;
    let unsolicited = [b"BP00", b"BP05", b"BR00", b"BR02", b"BO01"];
    (digits >= 8 && digits + 4 <= end && !unsolicited.iter().any(|u| command == *u))
        .then(|| answer(&buf[..end + 2]))
}

/// The command word a custom text names: up to the first `,` (or `=` for Queclink's `AT+`).
fn word(text: &str) -> &str {
    let t = text.strip_prefix("AT+").unwrap_or(text);
    t.split([',', '=', '$']).next().unwrap_or(t)
}

/// Queclink: the acknowledgement `+ACK:<command>,...$` of the command sent (`GTRTO` for a
/// locate).
pub fn queclink_answer(buf: &[u8], kind: &Kind) -> Option<Answer> {
    let end = buf.iter().position(|&b| b == b'$')?;
    let frame = &buf[..=end];
    let want = match kind {
        Kind::Custom { text } => word(text),
        _ => "GTRTO",
    };
    let head = frame.split(|&b| b == b',').next()?;
    (head.strip_prefix(b"+ACK:")? == want.as_bytes()).then(|| answer(frame))
}

/// Meitrack: the complete `$$` frame that answers the command sent: the command echoed
/// (`A12,OK`, a custom command's), or for a locate (`A10`) the `AAA` report with event 34.
pub fn meitrack_answer(buf: &[u8], kind: &Kind) -> Option<Answer> {
    let rest = buf.strip_prefix(b"$$")?;
    let digits = rest
        .iter()
        .skip(1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let comma = 3 + digits;
    if !(1..=4).contains(&digits) || buf.get(comma) != Some(&b',') {
        return None;
    }
    let length: usize = std::str::from_utf8(&buf[3..comma]).ok()?.parse().ok()?;
    let frame = buf.get(..comma + length)?;
    let body = frame.strip_suffix(b"\r\n")?;
    let mut fields = body.split(|&b| b == b',' || b == b'*').skip(2);
    let command = fields.next()?;
    let ok = match kind {
        Kind::Locate => command == b"AAA" && fields.next()? == b"34",
        Kind::Interval { .. } => command == b"A12",
        Kind::Custom { text } => command == word(text).as_bytes(),
    };
    ok.then(|| answer(frame))
}

/// Watch: the frame that echoes the command sent (`CR`, `UPLOAD`, a custom command's word).
pub fn watch_answer(buf: &[u8], kind: &Kind) -> Option<Answer> {
    let frame = watch_frame(buf)?;
    let content = frame.splitn(5, '*').last()?;
    let want = match kind {
        Kind::Locate => "CR",
        Kind::Interval { .. } => "UPLOAD",
        Kind::Custom { text } => word(text),
    };
    (frame.matches('*').count() >= 3 && content.split(',').next()? == want)
        .then(|| answer(&buf[..frame.len() + 2]))
}

#[cfg(test)]
#[path = "encode_more_tests.rs"]
mod tests;
