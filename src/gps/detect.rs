//! Which protocol a connection speaks, from its first bytes.
//!
//! One port serves every protocol, so the first bytes decide (docs/gps.md lists them):
//! `78 78` / `79 79` GT06; `00 <len 1..=20>` followed by an ASCII digit: the Teltonika IMEI
//! handshake; `(`: TK103; `[` + two letters or digits + `*`: the watch protocol; `+RESP:`,
//! `+BUFF:` or `+ACK:`: Queclink; `$$` + a flag byte + decimal length + `,`: Meitrack;
//! `*` + two letters + `,`: H02; `$` + a BCD device id and hour: H02's binary frames;
//! `$` + an upper-case letter: NMEA; `##,`, `imei:` or digits: GPS103, unless the letters and
//! digits run into a `$` (an NMEA sentence behind a device id, `660420156A0066AA$GPRMC,...`).
//! Anything else is refused.

use super::fix::Protocol;

/// The outcome of looking at the first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// The connection speaks this protocol.
    Found(Protocol),
    /// Too few bytes to tell; wait for more.
    NeedMore,
    /// No supported protocol starts like this.
    Unknown,
}

/// Longest device id an NMEA sentence may be prefixed with.
const MAX_PREFIX: usize = 64;

/// Decides from `head` (the bytes received so far).
pub fn detect(head: &[u8]) -> Detect {
    // Leading blank lines are tolerated for the text protocols.
    let text = head.trim_ascii_start();
    match head {
        [] => return Detect::NeedMore,
        [0x78] | [0x79] => return Detect::NeedMore,
        [0x78, 0x78, ..] | [0x79, 0x79, ..] => return Detect::Found(Protocol::Gt06),
        [0x00] | [0x00, 1..=20] => return Detect::NeedMore,
        [0x00, 1..=20, d, ..] if d.is_ascii_digit() => return Detect::Found(Protocol::Teltonika),
        [0x00, ..] => return Detect::Unknown,
        _ => {}
    }
    if let Some(d) = meitrack(text) {
        return d;
    }
    match text {
        [] => Detect::NeedMore,
        [b'(', ..] => Detect::Found(Protocol::Tk103),
        [b'[', rest @ ..] => watch(rest),
        [b'+', ..] => queclink(text),
        [b'$'] => Detect::NeedMore,
        // H02's binary frames also start with `$`, then a BCD device id and hour. An NMEA
        // address is letters followed by `,`; `,` and letters are never a BCD hour.
        // A 15-digit id takes 8 bytes, putting the hour 3 bytes later.
        [b'$', rest @ ..] if rest.iter().take(6).all(|&b| is_bcd(b)) => match rest.get(5) {
            None => Detect::NeedMore,
            Some(&hour) if hour <= 0x23 => Detect::Found(Protocol::H02),
            Some(_)
                if rest[..5].iter().all(u8::is_ascii_uppercase)
                    || !rest.iter().take(9).all(|&b| is_bcd(b)) =>
            {
                Detect::Found(Protocol::Nmea)
            }
            Some(_) => match rest.get(8) {
                None => Detect::NeedMore,
                Some(&hour) if hour <= 0x23 => Detect::Found(Protocol::H02),
                Some(_) => Detect::Found(Protocol::Nmea),
            },
        },
        [b'$', c, ..] if c.is_ascii_uppercase() => Detect::Found(Protocol::Nmea),
        [b'*'] | [b'*', _] | [b'*', _, _] => {
            prefix_or_unknown(text, |t| t[1..].iter().all(u8::is_ascii_alphabetic))
        }
        [b'*', a, b, b',', ..] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Detect::Found(Protocol::H02)
        }
        [d, ..] if d.is_ascii_digit() => digits_first(text),
        [b'#', ..] => prefix_of(text, b"##,"),
        [b'i', ..] => prefix_of(text, b"imei:"),
        _ => Detect::Unknown,
    }
}

