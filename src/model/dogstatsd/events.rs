//! DogStatsD events (`_e{title,text}:...`) and service checks (`_sc|name|status|...`): rare
//! lines, parsed into owned values.

use nom::bytes::complete::{tag, take, take_till1, take_while1};
use nom::character::complete::char as ch;
use nom::combinator::opt;
use nom::sequence::{delimited, preceded, separated_pair};
use nom::IResult;

use super::*;
use crate::model::{AlertType, CheckStatus, Event, Origin, Priority, ServiceCheck};

fn utf8(b: &[u8], e: ParseError) -> Result<String, ParseError> {
    std::str::from_utf8(b).map(str::to_string).map_err(|_| e)
}

/// The tags of a raw list as owned strings, the internal ones moved into `origin`.
fn owned_tags(raw: &[u8], e: ParseError, origin: &mut Origin) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    for t in all_tags(raw) {
        match internal_tag(t) {
            None => out.push(utf8(t, e)?),
            Some((which, v)) => {
                let v = utf8(v, e)?;
                let slot = match which {
                    Internal::EntityId => &mut origin.entity_id,
                    Internal::Cardinality => &mut origin.cardinality,
                    Internal::JmxCheckName => &mut origin.jmx_check_name,
                };
                slot.get_or_insert(v);
            }
        }
    }
    Ok(out)
}

/// Longest service check message the check_run API keeps ("limited to 500 characters"; the
/// Datadog API reference, Service Checks); longer ones are cut here.
pub const MAX_CHECK_MESSAGE: usize = 500;

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
        origin: Origin::default(),
        skipped_fields: 0,
    };
    if !rest.is_empty() && rest[0] != b'|' {
        return Err(e);
    }
    for field in rest.split(|&c| c == b'|').skip(1) {
        // Like the Agent, an unreadable optional field is skipped (and counted); the event
        // itself stands.
        let mut skip = |ok: bool| ev_skip(&mut ev.skipped_fields, ok);
        match field {
            [b'd', b':', v @ ..] => {
                let ts = parse_timestamp(v).ok();
                skip(ts.is_some());
                ev.timestamp = ts.or(ev.timestamp);
            }
            [b'h', b':', v @ ..] => ev.hostname = utf8(v, e).ok(),
            [b'k', b':', v @ ..] => ev.aggregation_key = utf8(v, e).ok(),
            [b's', b':', v @ ..] => ev.source_type = utf8(v, e).ok(),
            [b'c', b':', v @ ..] => ev.origin.container_id = utf8(v, e).ok(),
            [b'c', b'a', b'r', b'd', b':', v @ ..] => {
                let card = utf8(v, e).ok();
                ev.origin.cardinality = card.or(ev.origin.cardinality.take());
            }
            [b'p', b':', v @ ..] if v.eq_ignore_ascii_case(b"low") => ev.priority = Priority::Low,
            [b't', b':', v @ ..] => {
                ev.alert_type = match v {
                    b"error" => AlertType::Error,
                    b"warning" => AlertType::Warning,
                    b"success" => AlertType::Success,
                    _ => AlertType::Info,
                }
            }
            [b'#', v @ ..] => match owned_tags(v, e, &mut ev.origin) {
                Ok(t) => ev.tags = t,
                Err(_) => skip(false),
            },
            _ => {}
        }
    }
    Ok(ev)
}

/// Counts a skipped optional field when `ok` is false.
fn ev_skip(skipped: &mut u32, ok: bool) {
    if !ok {
        *skipped = skipped.saturating_add(1);
    }
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
        origin: Origin::default(),
        skipped_fields: 0,
    };
    let (rest, _) = opt(tag::<_, _, nom::error::Error<&[u8]>>("|"))(rest).map_err(|_| e)?;
    if rest.is_empty() {
        return Ok(sc);
    }
    // As the Agent does, an optional field that cannot be read is skipped (and counted) and
    // the check stands.
    for field in rest.split(|&c| c == b'|') {
        let ok = match field {
            [b'd', b':', v @ ..] => parse_timestamp(v).map(|t| sc.timestamp = Some(t)).is_ok(),
            [b'h', b':', v @ ..] => utf8(v, e).map(|h| sc.hostname = Some(h)).is_ok(),
            [b'm', b':', v @ ..] => utf8(v, e)
                .map(|m| {
                    let m = unescape_newlines(&m);
                    sc.message = Some(match m.char_indices().nth(MAX_CHECK_MESSAGE) {
                        Some((cut, _)) => m[..cut].to_string(),
                        None => m,
                    });
                })
                .is_ok(),
            [b'#', v @ ..] => owned_tags(v, e, &mut sc.origin)
                .map(|t| sc.tags = t)
                .is_ok(),
            [b'c', b':', v @ ..] => utf8(v, e).map(|c| sc.origin.container_id = Some(c)).is_ok(),
            [b'c', b'a', b'r', b'd', b':', v @ ..] => {
                utf8(v, e).map(|c| sc.origin.cardinality = Some(c)).is_ok()
            }
            _ => true,
        };
        ev_skip(&mut sc.skipped_fields, ok);
    }
    Ok(sc)
}
