//! Where TCP cuts a stream must not change what the GPS decoders make of it: the property the
//! `gps_stream` fuzz target checks, run here on every protocol's sample traffic (device
//! captures and protocol-document frames, with corrupt frames and noise mixed in) under
//! proptest, so `cargo test` checks it without the nightly fuzzing toolchain. The connection
//! is modelled as `gps::server` runs it (detection, reads bounded by the frame limit, decoding
//! until `Incomplete`).

use std::time::Duration;

use proptest::prelude::*;
use tallyd::gps::detect::{detect, Detect};
use tallyd::gps::fix::Step;
use tallyd::gps::server::{Decoder, Limits};

const NOW_MS: i64 = 1_750_000_000_000;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn limits(max_line: usize, max_frame: usize) -> Limits {
    let t = Duration::from_secs(60);
    Limits {
        nmea_require_checksum: false,
        points_invalid_fixes: false,
        max_connections: 1,
        max_frame,
        max_line,
        handshake_timeout: t,
        frame_timeout: t,
        idle_timeout: t,
    }
}

/// The messages decoded (good or bad), in order, then how the run ended and what was left;
/// `None` when a step met H02's documented binary ambiguity (a read that ends exactly after
/// 32 or 42 bytes of a binary frame, see the fuzz target `gps_stream`).
fn run(stream: &[u8], pieces: &[usize], l: &Limits) -> Option<(Vec<String>, Vec<u8>)> {
    let mut buf: Vec<u8> = Vec::new();
    let mut decoder: Option<Decoder> = None;
    let mut events = Vec::new();
    let mut at = 0;
    let mut i = 0;
    'outer: while at < stream.len() {
        let piece = pieces
            .get(i % pieces.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        let end = stream.len().min(at.saturating_add(piece));
        i += 1;
        while at < end {
            let limit = decoder.as_ref().map_or(l.max_line, |d| d.limit(l));
            let room = (limit + 1).saturating_sub(buf.len()).min(4096);
            if room == 0 {
                events.push("closed: no room".to_string());
                break 'outer;
            }
            let n = room.min(end - at);
            buf.extend_from_slice(&stream[at..at + n]);
            at += n;
            while !buf.is_empty() {
                let d = match &mut decoder {
                    Some(d) => d,
                    None => match detect(&buf) {
                        Detect::Found(p) => {
                            events.push(format!("detected {p:?}"));
                            decoder.insert(Decoder::new(p))
                        }
                        Detect::NeedMore if buf.len() <= l.max_line => break,
                        other => {
                            events.push(format!("closed: {other:?}"));
                            break 'outer;
                        }
                    },
                };
                let h02 = matches!(d, Decoder::H02);
                if h02 && buf[0] == b'$' && (buf.len() == 32 || buf.len() == 42) {
                    return None;
                }
                match d.step(&buf, l, NOW_MS) {
                    Step::Incomplete => break,
                    Step::Skip(n) => {
                        assert!(n >= 1 && n <= buf.len());
                        buf.drain(..n);
                    }
                    Step::Frame { len, msg } => {
                        assert!(len >= 1 && len <= buf.len());
                        buf.drain(..len);
                        events.push(format!("{msg:?}"));
                    }
                    Step::Fatal(e) => {
                        events.push(format!("closed: {e:?}"));
                        break 'outer;
                    }
                }
            }
        }
    }
    // After a close the buffer is dropped: what was left in it is not observable.
    if events.last().is_some_and(|e| e.starts_with("closed")) {
        buf.clear();
    }
    Some((events, buf))
}

