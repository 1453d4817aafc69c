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

use nom::bytes::complete::{tag, take, take_till1, take_while1};
use nom::character::complete::{char as ch, digit1};
use nom::combinator::{all_consuming, map_res, opt};
use nom::sequence::{delimited, preceded, separated_pair, terminated};
use nom::IResult;

use crate::model::{AlertType, CheckStatus, Event, MetricKind, Priority, ServiceCheck};

/// Why a line was rejected. Each reason is a label of `tallyd_statsd_parse_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not `name:value|type`: a missing `:` or `|`, or an empty name or value.
    Format,
    /// A value that is not a finite number (or, for sets, empty).
    Value,
    /// A type other than `c g ms h s d`.
    Type,
    /// `@rate` not a number in (0, 1].
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
}

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
        for v in Values::new(values) {
            parse_value(v).ok_or(ParseError::Value)?;
        }
    }
    // n tags need at least n - 1 bytes, so short lists cannot exceed the limit: skip counting.
    if out.tags.len() >= max_tags && tag_count(out.tags) > max_tags {
        return Err(ParseError::TooManyTags);
    }
    Ok(out)
}

/// The tags of a raw tag list, empty ones skipped.
pub fn tags(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    Split {
        rest: Some(raw),
        sep: b',',
    }
    .filter(|t| !t.is_empty())
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
    let (neg, digits) = match v.first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    if let Some(n) = fast_decimal(digits) {
        return Some(if neg { -n } else { n });
    }
    let s = std::str::from_utf8(v).ok()?;
    // Rust's parser also accepts "inf" and "NaN"; a statsd value must be a finite number.
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

fn parse_rate(v: &[u8]) -> Result<f64, ParseError> {
    let r = parse_value(v).ok_or(ParseError::SampleRate)?;
    if r > 0.0 && r <= 1.0 {
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

fn utf8(b: &[u8], e: ParseError) -> Result<String, ParseError> {
    std::str::from_utf8(b).map(str::to_string).map_err(|_| e)
}

fn owned_tags(raw: &[u8], e: ParseError) -> Result<Vec<String>, ParseError> {
    tags(raw).map(|t| utf8(t, e)).collect()
}

fn event_header(i: &[u8]) -> IResult<&[u8], (u64, u64)> {
    delimited(
        tag("_e{"),
        separated_pair(decimal_u64, ch(','), decimal_u64),
        tag("}:"),
    )(i)
}

/// Parses `_e{title_len,text_len}:title|text|d:..|h:..|k:..|p:..|s:..|t:..|#..`.
pub fn parse_event(line: &[u8]) -> Result<Event, ParseError> {
    let e = ParseError::Event;
    let (rest, (title_len, text_len)) = event_header(line).map_err(|_| e)?;
    let title_len = usize::try_from(title_len).map_err(|_| e)?;
    let text_len = usize::try_from(text_len).map_err(|_| e)?;
    if title_len == 0 {
        return Err(e);
    }
    let (rest, title) = take::<_, _, nom::error::Error<&[u8]>>(title_len)(rest).map_err(|_| e)?;
    let (rest, text) =
        preceded(ch::<_, nom::error::Error<&[u8]>>('|'), take(text_len))(rest).map_err(|_| e)?;
    let mut ev = Event {
        title: unescape_newlines(&utf8(title, e)?),
        text: unescape_newlines(&utf8(text, e)?),
        timestamp: None,
        hostname: None,
        aggregation_key: None,
        priority: Priority::Normal,
        source_type: None,
        alert_type: AlertType::Info,
        tags: Vec::new(),
    };
    if !rest.is_empty() && rest[0] != b'|' {
        return Err(e);
    }
    for field in rest.split(|&c| c == b'|').skip(1) {
        // Like the Agent, an unreadable optional field is skipped; the event itself stands.
        match field {
            [b'd', b':', v @ ..] => ev.timestamp = parse_timestamp(v).ok(),
            [b'h', b':', v @ ..] => ev.hostname = utf8(v, e).ok(),
            [b'k', b':', v @ ..] => ev.aggregation_key = utf8(v, e).ok(),
            [b's', b':', v @ ..] => ev.source_type = utf8(v, e).ok(),
            [b'p', b':', v @ ..] if v.eq_ignore_ascii_case(b"low") => ev.priority = Priority::Low,
            [b't', b':', v @ ..] => {
                ev.alert_type = match v {
                    b"error" => AlertType::Error,
                    b"warning" => AlertType::Warning,
                    b"success" => AlertType::Success,
                    _ => AlertType::Info,
                }
            }
            [b'#', v @ ..] => ev.tags = owned_tags(v, e)?,
            _ => {}
        }
    }
    Ok(ev)
}

fn unescape_newlines(s: &str) -> String {
    s.replace("\\n", "\n")
}

fn check_head(i: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    preceded(
        tag("_sc|"),
        separated_pair(
            take_till1(|c| c == b'|'),
            ch('|'),
            take_while1(|c: u8| c.is_ascii_digit()),
        ),
    )(i)
}

/// Parses `_sc|name|status|d:..|h:..|#..|m:..`.
pub fn parse_service_check(line: &[u8]) -> Result<ServiceCheck, ParseError> {
    let e = ParseError::ServiceCheck;
    let (rest, (name, status)) = check_head(line).map_err(|_| e)?;
    let status = match status {
        b"0" => CheckStatus::Ok,
        b"1" => CheckStatus::Warning,
        b"2" => CheckStatus::Critical,
        b"3" => CheckStatus::Unknown,
        _ => return Err(e),
    };
    let mut sc = ServiceCheck {
        name: utf8(name, e)?,
        status,
        timestamp: None,
        hostname: None,
        message: None,
        tags: Vec::new(),
    };
    let (rest, _) = opt(tag::<_, _, nom::error::Error<&[u8]>>("|"))(rest).map_err(|_| e)?;
    if rest.is_empty() {
        return Ok(sc);
    }
    for field in rest.split(|&c| c == b'|') {
        match field {
            [b'd', b':', v @ ..] => sc.timestamp = Some(parse_timestamp(v).map_err(|_| e)?),
            [b'h', b':', v @ ..] => sc.hostname = Some(utf8(v, e)?),
            [b'm', b':', v @ ..] => sc.message = Some(unescape_newlines(&utf8(v, e)?)),
            [b'#', v @ ..] => sc.tags = owned_tags(v, e)?,
            _ => {}
        }
    }
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(line: &str) -> MetricLine<'_> {
        match parse_line(line.as_bytes(), 100) {
            Ok(Line::Metric(m)) => m,
            other => panic!("{line:?} did not parse as a metric: {other:?}"),
        }
    }

    fn vals(m: &MetricLine<'_>) -> Vec<f64> {
        values(m.values).map(|v| v.value).collect()
    }

    #[test]
    fn every_metric_type() {
        let table = [
            ("a:1|c", MetricKind::Counter),
            ("a:1|g", MetricKind::Gauge),
            ("a:1|ms", MetricKind::Timer),
            ("a:1|h", MetricKind::Histogram),
            ("a:1|s", MetricKind::Set),
            ("a:1|d", MetricKind::Distribution),
        ];
        for (line, kind) in table {
            let m = metric(line);
            assert_eq!(m.kind, kind, "{line}");
            assert_eq!(m.name, b"a");
            assert_eq!(m.sample_rate, 1.0);
            assert!(m.tags.is_empty());
        }
    }

    #[test]
    fn optional_fields_in_any_order() {
        let m =
            metric("page.views:3|c|#env:prod,flag|@0.5|c:abc123|T1700000000|e:it-false|card:low");
        assert_eq!(m.name, b"page.views");
        assert_eq!(vals(&m), vec![3.0]);
        assert_eq!(m.sample_rate, 0.5);
        assert_eq!(
            tags(m.tags).collect::<Vec<_>>(),
            vec![&b"env:prod"[..], b"flag"]
        );
        assert_eq!(m.container_id, Some(&b"abc123"[..]));
        assert_eq!(m.timestamp, Some(1_700_000_000));
        let m = metric("x:1|ms|@0.25|#a:b");
        assert_eq!(m.sample_rate, 0.25);
        assert_eq!(m.tags, b"a:b");
    }

    #[test]
    fn packed_values_and_number_forms() {
        assert_eq!(vals(&metric("a:1:2:3|d")), vec![1.0, 2.0, 3.0]);
        assert_eq!(vals(&metric("a:21::22|h")), vec![21.0, 22.0]);
        assert_eq!(vals(&metric("a:-2|g")), vec![-2.0]);
        assert_eq!(vals(&metric("a:+3|g")), vec![3.0]);
        assert_eq!(vals(&metric("a:1.5e3|ms")), vec![1500.0]);
        assert_eq!(vals(&metric("a:0.25|c")), vec![0.25]);
        assert_eq!(
            vals(&metric("a:1234567890123456789|c")),
            vec![1234567890123456789.0]
        );
        let signed: Vec<bool> = values(metric("a:+3:-2:4|g").values)
            .map(|v| v.signed)
            .collect();
        assert_eq!(signed, vec![true, true, false]);
    }

    #[test]
    fn set_members_are_opaque() {
        let m = metric("users:alice|s");
        assert_eq!(m.values, b"alice");
        assert_eq!(metric("users:a:b|s").values, b"a:b");
    }

    #[test]
    fn empty_tag_list_is_tolerated() {
        let m = metric("a:1|c|#");
        assert_eq!(tags(m.tags).count(), 0);
        assert_eq!(tags(metric("a:1|c|#a,,b").tags).count(), 2);
    }

    #[test]
    fn malformed_metric_lines() {
        let table: &[(&str, ParseError)] = &[
            ("gibberish", ParseError::Format),
            ("a:1", ParseError::Format),
            (":1|c", ParseError::Format),
            ("a:|c", ParseError::Format),
            ("a|c", ParseError::Format),
            ("a:1|", ParseError::Type),
            ("a:1|x", ParseError::Type),
            ("a:1|cc", ParseError::Type),
            ("a:1|C", ParseError::Type),
            ("a:abc|c", ParseError::Value),
            ("a:1:x|d", ParseError::Value),
            ("a:inf|g", ParseError::Value),
            ("a:NaN|g", ParseError::Value),
            ("a:1e999|g", ParseError::Value),
            ("a:-|g", ParseError::Value),
            ("a:1|c|@0", ParseError::SampleRate),
            ("a:1|c|@1.5", ParseError::SampleRate),
            ("a:1|c|@-0.5", ParseError::SampleRate),
            ("a:1|c|@x", ParseError::SampleRate),
            ("a:1|c|T", ParseError::Timestamp),
            ("a:1|c|T0", ParseError::Timestamp),
            ("a:1|c|T-5", ParseError::Timestamp),
            ("a:1|c|T12x", ParseError::Timestamp),
            ("a:1|c|T99999999999999999999", ParseError::Timestamp),
        ];
        for (line, want) in table {
            assert_eq!(
                parse_line(line.as_bytes(), 100).err(),
                Some(*want),
                "{line}"
            );
        }
    }

    #[test]
    fn tag_limit() {
        assert!(parse_line(b"a:1|c|#a,b,c", 3).is_ok());
        assert_eq!(
            parse_line(b"a:1|c|#a,b,c,d", 3).err(),
            Some(ParseError::TooManyTags)
        );
    }

    #[test]
    fn lines_split_and_tolerate_crlf() {
        let got: Vec<&[u8]> = lines(b"a:1|c\r\nb:2|g\n\n c:3|c\n").collect();
        assert_eq!(got, vec![&b"a:1|c"[..], b"b:2|g", b" c:3|c"]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"\n\r\n").count(), 0);
    }

    #[test]
    fn events() {
        let line = b"_e{5,4}:title|text|d:1700000000|h:web-1|k:agg|p:low|s:src|t:warning|#a:b,c";
        let Ok(Line::Event(ev)) = parse_line(line, 100) else {
            panic!("event")
        };
        assert_eq!(ev.title, "title");
        assert_eq!(ev.text, "text");
        assert_eq!(ev.timestamp, Some(1_700_000_000));
        assert_eq!(ev.hostname.as_deref(), Some("web-1"));
        assert_eq!(ev.aggregation_key.as_deref(), Some("agg"));
        assert_eq!(ev.priority, Priority::Low);
        assert_eq!(ev.source_type.as_deref(), Some("src"));
        assert_eq!(ev.alert_type, AlertType::Warning);
        assert_eq!(ev.tags, vec!["a:b", "c"]);

        // Lengths are byte lengths, and a title may contain `|`.
        let Ok(Line::Event(ev)) = parse_line("_e{3,6}:a|b|héllo".as_bytes(), 100) else {
            panic!("event")
        };
        assert_eq!(ev.title, "a|b");
        assert_eq!(ev.text, "héllo");
        let Ok(Line::Event(ev)) = parse_line(b"_e{2,0}:hi|", 100) else {
            panic!("empty text")
        };
        assert_eq!(ev.text, "");
        let Ok(Line::Event(ev)) = parse_line(b"_e{4,9}:up\\n|line\\none|t:bogus", 100) else {
            panic!("escapes")
        };
        assert_eq!(ev.title, "up\n");
        assert_eq!(ev.text, "line\none");
        assert_eq!(ev.alert_type, AlertType::Info);
    }

    #[test]
    fn malformed_events() {
        for line in [
            &b"_e{5,4}:titl|text"[..],
            b"_e{5,4}:title|tex",
            b"_e{5,4}:title|textX",
            b"_e{0,4}:|text",
            b"_e{a,4}:title|text",
            b"_e{5,4}title|text",
            b"_e{5}:title|text",
            b"_e{99999999999999999999,1}:a|b",
        ] {
            assert_eq!(
                parse_line(line, 100).err(),
                Some(ParseError::Event),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn service_checks() {
        let Ok(Line::ServiceCheck(sc)) = parse_line(
            b"_sc|db.up|2|d:1700000000|h:db-1|#env:prod|m:down\\nhard",
            100,
        ) else {
            panic!("check")
        };
        assert_eq!(sc.name, "db.up");
        assert_eq!(sc.status, CheckStatus::Critical);
        assert_eq!(sc.timestamp, Some(1_700_000_000));
        assert_eq!(sc.hostname.as_deref(), Some("db-1"));
        assert_eq!(sc.tags, vec!["env:prod"]);
        assert_eq!(sc.message.as_deref(), Some("down\nhard"));
        let Ok(Line::ServiceCheck(sc)) = parse_line(b"_sc|x|0", 100) else {
            panic!("bare")
        };
        assert_eq!(sc.status, CheckStatus::Ok);
        for line in [
            &b"_sc|x|4"[..],
            b"_sc|x",
            b"_sc||0",
            b"_sc|x|",
            b"_sc|x|1|d:zz",
            b"_sc|x|12",
        ] {
            assert_eq!(
                parse_line(line, 100).err(),
                Some(ParseError::ServiceCheck),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn fast_decimal_agrees_with_the_standard_parser() {
        for t in [
            "0",
            "7",
            "0.5",
            "123.456",
            "999999999999999",
            "99999999.9999999",
            "0.000000000000001",
            "5.",
            ".5",
            "1.2.3",
        ] {
            let std_value = t.parse::<f64>().ok();
            assert_eq!(parse_value(t.as_bytes()), std_value, "{t}");
            assert_eq!(
                parse_value(format!("-{t}").as_bytes()),
                std_value.map(|v| -v),
                "-{t}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn word_search_finds_the_first_match(
            hay in proptest::collection::vec(proptest::sample::select(b":|,#a\x00\x80\xff".to_vec()), 0..70),
            a in proptest::sample::select(b":|,#a\x00\x80\xff".to_vec()),
            b in proptest::sample::select(b":|,#a\x00\x80\xff".to_vec()),
        ) {
            proptest::prop_assert_eq!(find_byte(&hay, a), hay.iter().position(|&x| x == a));
            proptest::prop_assert_eq!(
                find_byte2(&hay, a, b),
                hay.iter().position(|&x| x == a || x == b)
            );
        }

        #[test]
        fn decimals_read_exactly(int in 0u64..10_000_000_000, frac in "[0-9]{0,6}") {
            let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
            let want: f64 = text.parse().expect("decimal");
            proptest::prop_assert_eq!(parse_value(text.as_bytes()), Some(want));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            for line in lines(&data) {
                let _ = parse_line(line, 8);
            }
        }

        #[test]
        fn well_formed_lines_round_trip(
            name in "[a-z][a-z0-9_.]{0,20}",
            v in -1.0e9f64..1.0e9,
            tagset in proptest::collection::vec("[a-z]{1,5}:[a-z0-9]{1,5}", 0..5),
        ) {
            let line = format!("{name}:{v}|ms|#{}", tagset.join(","));
            let m = metric(&line);
            proptest::prop_assert_eq!(m.name, name.as_bytes());
            proptest::prop_assert_eq!(vals(&m), vec![v]);
            proptest::prop_assert_eq!(tags(m.tags).count(), tagset.len());
        }
    }
}
