//! The tag styles of other StatsD clients, as statsd_exporter accepts them, rewritten into the
//! DogStatsD form the parser reads:
//!
//! - InfluxDB: `name,k=v,k2=v2:1|c`
//! - Librato: `name#k=v,k2=v2:1|c`
//! - SignalFX: `name[k=v,k2=v2]:1|c` (the brackets may sit inside the name:
//!   `pre[k=v].post` is the name `pre.post`)
//!
//! Each is off unless listed in `statsd.tag_styles`. As in statsd_exporter: SignalFX brackets
//! are looked for first, then the first `#` (Librato) or `,` (InfluxDB) of the name; a tag
//! without `=`, or with an empty key or value, is left out and counted; a SignalFX name with
//! one bracket only is kept as it is and counted; a line with tags in its name and DogStatsD
//! `|#` tags is rejected and counted (`mixed`). Lines without any of these characters in their
//! name pass untouched, without a copy.

/// Which styles are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagStyles {
    /// `name,k=v:...`.
    pub influxdb: bool,
    /// `name#k=v:...`.
    pub librato: bool,
    /// `name[k=v]:...`.
    pub signalfx: bool,
}

/// A tag-style fault, one label of `tallyd_statsd_tag_style_errors_total{style}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StyleError {
    /// A malformed InfluxDB tag (left out).
    Influxdb = 0,
    /// A malformed Librato tag (left out).
    Librato = 1,
    /// A malformed SignalFX tag or a lone bracket.
    Signalfx = 2,
    /// Tags in the name and `|#` tags on one line: the line is rejected.
    Mixed = 3,
}

impl StyleError {
    /// Every fault, in discriminant order.
    pub const ALL: [StyleError; 4] = [
        StyleError::Influxdb,
        StyleError::Librato,
        StyleError::Signalfx,
        StyleError::Mixed,
    ];

    /// The `style` label.
    pub fn as_str(self) -> &'static str {
        match self {
            StyleError::Influxdb => "influxdb",
            StyleError::Librato => "librato",
            StyleError::Signalfx => "signalfx",
            StyleError::Mixed => "mixed",
        }
    }
}

/// What [`rewrite`] made of a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// No tags in the name: parse the line as it is.
    Unchanged,
    /// The line in DogStatsD form is in the output buffer.
    Rewritten,
    /// Reject the line (mixed styles).
    Reject,
}

impl TagStyles {
    /// Whether any style is on (when none is, lines are not looked at).
    pub fn any(self) -> bool {
        self.influxdb || self.librato || self.signalfx
    }

    /// Looks for tags in the name of the metric line `line` and, when there are, writes the
    /// line with them as DogStatsD tags into `out`. Every fault is handed to `fault`.
    pub fn rewrite(
        self,
        line: &[u8],
        out: &mut Vec<u8>,
        mut fault: impl FnMut(StyleError),
    ) -> Rewrite {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Rewrite::Unchanged;
        };
        let (name, rest) = line.split_at(colon);
        let mut tags: Vec<(&[u8], &[u8])> = Vec::new();
        let (head, tail): (&[u8], &[u8]);
        let find = |b: u8| name.iter().position(|&c| c == b);
        match (self.signalfx, find(b'['), find(b']')) {
            (true, Some(s), Some(e)) if s < e => {
                name_tags(&name[s + 1..e], &mut tags, || fault(StyleError::Signalfx));
                (head, tail) = (&name[..s], &name[e + 1..]);
            }
            (true, Some(_), Some(_)) | (true, Some(_), None) | (true, None, Some(_)) => {
                fault(StyleError::Signalfx);
                return Rewrite::Unchanged;
            }
            _ => {
                let at = name
                    .iter()
                    .position(|&c| (c == b'#' && self.librato) || (c == b',' && self.influxdb));
                let Some(at) = at else {
                    return Rewrite::Unchanged;
                };
                let style = if name[at] == b'#' {
                    StyleError::Librato
                } else {
                    StyleError::Influxdb
                };
                name_tags(&name[at + 1..], &mut tags, || fault(style));
                (head, tail) = (&name[..at], &[][..]);
            }
        }
        if rest.windows(2).any(|w| w == b"|#") && !tags.is_empty() {
            fault(StyleError::Mixed);
            return Rewrite::Reject;
        }
        out.clear();
        out.extend_from_slice(head);
        out.extend_from_slice(tail);
        out.extend_from_slice(rest);
        if !tags.is_empty() {
            out.extend_from_slice(b"|#");
            for (i, (k, v)) in tags.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(k);
                out.push(b':');
                out.extend_from_slice(v);
            }
        }
        Rewrite::Rewritten
    }
}

