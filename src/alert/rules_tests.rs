//! Tests of `alert/rules.rs`.

use super::*;

fn rule(toml_text: &str) -> Result<Rule, String> {
    let r: RuleConfig = toml::from_str(toml_text).expect("rule toml");
    Rule::compile(&r, &BTreeMap::new())
}

#[test]
fn aggregations_parse() {
    assert_eq!(Aggregation::parse("p95"), Ok(Aggregation::Quantile(0.95)));
    assert!(
        matches!(Aggregation::parse("p99.9"), Ok(Aggregation::Quantile(q)) if (q - 0.999).abs() < 1e-12)
    );
    assert!(Aggregation::parse("p100").is_err());
    assert!(Aggregation::parse("median").is_err());
    assert_eq!(Aggregation::parse("rate"), Ok(Aggregation::Rate));
}

#[test]
fn tag_filters() {
    let s = Selector::compile(
        "m",
        &["env:prod".into(), "queue:*".into(), "!tier:dev".into()],
    )
    .expect("ok");
    assert!(s.matches_tags(|| ["env:prod", "queue:a"].into_iter()));
    assert!(!s.matches_tags(|| ["env:prod"].into_iter()));
    assert!(!s.matches_tags(|| ["env:prod", "queue:a", "tier:dev"].into_iter()));
    assert!(!s.matches_tags(|| ["env:dev", "queue:a"].into_iter()));
}

#[test]
fn compile_errors_name_the_key() {
    let e = rule("name = \"x\"\nmetric = \"m\"\naggregation = \"median\"\nwarn = 1.0")
        .expect_err("agg");
    assert!(e.starts_with("aggregation:"), "{e}");
    let e = rule("name = \"x\"\nmetric = \"m\"").expect_err("no threshold");
    assert!(e.starts_with("warn:"), "{e}");
    let e = rule("name = \"x\"\nmetric = \"m\"\nwarn = 10.0\ncritical = 5.0").expect_err("order");
    assert!(e.starts_with("critical:"), "{e}");
    let e = rule("name = \"x\"\nmetric = \"m\"\nwarn = 1.0\nmessage = \"{{ nope }}\"")
        .expect_err("tpl");
    assert!(e.starts_with("message:"), "{e}");
    let e = rule("name = \"x\"\nwarn = 1.0\nnumerator = { metric = \"a\" }").expect_err("ratio");
    assert!(e.starts_with("metric:"), "{e}");
    let e =
        rule("name = \"x\"\nmetric = \"m\"\nwarn = 1.0\nnotify = [\"pager\"]").expect_err("notify");
    assert!(e.starts_with("notify:"), "{e}");
    assert!(rule(
        "name = \"x\"\nmetric = \"m\"\nwarn = 1.0\ndirection = \"below\"\ncritical = 0.5"
    )
    .is_ok());
}

#[test]
fn classify_both_directions() {
    let r = rule("name = \"x\"\nmetric = \"m\"\nwarn = 10.0\ncritical = 20.0").expect("ok");
    assert_eq!(r.classify(10.0), None);
    assert_eq!(r.classify(10.5), Some(Severity::Warning));
    assert_eq!(r.classify(21.0), Some(Severity::Critical));
    assert_eq!(r.classify(f64::NAN), None);
    let r =
        rule("name = \"x\"\nmetric = \"m\"\nwarn = 10.0\ncritical = 5.0\ndirection = \"below\"")
            .expect("ok");
    assert_eq!(r.classify(9.0), Some(Severity::Warning));
    assert_eq!(r.classify(4.0), Some(Severity::Critical));
    assert_eq!(r.classify(10.0), None);
}

#[test]
fn templates() {
    let t = Template::parse("{{alert}} at {{ $value }} on {{tags.queue_type}}!").expect("ok");
    let tags: BTreeMap<String, String> = [("queue_type".to_string(), "email".to_string())].into();
    let s = t.render(
        &|n| if n == "alert" { "A".into() } else { "7".into() },
        &tags,
    );
    assert_eq!(s, "A at 7 on email!");
    assert!(Template::parse("{{alert").is_err());
    assert_eq!(format_value(5.0), "5");
    assert_eq!(format_value(0.12345), "0.123");
    assert_eq!(format_value(2.5), "2.5");
}

#[test]
fn health_rules_follow_thresholds() {
    let h = HealthThresholds {
        queue_pending_warn: 7.0,
        latency_warn_ms: 250.0,
        ..Default::default()
    };
    let rules = health_rules(&h, true);
    assert_eq!(rules.len(), 8);
    let q = rules
        .iter()
        .find(|r| r.name == "TallydForwarderQueuePending")
        .expect("queue rule");
    assert_eq!((q.warn, q.critical), (Some(7.0), Some(5000.0)));
    let f = rules
        .iter()
        .find(|r| r.name == "TallydFlushSlow")
        .expect("flush rule");
    assert_eq!(f.warn, Some(0.25));
    let n = rules
        .iter()
        .find(|r| r.name == "TallydNoDataReceived")
        .expect("no data rule");
    assert_eq!(n.for_ms, 300_000);
    assert!(health_rules(&h, false)
        .iter()
        .all(|r| r.name != "TallydNoDataReceived"));
}
