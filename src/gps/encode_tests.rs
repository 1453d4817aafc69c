use super::*;

/// `encode` for the protocols that need no peer state.
fn encode(p: Protocol, device: &str, kind: &Kind, serial: u16, now_ms: i64) -> Option<Vec<u8>> {
    super::encode(p, device, kind, serial, now_ms, &Peer::default())
}

/// `answer` for a locate (the protocols here recognise every answer alike).
fn answer(p: Protocol, buf: &[u8]) -> Option<Answer> {
    super::answer(p, buf, &Kind::Locate)
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// CRC-16/X-25 bit by bit, independent of the `crc` crate.
fn x25(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for b in data {
        crc ^= u16::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn teltonika_codec12_matches_the_wiki_getinfo_example() {
    // Teltonika's Codec 12 document: "getinfo" sent to the device.
    let want = hex("000000000000000F0C010500000007676574696E666F0100004312");
    assert_eq!(codec12("getinfo"), want, "{:02X?}", codec12("getinfo"));
    let locate = encode(Protocol::Teltonika, "x", &Kind::Locate, 1, 0).expect("getgps");
    assert_eq!(&locate[15..21], b"getgps");
    assert_eq!(
        encode(
            Protocol::Teltonika,
            "x",
            &Kind::Interval { seconds: 30 },
            1,
            0
        ),
        None
    );
}

#[test]
fn teltonika_answer_is_a_codec12_response() {
    let mut data = vec![0x0C, 0x01, 0x06];
    let text = b"GPS:1 Sat:7 Lat:54.7 Long:25.3";
    data.extend_from_slice(&(text.len() as u32).to_be_bytes());
    data.extend_from_slice(text);
    data.push(0x01);
    let mut f = vec![0, 0, 0, 0];
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(&data);
    f.extend_from_slice(&[0, 0, 0x12, 0x34]);
    let mut buf = f.clone();
    buf.extend_from_slice(b"next");
    let a = answer(Protocol::Teltonika, &buf).expect("answer");
    assert_eq!(a.consumed, f.len());
    assert_eq!(a.text, "GPS:1 Sat:7 Lat:54.7 Long:25.3");
    // A Codec 8 packet, or a cut one, is no answer.
    assert_eq!(answer(Protocol::Teltonika, &f[..f.len() - 1]), None);
    let mut c8 = f.clone();
    c8[8] = 0x08;
    assert_eq!(answer(Protocol::Teltonika, &c8), None);
}

#[test]
fn gt06_online_command_layout_and_crc() {
    let f = gt06("WHERE#", 7);
    assert_eq!(&f[..4], &[0x78, 0x78, 1 + 1 + 4 + 6 + 2 + 2, 0x80]);
    assert_eq!(
        f[4],
        4 + 6,
        "command length counts the server flag and the text"
    );
    assert_eq!(&f[5..9], &[0, 0, 0, 1]);
    assert_eq!(&f[9..15], b"WHERE#");
    assert_eq!(&f[15..17], &[0, 7]);
    let crc = x25(&f[2..17]);
    assert_eq!(&f[17..19], &crc.to_be_bytes());
    assert_eq!(&f[19..], b"\r\n");
    assert_eq!(usize::from(f[2]) + 5, f.len());
    let t = encode(Protocol::Gt06, "x", &Kind::Interval { seconds: 60 }, 2, 0).expect("timer");
    assert_eq!(&t[9..t.len() - 6], b"TIMER,60#");
}

#[test]
fn gt06_answers_short_0x15_and_long_0x21() {
    // 78 78 | len | 15 | cmd_len | flag | text | serial | crc | 0D 0A
    let text = b"Lat:N22.5,Lon:E113.9";
    let mut f = vec![0x78, 0x78, 0, 0x15, (4 + text.len()) as u8, 0, 0, 0, 1];
    f.extend_from_slice(text);
    f.extend_from_slice(&[0, 2]);
    f[2] = (f.len() - 3 + 2) as u8;
    let crc = x25(&f[2..]);
    f.extend_from_slice(&crc.to_be_bytes());
    f.extend_from_slice(b"\r\n");
    assert_eq!(usize::from(f[2]) + 5, f.len());
    let a = answer(Protocol::Gt06, &f).expect("0x15");
    assert_eq!(
        (a.consumed, a.text.as_str()),
        (f.len(), "Lat:N22.5,Lon:E113.9")
    );
    assert_eq!(answer(Protocol::Gt06, &f[..f.len() - 2]), None, "cut");

    // 79 79 | len:u16 | 21 | flag | encoding | text | serial | crc | 0D 0A
    let mut l = vec![0x79, 0x79, 0, 0, 0x21, 0, 0, 0, 1, 0x01];
    l.extend_from_slice(b"OK!");
    l.extend_from_slice(&[0, 3]);
    let len = (l.len() - 4 + 2) as u16;
    l[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = x25(&l[2..]);
    l.extend_from_slice(&crc.to_be_bytes());
    l.extend_from_slice(b"\r\n");
    let a = answer(Protocol::Gt06, &l).expect("0x21");
    assert_eq!((a.consumed, a.text.as_str()), (l.len(), "OK!"));
    // A location frame is no answer.
    assert_eq!(
        answer(
            Protocol::Gt06,
            &[0x78, 0x78, 0x05, 0x13, 0, 1, 0, 0, 0x0D, 0x0A]
        ),
        None
    );
}

#[test]
fn h02_and_gps103_text_commands() {
    // 12:34:56 UTC.
    let now = (12 * 3600 + 34 * 60 + 56) * 1000;
    let d1 = encode(
        Protocol::H02,
        "4210051415",
        &Kind::Interval { seconds: 30 },
        0,
        now,
    );
    assert_eq!(d1.as_deref(), Some(&b"*HQ,4210051415,D1,123456,30,1#"[..]));
    let c = Kind::Custom {
        text: "S20,1,1".into(),
    };
    assert_eq!(
        encode(Protocol::H02, "1", &c, 0, now).as_deref(),
        Some(&b"*HQ,1,S20,123456,1,1#"[..])
    );
    assert_eq!(encode(Protocol::H02, "1", &Kind::Locate, 0, now), None);
    let v4 = b"*HQ,4210051415,V4,D1,30,1,123500,A,2230.0,N#";
    let mut buf = v4.to_vec();
    buf.extend_from_slice(b"*HQ");
    let a = answer(Protocol::H02, &buf).expect("V4");
    assert_eq!(a.consumed, v4.len());
    assert!(a.text.starts_with("*HQ,4210051415,V4,D1"));
    assert_eq!(answer(Protocol::H02, b"*HQ,4210051415,V1,123500,A#"), None);

    let imei = "359710049092324";
    let b = encode(Protocol::Gps103, imei, &Kind::Locate, 0, 0).expect("B");
    assert_eq!(b, b"**,imei:359710049092324,B");
    for (secs, want) in [(30, "30s"), (300, "05m"), (7200, "02h")] {
        let c = encode(
            Protocol::Gps103,
            imei,
            &Kind::Interval { seconds: secs },
            0,
            0,
        );
        assert_eq!(c, Some(format!("**,imei:{imei},C,{want}").into_bytes()));
    }
    // GPS103 has no acknowledgement: the next whole frame answers, and stays for the decoder.
    let a = answer(Protocol::Gps103, b"imei:359710049092324,tracker,,;").expect("next");
    assert_eq!(a.consumed, 0);
    assert_eq!(answer(Protocol::Gps103, b"imei:3597100"), None);
}

#[test]
fn operator_values_are_checked() {
    assert!(Kind::Interval { seconds: 0 }.check().is_err());
    assert!(Kind::Interval { seconds: 86_401 }.check().is_err());
    assert!(Kind::Custom {
        text: "a\r\nb".into()
    }
    .check()
    .is_err());
    assert!(Kind::Custom {
        text: String::new()
    }
    .check()
    .is_err());
    assert!(Kind::Custom {
        text: "WHERE#".into()
    }
    .check()
    .is_ok());
    assert!(!supported(Protocol::Nmea, &Kind::Locate));
    assert!(supported(
        Protocol::Osmand,
        &Kind::Custom { text: "x".into() }
    ));
    let k: Kind = serde_json::from_str(r#"{"type":"interval","seconds":30}"#).expect("json");
    assert_eq!(k, Kind::Interval { seconds: 30 });
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever a device sends, recognising an answer never panics and never claims more bytes
    /// than the buffer holds.
    #[test]
    fn answers_of_arbitrary_bytes(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let kinds = [
            Kind::Locate,
            Kind::Interval { seconds: 60 },
            Kind::Custom { text: "AT+GTRTO=,1,,,,,,0001$".into() },
        ];
        for p in Protocol::ALL {
            for k in &kinds {
                if let Some(a) = super::answer(p, &buf, k) {
                    proptest::prop_assert!(a.consumed <= buf.len());
                    proptest::prop_assert!(a.text.len() <= 2048);
                }
            }
        }
    }

    /// Every accepted custom text encodes for every protocol that has custom commands, and the
    /// GT06 and Teltonika frames carry it whole (TK103, watch and Meitrack refuse the text that
    /// holds their framing bytes, and only that).
    #[test]
    fn custom_commands_encode(text in "[ -~]{1,200}", serial in proptest::num::u16::ANY) {
        let kind = Kind::Custom { text: text.clone() };
        proptest::prop_assert!(kind.check().is_ok());
        for p in [
            Protocol::Gt06,
            Protocol::H02,
            Protocol::Gps103,
            Protocol::Teltonika,
            Protocol::Tk103,
            Protocol::Queclink,
            Protocol::Meitrack,
            Protocol::Watch,
        ] {
            let f = encode(p, "123", &kind, serial, 0);
            let framing: &[char] = match p {
                Protocol::Tk103 => &['(', ')'],
                Protocol::Watch => &['[', ']'],
                Protocol::Meitrack => &['*'],
                _ => &[],
            };
            proptest::prop_assert_eq!(f.is_some(), !text.contains(framing));
            proptest::prop_assert_eq!(f.is_some(), supported(p, &kind));
        }
        let g = gt06(&text, serial);
        proptest::prop_assert_eq!(usize::from(g[2]) + 5, g.len());
        proptest::prop_assert_eq!(&g[9..9 + text.len()], text.as_bytes());
        let t = codec12(&text);
        proptest::prop_assert_eq!(&t[15..15 + text.len()], text.as_bytes());
    }
}
