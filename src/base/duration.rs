//! Durations as configuration text: `500ms`, `10s`, `5m`, `1h`, `2d`.

use std::time::Duration;

/// Parses `500ms`, `10s`, `5m`, `1h`, `2d` (one unit, whole numbers).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number and a unit, like \"10s\"")
    })?;
    let us = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be us, ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(us)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("invalid duration {s:?}: too large"))
}

/// Renders a duration in the largest unit that keeps it whole.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_micros() % 1000 != 0 {
        return format!("{}us", d.as_micros());
    }
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % size == 0 {
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
