//! Teltonika Codec 8, Codec 8 Extended and Codec 16 over TCP.
//!
//! Source: Teltonika "Codec" / "Teltonika Data Sending Protocols" wiki pages
//! (wiki.teltonika-gps.com/view/Codec), checked against Traccar's TeltonikaProtocolDecoder.
//!
//! - Handshake: `len:u16` then the IMEI in ASCII (`00 0F` + 15 digits); answered `01`
//!   (accepted). An identity that is not digits ends the connection.
//! - AVL packet: `00000000 | data_len:u32 | codec:u8 | N1:u8 | N1 records | N2:u8 | crc:u32`,
//!   where the low 16 bits of `crc` are CRC-16/IBM (ARC: poly 0x8005 reflected, init 0) of the
//!   `data_len` bytes from `codec` through `N2`, and N1 == N2. Answered with the number of
//!   records as a 4-byte big-endian integer. A packet with a bad CRC is not answered, so the
//!   device sends it again.
//! - Record: `timestamp:u64 ms | priority:u8 | lon:i32 | lat:i32 (1e-7 degrees) | altitude:i16 m |
//!   angle:u16 | satellites:u8 | speed:u16 km/h | IO`. Codec 8 IO: `event id:u8 | total:u8 |`
//!   then for 1-, 2-, 4- and 8-byte values `count:u8` and `count × (id:u8, value)`. Codec 8
//!   Extended (0x8E) widens ids and counts to u16 and adds `NX count:u16 | (id:u16, len:u16, bytes)`.
//!   Codec 16 (0x10) widens the ids only, and follows the event id (u16) with a generation type
//!   (u8: on exit, on entrance, ..., periodical), kept as the `generation` attribute.
//! - Codec 12 and 13 (0x0C, 0x0D) carry command responses and text, not positions: with a
//!   valid CRC and matching quantities they are accepted without a fix and, as the protocol
//!   says, without an answer (tallyd sends no commands).
//! - A lone `FF` byte is a keep-alive ping and is skipped. Other codecs are rejected as unsupported.

use std::collections::BTreeMap;

use crc::{Crc, CRC_16_ARC};
use nom::bytes::complete::take;
use nom::number::complete::{be_i16, be_i32, be_u16, be_u64, be_u8};
use nom::sequence::tuple;
use nom::IResult;

use super::fix::{Attr, Fix, FrameError, Kind, Message, Step};

/// CRC-16/IBM as Teltonika specifies it (the catalogue's CRC-16/ARC).
pub const CRC_IBM: Crc<u16> = Crc::<u16>::new(&CRC_16_ARC);

// Codec ids, the first byte of an AVL packet's data.
const CODEC_8: u8 = 0x08;
const CODEC_8E: u8 = 0x8E;
const CODEC_16: u8 = 0x10;
const CODEC_12: u8 = 0x0C;
const CODEC_13: u8 = 0x0D;

/// How a codec lays out a record's IO elements.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// IO ids are u16 (8E, 16), else u8.
    wide_ids: bool,
    /// Counts are u16 (8E), else u8.
    wide_counts: bool,
    /// A generation type byte follows the event id (16).
    generation: bool,
    /// Variable-length elements follow the fixed ones (8E).
    nx: bool,
}

impl Layout {
    fn of(codec: u8) -> Option<Layout> {
        let (wide_ids, wide_counts, generation, nx) = match codec {
            CODEC_8 => (false, false, false, false),
            CODEC_8E => (true, true, false, true),
            CODEC_16 => (true, false, true, false),
            _ => return None,
        };
        Some(Layout {
            wide_ids,
            wide_counts,
            generation,
            nx,
        })
    }
}

/// Connection state: whether the IMEI handshake is done.
#[derive(Debug, Default)]
pub struct Teltonika {
    identified: bool,
}

