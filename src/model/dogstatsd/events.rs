//! DogStatsD events (`_e{title,text}:...`) and service checks (`_sc|name|status|...`): rare
//! lines, parsed into owned values.

use nom::bytes::complete::{tag, take, take_till1, take_while1};
use nom::character::complete::char as ch;
use nom::combinator::opt;
use nom::sequence::{delimited, preceded, separated_pair};
use nom::IResult;

use super::*;
use crate::model::{AlertType, CheckStatus, Event, Priority, ServiceCheck};

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
