//! The family layout of the exposed state: names sanitised, families sorted, clashes resolved
//! (see the module docs of `sinks::prometheus`), each sample handed to a [`Visitor`].

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use super::exposition::{SampleRef, Value, Visitor};
use super::labels::{render_labels_into, LabelScratch};
use crate::base::expo::sanitize_name_into;
use crate::model::{Context, MetricKind};

/// A family as [`Visitor::family`] receives it.
#[derive(Debug, Clone, Copy)]
pub struct FamilyRef<'a> {
    /// The exposed name (after clash renaming), without any sample suffix.
    pub name: &'a str,
    /// The statsd kind of its series.
    pub kind: MetricKind,
    /// The name before clash renaming.
    pub original: &'a str,
    /// `counter`, `gauge`, `summary` or `histogram`.
    pub prom_type: &'static str,
    /// The mapping's `help` text, when a rule gave one.
    pub help: Option<&'a str>,
}

/// One row to lay out: the context, its value, and the `help` of its rule.
pub(super) type RowIn<'a> = (&'a Arc<Context>, &'a Value, Option<&'a str>);

/// A series to visit: its family and labels are ranges of one shared string.
struct Row<'a> {
    start: u32,
    family_end: u32,
    end: u32,
    ctx: &'a Arc<Context>,
    value: &'a Value,
    help: Option<&'a str>,
}

/// The Prometheus type a value is exposed as.
pub(super) fn value_type(v: &Value) -> &'static str {
    match v {
        Value::Counter(_) => "counter",
        Value::Gauge(_) => "gauge",
        Value::Summary(_) => "summary",
        Value::Histogram(_) => "histogram",
    }
}

