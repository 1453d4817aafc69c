//! The Datadog Agent's DogStatsD variables, one case each: the key they set.

use crate::config::Config;

fn with(name: &str, value: &str) -> Config {
    let env = vec![(name.to_string(), value.to_string())];
    Config::from_toml_with_env("", "t", &env).unwrap_or_else(|e| panic!("{name}={value}: {e}"))
}

#[test]
fn every_dogstatsd_variable_sets_its_key() {
    type Check = fn(&Config) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        ("DD_HISTOGRAM_AGGREGATES", "max min sum", |c| {
            c.datadog.histogram_aggregates == ["max", "min", "sum"]
        }),
        ("DD_HISTOGRAM_AGGREGATES", "[\"avg\",\"count\"]", |c| {
            c.datadog.histogram_aggregates == ["avg", "count"]
        }),
        ("DD_HISTOGRAM_PERCENTILES", "0.5 0.99", |c| {
            c.datadog.histogram_percentiles == [0.5, 0.99]
        }),
        ("DD_DOGSTATSD_EXPIRY_SECONDS", "60", |c| {
            c.datadog.expiry_seconds == 60
        }),
        ("DD_DOGSTATSD_TAGS", "team:a region:eu", |c| {
            c.statsd.tags == ["team:a", "region:eu"]
        }),
        ("DD_STATSD_METRIC_NAMESPACE", "app", |c| {
            c.statsd.metric_namespace == "app"
        }),
        ("DD_STATSD_METRIC_NAMESPACE_BLOCKLIST", "keep jvm", |c| {
            c.statsd.metric_namespace_blocklist == ["keep", "jvm"]
        }),
        ("DD_STATSD_METRIC_NAMESPACE_BLACKLIST", "old", |c| {
            c.statsd.metric_namespace_blocklist == ["old"]
        }),
        ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION", "true", |c| {
            c.statsd.histogram_copy_to_distribution
        }),
        ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION_PREFIX", "dist.", |c| {
            c.statsd.histogram_copy_to_distribution_prefix == "dist."
        }),
        ("DD_DOGSTATSD_NON_LOCAL_TRAFFIC", "false", |c| {
            c.statsd.udp_listen == "127.0.0.1:8125" && c.statsd.tcp_listen == "127.0.0.1:8125"
        }),
        ("DD_DOGSTATSD_NON_LOCAL_TRAFFIC", "true", |c| {
            c.statsd.udp_listen == "0.0.0.0:8125"
        }),
        ("DD_DOGSTATSD_SOCKET", "/run/dsd.socket", |c| {
            c.statsd.unix_socket == "/run/dsd.socket"
        }),
        ("DD_DOGSTATSD_BUFFER_SIZE", "16384", |c| {
            c.statsd.max_packet_size == 16384
        }),
        ("DD_DOGSTATSD_SO_RCVBUF", "1048576", |c| {
            c.statsd.udp_recv_buffer == 1_048_576
        }),
        ("DD_DOGSTATSD_SO_RCVBUF", "0", |c| {
            c.statsd.udp_recv_buffer == Config::default().statsd.udp_recv_buffer
        }),
    ];
    let profiles = r#"[{"name":"airflow","prefix":"airflow.","mappings":[{"match":"airflow.job.*","name":"airflow.job","tags":{"job":"$1"}}]}]"#;
    let c = with("DD_DOGSTATSD_MAPPER_PROFILES", profiles);
    assert_eq!(c.statsd.mapper_profiles.len(), 1);
    assert_eq!(c.statsd.mapper_profiles[0].mappings[0].name, "airflow.job");
    assert_eq!(c.statsd.mapper_profiles[0].mappings[0].match_type, "glob");
    for (name, value, check) in cases {
        assert!(check(&with(name, value)), "{name}={value}");
    }
    // The Agent's defaults.
    let d = Config::default();
    assert_eq!(d.datadog.expiry_seconds, 300);
    assert_eq!(
        d.datadog.histogram_aggregates,
        ["max", "median", "avg", "count"]
    );
    assert_eq!(d.datadog.histogram_percentiles, [0.95]);
    assert!(!d.statsd.histogram_copy_to_distribution);
    assert!(d
        .statsd
        .metric_namespace_blocklist
        .contains(&"datadog.agent".to_string()));
}

#[test]
fn bad_dogstatsd_variables_name_themselves() {
    for (name, value) in [
        ("DD_DOGSTATSD_EXPIRY_SECONDS", "soon"),
        ("DD_HISTOGRAM_PERCENTILES", "p95"),
        ("DD_HISTOGRAM_COPY_TO_DISTRIBUTION", "maybe"),
        ("DD_DOGSTATSD_BUFFER_SIZE", "big"),
        ("DD_DOGSTATSD_MAPPER_PROFILES", "not json"),
    ] {
        let env = vec![(name.to_string(), value.to_string())];
        let e = Config::from_toml_with_env("", "t", &env).expect_err(name);
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn a_bad_mapper_profile_names_its_key() {
    let env = vec![(
        "DD_DOGSTATSD_MAPPER_PROFILES".to_string(),
        r#"[{"name":"x","prefix":"","mappings":[{"match":"a.**","name":"b"}]}]"#.to_string(),
    )];
    let e = Config::from_toml_with_env("", "t", &env).expect_err("a ** glob");
    assert!(e.to_string().contains("statsd.mapper_profiles"), "{e}");
}
