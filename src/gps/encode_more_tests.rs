use crate::gps::encode::{answer, encode, Kind, Peer};
use crate::gps::fix::Protocol;

fn enc(p: Protocol, device: &str, kind: &Kind, peer: &Peer) -> Option<Vec<u8>> {
    encode(p, device, kind, 1, 0, peer)
}

fn custom(text: &str) -> Kind {
    Kind::Custom { text: text.into() }
}

/// The Meitrack checksum, computed here: the byte sum through `*`, modulo 256.
fn meitrack_sum(frame: &[u8]) -> u8 {
    let star = frame.iter().rposition(|&b| b == b'*').expect("star");
    frame[..=star].iter().map(|&b| u32::from(b)).sum::<u32>() as u8
}

#[test]
fn meitrack_commands_match_the_document_examples() {
    let imei = "353358017784062";
    let p = Peer::default();
    // MEITRACK GPRS protocol, "Real-Time Location Query (GPRS) - A10".
    let a10 = enc(Protocol::Meitrack, imei, &Kind::Locate, &p).expect("A10");
    assert_eq!(a10, b"@@Q25,353358017784062,A10*6A\r\n");
    assert_eq!(meitrack_sum(&a10), 0x6A);
    // "Tracking by Time Interval (GPRS) - A12", in tens of seconds: 60 s is 6.
    let a12 = enc(
        Protocol::Meitrack,
        imei,
        &Kind::Interval { seconds: 60 },
        &p,
    )
    .expect("A12");
    assert_eq!(a12, b"@@V27,353358017784062,A12,6*D5\r\n");
    assert_eq!(meitrack_sum(&a12), 0xD5);
    // Rounded up, never 0 (0 would turn tracking off).
    let short = enc(Protocol::Meitrack, imei, &Kind::Interval { seconds: 5 }, &p).expect("A12");
    assert!(short.starts_with(b"@@V27,353358017784062,A12,1*"));
    let c01 = enc(Protocol::Meitrack, imei, &custom("C01,0,12222"), &p).expect("C01");
    let text = String::from_utf8(c01.clone()).expect("ascii");
    assert!(
        text.starts_with("@@C33,353358017784062,C01,0,12222*"),
        "{text}"
    );
    // The length counts from the comma after it through CR LF.
    assert_eq!(c01.len() - "@@C33".len(), 33);
    assert_eq!(
        &text[text.len() - 4..text.len() - 2],
        format!("{:02X}", meitrack_sum(&c01))
    );
}

#[test]
fn meitrack_answers_are_the_reply_the_command_draws() {
    // The document's replies to A10 (an AAA report with event 34) and A12.
    let aaa34 = b"$$Q128,353358017784062,AAA,34,22.543176,114.078448,100313093738,A,5,22,2,205\
,5,-14,0,60,0|0|10133|4110,0000,149|153|173|2707|914,*91\r\n";
    assert_eq!(aaa34.len() - "$$Q128".len(), 128, "the document's length");
    assert_eq!(meitrack_sum(aaa34), 0x91, "the document's checksum");
    let a = answer(Protocol::Meitrack, aaa34, &Kind::Locate).expect("A10 answer");
    assert_eq!(a.consumed, 0, "the report stays for the decoder");
    assert!(a.text.starts_with("$$Q128,353358017784062,AAA,34,"));
    let ok = b"$$V28,353358017784062,A12,OK*02\r\n";
    assert_eq!(meitrack_sum(ok), 0x02);
    let a = answer(Protocol::Meitrack, ok, &Kind::Interval { seconds: 60 }).expect("A12,OK");
    assert_eq!(a.text, "$$V28,353358017784062,A12,OK*02");
    // An interval report (event 35) answers no locate; A12,OK answers no locate either.
    let aaa35 = b"$$W129,353358017784062,AAA,35,22.540113,114.076141,100313094354,A,5,22,1,17\
4,4,129,0,435,0|0|10133|4110,0000,166|224|193|2704|916,*BE\r\n";
    assert_eq!(answer(Protocol::Meitrack, aaa35, &Kind::Locate), None);
    assert_eq!(answer(Protocol::Meitrack, ok, &Kind::Locate), None);
    // A frame cut short is no answer yet.
    assert_eq!(
        answer(
            Protocol::Meitrack,
            &ok[..20],
            &Kind::Interval { seconds: 60 }
        ),
        None
    );
    let c01 = b"$$C28,353358017784062,C01,OK*F6\r\n";
    assert!(answer(Protocol::Meitrack, c01, &custom("C01,0,12222")).is_some());
}

