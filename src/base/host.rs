//! The host name tallyd reports (Datadog series, service checks and events; alerts).

/// The host name to report: `configured` (`datadog.hostname` / `DD_HOSTNAME`) when it is not
/// blank, else the kernel's (`/proc/sys/kernel/hostname`), else `$HOSTNAME`, else `localhost`.
/// Surrounding whitespace is trimmed from each; a blank one counts as unset.
pub fn host_name(configured: &str) -> String {
    pick(
        configured,
        || std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        || std::env::var("HOSTNAME").ok(),
    )
}

/// The first non-blank of `configured`, `kernel()` and `env()`, trimmed; `localhost` if none.
fn pick(
    configured: &str,
    kernel: impl FnOnce() -> Option<String>,
    env: impl FnOnce() -> Option<String>,
) -> String {
    let given = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| s.to_string())
    };
    given(configured)
        .or_else(|| kernel().as_deref().and_then(given))
        .or_else(|| env().as_deref().and_then(given))
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Option<String> {
        None
    }

    #[test]
    fn configured_then_kernel_then_env_then_localhost() {
        let kernel = || Some("box-1\n".to_string());
        let env = || Some("env-host".to_string());
        assert_eq!(pick("web-1", kernel, env), "web-1");
        assert_eq!(pick(" web-1 ", none, none), "web-1");
        assert_eq!(pick("", kernel, env), "box-1");
        assert_eq!(pick("  ", kernel, env), "box-1");
        assert_eq!(pick("", || Some("\n".into()), env), "env-host");
        assert_eq!(pick("", none, env), "env-host");
        assert_eq!(pick("", none, || Some(String::new())), "localhost");
        assert_eq!(pick("", none, none), "localhost");
    }

    #[test]
    fn a_configured_name_reads_nothing_else() {
        let unreachable = || -> Option<String> { panic!("not consulted") };
        assert_eq!(pick("web-1", unreachable, unreachable), "web-1");
    }

    #[test]
    fn the_system_name_is_never_empty() {
        assert!(!host_name("").is_empty());
        assert_eq!(host_name("test-host"), "test-host");
    }
}
