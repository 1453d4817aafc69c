//! DogStatsD line parser: bytes in, borrowed slices out.
//!
//! Grammar (the union the Datadog Agent accepts):
//! ```text
//! metric  = name ":" value *(":" value) "|" type *("|" field)
//! type    = "c" / "g" / "ms" / "h" / "s" / "d"
//! field   = "@" rate / "#" tags / "c:" container-id / "T" unix-seconds / anything-else (ignored)
//! event   = "_e{" title-len "," text-len "}:" title "|" text *("|" event-field)
//! check   = "_sc|" name "|" status *("|" check-field)
//! ```
//! Nothing is allocated for metric lines: the result borrows the packet. Events and service
//! checks are rare and are copied into owned values. Values are checked here (so one bad value
//! rejects its whole line before anything is counted) but the caller decides what they mean.

use nom::character::complete::{char as ch, digit1};
use nom::combinator::{all_consuming, map_res};
use nom::sequence::{separated_pair, terminated};
use nom::IResult;

mod events;

pub use events::{parse_event, parse_service_check};

use crate::model::{Event, MetricKind, ServiceCheck};

/// Why a line was rejected. Each reason is a label of `tallyd_statsd_parse_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not `name:value|type`: a missing `:` or `|`, or an empty name or value.
    Format,
    /// A value that is not a finite number (or, for sets, empty), or one that would not be once
    /// scaled by its sample rate or added to its window's state.
    Value,
    /// A type other than `c g ms h s d`.
    Type,
    /// `@rate` not a normal number in (0, 1].
    SampleRate,
    /// `T` not a positive integer.
    Timestamp,
    /// More tags than `statsd.max_tags`.
    TooManyTags,
    /// A malformed `_e{..}` event.
    Event,
    /// A malformed `_sc|..` service check.
    ServiceCheck,
    /// A name or tag that is not UTF-8.
    Utf8,
    /// The last line of a datagram that did not fit the receive buffer.
    Truncated,
    /// A TCP line longer than `statsd.tcp_max_line_length`.
    LineTooLong,
}

impl ParseError {
    /// Every error, in [`ParseError::index`] order.
    pub const ALL: [ParseError; 11] = [
        ParseError::Format,
        ParseError::Value,
        ParseError::Type,
        ParseError::SampleRate,
        ParseError::Timestamp,
        ParseError::TooManyTags,
        ParseError::Event,
        ParseError::ServiceCheck,
        ParseError::Utf8,
        ParseError::Truncated,
        ParseError::LineTooLong,
    ];

    /// Stable snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::Format => "invalid_format",
            ParseError::Value => "invalid_value",
            ParseError::Type => "invalid_type",
            ParseError::SampleRate => "invalid_sample_rate",
            ParseError::Timestamp => "invalid_timestamp",
            ParseError::TooManyTags => "too_many_tags",
            ParseError::Event => "invalid_event",
            ParseError::ServiceCheck => "invalid_service_check",
            ParseError::Utf8 => "invalid_utf8",
            ParseError::Truncated => "truncated",
            ParseError::LineTooLong => "line_too_long",
        }
    }

    /// Position in [`ParseError::ALL`], for per-reason counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One parsed metric line, borrowing the packet.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricLine<'a> {
    /// The metric name (not yet checked to be UTF-8).
    pub name: &'a [u8],
    /// The raw `:`-separated values; use [`values`] to read them.
    pub values: &'a [u8],
    /// The `|type` field.
    pub kind: MetricKind,
    /// In (0, 1]; 1 when absent.
    pub sample_rate: f64,
    /// The raw comma-separated tag list (possibly empty); use [`tags`] to read it.
    pub tags: &'a [u8],
    /// The `|c:` container id, when sent (read, but not part of the context).
    pub container_id: Option<&'a [u8]>,
    /// The `|T` Unix-seconds timestamp, when sent (validated; the window's time is used).
    pub timestamp: Option<i64>,
    /// Some value, weighted by the sample rate, is larger in magnitude than [`HUGE`]: adding
    /// the line to its window must check that the window's sum stays finite.
    pub huge: bool,
}

/// Above this magnitude a weighted value could, added to a window's sum, overflow it. Below it
/// a line of at most 65,535 bytes cannot: its values add up to far less than `f64::MAX`.
pub const HUGE: f64 = 1e300;

/// One value of a metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value {
    /// The number.
    pub value: f64,
    /// True when the text began with `+` or `-` (a relative gauge in delta mode).
    pub signed: bool,
}

