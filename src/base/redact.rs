//! Hiding credentials in what tallyd shows: the printed configuration, the log, error messages
//! and API answers. A secret is replaced by a fixed marker; a URL keeps what locates the
//! endpoint and loses the password of its userinfo.

/// What a configured secret is shown as.
pub const MARKER: &str = "<redacted>";

/// What replaces a URL's password (or a bare userinfo, often a token) and a hidden path.
const HIDDEN: &str = "***";

/// How `value`, a secret, is shown: empty stays empty (nothing is set), anything else is
/// [`MARKER`].
pub fn secret(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        MARKER.to_string()
    }
}

/// Header values are credentials (`Authorization`, API keys, tenant tokens): every value of
/// `headers` as [`secret`], the names kept.
pub fn header_values(
    headers: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), secret(v)))
        .collect()
}

/// A deserializer's message without the value it was given: serde's `invalid type: string
/// "Bearer abc", expected a map` becomes `invalid type: string, expected a map` (the value may
/// be a credential written in the wrong place). Other messages (unknown keys and variants,
/// syntax) name keys and expected forms only and are kept, line by line.
pub fn serde_message(msg: &str) -> String {
    msg.lines()
        .map(|line| {
            for prefix in ["invalid type: ", "invalid value: "] {
                let Some(at) = line.find(prefix) else {
                    continue;
                };
                let start = at + prefix.len();
                // What is expected comes from the type, never from the value: the last one.
                let Some(end) = line.rfind(", expected ") else {
                    continue;
                };
                if end < start {
                    continue;
                }
                let unexpected = &line[start..end];
                let kind = unexpected
                    .split(['`', '"'])
                    .next()
                    .unwrap_or_default()
                    .trim_end();
                return format!("{}{kind}{}", &line[..start], &line[end..]);
            }
            line.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits `u` into (scheme with `://`, authority, the rest from the first `/`, `?` or `#`).
/// Text without `://` is taken as starting with the authority.
fn split(u: &str) -> (&str, &str, &str) {
    let start = u.find("://").map_or(0, |i| i + 3);
    let (scheme, after) = u.split_at(start);
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    (scheme, authority, rest)
}

/// `u` with the password of its userinfo replaced: `http://user:***@host/path`. A userinfo
/// without a password is often a token by itself and becomes `***@`. Without userinfo, `u` is
/// returned as it is.
pub fn url(u: &str) -> String {
    let (scheme, authority, rest) = split(u);
    match authority.rsplit_once('@') {
        None => u.to_string(),
        Some((userinfo, host)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{HIDDEN}"),
                None => HIDDEN.to_string(),
            };
            format!("{scheme}{user}@{host}{rest}")
        }
    }
}

/// Only where `u` goes: scheme, host and port, without userinfo; a path or query becomes
/// `/***`. For URLs whose path is the credential (a Slack incoming webhook).
pub fn origin(u: &str) -> String {
    let (scheme, authority, rest) = split(u);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let rest = if rest.is_empty() || rest == "/" {
        rest.to_string()
    } else {
        format!("/{HIDDEN}")
    };
    format!("{scheme}{host}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_become_the_marker_and_empty_stays_empty() {
        assert_eq!(secret("s3cr3t"), MARKER);
        assert_eq!(secret(""), "");
        let h = std::collections::BTreeMap::from([
            ("Authorization".to_string(), "Bearer x".to_string()),
            ("X-Empty".to_string(), String::new()),
        ]);
        let shown = header_values(&h);
        assert_eq!(shown["Authorization"], MARKER);
        assert_eq!(shown["X-Empty"], "");
    }

    #[test]
    fn url_hides_the_password_only() {
        let cases = [
            ("http://user:pass@host/path", "http://user:***@host/path"),
            (
                "https://u:p%40ss@h.example:8443/api/v1/write?x=1",
                "https://u:***@h.example:8443/api/v1/write?x=1",
            ),
            ("http://token@host", "http://***@host"),
            ("http://u:p@host?q=a@b", "http://u:***@host?q=a@b"),
            // A password holding '@' (unescaped): everything before the last '@' is userinfo.
            ("http://u:p@ss@host/x", "http://u:***@host/x"),
            ("http://user:@host", "http://user:***@host"),
            ("u:p@host:1/x", "u:***@host:1/x"),
            ("http://host:9090/x@y", "http://host:9090/x@y"),
            ("http://127.0.0.1:1", "http://127.0.0.1:1"),
            ("", ""),
            ("not a url", "not a url"),
        ];
        for (given, want) in cases {
            assert_eq!(url(given), want, "{given}");
        }
    }

    #[test]
    fn serde_messages_lose_the_value() {
        let cases = [
            (
                "invalid type: string \"Bearer s3cr3t, expected x\", expected a map\nin `gps.points_headers`",
                "invalid type: string, expected a map\nin `gps.points_headers`",
            ),
            (
                "invalid type: integer `12345`, expected a string",
                "invalid type: integer, expected a string",
            ),
            (
                "invalid value: string \"x\", expected a duration",
                "invalid value: string, expected a duration",
            ),
            (
                "invalid type: map, expected a string",
                "invalid type: map, expected a string",
            ),
            (
                "unknown field `bogus`, expected one of `a`, `b`",
                "unknown field `bogus`, expected one of `a`, `b`",
            ),
            ("invalid basic string", "invalid basic string"),
        ];
        for (given, want) in cases {
            assert_eq!(serde_message(given), want, "{given}");
        }
    }

    #[test]
    fn origin_keeps_only_where_it_goes() {
        let cases = [
            (
                "https://hooks.slack.com/services/T0/B0/XXXX",
                "https://hooks.slack.com/***",
            ),
            ("http://u:p@127.0.0.1:9/hook", "http://127.0.0.1:9/***"),
            ("http://h:1?token=x", "http://h:1/***"),
            ("http://h:1/", "http://h:1/"),
            ("http://h:1", "http://h:1"),
            ("hooks.slack.com/services/T/B/X", "hooks.slack.com/***"),
        ];
        for (given, want) in cases {
            assert_eq!(origin(given), want, "{given}");
        }
    }
}
