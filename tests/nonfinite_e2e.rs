//! Values that cannot be represented, sent as a hostile peer would: a subnormal sample rate,
//! a counter that overflows its window, a value that overflows under its sample rate. Each is
//! refused and counted as a parse error; no sink ever holds `+Inf` or `NaN`.

mod common;

use common::{value, Tallyd};

#[test]
fn unrepresentable_values_are_counted_and_never_exposed() {
    let t = Tallyd::start("");
    for line in [
        "poison.rate:1|c|@1e-320",
        "poison.sum:1e308|c",
        "poison.sum:1e308|c",
        "poison.scaled:1e308|c|@0.1",
        "poison.scaled:-1e308|c|@0.1",
        "poison.timer:1e308|ms|@0.1",
        "fine:1|c",
    ] {
        t.send_udp(line);
    }
    let text = t.wait_value("fine_total", 1.0);
    let errors = |reason: &str| {
        value(
            &text,
            &format!("tallyd_statsd_parse_errors_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(errors("invalid_sample_rate"), Some(1.0), "{text}");
    assert_eq!(errors("invalid_value"), Some(4.0), "{text}");
    // The first 1e308 fits and is kept; the second would overflow the window and is refused.
    assert_eq!(value(&text, "poison_sum_total"), Some(1e308), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let v = line.rsplit(' ').next().unwrap_or("");
        assert!(
            v != "+Inf" && v != "-Inf" && v != "NaN",
            "non-finite value exposed: {line}"
        );
    }
    // The next window adds another 1e308 to the cumulative counter: it starts again (a reset)
    // rather than becoming +Inf.
    t.send_udp("poison.sum:1e308|c");
    t.send_udp("fine:1|c");
    let text = t.wait_value("fine_total", 2.0);
    assert_eq!(value(&text, "poison_sum_total"), Some(1e308), "{text}");
}
