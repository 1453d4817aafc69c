//! The `tallyd` command line: parse arguments, load the configuration, start the runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tallyd::config::{Config, LogFormat};

#[path = "main/client.rs"]
mod client;

#[derive(Parser)]
#[command(
    name = "tallyd",
    version,
    about = "StatsD/DogStatsD sidecar agent: aggregate per window, expose to Prometheus"
)]
struct Cli {
    /// Configuration file (TOML). Without it, the embedded defaults apply.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log level or tracing filter (overrides log.level).
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit: 0 when valid, 1 with one error otherwise.
    CheckConfig,
    /// Print the effective configuration (defaults + file + environment) as TOML, every
    /// credential shown as "<redacted>".
    PrintConfig,
    /// Send StatsD/DogStatsD lines to a running tallyd (a smoke test without nc): over UDP to
    /// the configured statsd.udp_listen by default.
    Send {
        /// The lines, e.g. 'test.metric:1|c' (one datagram, or one write over TCP).
        #[arg(required = true, value_name = "LINE")]
        lines: Vec<String>,
        /// Over TCP, to statsd.tcp_listen.
        #[arg(long, conflicts_with = "unix")]
        tcp: bool,
        /// Over the Unix datagram socket at PATH (statsd.unix_socket).
        #[arg(long, value_name = "PATH")]
        unix: Option<PathBuf>,
        /// The address to send to instead of the configured listener's (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT", conflicts_with = "unix")]
        addr: Option<String>,
    },
    /// Check a running tallyd: exit 0 when its /health/ready answers 200, 1 otherwise (for
    /// container health checks; no curl needed).
    Health {
        /// The readiness URL (http:// only); default: /health/ready on the configured
        /// http.listen, loopback when it listens on every address.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Check /health/live (the process serves HTTP) instead of /health/ready (every
        /// listener bound, not shutting down); what a container HEALTHCHECK wants.
        #[arg(long, conflicts_with = "url")]
        live: bool,
        /// How long to wait for the answer.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timeout)]
        timeout: std::time::Duration,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output.
    Man,
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    tallyd::config::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // These need no configuration.
    match &cli.command {
        Some(Command::Completions { shell }) => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "tallyd", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the manual page: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    let service = tallyd::Service {
        config_path: cli.config.clone(),
        log_level: cli.log_level.clone(),
        log_format: cli.log_format,
        set_log_level: None,
    };
    let cfg = match service.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            if let Err(e) = cfg.check_queue_directory() {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            println!("config ok");
            return ExitCode::SUCCESS;
        }
        Some(Command::PrintConfig) => {
            print!("{}", cfg.to_toml_redacted());
            return ExitCode::SUCCESS;
        }
        Some(Command::Send {
            lines,
            tcp,
            unix,
            addr,
        }) => return client::send(&cfg, &lines, tcp, unix.as_deref(), addr.as_deref()),
        Some(Command::Health { url, live, timeout }) => {
            return client::health(&cfg, url.as_deref(), live, timeout)
        }
        Some(Command::Completions { .. } | Command::Man) | None => {}
    }
    // Before any thread or socket exists; the listeners' caps are fitted to it at start.
    let nofile = tallyd::base::fds::raise_limit();
    let set_log_level = match init_logging(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let service = tallyd::Service {
        set_log_level: Some(set_log_level),
        ..service
    };
    match nofile {
        Ok(l) if l.soft > l.was => {
            tracing::info!(
                from = l.was,
                to = l.soft,
                "raised the soft RLIMIT_NOFILE to the hard limit"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE"),
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 2);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The signal handlers are installed before anything is bound, so a SIGHUP that arrives
    // while tallyd starts is queued as a reload, not left to its default action (exit).
    let result = rt.block_on(async {
        let (reloader, requests) = tallyd::Reloader::channel(1);
        let shutdown = signals(reloader.clone());
        let control = tallyd::Control {
            service,
            reloader,
            requests,
        };
        tallyd::run(cfg, shutdown, Some(control)).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A `log.level` the log filter does not accept.
#[derive(Debug)]
struct LogLevelError {
    level: String,
    source: tracing_subscriber::filter::ParseError,
}

impl std::fmt::Display for LogLevelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid log.level {:?}: {}", self.level, self.source)
    }
}

/// Installs the log subscriber `[log]` describes, with a filter a reload can replace (the
/// returned function); fails only on a bad `log.level`.
fn init_logging(cfg: &Config) -> Result<tallyd::SetLogLevel, LogLevelError> {
    let parse = |level: &str| {
        tracing_subscriber::EnvFilter::try_new(level).map_err(|source| LogLevelError {
            level: level.to_string(),
            source,
        })
    };
    let filter = parse(&cfg.log.level)?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    macro_rules! install {
        ($b:expr) => {{
            let b = $b.with_filter_reloading();
            let handle = b.reload_handle();
            b.init();
            Box::new(move |level: &str| {
                let f = parse(level).map_err(|e| e.to_string())?;
                handle
                    .reload(f)
                    .map_err(|e| format!("cannot replace the log filter: {e}"))
            })
        }};
    }
    Ok(match cfg.log.format {
        LogFormat::Json => install!(builder.json()),
        LogFormat::Text => install!(builder),
    })
}

/// Installs the signal handlers and returns what completes on SIGTERM or SIGINT. SIGHUP, which
/// `systemctl reload` (the unit's `ExecReload`) sends, asks `reloader` for a reload; its
/// default action would kill the process without draining or a final flush.
fn signals(reloader: tallyd::Reloader) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate()).ok();
    let hup = signal(SignalKind::hangup()).ok();
    async move {
        let (Some(mut term), Some(mut hup)) = (term, hup) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    reloader.request("signal");
                }
            }
        }
    }
}

/// Serves large buffers (flush batches, scrape output, table growth) with their own mappings,
/// returned to the kernel when freed. glibc's default threshold rises after the first such
/// buffer is freed, and later ones then stay resident in the heap, keeping RSS well above what
/// is in use once there are many series (BENCHMARKS.md has the measurement). A threshold given
/// in GLIBC_TUNABLES wins.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold"));
        if !tuned {
            // SAFETY: mallopt only sets an allocator parameter; it is called first thing in
            // main, before any other thread exists, and the value is a valid threshold.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
            }
        }
    }
}
