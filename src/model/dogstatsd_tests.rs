//! Tests of `model/dogstatsd.rs`.

use super::*;
use crate::model::{AlertType, CheckStatus, Priority};

fn metric(line: &str) -> MetricLine<'_> {
    match parse_line(line.as_bytes(), 100) {
        Ok(Line::Metric(m)) => m,
        other => panic!("{line:?} did not parse as a metric: {other:?}"),
    }
}

fn vals(m: &MetricLine<'_>) -> Vec<f64> {
    values(m.values).map(|v| v.value).collect()
}

#[test]
fn every_metric_type() {
    let table = [
        ("a:1|c", MetricKind::Counter),
        ("a:1|g", MetricKind::Gauge),
        ("a:1|ms", MetricKind::Timer),
        ("a:1|h", MetricKind::Histogram),
        ("a:1|s", MetricKind::Set),
        ("a:1|d", MetricKind::Distribution),
    ];
    for (line, kind) in table {
        let m = metric(line);
        assert_eq!(m.kind, kind, "{line}");
        assert_eq!(m.name, b"a");
        assert_eq!(m.sample_rate, 1.0);
        assert!(m.tags.is_empty());
    }
}

#[test]
fn optional_fields_in_any_order() {
    let m = metric("page.views:3|c|#env:prod,flag|@0.5|c:abc123|T1700000000|e:it-false|card:low");
    assert_eq!(m.name, b"page.views");
    assert_eq!(vals(&m), vec![3.0]);
    assert_eq!(m.sample_rate, 0.5);
    assert_eq!(
        tags(m.tags).collect::<Vec<_>>(),
        vec![&b"env:prod"[..], b"flag"]
    );
    assert_eq!(m.container_id, Some(&b"abc123"[..]));
    assert_eq!(m.timestamp, Some(1_700_000_000));
    let m = metric("x:1|ms|@0.25|#a:b");
    assert_eq!(m.sample_rate, 0.25);
    assert_eq!(m.tags, b"a:b");
}

#[test]
fn packed_values_and_number_forms() {
    assert_eq!(vals(&metric("a:1:2:3|d")), vec![1.0, 2.0, 3.0]);
    assert_eq!(vals(&metric("a:21::22|h")), vec![21.0, 22.0]);
    assert_eq!(vals(&metric("a:-2|g")), vec![-2.0]);
    assert_eq!(vals(&metric("a:+3|g")), vec![3.0]);
    assert_eq!(vals(&metric("a:1.5e3|ms")), vec![1500.0]);
    assert_eq!(vals(&metric("a:0.25|c")), vec![0.25]);
    assert_eq!(
        vals(&metric("a:1234567890123456789|c")),
        vec![1234567890123456789.0]
    );
    let signed: Vec<bool> = values(metric("a:+3:-2:4|g").values)
        .map(|v| v.signed)
        .collect();
    assert_eq!(signed, vec![true, true, false]);
}

#[test]
fn set_members_are_opaque() {
    let m = metric("users:alice|s");
    assert_eq!(m.values, b"alice");
    assert_eq!(metric("users:a:b|s").values, b"a:b");
}

#[test]
fn empty_tag_list_is_tolerated() {
    let m = metric("a:1|c|#");
    assert_eq!(tags(m.tags).count(), 0);
    assert_eq!(tags(metric("a:1|c|#a,,b").tags).count(), 2);
}