impl Teltonika {
    /// Decodes the handshake or the next AVL packet, rejecting packets over `max_frame` bytes.
    pub fn decode(&mut self, buf: &[u8], max_frame: usize) -> Step {
        if !self.identified {
            return self.handshake(buf);
        }
        if buf.first() == Some(&0xFF) {
            return Step::Skip(1);
        }
        if buf.len() < 8 {
            // Only the zero preamble can be judged yet: the length after it may be partly here
            // (a packet of 256 bytes or more has a non-zero third length byte).
            return if buf.iter().take(4).all(|b| *b == 0) {
                Step::Incomplete
            } else {
                Step::Fatal(FrameError::Malformed)
            };
        }
        if buf[..4] != [0, 0, 0, 0] {
            return Step::Fatal(FrameError::Malformed);
        }
        let data_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if data_len < 3 {
            return Step::Fatal(FrameError::Malformed);
        }
        let total = match data_len.checked_add(12) {
            Some(t) if t <= max_frame => t,
            _ => return Step::Fatal(FrameError::TooLong),
        };
        if buf.len() < total {
            return Step::Incomplete;
        }
        let data = &buf[8..8 + data_len];
        let crc = u32::from_be_bytes([
            buf[total - 4],
            buf[total - 3],
            buf[total - 2],
            buf[total - 1],
        ]);
        if crc > 0xFFFF || u32::from(CRC_IBM.checksum(data)) != crc {
            return Step::Frame {
                len: total,
                msg: Err(FrameError::Checksum),
            };
        }
        Step::Frame {
            len: total,
            msg: avl(data),
        }
    }

    fn handshake(&mut self, buf: &[u8]) -> Step {
        let [hi, lo, rest @ ..] = buf else {
            return Step::Incomplete;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if !(1..=20).contains(&len) {
            return Step::Fatal(FrameError::Malformed);
        }
        let Some(imei) = rest.get(..len) else {
            return Step::Incomplete;
        };
        if !imei.iter().all(u8::is_ascii_digit) {
            return Step::Fatal(FrameError::Malformed);
        }
        self.identified = true;
        let id = String::from_utf8_lossy(imei).into_owned();
        Step::Frame {
            len: 2 + len,
            msg: Ok(Message {
                device_id: Some(id),
                reply: Some(vec![0x01]),
                ..Message::new(Kind::Login)
            }),
        }
    }
}

/// The data field: codec, N1, records, N2.
fn avl(data: &[u8]) -> Result<Message, FrameError> {
    let (codec, n1) = (data[0], data[1]);
    if codec == CODEC_12 || codec == CODEC_13 {
        // `codec | quantity | type | size:u32 | payload | quantity`.
        let size = data
            .get(3..7)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize);
        return if size.is_some_and(|n| n.checked_add(8) == Some(data.len()))
            && data.last() == Some(&n1)
        {
            Ok(Message::new(Kind::Other))
        } else {
            Err(FrameError::Malformed)
        };
    }
    let layout = Layout::of(codec).ok_or(FrameError::Unsupported)?;
    let mut rest = &data[2..];
    let mut fixes = Vec::with_capacity(usize::from(n1));
    for _ in 0..n1 {
        let (r, fix) = record(rest, layout).map_err(|_| FrameError::Malformed)?;
        fixes.push(fix.ok_or(FrameError::Malformed)?);
        rest = r;
    }
    if rest != [n1] {
        return Err(FrameError::Malformed);
    }
    Ok(Message {
        reply: Some(u32::from(n1).to_be_bytes().to_vec()),
        fixes,
        ..Message::new(Kind::Location)
    })
}

/// A u16 when `wide`, else a u8.
fn count(i: &[u8], wide: bool) -> IResult<&[u8], u16> {
    if wide {
        be_u16(i)
    } else {
        be_u8(i).map(|(i, v)| (i, u16::from(v)))
    }
}

