//! Tests of `alert/rules.rs`.

use super::*;

fn rule(toml_text: &str) -> Result<Rule, ConfigError> {
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
    let e = Aggregation::parse("median").expect_err("median");
    assert_eq!(e.key, "aggregation");
    assert_eq!(
        e.sentence(),
        "aggregation: \"median\" is not one of last, avg, min, max, sum, count, rate, pNN"
    );
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
    let key = |text: &str| {
        let e = rule(text).expect_err(text);
        assert!(e.sentence().starts_with(&format!("{}:", e.key)), "{e}");
        e.key
    };
    let agg = "name = \"x\"\nmetric = \"m\"\naggregation = \"median\"\nwarn = 1.0";
    assert_eq!(key(agg), "aggregation");
    assert_eq!(key("name = \"x\"\nmetric = \"m\""), "warn");
    assert_eq!(
        key("name = \"x\"\nmetric = \"m\"\nwarn = 10.0\ncritical = 5.0"),
        "critical"
    );
    assert_eq!(
        key("name = \"x\"\nmetric = \"m\"\nwarn = 1.0\nmessage = \"{{ nope }}\""),
        "message"
    );
    assert_eq!(
        key("name = \"x\"\nwarn = 1.0\nnumerator = { metric = \"a\" }"),
        "metric"
    );
    assert_eq!(
        key("name = \"x\"\nmetric = \"m\"\nwarn = 1.0\nnotify = [\"pager\"]"),
        "notify"
    );
    let ratio = "name = \"x\"\nwarn = 1.0\nnumerator = { metric = \"a\", tags = [\"\"] }\ndenominator = { metric = \"b\" }";
    assert_eq!(key(ratio), "numerator.tags");
    let e =
        rule("name = \"x\"\nmetric = \"m\"\nwarn = 1.0\nrunbook = \"{{alert\"").expect_err("rb");
    assert_eq!(e.key, "runbook");
    assert_eq!(e.sentence(), "runbook: unclosed {{ in \"{{alert\"");
    assert!(rule(
        "name = \"x\"\nmetric = \"m\"\nwarn = 1.0\ndirection = \"below\"\ncritical = 0.5"
    )
    .is_ok());
}

#[test]
fn a_bad_user_rule_is_keyed_by_its_position_and_name() {
    let text = "[[rules]]\nname = \"x\"\nmetric = \"m\"\naggregation = \"median\"\nwarn = 1.0\n";
    let cfg: AlertsConfig = toml::from_str(text).expect("alerts toml");
    let want_key = "alerts.rules[0] (\"x\").aggregation";
    let want = "invalid config: alerts.rules[0] (\"x\").aggregation: \"median\" is not one of last, avg, min, max, sum, count, rate, pNN";
    let e = cfg.validate().expect_err("validate");
    assert_eq!((e.key.as_str(), e.to_string().as_str()), (want_key, want));
    let e = build_rules(&cfg, true).expect_err("build");
    assert_eq!((e.key.as_str(), e.to_string().as_str()), (want_key, want));
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