/// A parsed line of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// `name:value|type|...`.
    Metric(MetricLine<'a>),
    /// `_e{title_len,text_len}:title|text|...`.
    Event(Event),
    /// `_sc|name|status|...`.
    ServiceCheck(ServiceCheck),
}

/// Splits a packet into lines: `\n` separated, a trailing `\r` tolerated, empty lines skipped.
pub fn lines(packet: &[u8]) -> impl Iterator<Item = &[u8]> {
    Lines { rest: packet }
}

/// The line splitter behind [`lines`]; `memchr` finds the newlines a word at a time.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let (line, rest) = match memchr::memchr(b'\n', self.rest) {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    }
}

/// Parses one line (without its line terminator).
pub fn parse_line(line: &[u8], max_tags: usize) -> Result<Line<'_>, ParseError> {
    if line.starts_with(b"_e{") {
        return parse_event(line).map(Line::Event);
    }
    if line.starts_with(b"_sc|") {
        return parse_service_check(line).map(Line::ServiceCheck);
    }
    parse_metric(line, max_tags).map(Line::Metric)
}

fn kind(field: &[u8]) -> Result<MetricKind, ParseError> {
    Ok(match field {
        b"c" => MetricKind::Counter,
        b"g" => MetricKind::Gauge,
        b"ms" => MetricKind::Timer,
        b"h" => MetricKind::Histogram,
        b"s" => MetricKind::Set,
        b"d" => MetricKind::Distribution,
        _ => return Err(ParseError::Type),
    })
}

/// Eight copies of a byte.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// A word with the high bit set in each byte of `w` that is zero. Bits above the lowest set
/// one may be false positives (a borrow runs on), so callers read only the lowest.
#[inline(always)]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(splat(1)) & !w & splat(0x80)
}

/// Index of the first byte of `hay` for which `hit` (a word-at-a-time test built from
/// [`zero_bytes`]) flags a match, or whose byte passes `one`.
///
/// The fields of a StatsD line are short (a tag, a value, a type): a SWAR loop inlined into the
/// caller reads them 8 bytes a step with no call at all, where a call into `memchr` pays for
/// its dispatch and set-up on every field, which on fields this short outweighs the search
/// (BENCHMARKS.md has the measurement).
#[inline(always)]
fn find_by(hay: &[u8], hit: impl Fn(u64) -> u64, one: impl Fn(u8) -> bool) -> Option<usize> {
    let mut words = hay.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let z = hit(u64::from_le_bytes(word));
        if z != 0 {
            // Little-endian: the lowest flagged bit is the first matching byte.
            return Some(at + (z.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| one(b))
        .map(|p| at + p)
}

/// Index of the first `needle` in `hay` (a short field: see [`find_by`]).
#[inline(always)]
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let pat = splat(needle);
    find_by(hay, |w| zero_bytes(w ^ pat), |b| b == needle)
}

/// Index of the first `a` or `b` in `hay` (a short field: see [`find_by`]).
#[inline(always)]
fn find_byte2(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    let (pa, pb) = (splat(a), splat(b));
    find_by(
        hay,
        |w| zero_bytes(w ^ pa) | zero_bytes(w ^ pb),
        |x| x == a || x == b,
    )
}

/// Splits `s` at the first `sep`: the part before it, and what follows it (None without `sep`).
#[inline]
fn split_once_byte(s: &[u8], sep: u8) -> (&[u8], Option<&[u8]>) {
    match find_byte(s, sep) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// A nom parser for one or more bytes up to (not including) `:` or `|`, searched a word at a
/// time, which nom's byte-by-byte `take_till1` cannot.
fn name_part(i: &[u8]) -> IResult<&[u8], &[u8]> {
    match find_byte2(i, b':', b'|').unwrap_or(i.len()) {
        0 => Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::TakeTill1,
        ))),
        end => Ok((&i[end..], &i[..end])),
    }
}

/// A nom parser for one or more bytes up to (not including) `|`, searched a word at a time.
fn until_pipe1(i: &[u8]) -> IResult<&[u8], &[u8]> {
    match find_byte(i, b'|').unwrap_or(i.len()) {
        0 => Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::TakeTill1,
        ))),
        end => Ok((&i[end..], &i[..end])),
    }
}

/// `name ":" values "|"`: nom combinators over word-at-a-time primitives.
fn name_and_values(i: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    separated_pair(name_part, ch(':'), terminated(until_pipe1, ch('|')))(i)
}