fn record(i: &[u8], layout: Layout) -> IResult<&[u8], Option<Fix>> {
    let (mut i, (ts, priority, lon, lat, alt, angle, sats, speed)) =
        tuple((be_u64, be_u8, be_i32, be_i32, be_i16, be_u16, be_u8, be_u16))(i)?;
    let mut attributes = BTreeMap::new();
    attributes.insert("priority".to_string(), Attr::Int(i64::from(priority)));
    let (mut r, event) = count(i, layout.wide_ids)?;
    attributes.insert("event_io".to_string(), Attr::Int(i64::from(event)));
    if layout.generation {
        let (g, generation) = be_u8(r)?;
        attributes.insert("generation".to_string(), Attr::Int(i64::from(generation)));
        r = g;
    }
    let (r, _total) = count(r, layout.wide_counts)?;
    i = r;
    for width in [1usize, 2, 4, 8] {
        let (r, n) = count(i, layout.wide_counts)?;
        i = r;
        for _ in 0..n {
            let (r, (id, value)) = tuple((|x| count(x, layout.wide_ids), take(width)))(i)?;
            let v = value.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
            attributes.insert(format!("io{id}"), Attr::Int(v as i64));
            i = r;
        }
    }
    if layout.nx {
        let (r, n) = be_u16(i)?;
        i = r;
        for _ in 0..n {
            let (r, (id, len)) = tuple((be_u16, be_u16))(i)?;
            let (r, value) = take(len)(r)?;
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            attributes.insert(format!("io{id}"), Attr::Text(hex));
            i = r;
        }
    }
    let (lat, lon) = (f64::from(lat) / 1e7, f64::from(lon) / 1e7);
    let Ok(time_ms) = i64::try_from(ts) else {
        return Ok((i, None));
    };
    if lat.abs() > 90.0 || lon.abs() > 180.0 {
        return Ok((i, None));
    }
    Ok((
        i,
        Some(Fix {
            time_ms,
            lat,
            lon,
            altitude: Some(f64::from(alt)),
            speed_kmh: f64::from(speed),
            course: f64::from(angle),
            satellites: Some(u32::from(sats)),
            valid: sats > 0,
            attributes,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn identified() -> Teltonika {
        Teltonika { identified: true }
    }

    fn packet(data: &[u8]) -> Vec<u8> {
        let mut p = vec![0, 0, 0, 0];
        p.extend_from_slice(&(data.len() as u32).to_be_bytes());
        p.extend_from_slice(data);
        p.extend_from_slice(&u32::from(CRC_IBM.checksum(data)).to_be_bytes());
        p
    }

    #[test]
    fn imei_handshake_is_answered_01() {
        let mut t = Teltonika::default();
        let hs = hex("000F 333536333037303432343431303133");
        assert_eq!(t.decode(&hs[..10], 2048), Step::Incomplete);
        let Step::Frame { len, msg: Ok(msg) } = t.decode(&hs, 2048) else {
            panic!("handshake")
        };
        assert_eq!(len, 17);
        assert_eq!(msg.device_id.as_deref(), Some("356307042441013"));
        assert_eq!(msg.reply, Some(vec![0x01]));
        assert_eq!(
            Teltonika::default().decode(&hex("000F 41"), 2048),
            Step::Incomplete
        );
        assert_eq!(
            Teltonika::default().decode(&hex("000F 4142434445464748494a4b4c4d4e4f"), 2048),
            Step::Fatal(FrameError::Malformed)
        );
        assert_eq!(
            Teltonika::default().decode(&hex("0100"), 2048),
            Step::Fatal(FrameError::Malformed)
        );
    }

    #[test]
    fn codec8_wiki_example() {
        // The Codec 8 example of the Teltonika wiki: one record at 2019-06-10 10:04:46 UTC,
        // at 0,0 with no satellites, IO: 1-byte id 0x15=3, 0x01=1; 2-byte 0x42=0x5E0F; 4-byte
        // 0xF1=0x601A; 8-byte 0x4E=0. Its CRC is 0x0000C7CF.
        let p = hex(
            "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF",
        );
        let Step::Frame { len, msg: Ok(msg) } = identified().decode(&p, 2048) else {
            panic!("avl")
        };
        assert_eq!(len, p.len());
        assert_eq!(msg.reply, Some(vec![0, 0, 0, 1]));
        let f = &msg.fixes[0];
        assert_eq!(f.time_ms, 1_560_161_086_000);
        assert_eq!(
            (f.lat, f.lon, f.satellites, f.valid),
            (0.0, 0.0, Some(0), false)
        );
        assert_eq!(f.attributes.get("io21"), Some(&Attr::Int(3)));
        assert_eq!(f.attributes.get("io66"), Some(&Attr::Int(0x5E0F)));
        assert_eq!(f.attributes.get("io241"), Some(&Attr::Int(0x601A)));
        assert_eq!(f.attributes.get("io78"), Some(&Attr::Int(0)));
    }

    #[test]
    fn codec8_extended_built_from_the_spec() {
        let mut data = vec![CODEC_8E, 2];
        for (ts, lon, lat) in [
            (1_700_000_000_000u64, 252_562_916i32, 546_676_016i32),
            (1_700_000_001_000, -1, -2),
        ] {
            data.extend_from_slice(&ts.to_be_bytes());
            data.push(1); // priority
            data.extend_from_slice(&lon.to_be_bytes());
            data.extend_from_slice(&lat.to_be_bytes());
            data.extend_from_slice(&138i16.to_be_bytes());
            data.extend_from_slice(&270u16.to_be_bytes());
            data.push(6);
            data.extend_from_slice(&42u16.to_be_bytes());
            data.extend_from_slice(&hex("0000 0003")); // event id, total IO
            data.extend_from_slice(&hex("0001 00EF 01")); // N1: id 239 = 1
            data.extend_from_slice(&hex("0000 0000 0000")); // N2, N4, N8
            data.extend_from_slice(&hex("0001 0101 0003 AABBCC")); // NX: id 257, 3 bytes
        }
        data.push(2);
        let Step::Frame { msg: Ok(msg), .. } = identified().decode(&packet(&data), 2048) else {
            panic!("8E")
        };
        assert_eq!(msg.reply, Some(vec![0, 0, 0, 2]));
        assert_eq!(msg.fixes.len(), 2);
        let f = &msg.fixes[0];
        assert_eq!((f.lat, f.lon), (54.667_601_6, 25.256_291_6));
        assert_eq!(
            (f.altitude, f.course, f.speed_kmh, f.satellites, f.valid),
            (Some(138.0), 270.0, 42.0, Some(6), true)
        );
        assert_eq!(f.attributes.get("io239"), Some(&Attr::Int(1)));
        assert_eq!(
            f.attributes.get("io257"),
            Some(&Attr::Text("aabbcc".into()))
        );
    }

    #[test]
    fn codec16_wiki_example() {
        // The Codec 16 example of the Teltonika wiki (its CRC, 0x5FB3, checks): two records a
        // second apart from 2019-07-10 12:06:54 UTC at 0,0; event IO 11, generation type 5
        // (on change); IO 1-byte ids 1 and 3 = 0, 2-byte id 11 = 0x27 then 0x26, id 66 = 0x563A.
        let p = hex(
            "000000000000005F10020000016BDBC7833000000000000000000000000000000000000B05040200010000030002000B00270042563A00000000016BDBC7871800000000000000000000000000000000000B05040200010000030002000B00260042563A00000200005FB3",
        );
        let Step::Frame { len, msg: Ok(msg) } = identified().decode(&p, 2048) else {
            panic!("codec 16")
        };
        assert_eq!((len, msg.reply), (p.len(), Some(vec![0, 0, 0, 2])));
        let times: Vec<i64> = msg.fixes.iter().map(|f| f.time_ms).collect();
        assert_eq!(times, [1_562_760_414_000, 1_562_760_415_000]);
        let f = &msg.fixes[0];
        for (key, want) in [
            ("event_io", 11),
            ("generation", 5),
            ("io1", 0),
            ("io3", 0),
            ("io11", 0x27),
            ("io66", 0x563A),
        ] {
            assert_eq!(f.attributes.get(key), Some(&Attr::Int(want)), "{key}");
        }
        assert_eq!(msg.fixes[1].attributes.get("io11"), Some(&Attr::Int(0x26)));
    }

    #[test]
    fn command_responses_are_accepted_unanswered() {
        // Codec 12, a response (type 6) of 4 bytes; codec 13 alike with a timestamp in front.
        for codec in [CODEC_12, CODEC_13] {
            let mut data = vec![codec, 1, 0x06, 0, 0, 0, 4];
            data.extend_from_slice(b"ok\r\n");
            data.push(1);
            let Step::Frame { msg: Ok(msg), .. } = identified().decode(&packet(&data), 2048) else {
                panic!("codec {codec:#x}")
            };
            assert_eq!(
                (msg.kind, msg.reply, msg.fixes.len()),
                (Kind::Other, None, 0)
            );
            // A size that does not match the packet is malformed.
            data[6] = 9;
            assert!(matches!(
                identified().decode(&packet(&data), 2048),
                Step::Frame {
                    msg: Err(FrameError::Malformed),
                    ..
                }
            ));
        }
        // Codecs nobody defined stay unsupported.
        assert!(matches!(
            identified().decode(&packet(&[0x42, 0, 0]), 2048),
            Step::Frame {
                msg: Err(FrameError::Unsupported),
                ..
            }
        ));
    }

    #[test]
    fn bad_packets() {
        let good = hex(
            "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF",
        );
        let mut bad_crc = good.clone();
        bad_crc[20] ^= 1;
        assert!(matches!(
            identified().decode(&bad_crc, 2048),
            Step::Frame {
                msg: Err(FrameError::Checksum),
                ..
            }
        ));
        for cut in 0..good.len() {
            assert_eq!(
                identified().decode(&good[..cut], 2048),
                Step::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(
            identified().decode(&good, 40),
            Step::Fatal(FrameError::TooLong)
        );
        assert_eq!(
            identified().decode(&hex("0000000100000010"), 2048),
            Step::Fatal(FrameError::Malformed)
        );
        assert_eq!(identified().decode(&[0xFF, 0, 0], 2048), Step::Skip(1));
        // N2 differs from N1.
        let mut data = good[8..good.len() - 4].to_vec();
        *data.last_mut().expect("n2") = 2;
        assert!(matches!(
            identified().decode(&packet(&data), 2048),
            Step::Frame {
                msg: Err(FrameError::Malformed),
                ..
            }
        ));
    }

    #[test]
    fn a_long_packet_cut_inside_its_length_is_incomplete() {
        // Found by fuzz/fuzz_targets/gps_stream.rs: a packet of 256 data bytes or more has a
        // non-zero third length byte, and 5 to 7 bytes of it (as TCP may deliver them) were
        // taken for a broken stream and closed the connection.
        let wiki = hex(
            "000000000000003608010000016B40D8EA30010000000000000000000000000000000105021503010101425E0F01F10000601A014E0000000000000000010000C7CF",
        );
        let record = &wiki[10..wiki.len() - 5];
        let mut data = vec![CODEC_8, 12];
        for _ in 0..12 {
            data.extend_from_slice(record);
        }
        data.push(12);
        assert!(data.len() >= 256);
        let p = packet(&data);
        for cut in 0..p.len() {
            assert_eq!(
                identified().decode(&p[..cut], 2048),
                Step::Incomplete,
                "cut at {cut}"
            );
        }
        let Step::Frame { len, msg: Ok(msg) } = identified().decode(&p, 2048) else {
            panic!("avl")
        };
        assert_eq!((len, msg.fixes.len()), (p.len(), 12));
        assert_eq!(
            identified().decode(&[0, 0, 0, 1, 0], 2048),
            Step::Fatal(FrameError::Malformed)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = Teltonika::default().decode(&bytes, 1024);
            let _ = identified().decode(&bytes, 1024);
            // Valid framing and CRC around random data reaches the record decoder.
            for codec in [CODEC_8, CODEC_8E, CODEC_16, CODEC_12, CODEC_13] {
                let mut data = vec![codec, bytes.first().copied().unwrap_or(1)];
                data.extend_from_slice(&bytes);
                let _ = identified().decode(&packet(&data), 1024);
            }
        }
    }
}