/// Sample traffic of each protocol added or changed with issue 18.
fn streams() -> Vec<Vec<u8>> {
    let gt06 = [
        "78780d010868120145233604000100001e650d0a",
        "787800691710231108500200cc080c4e2fa5640c4e2fa66e0d0a",
        "7878121011091c0b1b2999058508040097a89e0034520d0a",
        "78780c95130a071223200100013ad10d0a",
        "787803691604130318491475905BD30E25001E10BBF7635D14759006E626560501CC0028660F213228660F1F2828660EA81E286610731428660F20140D0A",
        "7878471e0e03110b0511c501c664fd074db73f0218a602e003433a002fed40433a0056e14e433a0056104e433a0056fd53433a002eed55433a007e4b57433a002ee25aff00020120f6720d0a",
        "7979004a321106170c1b180cc900a875580b7ab4f00010350901fe0a007c0009112424007c000912240081004efe2100c500100f1200000000000000000000000000000000000000000000bc7c900d0a",
        "78780a13c40604000201298f5b0d0a",
        "787801080d0a",
    ]
    .concat();
    let text: [&[u8]; 8] = [
        b"(027044702512BP05000027044702512240301A5130.0000N00007.5000W012.3120000090.0000000000L00000000)(027044702512BP00HSO)xx\r\n(0270(027044702512BO012240301A5130.0009N00007.5000W000.0120900000.0000000000L00000000)",
        b"+RESP:GTFRI,020102,135790246811220,,0,0,1,1,4.3,92,70.0,121.354335,31.222073,20090214013254,0460,0000,18d8,6141,00,,20090214093254,11F0$\r\n+ACK:GTHBD,060100,135790246811220,,20100214093254,11F0$+BUFF:GTFRI,1$",
        b"$$X138,862170010187175,AAA,35,-29.960365,-51.655455,130507201625,A,8,9,0,107,0.9,7,169322,126582,724|6|0547|132B,0000,0009|000A||0278|0000,*BE\r\n$$A10,1,AAA*00\r\n",
        b"[SG*8800000015*0002*LK][3G*4700186508*000B*LK,0,10,100]noise][SG*8800000015*0087*UD,220414,134652,A,22.571707,N,113.8613968,E,0.1,0.0,100,7,60,90,1000]\n[SG*1*LK]",
        b"359769031878322imei:359769031878322,tracker,1602160718,2,F,221811.000,A,1655.2193,S,14546.6722,E,0.00,,;imei:868683027758113,OBD,180905200218,,,,0,0,0.39%,70,9.41%,494,0.00,P0137,P0430,,;imei:359586015829802,help me,0809231429,13554900601,F,062947.294,A,2234.4026,N,11354.3277,E,0.00,;",
        b"*HQ,4210209006,V1,054048,A,2828.2297,N,07733.4332,E,000.5,047,4,080918,EEE7FBDF,4261193,0#*HQ,1451316409,V1,030149,A,-23-29.0095,S,-46-51.5852,W,2.4,065,070315,FFFFFFFF#\r\n*hq,356327080425330,VP1,A,2702.7245,S,15251.9311,E,0.48,0.0000,080917#",
        b"660420156A0066AA$GPRMC,120000,A,4916.4500,N,12311.1200,W,5.0,054.7,010324,,,A\r\n$GPGGA,120001.00,4916.4501,N,12311.1200,W,1,08,0.9,12.1,M,,M,,\r\n$GPGGA,120002.00,4916.4501,N,12311.1200,W,1,08,0.9,12.1,M,,M,,\r\n",
        b"(01029131573BR00150428A3801.6382N02351.0159E000.0080729278.7800000000LEF9ECB9C)",
    ];
    let mut out = vec![hex(&gt06)];
    out.extend(text.iter().map(|t| t.to_vec()));
    let mut h02 = b"*HQ,4970105243,XT,1,100#".to_vec();
    h02.extend(hex(
        "2435248308419329301047591808172627335900074412294E024138FEFFFFFFFF01120064BA73005ECC",
    ));
    h02.extend_from_slice(b"*HQ,4970105243,XT,1,100#");
    out.push(h02);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_split_does_not_change_what_is_decoded(
        which in 0usize..10,
        pieces in proptest::collection::vec(1usize..64, 1..8),
        noise in proptest::collection::vec(any::<u8>(), 0..6),
        at in any::<prop::sample::Index>(),
        small in any::<bool>(),
    ) {
        let mut stream = streams()[which % streams().len()].clone();
        let cut = at.index(stream.len() + 1);
        stream.splice(cut..cut, noise);
        let l = if small { limits(64, 256) } else { limits(1024, 16_384) };
        if let Some(whole) = run(&stream, &[], &l) {
            if let Some(split) = run(&stream, &pieces, &l) {
                prop_assert_eq!(&whole, &split, "pieces {:?}", pieces);
            }
            if let Some(bytewise) = run(&stream, &[1], &l) {
                prop_assert_eq!(&whole, &bytewise, "byte at a time");
            }
        }
    }
}

#[test]
fn the_samples_decode_as_expected_whole() {
    for s in streams() {
        let (events, _) = run(&s, &[], &limits(1024, 16_384)).expect("no ambiguity");
        assert!(events.iter().any(|e| e.starts_with("Ok(")), "{events:#?}");
        assert!(
            !events.iter().any(|e| e.starts_with("closed")),
            "{events:#?}"
        );
    }
}