/// Splits `k=v,k2=v2` into pairs; a tag without `=`, or with an empty key or value, is left
/// out and reported to `bad`.
fn name_tags<'a>(raw: &'a [u8], out: &mut Vec<(&'a [u8], &'a [u8])>, mut bad: impl FnMut()) {
    for tag in raw.split(|&b| b == b',') {
        match tag.iter().position(|&b| b == b'=') {
            Some(i) if i > 0 && i + 1 < tag.len() => out.push((&tag[..i], &tag[i + 1..])),
            _ => bad(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: TagStyles = TagStyles {
        influxdb: true,
        librato: true,
        signalfx: true,
    };

    fn run(styles: TagStyles, line: &str) -> (Rewrite, String, Vec<StyleError>) {
        let mut out = Vec::new();
        let mut faults = Vec::new();
        let r = styles.rewrite(line.as_bytes(), &mut out, |f| faults.push(f));
        (r, String::from_utf8(out).unwrap(), faults)
    }

    #[test]
    fn each_style_becomes_dogstatsd_tags() {
        let (r, out, f) = run(ALL, "req,env=prod,code=200:1|c");
        assert_eq!(
            (r, out.as_str(), f),
            (Rewrite::Rewritten, "req:1|c|#env:prod,code:200", vec![])
        );
        let (r, out, _) = run(ALL, "req#env=prod:1|c|@0.5");
        assert_eq!(
            (r, out.as_str()),
            (Rewrite::Rewritten, "req:1|c|@0.5|#env:prod")
        );
        let (r, out, _) = run(ALL, "req[env=prod].count:2|g");
        assert_eq!(
            (r, out.as_str()),
            (Rewrite::Rewritten, "req.count:2|g|#env:prod")
        );
        assert_eq!(run(ALL, "plain.name:1|c").0, Rewrite::Unchanged);
    }

    #[test]
    fn styles_are_off_unless_listed() {
        let none = TagStyles::default();
        assert_eq!(run(none, "req,env=prod:1|c").0, Rewrite::Unchanged);
        let librato = TagStyles {
            librato: true,
            ..TagStyles::default()
        };
        // The `,` is not a tag separator without InfluxDB: the whole rest is Librato tags.
        let (r, out, _) = run(librato, "a,b#k=v:1|c");
        assert_eq!((r, out.as_str()), (Rewrite::Rewritten, "a,b:1|c|#k:v"));
    }

    #[test]
    fn malformed_tags_are_left_out_and_counted() {
        let (r, out, f) = run(ALL, "req,env=prod,bare,=x,y=:1|c");
        assert_eq!((r, out.as_str()), (Rewrite::Rewritten, "req:1|c|#env:prod"));
        assert_eq!(f, vec![StyleError::Influxdb; 3]);
        let (r, _, f) = run(ALL, "req[env=prod:1|c");
        assert_eq!((r, f), (Rewrite::Unchanged, vec![StyleError::Signalfx]));
        let (r, _, f) = run(ALL, "req,env=prod:1|c|#dd:tag");
        assert_eq!((r, f), (Rewrite::Reject, vec![StyleError::Mixed]));
    }
}
