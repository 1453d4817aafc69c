//! Durations as configuration text: `500ms`, `10s`, `5m`, `1h`, `2d`.

use std::fmt;
use std::time::Duration;

/// Why a duration setting could not be read; displayed as the operator sees it
/// (`invalid duration "5": unit must be us, ms, s, m, h or d`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The text, trimmed.
    pub text: String,
    /// What is wrong with it.
    pub kind: DurationErrorKind,
}

/// What is wrong with a duration's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationErrorKind {
    /// It does not begin with a whole number.
    NoNumber,
    /// The unit is not one of us, ms, s, m, h, d.
    Unit,
    /// It does not fit in 64 bits of microseconds.
    TooLarge,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.text;
        match self.kind {
            DurationErrorKind::NoNumber => write!(
                f,
                "invalid duration {s:?}: expected a number and a unit, like \"10s\""
            ),
            DurationErrorKind::Unit => write!(
                f,
                "invalid duration {s:?}: unit must be us, ms, s, m, h or d"
            ),
            DurationErrorKind::TooLarge => write!(f, "invalid duration {s:?}: too large"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses `500ms`, `10s`, `5m`, `1h`, `2d` (one unit, whole numbers).
///
/// # Errors
/// No number, an unknown unit, or a duration too large; the message quotes the text.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let fail = |kind| DurationError {
        text: s.to_string(),
        kind,
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| fail(DurationErrorKind::NoNumber))?;
    let us = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return Err(fail(DurationErrorKind::Unit)),
    };
    n.checked_mul(us)
        .map(Duration::from_micros)
        .ok_or_else(|| fail(DurationErrorKind::TooLarge))
}

/// Renders a duration in the largest unit that keeps it whole.
pub fn format_duration(d: Duration) -> String {
    if !d.subsec_micros().is_multiple_of(1000) {
        return format!("{}us", d.as_micros());
    }
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Serde helpers writing a duration as text (`10s`).
pub mod duration_str {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads a duration from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_before() {
        let msg = |s| parse_duration(s).expect_err(s).to_string();
        assert_eq!(
            msg(" 5 "),
            "invalid duration \"5\": unit must be us, ms, s, m, h or d"
        );
        assert_eq!(
            msg("s"),
            "invalid duration \"s\": expected a number and a unit, like \"10s\""
        );
        assert_eq!(
            msg("99999999999999999999d"),
            "invalid duration \"99999999999999999999d\": expected a number and a unit, like \"10s\""
        );
        assert_eq!(
            msg("999999999999999d"),
            "invalid duration \"999999999999999d\": too large"
        );
        assert_eq!(
            parse_duration("9x").expect_err("unit").kind,
            DurationErrorKind::Unit
        );
    }
}