/// `$$`, a flag byte, 1 to 4 decimal digits and `,`; `None` when `text` does not start so
/// (it may still be an H02 binary frame: `$` and packed BCD).
fn meitrack(text: &[u8]) -> Option<Detect> {
    let rest = match text {
        [b'$'] | [b'$', b'$'] | [b'$', b'$', _] => return Some(Detect::NeedMore),
        [b'$', b'$', _, rest @ ..] => rest,
        _ => return None,
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    match rest.get(digits) {
        None if digits < 5 => Some(Detect::NeedMore),
        Some(b',') if (1..=4).contains(&digits) => Some(Detect::Found(Protocol::Meitrack)),
        _ => None,
    }
}

/// After `[`: a two-character maker code (`SG`, `3G`, `CS`, ...) and `*`.
fn watch(rest: &[u8]) -> Detect {
    let maker = rest.iter().take(2).all(u8::is_ascii_alphanumeric);
    match rest {
        _ if !maker => Detect::Unknown,
        [] | [_] | [_, _] => Detect::NeedMore,
        [_, _, b'*', ..] => Detect::Found(Protocol::Watch),
        _ => Detect::Unknown,
    }
}

fn queclink(text: &[u8]) -> Detect {
    let mut need_more = false;
    for magic in [&b"+RESP:"[..], b"+BUFF:", b"+ACK:"] {
        match prefix_of(text, magic) {
            Detect::Found(_) => return Detect::Found(Protocol::Queclink),
            Detect::NeedMore => need_more = true,
            Detect::Unknown => {}
        }
    }
    if need_more {
        Detect::NeedMore
    } else {
        Detect::Unknown
    }
}

/// Digits (and letters) first: GPS103's bare-IMEI heartbeat, or a device id before `$GP...`.
fn digits_first(text: &[u8]) -> Detect {
    let run = text
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    match text.get(run) {
        Some(b'$') if run <= MAX_PREFIX => Detect::Found(Protocol::Nmea),
        None if run <= MAX_PREFIX => Detect::NeedMore,
        _ => Detect::Found(Protocol::Gps103),
    }
}

/// Whether a byte is packed BCD (two decimal digits).
fn is_bcd(b: u8) -> bool {
    b >> 4 <= 9 && b & 0x0f <= 9
}

/// GPS103 when `text` starts with `magic`, more needed while it is a prefix of it.
fn prefix_of(text: &[u8], magic: &[u8]) -> Detect {
    let n = text.len().min(magic.len());
    if text[..n] != magic[..n] {
        Detect::Unknown
    } else if n < magic.len() {
        Detect::NeedMore
    } else {
        Detect::Found(Protocol::Gps103)
    }
}

fn prefix_or_unknown(text: &[u8], ok: impl Fn(&[u8]) -> bool) -> Detect {
    if ok(text) {
        Detect::NeedMore
    } else {
        Detect::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        let cases: &[(&[u8], Detect)] = &[
            (b"\x78\x78\x11\x01", Detect::Found(Protocol::Gt06)),
            (b"\x79\x79\x00", Detect::Found(Protocol::Gt06)),
            (b"\x78", Detect::NeedMore),
            (
                b"\x00\x0f356307042441013",
                Detect::Found(Protocol::Teltonika),
            ),
            (b"\x00\x0f", Detect::NeedMore),
            (b"\x00\x00\x00\x00", Detect::Unknown),
            (b"*HQ,4970105243,V1", Detect::Found(Protocol::H02)),
            (b"*H", Detect::NeedMore),
            (b"*1", Detect::Unknown),
            (b"##,imei:1", Detect::Found(Protocol::Gps103)),
            (b"##", Detect::NeedMore),
            (b"imei:35958", Detect::Found(Protocol::Gps103)),
            (b"ime", Detect::NeedMore),
            (b"359586015829802;", Detect::Found(Protocol::Gps103)),
            (b"$GPRMC,", Detect::Found(Protocol::Nmea)),
            (b"$GPGGA,", Detect::Found(Protocol::Nmea)),
            (b"$GPGG", Detect::NeedMore),
            (b"$GPHDGE", Detect::Found(Protocol::Nmea)),
            (b"$\x49\x70\x10\x52\x43\x10", Detect::Found(Protocol::H02)),
            (b"$\x49\x70\x10\x52\x43", Detect::NeedMore),
            (b"\r\n$PGID,1*00", Detect::Found(Protocol::Nmea)),
            (b"$", Detect::NeedMore),
            (b"GET / HTTP/1.1\r\n", Detect::Unknown),
            (b"\x16\x03\x01", Detect::Unknown),
            (b"", Detect::NeedMore),
            (b"(027044702512BP05", Detect::Found(Protocol::Tk103)),
            (b"[SG*8800000015*0002*LK]", Detect::Found(Protocol::Watch)),
            (
                b"[3G*4700186508*000B*LK,0,10,100]",
                Detect::Found(Protocol::Watch),
            ),
            (b"[SG", Detect::NeedMore),
            (b"[<html>", Detect::Unknown),
            (b"+RESP:GTFRI,", Detect::Found(Protocol::Queclink)),
            (b"+BUFF:GTFRI,", Detect::Found(Protocol::Queclink)),
            (b"+ACK:GTHBD,", Detect::Found(Protocol::Queclink)),
            (b"+RE", Detect::NeedMore),
            (b"+OK", Detect::Unknown),
            (
                b"$$X138,862170010187175,AAA",
                Detect::Found(Protocol::Meitrack),
            ),
            (b"$$A1", Detect::NeedMore),
            (b"$$", Detect::NeedMore),
            // H02 binary with a device id starting 24: `$`, then BCD, never a `,`.
            (b"$\x24\x27\x05\x17\x11\x09", Detect::Found(Protocol::H02)),
            (b"660420156A0066AA$GPRMC,", Detect::Found(Protocol::Nmea)),
            (
                b"$\x35\x24\x83\x08\x41\x93\x29\x30\x10",
                Detect::Found(Protocol::H02),
            ),
            (b"$\x35\x24\x83\x08\x41\x93", Detect::NeedMore),
            (b"660420156A0066AA", Detect::NeedMore),
            (
                b"359769031878322imei:359769031878322,tracker",
                Detect::Found(Protocol::Gps103),
            ),
        ];
        for (head, want) in cases {
            assert_eq!(detect(head), *want, "{:?}", String::from_utf8_lossy(head));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = detect(&bytes);
        }
    }
}
