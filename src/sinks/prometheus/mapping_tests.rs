//! The mapping file's semantics, case by case from statsd_exporter's README and mapper.

use super::*;
use crate::model::{Context, MetricKind};
use crate::sinks::prometheus::mapping_match::{escape_metric_name, mapped_context, Mapped};

fn map(m: &Mapper, name: &str, kind: MetricKind) -> Option<(String, Vec<(String, String)>)> {
    match m.map(name, kind) {
        Mapped::Map { name, labels, .. } => Some((name, labels)),
        Mapped::Unmapped => None,
        Mapped::Drop => Some(("<drop>".into(), vec![])),
    }
}

fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn readme_glob_examples() {
    let m = Mapper::parse(
        r#"
mappings:
- match: test.dispatcher.*.*.*
  name: "dispatcher_events_total"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
- match: "*.signup.*.*"
  name: "signup_events_total"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
"#,
    )
    .unwrap();
    assert_eq!(
        map(
            &m,
            "test.dispatcher.FooProcessor.send.success",
            MetricKind::Counter
        ),
        Some((
            "dispatcher_events_total".into(),
            l(&[
                ("action", "send"),
                ("job", "test_dispatcher"),
                ("outcome", "success"),
                ("processor", "FooProcessor")
            ])
        ))
    );
    assert_eq!(
        map(
            &m,
            "foo_product.signup.facebook.failure",
            MetricKind::Counter
        ),
        Some((
            "signup_events_total".into(),
            l(&[
                ("job", "foo_product_server"),
                ("outcome", "failure"),
                ("provider", "facebook")
            ])
        ))
    );
    assert_eq!(
        map(&m, "test.web-server.foo.bar", MetricKind::Counter),
        None
    );
    assert_eq!(
        escape_metric_name("test.web-server.foo.bar"),
        "test_web_server_foo_bar"
    );
}

#[test]
fn regex_and_name_references() {
    let m = Mapper::parse(
        r#"
mappings:
- match: test.*.*.counter
  name: "${2}_total"
  labels:
    provider: "$1"
- match: 'test\.(\w+)\.(\w+)\.gauge'
  match_type: regex
  name: "${2}_g"
  labels:
    provider: "$1"
"#,
    )
    .unwrap();
    assert_eq!(
        map(&m, "test.aws.requests.counter", MetricKind::Counter),
        Some(("requests_total".into(), l(&[("provider", "aws")])))
    );
    assert_eq!(
        map(&m, "test.gcp.heat.gauge", MetricKind::Gauge),
        Some(("heat_g".into(), l(&[("provider", "gcp")])))
    );
}

#[test]
fn globs_before_regex_drop_and_metric_type() {
    let m = Mapper::parse(
        r#"
mappings:
- match: "."
  match_type: regex
  action: drop
  name: "dropped"
- match: test.foo.*
  name: "test_foo"
  match_metric_type: counter
  labels:
    provider: "$1"
"#,
    )
    .unwrap();
    // Glob rules are tried before regex rules, whatever their order in the file.
    assert_eq!(
        map(&m, "test.foo.bar", MetricKind::Counter),
        Some(("test_foo".into(), l(&[("provider", "bar")])))
    );
    // Not a counter: the glob rule does not apply, the catch-all regex drops it.
    assert_eq!(m.map("test.foo.bar", MetricKind::Gauge), Mapped::Drop);
    assert_eq!(m.map("anything", MetricKind::Timer), Mapped::Drop);
}

#[test]
fn glob_ordering_and_disabled_ordering() {
    let rules = r#"
mappings:
- match: a.*.c
  name: "wild"
- match: a.b.c
  name: "literal"
"#;
    let ordered = Mapper::parse(rules).unwrap();
    assert_eq!(
        map(&ordered, "a.b.c", MetricKind::Counter).unwrap().0,
        "wild"
    );
    let unordered = Mapper::parse(&format!(
        "defaults:\n  glob_disable_ordering: true\n{rules}"
    ))
    .unwrap();
    assert_eq!(
        map(&unordered, "a.b.c", MetricKind::Counter).unwrap().0,
        "literal"
    );
    assert_eq!(
        map(&unordered, "a.x.c", MetricKind::Counter).unwrap().0,
        "wild"
    );
}