#[test]
fn malformed_metric_lines() {
    let table: &[(&str, ParseError)] = &[
        ("gibberish", ParseError::Format),
        ("a:1", ParseError::Format),
        (":1|c", ParseError::Format),
        ("a:|c", ParseError::Format),
        ("a|c", ParseError::Format),
        ("a:1|", ParseError::Type),
        ("a:1|x", ParseError::Type),
        ("a:1|cc", ParseError::Type),
        ("a:1|C", ParseError::Type),
        ("a:abc|c", ParseError::Value),
        ("a:1:x|d", ParseError::Value),
        ("a:inf|g", ParseError::Value),
        ("a:NaN|g", ParseError::Value),
        ("a:1e999|g", ParseError::Value),
        ("a:-|g", ParseError::Value),
        ("a:1|c|@0", ParseError::SampleRate),
        ("a:1|c|@1.5", ParseError::SampleRate),
        ("a:1|c|@-0.5", ParseError::SampleRate),
        ("a:1|c|@x", ParseError::SampleRate),
        // Subnormal: 1 / rate is not finite.
        ("x:1|c|@1e-320", ParseError::SampleRate),
        // Finite values whose weight under the sample rate is not.
        ("a:1e308|c|@0.1", ParseError::Value),
        ("a:-1e308|c|@0.1", ParseError::Value),
        ("a:1e308|ms|@0.1", ParseError::Value),
        ("a:1:1e308|h|@0.5", ParseError::Value),
        ("a:1|c|T", ParseError::Timestamp),
        ("a:1|c|T0", ParseError::Timestamp),
        ("a:1|c|T-5", ParseError::Timestamp),
        ("a:1|c|T12x", ParseError::Timestamp),
        ("a:1|c|T99999999999999999999", ParseError::Timestamp),
    ];
    for (line, want) in table {
        assert_eq!(
            parse_line(line.as_bytes(), 100).err(),
            Some(*want),
            "{line}"
        );
    }
}

#[test]
fn large_values_that_stay_finite_are_kept() {
    assert_eq!(vals(&metric("a:1e308|g|@0.1")), [1e308]);
    assert_eq!(vals(&metric("a:1e307|c|@0.1")), [1e307]);
    assert_eq!(metric("a:1|d|@1e-300").sample_rate, 1e-300);
}

#[test]
fn tag_limit() {
    assert!(parse_line(b"a:1|c|#a,b,c", 3).is_ok());
    assert_eq!(
        parse_line(b"a:1|c|#a,b,c,d", 3).err(),
        Some(ParseError::TooManyTags)
    );
}

#[test]
fn lines_split_and_tolerate_crlf() {
    let got: Vec<&[u8]> = lines(b"a:1|c\r\nb:2|g\n\n c:3|c\n").collect();
    assert_eq!(got, vec![&b"a:1|c"[..], b"b:2|g", b" c:3|c"]);
    assert_eq!(lines(b"").count(), 0);
    assert_eq!(lines(b"\n\r\n").count(), 0);
}

#[test]
fn events() {
    let line = b"_e{5,4}:title|text|d:1700000000|h:web-1|k:agg|p:low|s:src|t:warning|#a:b,c";
    let Ok(Line::Event(ev)) = parse_line(line, 100) else {
        panic!("event")
    };
    assert_eq!(ev.title, "title");
    assert_eq!(ev.text, "text");
    assert_eq!(ev.timestamp, Some(1_700_000_000));
    assert_eq!(ev.hostname.as_deref(), Some("web-1"));
    assert_eq!(ev.aggregation_key.as_deref(), Some("agg"));
    assert_eq!(ev.priority, Priority::Low);
    assert_eq!(ev.source_type.as_deref(), Some("src"));
    assert_eq!(ev.alert_type, AlertType::Warning);
    assert_eq!(ev.tags, vec!["a:b", "c"]);

    // Lengths are byte lengths, and a title may contain `|`.
    let Ok(Line::Event(ev)) = parse_line("_e{3,6}:a|b|héllo".as_bytes(), 100) else {
        panic!("event")
    };
    assert_eq!(ev.title, "a|b");
    assert_eq!(ev.text, "héllo");
    let Ok(Line::Event(ev)) = parse_line(b"_e{2,0}:hi|", 100) else {
        panic!("empty text")
    };
    assert_eq!(ev.text, "");
    let Ok(Line::Event(ev)) = parse_line(b"_e{4,9}:up\\n|line\\none|t:bogus", 100) else {
        panic!("escapes")
    };
    assert_eq!(ev.title, "up\n");
    assert_eq!(ev.text, "line\none");
    assert_eq!(ev.alert_type, AlertType::Info);
}