#[test]
fn tk103_commands_and_answers() {
    let id = "013612345678";
    let p = Peer::default();
    let t = |k: &Kind| enc(Protocol::Tk103, id, k, &p);
    assert_eq!(
        t(&Kind::Locate).as_deref(),
        Some(&b"(013612345678AP00)"[..])
    );
    // Interval in 4 hex digits, then 0000: no time limit.
    assert_eq!(
        t(&Kind::Interval { seconds: 30 }).as_deref(),
        Some(&b"(013612345678AR00001E0000)"[..])
    );
    assert_eq!(
        t(&Kind::Interval { seconds: 65_535 }).as_deref(),
        Some(&b"(013612345678AR00FFFF0000)"[..])
    );
    let long = Kind::Interval { seconds: 65_536 };
    assert!(!crate::gps::encode::supported(Protocol::Tk103, &long));
    assert_eq!(t(&long), None);
    assert_eq!(
        t(&custom("AV010")).as_deref(),
        Some(&b"(013612345678AV010)"[..])
    );
    // The answer to a locate is a position (BP04); the heartbeat and reports are not answers.
    let bp04 = b"(013612345678BP04130228A5124.5526N00117.7152W000.0233614352.2200000000L01B0CF1C)";
    let a = answer(Protocol::Tk103, bp04, &Kind::Locate).expect("BP04");
    assert_eq!(a.consumed, 0);
    assert_eq!(a.text.as_bytes(), &bp04[..]);
    let bs08 = b"(013612345678BS08)(0136";
    let a = answer(Protocol::Tk103, bs08, &Kind::Interval { seconds: 30 }).expect("BS08");
    assert_eq!(a.text, "(013612345678BS08)");
    for unsolicited in [
        &b"(013612345678BP00HSO)"[..],
        b"(013612345678BR00130228A5124.5526N00117.7152W000.0233614352.2200000000L01B0CF1C)",
        b"(013612345678BP05000013612345678130228A5124.5526N00117.7152W000.0233614352.22)",
    ] {
        assert_eq!(answer(Protocol::Tk103, unsolicited, &Kind::Locate), None);
    }
    assert_eq!(
        answer(Protocol::Tk103, b"(013612345678BS0", &Kind::Locate),
        None
    );
}

#[test]
fn queclink_commands_and_answers() {
    let p = Peer::default();
    let imei = "135790246811220";
    assert_eq!(
        encode(Protocol::Queclink, imei, &Kind::Locate, 0x11F0, 0, &p).as_deref(),
        Some(&b"AT+GTRTO=,1,,,,,,11F0$"[..])
    );
    let fri = custom("AT+GTFRI=gl300,1,1,,,0000,0000,,30,1000,1000,,0,,,FFFF$");
    assert_eq!(
        enc(Protocol::Queclink, imei, &fri, &p).as_deref(),
        Some(&b"AT+GTFRI=gl300,1,1,,,0000,0000,,30,1000,1000,,0,,,FFFF$"[..])
    );
    let interval = Kind::Interval { seconds: 30 };
    assert!(!crate::gps::encode::supported(
        Protocol::Queclink,
        &interval
    ));
    assert_eq!(enc(Protocol::Queclink, imei, &interval, &p), None);
    // The @Track acknowledgement of the command sent, as the protocol document writes them.
    let rto = b"+ACK:GTRTO,1A0102,135790246811220,,GPS,11F0,20100310172830,11F0$+RESP";
    let a = answer(Protocol::Queclink, rto, &Kind::Locate).expect("GTRTO");
    assert_eq!(a.consumed, 0);
    assert_eq!(
        a.text,
        "+ACK:GTRTO,1A0102,135790246811220,,GPS,11F0,20100310172830,11F0$"
    );
    let ack = b"+ACK:GTFRI,1A0102,135790246811220,,0002,20100310172830,11F0$";
    assert!(answer(Protocol::Queclink, ack, &fri).is_some());
    assert_eq!(answer(Protocol::Queclink, ack, &Kind::Locate), None);
    let hbd = b"+ACK:GTHBD,1A0102,135790246811220,,20100214093254,11F0$";
    assert_eq!(answer(Protocol::Queclink, hbd, &Kind::Locate), None);
    assert_eq!(answer(Protocol::Queclink, &rto[..30], &Kind::Locate), None);
}

