//! Why an outbox could not open, and why a key check got no verdict. Each displays as the
//! operator reads it; the cause is part of that text, so `source()` adds nothing.

use std::fmt;

use super::store::QueueError;
use crate::base::error::ConfigError;

/// Why [`Outbox::open`](super::Outbox::open) failed.
#[derive(Debug)]
pub enum OpenError {
    /// The queue's directory cannot be used.
    Directory {
        /// The queue's name (`datadog`, `live_points`).
        name: String,
        /// `queue.directory`.
        directory: String,
        /// What failed.
        source: QueueError,
    },
    /// A configured header is not valid (the configuration's checks catch this first); quoted
    /// as its sentence, `gps.points_headers: "a b" is not a header name`.
    Headers(ConfigError),
    /// The HTTP client cannot be built (TLS roots unavailable).
    Client {
        /// Where it sends, as the message names it (`remote_write.url`).
        target: String,
        /// The client builder's error.
        source: reqwest::Error,
    },
    /// A component's own delivery cannot be set up (a CA file that does not read); the text
    /// names the setting.
    Setup(String),
}

impl OpenError {
    /// The HTTP client for `target` (`gps.points_url`) cannot be built.
    pub fn client(target: impl Into<String>, source: reqwest::Error) -> OpenError {
        OpenError::Client {
            target: target.into(),
            source,
        }
    }
}

impl From<ConfigError> for OpenError {
    fn from(e: ConfigError) -> OpenError {
        OpenError::Headers(e)
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Directory {
                name,
                directory,
                source,
            } => write!(
                f,
                "cannot open the {name} queue in {directory} (queue.directory): {source}"
            ),
            OpenError::Headers(e) => f.write_str(&e.sentence()),
            OpenError::Client { target, source } => {
                write!(f, "cannot build the HTTP client for {target}: {source}")
            }
            OpenError::Setup(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for OpenError {}

/// Why [`HttpDeliver::validate_key`](super::HttpDeliver::validate_key) learnt nothing about the
/// key.
#[derive(Debug)]
pub enum KeyCheckError {
    /// The validation endpoint answered neither 2xx nor 401/403.
    Status {
        /// The validation URL.
        url: String,
        /// Its status.
        status: u16,
    },
    /// No answer (connection, timeout, TLS).
    Request {
        /// The validation URL.
        url: String,
        /// The request's error; displayed with its cause chain.
        source: reqwest::Error,
    },
}

impl fmt::Display for KeyCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyCheckError::Status { url, status } => write!(f, "{url} answered {status}"),
            KeyCheckError::Request { url, source } => {
                write!(f, "{url}: {}", super::deliver::describe(source))
            }
        }
    }
}

impl std::error::Error for KeyCheckError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_read_as_the_operator_saw_them() {
        let e = OpenError::Directory {
            name: "datadog".into(),
            directory: "/q".into(),
            source: QueueError::TooLarge { bytes: 2, limit: 1 },
        };
        assert_eq!(
            e.to_string(),
            "cannot open the datadog queue in /q (queue.directory): payload of 2 bytes is larger than the queue limit of 1 bytes"
        );
        let e = OpenError::from(ConfigError::invalid(
            "gps.points_headers",
            ": \"a b\" is bad",
        ));
        assert_eq!(e.to_string(), "gps.points_headers: \"a b\" is bad");
        let e = KeyCheckError::Status {
            url: "http://x/v".into(),
            status: 500,
        };
        assert_eq!(e.to_string(), "http://x/v answered 500");
    }
}