#[test]
fn malformed_events() {
    for line in [
        &b"_e{5,4}:titl|text"[..],
        b"_e{5,4}:title|tex",
        b"_e{5,4}:title|textX",
        b"_e{0,4}:|text",
        b"_e{a,4}:title|text",
        b"_e{5,4}title|text",
        b"_e{5}:title|text",
        b"_e{99999999999999999999,1}:a|b",
    ] {
        assert_eq!(
            parse_line(line, 100).err(),
            Some(ParseError::Event),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn service_checks() {
    let Ok(Line::ServiceCheck(sc)) = parse_line(
        b"_sc|db.up|2|d:1700000000|h:db-1|#env:prod|m:down\\nhard",
        100,
    ) else {
        panic!("check")
    };
    assert_eq!(sc.name, "db.up");
    assert_eq!(sc.status, CheckStatus::Critical);
    assert_eq!(sc.timestamp, Some(1_700_000_000));
    assert_eq!(sc.hostname.as_deref(), Some("db-1"));
    assert_eq!(sc.tags, vec!["env:prod"]);
    assert_eq!(sc.message.as_deref(), Some("down\nhard"));
    let Ok(Line::ServiceCheck(sc)) = parse_line(b"_sc|x|0", 100) else {
        panic!("bare")
    };
    assert_eq!(sc.status, CheckStatus::Ok);
    for line in [&b"_sc|x|4"[..], b"_sc|x", b"_sc||0", b"_sc|x|", b"_sc|x|12"] {
        assert_eq!(
            parse_line(line, 100).err(),
            Some(ParseError::ServiceCheck),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn fast_decimal_agrees_with_the_standard_parser() {
    for t in [
        "0",
        "7",
        "0.5",
        "123.456",
        "999999999999999",
        "99999999.9999999",
        "0.000000000000001",
        "5.",
        ".5",
        "1.2.3",
    ] {
        let std_value = t.parse::<f64>().ok();
        assert_eq!(parse_value(t.as_bytes()), std_value, "{t}");
        assert_eq!(
            parse_value(format!("-{t}").as_bytes()),
            std_value.map(|v| -v),
            "-{t}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn word_search_finds_the_first_match(
        hay in proptest::collection::vec(proptest::sample::select(b":|,#a\x00\x80\xff".to_vec()), 0..70),
        a in proptest::sample::select(b":|,#a\x00\x80\xff".to_vec()),
        b in proptest::sample::select(b":|,#a\x00\x80\xff".to_vec()),
    ) {
        proptest::prop_assert_eq!(find_byte(&hay, a), hay.iter().position(|&x| x == a));
        proptest::prop_assert_eq!(
            find_byte2(&hay, a, b),
            hay.iter().position(|&x| x == a || x == b)
        );
    }

    #[test]
    fn decimals_read_exactly(int in 0u64..10_000_000_000, frac in "[0-9]{0,6}") {
        let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
        let want: f64 = text.parse().expect("decimal");
        proptest::prop_assert_eq!(parse_value(text.as_bytes()), Some(want));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        for line in lines(&data) {
            let _ = parse_line(line, 8);
        }
    }

    #[test]
    fn well_formed_lines_round_trip(
        name in "[a-z][a-z0-9_.]{0,20}",
        v in -1.0e9f64..1.0e9,
        tagset in proptest::collection::vec("[a-z]{1,5}:[a-z0-9]{1,5}", 0..5),
    ) {
        let line = format!("{name}:{v}|ms|#{}", tagset.join(","));
        let m = metric(&line);
        proptest::prop_assert_eq!(m.name, name.as_bytes());
        proptest::prop_assert_eq!(vals(&m), vec![v]);
        proptest::prop_assert_eq!(tags(m.tags).count(), tagset.len());
    }
}

#[test]
fn a_bad_optional_field_of_a_service_check_is_skipped_and_counted() {
    // The Agent's parser test: the check stands, the field is ignored.
    let Ok(Line::ServiceCheck(sc)) = parse_line(b"_sc|agent.up|0|d:some_time|h:box|#a:b", 100)
    else {
        panic!("check with a bad timestamp")
    };
    assert_eq!(
        (sc.name.as_str(), sc.timestamp, sc.hostname.as_deref()),
        ("agent.up", None, Some("box"))
    );
    assert_eq!(
        (sc.tags.clone(), sc.skipped_fields),
        (vec!["a:b".to_string()], 1)
    );
    let Ok(Line::ServiceCheck(sc)) = parse_line(b"_sc|x|1|d:zz|h:\xff", 100) else {
        panic!("check")
    };
    assert_eq!(
        sc.skipped_fields, 2,
        "a bad timestamp and a host that is not UTF-8"
    );
    let bad_host: &[u8] = &[
        b'_', b's', b'c', b'|', b'x', b'|', b'1', b'|', b'h', b':', 0xff,
    ];
    let Ok(Line::ServiceCheck(sc)) = parse_line(bad_host, 100) else {
        panic!("check with a host that is not UTF-8")
    };
    assert_eq!((sc.hostname, sc.skipped_fields), (None, 1));
    // Events too: a bad timestamp is skipped and counted.
    let Ok(Line::Event(ev)) = parse_line(b"_e{1,1}:a|b|d:soon|#x:y", 100) else {
        panic!("event")
    };
    assert_eq!((ev.timestamp, ev.skipped_fields), (None, 1));
    assert_eq!(ev.tags, vec!["x:y"]);
}

#[test]
fn service_check_messages_are_cut_at_500_characters() {
    let long = format!("_sc|x|2|m:{}", "é".repeat(600));
    let Ok(Line::ServiceCheck(sc)) = parse_line(long.as_bytes(), 100) else {
        panic!("check")
    };
    assert_eq!(sc.message.map(|m| m.chars().count()), Some(500));
}

#[test]
fn internal_tags_are_stripped_and_kept_as_origin() {
    let m = metric(
        "a:1|c|#env:prod,dd.internal.entity_id:abc,dd.internal.card:high,dd.internal.jmx_check_name:kafka,dd.internals:kept|c:cid",
    );
    let kept: Vec<&[u8]> = tags(m.tags).collect();
    assert_eq!(kept, vec![&b"env:prod"[..], b"dd.internals:kept"]);
    assert_eq!(m.entity_id(), Some(&b"abc"[..]));
    assert_eq!(m.container_id, Some(&b"cid"[..]));
    assert_eq!(
        internal_value(m.tags, Internal::Cardinality),
        Some(&b"high"[..])
    );
    // A tag named like the prefix but without a value of a known key stays.
    let m = metric("a:1|c|#dd.internal.other:1,dd.internal.");
    assert_eq!(tags(m.tags).count(), 2);

    let Ok(Line::Event(ev)) = parse_line(
        b"_e{1,1}:a|b|#env:prod,dd.internal.entity_id:abc,dd.internal.card:low|c:cid",
        100,
    ) else {
        panic!("event")
    };
    assert_eq!(ev.tags, vec!["env:prod"]);
    assert_eq!(ev.origin.entity_id.as_deref(), Some("abc"));
    assert_eq!(ev.origin.cardinality.as_deref(), Some("low"));
    assert_eq!(ev.origin.container_id.as_deref(), Some("cid"));
    let Ok(Line::ServiceCheck(sc)) = parse_line(
        b"_sc|x|0|#dd.internal.card:orchestrator,env:prod,dd.internal.entity_id:abc|card:high",
        100,
    ) else {
        panic!("check")
    };
    assert_eq!(sc.tags, vec!["env:prod"]);
    assert_eq!(sc.origin.entity_id.as_deref(), Some("abc"));
    // The card: field wins over the tag, as in the Agent.
    assert_eq!(sc.origin.cardinality.as_deref(), Some("high"));
    assert_eq!(sc.skipped_fields, 0);
}