#[test]
fn shapes_from_rules_and_defaults() {
    let m = Mapper::parse(
        r#"
defaults:
  timer_type: histogram
  buckets: [.005, .01, .025]
  ttl: 0
mappings:
- match: test.timing.*.*.*
  name: "my_timer"
- match: other.timing.*.*.*
  timer_type: summary
  name: "other_timer"
  summary_options:
    quantiles:
      - quantile: 0.99
        error: 0.001
      - quantile: 0.5
        error: 0.005
    max_summary_age: 30s
- match: h.*
  observer_type: histogram
  histogram_options:
    buckets: [1, 2]
  name: "h"
  scale: 0.001
  ttl: 1m20s
  help: "A histogram"
"#,
    )
    .unwrap();
    assert_eq!(m.shapes.len(), 4);
    assert_eq!(m.shapes[0].ttl, Some(Duration::ZERO));
    assert_eq!(m.shapes[1].histogram, Some(true));
    assert_eq!(
        m.shapes[1].buckets.as_deref(),
        Some(&[0.005, 0.01, 0.025][..])
    );
    assert_eq!(m.shapes[2].histogram, Some(false));
    assert_eq!(m.shapes[2].quantiles.as_deref(), Some(&[0.99, 0.5][..]));
    assert_eq!(m.shapes[3].histogram, Some(true));
    assert_eq!(m.shapes[3].buckets.as_deref(), Some(&[1.0, 2.0][..]));
    assert_eq!(m.shapes[3].scale, Some(0.001));
    assert_eq!(m.shapes[3].ttl, Some(Duration::from_secs(80)));
    assert_eq!(m.shapes[3].help.as_deref(), Some("A histogram"));
}

#[test]
fn errors_name_the_line() {
    let e = Mapper::parse("mappings:\n- match: a.b\n  name: x\n  bogus: 1\n").unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    let e = Mapper::parse("mappings:\n- match: a.b\n  name: \"\"\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    let e =
        Mapper::parse("mappings:\n- match: a.b\n  name: x\n  labels:\n    9x: y\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    let e = Mapper::parse("mappings:\n- match: '('\n  match_type: regex\n  name: x\n").unwrap_err();
    assert!(e.to_string().contains("invalid regex"), "{e}");
    assert!(Mapper::parse(
        "mappings:\n- match: a\n  name: x\n  observer_type: histogram\n  summary_options: {}\n"
    )
    .is_err());
    assert!(Mapper::parse("defaults:\n  unknown: 1\n").is_err());
}

#[test]
fn go_durations() {
    assert_eq!(parse_go_duration("1m20s"), Some(Duration::from_secs(80)));
    assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_go_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_go_duration("5"), None);
    assert_eq!(parse_go_duration("5x"), None);
}

#[test]
fn labels_merge_with_tags_and_honor_labels() {
    let orig = Context::from_unsorted(MetricKind::Counter, "a.b", &["job:sent", "env:prod"]);
    let labels = vec![("job".to_string(), "rule".to_string())];
    let c = mapped_context(&orig, "x", &labels, false);
    assert_eq!(c.tags().collect::<Vec<_>>(), vec!["env:prod", "job:rule"]);
    let c = mapped_context(&orig, "x", &labels, true);
    assert_eq!(c.tags().collect::<Vec<_>>(), vec!["env:prod", "job:sent"]);
    assert_eq!(c.name(), "x");
}

#[test]
fn partial_component_wildcards() {
    let m = Mapper::parse(
        "mappings:\n- match: client-*-req.*\n  name: r\n  labels:\n    c: $1\n    d: $2\n",
    )
    .unwrap();
    assert_eq!(
        map(&m, "client-web-req.GET", MetricKind::Counter),
        Some(("r".into(), l(&[("c", "web"), ("d", "GET")])))
    );
    assert_eq!(map(&m, "client-web.GET", MetricKind::Counter), None);
}
