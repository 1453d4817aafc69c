//! Why a component could not start.

use std::fmt;

use crate::base::error::ConfigError;

/// A component's start failed: its configuration, a listener that could not be bound, or
/// anything else it needs (a thread, a file, an HTTP client).
#[derive(Debug)]
pub enum Error {
    /// The configuration does not allow this component to start.
    Config(ConfigError),
    /// A listener could not be bound.
    Bind {
        /// What listens (`statsd UDP listener`).
        what: &'static str,
        /// The address or path.
        addr: String,
        /// The configuration key that sets it.
        key: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// Anything else, phrased for the operator.
    Start {
        /// The component.
        component: &'static str,
        /// What failed.
        reason: String,
    },
}

impl Error {
    /// A start failure of `component` for `reason`.
    pub fn start(component: &'static str, reason: impl fmt::Display) -> Error {
        Error::Start {
            component,
            reason: reason.to_string(),
        }
    }

    /// A listener of `what` on `addr` (set by `key`) that could not be bound.
    pub fn bind(
        what: &'static str,
        addr: impl fmt::Display,
        key: &'static str,
        source: std::io::Error,
    ) -> Error {
        Error::Bind {
            what,
            addr: addr.to_string(),
            key,
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::Bind {
                what,
                addr,
                key,
                source,
            } => write!(f, "cannot bind the {what} on {addr} ({key}): {source}"),
            Error::Start { component, reason } => write!(f, "{component}: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Bind { source, .. } => Some(source),
            Error::Start { .. } => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}
