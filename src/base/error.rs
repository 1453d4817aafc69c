//! Typed configuration errors: which key, where in the file, and what kind of fault, phrased
//! for the operator when displayed.

use std::fmt;

/// What went wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Read {
        /// The file's path.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is not valid TOML for the schema (syntax, unknown key, wrong type).
    Syntax {
        /// Where the text came from (a path, or `<defaults>`).
        origin: String,
        /// The parser's message.
        reason: String,
    },
    /// An environment variable could not be applied.
    Environment {
        /// The parser's or checker's message, naming the variable.
        reason: String,
    },
    /// A value is of the right type but not allowed (a range, an address, an empty name).
    Invalid {
        /// The rest of the sentence after the key (`" must be greater than 0"`).
        reason: String,
    },
}

/// A configuration error: the key it concerns (empty when none applies), the line and column
/// in the file when known, and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, as `section.key` (empty when the error concerns no one key).
    pub key: String,
    /// 1-based line in the file, when the error comes from the file's text.
    pub line: Option<usize>,
    /// 1-based column in the file, when the error comes from the file's text.
    pub column: Option<usize>,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl ConfigError {
    /// A value not allowed for `key`; `reason` continues the sentence after the key
    /// (`" must be greater than 0"`, `": 2 is not between 0 and 1"`).
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            line: None,
            column: None,
            kind: ErrorKind::Invalid {
                reason: reason.into(),
            },
        }
    }

    /// An environment variable that could not be applied; `reason` is the whole sentence.
    pub fn environment(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            line: None,
            column: None,
            kind: ErrorKind::Environment {
                reason: reason.into(),
            },
        }
    }

    /// A file that could not be read.
    pub fn read(path: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
        ConfigError {
            key: String::new(),
            line: None,
            column: None,
            kind: ErrorKind::Read {
                path: path.into(),
                reason: reason.to_string(),
            },
        }
    }

    /// A parse error in `text` (from `origin`); `span` is the byte range the parser blamed,
    /// turned into a line and column, which the message shows. `reason` should not quote the
    /// text: a line of a configuration may hold a credential.
    pub fn syntax(
        origin: &str,
        text: &str,
        span: Option<std::ops::Range<usize>>,
        reason: impl fmt::Display,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = line_column(text, s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            key: String::new(),
            line,
            column,
            kind: ErrorKind::Syntax {
                origin: origin.to_string(),
                reason: reason.to_string(),
            },
        }
    }

    /// The error as one sentence that begins with its key (`gps.listen = "x" is not an
    /// address`), without the `invalid config: ` lead-in: how a start-time failure quotes a
    /// check (`alerts: alerts.rules[0] ("x").aggregation: ...`). Other kinds read as displayed.
    pub fn sentence(&self) -> String {
        match &self.kind {
            ErrorKind::Invalid { reason } => format!("{}{reason}", self.key),
            _ => self.to_string(),
        }
    }

    /// The same error attributed to `key` inside a section named `prefix` (a nested check
    /// reports `name`, its caller knows it is `alerts.rules[2].name`).
    pub fn within(mut self, prefix: &str) -> ConfigError {
        if !prefix.is_empty() {
            self.key = if self.key.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{}", self.key)
            };
        }
        self
    }
}

/// Parses `value`, the setting `key`, as a socket address.
pub fn parse_addr(key: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::invalid(
            key,
            format!(" = {value:?} is not an address like \"0.0.0.0:8125\""),
        )
    })
}

/// Checks that `value` is a socket address (`0.0.0.0:8125`); empty is allowed when
/// `may_be_empty` (the listener is off).
pub fn check_addr(key: &str, value: &str, may_be_empty: bool) -> Result<(), ConfigError> {
    if value.is_empty() && may_be_empty {
        return Ok(());
    }
    parse_addr(key, value).map(|_| ())
}

/// Fails with "`key` must be greater than 0" when `v` is zero.
pub fn check_positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::invalid(key, " must be greater than 0"));
    }
    Ok(())
}

/// Fails with "`key` must be greater than 0s" when `d` is zero.
pub fn check_nonzero_duration(key: &str, d: std::time::Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(key, " must be greater than 0s"));
    }
    Ok(())
}

/// 1-based line and column of byte `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::Read { path, reason } => {
                write!(f, "cannot read config file {path}: {reason}")
            }
            ErrorKind::Syntax { origin, reason } => match (self.line, self.column) {
                (Some(l), Some(c)) => {
                    write!(f, "invalid config {origin}: line {l}, column {c}: {reason}")
                }
                _ => write!(f, "invalid config {origin}: {reason}"),
            },
            ErrorKind::Environment { reason } => f.write_str(reason),
            ErrorKind::Invalid { reason } => write!(f, "invalid config: {}{reason}", self.key),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_the_key_and_nesting_prefixes_it() {
        let e = ConfigError::invalid("name", " must be set").within("alerts.rules[2]");
        assert_eq!(e.key, "alerts.rules[2].name");
        assert_eq!(
            e.to_string(),
            "invalid config: alerts.rules[2].name must be set"
        );
    }

    #[test]
    fn a_sentence_is_the_message_without_its_lead_in() {
        let e = ConfigError::invalid("gps.listen", " = \"x\" is bad");
        assert_eq!(e.sentence(), "gps.listen = \"x\" is bad");
        assert_eq!(e.to_string(), "invalid config: gps.listen = \"x\" is bad");
        let e = ConfigError::read("/x.toml", "gone");
        assert_eq!(e.sentence(), e.to_string());
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let text = "[statsd]\nudp_listen = 5\n";
        let e = ConfigError::syntax("f.toml", text, Some(22..23), "wrong type");
        assert_eq!((e.line, e.column), (Some(2), Some(14)));
        assert_eq!(
            e.to_string(),
            "invalid config f.toml: line 2, column 14: wrong type"
        );
        let e = ConfigError::syntax("f.toml", text, None, "wrong type");
        assert_eq!(e.to_string(), "invalid config f.toml: wrong type");
    }
}
