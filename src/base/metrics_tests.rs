use super::*;

struct Fixed(&'static str, f64);

impl Collect for Fixed {
    fn collect(&self, out: &mut Families) {
        out.counter(self.0, "A counter.")
            .sample(&[("k", "v")], self.1);
    }
}

#[test]
fn counters_are_named_by_total_in_text_and_by_base_in_openmetrics() {
    let mut f = Families::new();
    f.counter("tallyd_x", "Things.").value(3.0);
    f.gauge("tallyd_g", "A level.").value(1.5);
    let families = f.into_vec();
    assert_eq!(
        render_to_string(&families, false),
        "# HELP tallyd_x_total Things.\n# TYPE tallyd_x_total counter\ntallyd_x_total 3\n\
         # HELP tallyd_g A level.\n# TYPE tallyd_g gauge\ntallyd_g 1.5\n"
    );
    assert_eq!(
        render_to_string(&families, true),
        "# HELP tallyd_x Things.\n# TYPE tallyd_x counter\ntallyd_x_total 3\n\
         # HELP tallyd_g A level.\n# TYPE tallyd_g gauge\ntallyd_g 1.5\n"
    );
}

#[test]
fn labels_keep_their_order_and_values_are_escaped() {
    let mut f = Families::new();
    f.gauge("tallyd_g", "Help with \\ and\nnewline.")
        .sample(&[("z", "1"), ("a", "q\"b\\c\nd")], 2.0)
        .sample(&[], f64::NAN)
        .sample(&[("a", "x")], f64::INFINITY);
    let text = render_to_string(&f.into_vec(), false);
    assert_eq!(
        text,
        "# HELP tallyd_g Help with \\\\ and\\nnewline.\n# TYPE tallyd_g gauge\n\
         tallyd_g{z=\"1\",a=\"q\\\"b\\\\c\\nd\"} 2\ntallyd_g NaN\ntallyd_g{a=\"x\"} +Inf\n"
    );
}

#[test]
fn histograms_render_buckets_sum_and_count() {
    let mut f = Families::new();
    let h = Histogram {
        buckets: vec![(0.5, 1.0), (1.0, 2.0)],
        count: 3.0,
        sum: 4.25,
    };
    f.histogram("tallyd_d_seconds", "Durations.")
        .histogram(&[("queue", "dd")], h.clone())
        .histogram(&[], h);
    let want = "# HELP tallyd_d_seconds Durations.\n# TYPE tallyd_d_seconds histogram\n\
        tallyd_d_seconds_bucket{queue=\"dd\",le=\"0.5\"} 1\n\
        tallyd_d_seconds_bucket{queue=\"dd\",le=\"1\"} 2\n\
        tallyd_d_seconds_bucket{queue=\"dd\",le=\"+Inf\"} 3\n\
        tallyd_d_seconds_sum{queue=\"dd\"} 4.25\n\
        tallyd_d_seconds_count{queue=\"dd\"} 3\n\
        tallyd_d_seconds_bucket{le=\"0.5\"} 1\n\
        tallyd_d_seconds_bucket{le=\"1\"} 2\n\
        tallyd_d_seconds_bucket{le=\"+Inf\"} 3\n\
        tallyd_d_seconds_sum 4.25\n\
        tallyd_d_seconds_count 3\n";
    let families = f.into_vec();
    assert_eq!(render_to_string(&families, false), want);
    // Histograms have no name suffix rule of their own: both formats agree.
    assert_eq!(render_to_string(&families, true), want);
}

#[test]
fn an_empty_family_is_its_header() {
    let mut f = Families::new();
    f.gauge("tallyd_none", "Nothing yet.");
    assert_eq!(
        render_to_string(&f.into_vec(), true),
        "# HELP tallyd_none Nothing yet.\n# TYPE tallyd_none gauge\n"
    );
}

#[test]
fn a_family_emitted_twice_is_one_block() {
    let mut f = Families::new();
    f.counter("tallyd_a", "A.").sample(&[("q", "1")], 1.0);
    f.gauge("tallyd_b", "B.").value(0.0);
    f.counter("tallyd_a", "Ignored.").sample(&[("q", "2")], 2.0);
    let families = f.into_vec();
    assert_eq!(families.len(), 2);
    assert_eq!(families[0].help, "A.");
    assert_eq!(families[0].get(&[("q", "2")]), Some(2.0));
    assert_eq!(families[0].get(&[("q", "3")]), None);
    assert_eq!(families[0].samples[1].label("q"), Some("2"));
}

#[test]
fn registry_collects_in_registration_order() {
    let r = Registry::new();
    r.register(Arc::new(Fixed("tallyd_second", 2.0)));
    r.register(Arc::new(Fixed("tallyd_first", 1.0)));
    let snap = r.snapshot();
    let names: Vec<&str> = snap.iter().map(|f| f.name).collect();
    assert_eq!(names, ["tallyd_second", "tallyd_first"]);
    assert_eq!(snap[1].kind, Kind::Counter);
    assert_eq!(snap[1].samples[0].number(), Some(1.0));
    // A registry is itself a collector: nested registries keep the order.
    let outer = Registry::new();
    outer.register(Arc::new(Fixed("tallyd_zero", 0.0)));
    outer.register(Arc::new(r));
    let names: Vec<&str> = outer.snapshot().iter().map(|f| f.name).collect();
    assert_eq!(names, ["tallyd_zero", "tallyd_second", "tallyd_first"]);
    assert_eq!(
        render_to_string(&collect_one(&Fixed("tallyd_c", 7.0)), false),
        "# HELP tallyd_c_total A counter.\n# TYPE tallyd_c_total counter\ntallyd_c_total{k=\"v\"} 7\n"
    );
}
