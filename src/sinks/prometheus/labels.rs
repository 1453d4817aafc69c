//! Tags as Prometheus labels: sanitised keys, valueless tags left out, several values of one
//! key joined (see the module docs of `sinks::prometheus`).

use crate::base::expo::{self, sanitize_label, sanitize_label_into};
use crate::model::Context;

/// Renders a context's tags as a label string (without braces).
pub fn render_labels(ctx: &Context) -> String {
    let mut out = String::new();
    render_labels_into(&mut out, ctx, &mut LabelScratch::default());
    out
}

/// Reusable buffers for [`render_labels_into`], so that rendering many series allocates
/// nothing per series.
#[derive(Default)]
pub(super) struct LabelScratch<'a> {
    keys: String,
    /// Sanitised key (a range of `keys`) and value of each label.
    pairs: Vec<(u32, u32, &'a str)>,
}

/// Appends a context's tags as a label string (without braces) to `out`.
pub(super) fn render_labels_into<'a>(
    out: &mut String,
    ctx: &'a Context,
    scratch: &mut LabelScratch<'a>,
) {
    scratch.keys.clear();
    scratch.pairs.clear();
    for (k, v) in ctx
        .tags()
        .filter_map(|t| t.split_once(':'))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
    {
        let ks = scratch.keys.len() as u32;
        sanitize_label_into(&mut scratch.keys, k);
        scratch.pairs.push((ks, scratch.keys.len() as u32, v));
    }
    let keys = &scratch.keys;
    let key = |p: &(u32, u32, &str)| &keys[p.0 as usize..p.1 as usize];
    // Stable: the values of one key stay in their (sorted) tag order.
    scratch.pairs.sort_by(|a, b| key(a).cmp(key(b)));
    let pairs = &scratch.pairs;
    let mut i = 0;
    while i < pairs.len() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key(&pairs[i]));
        out.push_str("=\"");
        expo::escape_label_value(out, pairs[i].2);
        let mut j = i + 1;
        while j < pairs.len() && key(&pairs[j]) == key(&pairs[i]) {
            out.push(',');
            expo::escape_label_value(out, pairs[j].2);
            j += 1;
        }
        out.push('"');
        i = j;
    }
}

/// A context's tags as labels, sorted by name: sanitised keys (see the module docs), valueless
/// tags left out, several values of one key joined with `,` in sorted order. Both the scrape
/// endpoint and remote write name series with this.
pub fn label_pairs(ctx: &Context) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, &str)> = ctx
        .tags()
        .filter_map(|t| t.split_once(':'))
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (sanitize_label(k), v))
        .collect();
    // Stable by key: the values of one key stay in tag order, as in the text format.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match out.last_mut() {
            Some((lk, lv)) if *lk == k => {
                lv.push(',');
                lv.push_str(v);
            }
            _ => out.push((k, v.to_string())),
        }
    }
    out
}
