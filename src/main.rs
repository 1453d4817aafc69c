//! The `tallyd` command line: parse arguments, load the configuration, start the runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tallyd::config::{Config, LogFormat};

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
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let mut cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(l) = cli.log_level {
        cfg.log.level = l;
    }
    if let Some(f) = cli.log_format {
        cfg.log.format = f;
    }
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
        None => {}
    }
    // Before any thread or socket exists; the listeners' caps are fitted to it at start.
    let nofile = tallyd::base::fds::raise_limit();
    if let Err(e) = init_logging(&cfg) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
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
    // while tallyd starts is ignored too, not left to its default action.
    match rt.block_on(async { tallyd::run(cfg, shutdown_signal()).await }) {
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

/// Installs the log subscriber `[log]` describes; fails only on a bad `log.level`.
fn init_logging(cfg: &Config) -> Result<(), LogLevelError> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cfg.log.level).map_err(|source| LogLevelError {
            level: cfg.log.level.clone(),
            source,
        })?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Installs the signal handlers and returns what completes on SIGTERM or SIGINT. SIGHUP, which
/// `systemctl reload` and many supervisors send, does not stop tallyd: its default action would
/// kill the process without draining or a final flush, and live reload is not built yet, so it
/// is logged and ignored.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
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
                _ = hup.recv() => tracing::warn!(
                    "SIGHUP received: reloading the configuration is not supported yet, so it is ignored; restart tallyd to apply a changed configuration"
                ),
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