#[test]
fn watch_commands_take_the_watch_framing() {
    let id = "8800000015";
    // Before any frame: the `CS` maker, no index.
    let p = Peer::default();
    assert_eq!(
        enc(Protocol::Watch, id, &Kind::Locate, &p).as_deref(),
        Some(&b"[CS*8800000015*0002*CR]"[..])
    );
    let mut sg = Peer::default();
    sg.learn(b"[SG*8800000015*0002*LK]");
    assert_eq!(
        enc(Protocol::Watch, id, &Kind::Interval { seconds: 600 }, &sg).as_deref(),
        Some(&b"[SG*8800000015*000A*UPLOAD,600]"[..])
    );
    assert_eq!(
        enc(Protocol::Watch, id, &custom("RESET"), &sg).as_deref(),
        Some(&b"[SG*8800000015*0005*RESET]"[..])
    );
    let mut indexed = Peer::default();
    indexed.learn(b"[3G*8800000015*00A1*0002*LK]");
    assert_eq!(
        enc(Protocol::Watch, id, &Kind::Locate, &indexed).as_deref(),
        Some(&b"[3G*8800000015*0001*0002*CR]"[..])
    );
    // A frame that is not the watch's leaves what was learnt.
    indexed.learn(b"$$garbage");
    assert_eq!(indexed, {
        let mut i = Peer::default();
        i.learn(b"[3G*8800000015*0001*0002*LK]");
        i
    });
}

#[test]
fn watch_answers_echo_the_command() {
    let a = answer(
        Protocol::Watch,
        b"[SG*8800000015*0002*CR][SG",
        &Kind::Locate,
    )
    .expect("CR");
    assert_eq!(
        (a.consumed, a.text.as_str()),
        (0, "[SG*8800000015*0002*CR]")
    );
    let up = b"[SG*8800000015*0006*UPLOAD]";
    assert!(answer(Protocol::Watch, up, &Kind::Interval { seconds: 600 }).is_some());
    assert_eq!(answer(Protocol::Watch, up, &Kind::Locate), None);
    assert!(answer(
        Protocol::Watch,
        b"[3G*8800000015*00A1*0005*RESET]",
        &custom("RESET")
    )
    .is_some());
    // The watch's own link and reports answer nothing.
    assert_eq!(
        answer(Protocol::Watch, b"[SG*8800000015*0002*LK]", &Kind::Locate),
        None
    );
    assert_eq!(
        answer(Protocol::Watch, b"[SG*8800000015*0002*CR", &Kind::Locate),
        None
    );
}

#[test]
fn custom_text_that_breaks_the_framing_is_refused() {
    use crate::gps::encode::supported;
    let p = Peer::default();
    for (protocol, bad) in [
        (Protocol::Tk103, "AV01)(x"),
        (Protocol::Watch, "CR][SG"),
        (Protocol::Meitrack, "C01*00"),
    ] {
        assert!(!supported(protocol, &custom(bad)), "{protocol:?}");
        assert_eq!(enc(protocol, "123456789012", &custom(bad), &p), None);
        assert!(supported(protocol, &custom("OK,1")), "{protocol:?}");
    }
    // Other protocols carry those bytes inside their own frames.
    assert!(supported(Protocol::Gt06, &custom("A*(B)[C]")));
}