/// Parses a metric line.
///
/// This runs for every line received: the structure is nom's, the byte searches are SWAR,
/// and the optional fields (order-free, `|`-separated, unknown ones skipped) are a plain loop.
pub fn parse_metric(line: &[u8], max_tags: usize) -> Result<MetricLine<'_>, ParseError> {
    let (rest, (name, values)) = name_and_values(line).map_err(|_| ParseError::Format)?;
    let (kind_field, mut more) = split_once_byte(rest, b'|');
    let kind = kind(kind_field)?;
    let mut out = MetricLine {
        name,
        values,
        kind,
        sample_rate: 1.0,
        tags: &[],
        container_id: None,
        timestamp: None,
        huge: false,
    };
    while let Some(r) = more {
        let (field, next) = split_once_byte(r, b'|');
        more = next;
        match field.first() {
            Some(b'@') => out.sample_rate = parse_rate(&field[1..])?,
            Some(b'#') => out.tags = &field[1..],
            Some(b'T') => out.timestamp = Some(parse_timestamp(&field[1..])?),
            Some(b'c') if field.get(1) == Some(&b':') => out.container_id = Some(&field[2..]),
            // Unknown extension fields (e:, card:, future ones) are skipped, as the Agent does.
            _ => {}
        }
    }
    // Validate every value now so that a line is applied whole or not at all.
    if kind == MetricKind::Set {
        // Set members are opaque strings, one per line (no packing for sets).
        if values.is_empty() {
            return Err(ParseError::Value);
        }
    } else {
        // The largest value read by the standard parser: the fast path only reads values
        // below 1e15, which need no further check.
        let mut max_abs = 0.0f64;
        for v in Values::new(values) {
            let (x, slow) = parse_value_marked(v).ok_or(ParseError::Value)?;
            if slow {
                max_abs = max_abs.max(x.abs());
            }
        }
        // What each value weighs once applied: a counter adds value / rate, a sampled value
        // counts trunc(1 / rate) times into the window's sum. A line whose weighted value is
        // not a finite number cannot be represented and is rejected whole. Neither can happen
        // to a value below 1e15 at a rate above 1e-280, which is every line in practice: only
        // the others pay for the check.
        if max_abs > 1e15 || out.sample_rate < 1e-280 {
            let scale = match kind {
                MetricKind::Counter => 1.0 / out.sample_rate,
                MetricKind::Gauge => 1.0,
                _ => sample_weight(out.sample_rate),
            };
            let weighted = max_abs * scale;
            if !weighted.is_finite() {
                return Err(ParseError::Value);
            }
            out.huge = weighted > HUGE;
        }
    }
    // n tags need at least n - 1 bytes, so short lists cannot exceed the limit: skip counting.
    if out.tags.len() >= max_tags && tag_count(out.tags) > max_tags {
        return Err(ParseError::TooManyTags);
    }
    Ok(out)
}

/// The tags of a raw tag list, empty ones and the Agent's internal ones ([`internal_tag`])
/// skipped.
pub fn tags(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    all_tags(raw).filter(|t| internal_tag(t).is_none())
}

/// Every non-empty tag of a raw tag list, internal ones included.
fn all_tags(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    Split {
        rest: Some(raw),
        sep: b',',
    }
    .filter(|t| !t.is_empty())
}

/// Prefix shared by the tags the Agent strips as client metadata.
const INTERNAL: &[u8] = b"dd.internal.";

/// An internal tag the Datadog Agent strips as client metadata (not a tag of the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// `dd.internal.entity_id:`.
    EntityId,
    /// `dd.internal.card:`.
    Cardinality,
    /// `dd.internal.jmx_check_name:`.
    JmxCheckName,
}

/// Which internal tag `t` is, and its value; None for a tag of the data. Most tags differ in
/// their first bytes, so this costs a length check and one comparison.
#[inline]
pub fn internal_tag(t: &[u8]) -> Option<(Internal, &[u8])> {
    if t.len() <= INTERNAL.len() || &t[..INTERNAL.len()] != INTERNAL {
        return None;
    }
    let rest = &t[INTERNAL.len()..];
    [
        (&b"entity_id:"[..], Internal::EntityId),
        (b"card:", Internal::Cardinality),
        (b"jmx_check_name:", Internal::JmxCheckName),
    ]
    .into_iter()
    .find_map(|(p, which)| rest.strip_prefix(p).map(|v| (which, v)))
}

/// The value of the internal tag `which` in a raw tag list (the first one sent).
pub fn internal_value(raw: &[u8], which: Internal) -> Option<&[u8]> {
    all_tags(raw).find_map(|t| match internal_tag(t) {
        Some((w, v)) if w == which => Some(v),
        _ => None,
    })
}

impl MetricLine<'_> {
    /// The `dd.internal.entity_id:` tag's value, kept for origin enrichment (the tag itself is
    /// not one of the line's tags).
    pub fn entity_id(&self) -> Option<&[u8]> {
        internal_value(self.tags, Internal::EntityId)
    }
}