/// Lays out `rows` and hands every sample to `v`; returns how many series were left out.
pub(super) fn visit_rows(rows: &[RowIn<'_>], percentiles: &[f64], v: &mut impl Visitor) -> u64 {
    // Every family and label string goes into one buffer: no allocation per series.
    let mut text = String::with_capacity(rows.len() * 64);
    let mut scratch = LabelScratch::default();
    let mut entries: Vec<Row<'_>> = Vec::with_capacity(rows.len());
    for &(ctx, value, help) in rows {
        let start = text.len();
        sanitize_name_into(&mut text, ctx.name());
        // A counter already named `..._total` keeps that name: the `_total` its samples get
        // is not added twice.
        if ctx.kind() == MetricKind::Counter
            && text.len() - start > "_total".len()
            && text.ends_with("_total")
        {
            text.truncate(text.len() - "_total".len());
        }
        let family_end = text.len() as u32;
        render_labels_into(&mut text, ctx, &mut scratch);
        entries.push(Row {
            start: start as u32,
            family_end,
            end: text.len() as u32,
            ctx,
            value,
            help,
        });
    }
    let text = text.as_str();
    let family = |r: &Row<'_>| &text[r.start as usize..r.family_end as usize];
    let labels = |r: &Row<'_>| &text[r.family_end as usize..r.end as usize];
    entries.sort_unstable_by(|a, b| {
        (family(a), a.ctx.kind(), labels(a)).cmp(&(family(b), b.ctx.kind(), labels(b)))
    });
    // Names claimed by the families laid out so far. A claim is kept as where to rebuild it
    // (the family's first row, renamed or not, which suffix) rather than as a string: with one
    // family per context, 100,000 families claim about 210,000 names, and a string each was
    // the largest part of a scrape's memory.
    let mut taken: HashTable<Claim> = HashTable::new();
    // Seeded per scrape: metric names come from clients, and must not be able to line up
    // collisions.
    let hasher = foldhash::quality::RandomState::default();
    let (mut name, mut probe, mut other) = (String::new(), String::new(), String::new());
    let mut left_out = 0u64;
    let mut i = 0;
    while i < entries.len() {
        let (fam, kind) = (family(&entries[i]), entries[i].ctx.kind());
        let ptype = value_type(entries[i].value);
        let mut j = i;
        while j < entries.len() && family(&entries[j]) == fam && entries[j].ctx.kind() == kind {
            j += 1;
        }
        let group = &entries[i..j];
        let row = i as u32;
        i = j;
        let free = |renamed: bool, probe: &mut String, other: &mut String| {
            claim_name(probe, fam, kind, renamed, 0);
            if probe.starts_with("tallyd_") {
                return false;
            }
            claim_suffixes(ptype).iter().all(|&suffix| {
                claim_name(probe, fam, kind, renamed, suffix);
                let hash = hasher.hash_one(probe.as_str());
                taken
                    .find(hash, |c| {
                        let e = &entries[c.row as usize];
                        c.hash == hash && {
                            claim_name(other, family(e), e.ctx.kind(), c.renamed, c.suffix);
                            other == probe
                        }
                    })
                    .is_none()
            })
        };
        let renamed = if free(false, &mut probe, &mut other) {
            false
        } else if free(true, &mut probe, &mut other) {
            true
        } else {
            left_out += group.len() as u64;
            continue;
        };
        for &suffix in claim_suffixes(ptype) {
            claim_name(&mut probe, fam, kind, renamed, suffix);
            let hash = hasher.hash_one(probe.as_str());
            let claim = Claim {
                hash,
                row,
                renamed,
                suffix,
            };
            taken.insert_unique(hash, claim, |c| c.hash);
        }
        claim_name(&mut name, fam, kind, renamed, 0);
        v.family(&FamilyRef {
            name: &name,
            kind,
            original: fam,
            prom_type: ptype,
            help: group.iter().find_map(|r| r.help),
        });
        let mut last_labels: Option<&str> = None;
        for e in group {
            let l = labels(e);
            // One family, one type: a series of another type (two rules mapping a timer to
            // the same name, one as a summary, one as a histogram) is left out.
            if last_labels == Some(l) || value_type(e.value) != ptype {
                left_out += 1;
                continue;
            }
            last_labels = Some(l);
            let sample = |suffix, quantile, le, value| SampleRef {
                name: &name,
                suffix,
                ctx: e.ctx,
                labels: l,
                quantile,
                le,
                value,
            };
            match e.value {
                Value::Counter(x) => v.sample(&sample("_total", None, None, *x)),
                Value::Gauge(x) => v.sample(&sample("", None, None, *x)),
                Value::Summary(sm) => {
                    let qs = sm.qs.as_deref().unwrap_or(percentiles);
                    for (q, x) in qs.iter().zip(&sm.quantiles) {
                        v.sample(&sample("", Some(*q), None, *x));
                    }
                    v.sample(&sample("_sum", None, None, sm.sum));
                    v.sample(&sample("_count", None, None, sm.count as f64));
                }
                Value::Histogram(h) => {
                    let mut cum = 0u64;
                    for (k, n) in h.counts.iter().enumerate() {
                        cum += n;
                        let le = h.bounds.get(k).copied().unwrap_or(f64::INFINITY);
                        v.sample(&sample("_bucket", None, Some(le), cum as f64));
                    }
                    v.sample(&sample("_sum", None, None, h.sum));
                    v.sample(&sample("_count", None, None, h.count as f64));
                }
            }
        }
    }
    left_out
}

/// A name a family claims in the exposition, kept as where to rebuild it (see
/// [`claim_name`]): the family's first row, whether it was renamed `<name>_<type>`, and
/// which of [`SUFFIXES`] it ends with.
#[derive(Clone, Copy)]
struct Claim {
    hash: u64,
    row: u32,
    renamed: bool,
    suffix: u8,
}

/// The sample-name suffixes a family may use.
const SUFFIXES: [&str; 5] = ["", "_total", "_sum", "_count", "_bucket"];

/// Which [`SUFFIXES`] a family of Prometheus type `ptype` claims: its own name and every
/// sample name.
fn claim_suffixes(ptype: &str) -> &'static [u8] {
    match ptype {
        "counter" => &[0, 1],
        "summary" => &[0, 2, 3],
        "histogram" => &[0, 2, 3, 4],
        _ => &[0],
    }
}

/// Writes into `out` the name the family `base` of `kind` claims with `suffix`.
fn claim_name(out: &mut String, base: &str, kind: MetricKind, renamed: bool, suffix: u8) {
    out.clear();
    out.push_str(base);
    if renamed {
        out.push('_');
        out.push_str(kind.name());
    }
    out.push_str(SUFFIXES[usize::from(suffix)]);
}