fn tag_count(raw: &[u8]) -> usize {
    if raw.is_empty() {
        0
    } else {
        memchr::memchr_iter(b',', raw).count() + 1
    }
}

/// `slice::split` on one byte, searched a word at a time.
struct Split<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (item, rest) = split_once_byte(self.rest?, self.sep);
        self.rest = rest;
        Some(item)
    }
}

/// The non-empty `:`-separated texts of a value list (empty packed values, `1::2`, are skipped,
/// as the Agent does).
struct Values<'a>(Split<'a>);

impl<'a> Values<'a> {
    fn new(raw: &'a [u8]) -> Values<'a> {
        Values(Split {
            rest: Some(raw),
            sep: b':',
        })
    }
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let v = self.0.next()?;
            if !v.is_empty() {
                return Some(v);
            }
        }
    }
}

/// The numeric values of a metric line (not sets), empty packed values skipped.
pub fn values(raw: &[u8]) -> impl Iterator<Item = Value> + '_ {
    Values::new(raw).filter_map(|v| {
        parse_value(v).map(|value| Value {
            value,
            signed: matches!(v.first(), Some(b'+') | Some(b'-')),
        })
    })
}

/// Exact powers of ten up to 10^15 (every one is exactly representable in an f64).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// `digits` or `digits.digits` with at most 15 digits in all, read exactly: the digits form an
/// integer below 2^53 and 10^k is exact, so the one rounding of the division gives the same
/// correctly rounded f64 as the standard parser (Clinger's fast path). None for anything else.
#[inline]
fn fast_decimal(d: &[u8]) -> Option<f64> {
    if d.is_empty() || d.len() > 16 {
        return None;
    }
    let mut m = 0u64;
    let mut frac_at = None;
    for (i, &c) in d.iter().enumerate() {
        match c {
            b'0'..=b'9' => m = m * 10 + u64::from(c - b'0'),
            // A leading or trailing point ("5." or ".5") is left to the standard parser.
            b'.' if frac_at.is_none() && i > 0 && i + 1 < d.len() => frac_at = Some(i),
            _ => return None,
        }
    }
    match frac_at {
        None if d.len() <= 15 => Some(m as f64),
        None => None,
        Some(i) => Some(m as f64 / POW10[d.len() - i - 1]),
    }
}

/// Parses a finite decimal number. Plain decimals (the common case) take a fast path.
pub fn parse_value(v: &[u8]) -> Option<f64> {
    parse_value_marked(v).map(|(x, _)| x)
}

/// [`parse_value`], also saying whether the standard parser read it (`true`): the fast path
/// reads only plain decimals of at most 15 digits, whose magnitude is below 1e15.
#[inline]
fn parse_value_marked(v: &[u8]) -> Option<(f64, bool)> {
    let (neg, digits) = match v.first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    if let Some(n) = fast_decimal(digits) {
        return Some((if neg { -n } else { n }, false));
    }
    let s = std::str::from_utf8(v).ok()?;
    // Rust's parser also accepts "inf" and "NaN"; a statsd value must be a finite number.
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some((f, true))
}

/// How many values one sampled value of a timer, histogram or distribution stands for at
/// sample rate `rate`: trunc(1 / rate), as the Datadog Agent counts it, at least 1.
pub fn sample_weight(rate: f64) -> f64 {
    (1.0 / rate).trunc().clamp(1.0, f64::from(u32::MAX))
}

/// A sample rate in (0, 1]. A subnormal rate is refused: its inverse is not finite, so the
/// value it scales could not be represented.
fn parse_rate(v: &[u8]) -> Result<f64, ParseError> {
    let r = parse_value(v).ok_or(ParseError::SampleRate)?;
    if r.is_normal() && r > 0.0 && r <= 1.0 {
        Ok(r)
    } else {
        Err(ParseError::SampleRate)
    }
}

fn decimal_u64(i: &[u8]) -> IResult<&[u8], u64> {
    map_res(digit1, |d: &[u8]| {
        std::str::from_utf8(d)
            .map_err(|_| ())
            .and_then(|s| s.parse::<u64>().map_err(|_| ()))
    })(i)
}

fn parse_timestamp(v: &[u8]) -> Result<i64, ParseError> {
    let (_, n) = all_consuming(decimal_u64)(v).map_err(|_| ParseError::Timestamp)?;
    match i64::try_from(n) {
        Ok(ts) if ts > 0 => Ok(ts),
        _ => Err(ParseError::Timestamp),
    }
}

#[cfg(test)]
#[path = "dogstatsd_tests.rs"]
mod tests;
