//! The long-running commands: `watch` (the daemon) and `up` (the whole loop on this
//! machine); logging and signals.

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};

use crate::cli::args::WatchArgs;
#[cfg(feature = "up")]
use crate::cli::args::{GitArgs, UpArgs};
use crate::cli::session::{cache_dir, runtime};

pub fn watch(args: WatchArgs) -> Result<ExitCode> {
    init_logging(&args.log_format);
    let secret = match (
        &args.webhook_secret_file,
        std::env::var_os("FLEETGATE_WEBHOOK_SECRET"),
    ) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the webhook secret {}", path.display()))?;
            Some(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
        }
        (None, Some(s)) if !s.is_empty() => Some(s.as_encoded_bytes().to_vec()),
        _ => None,
    };
    if secret.as_ref().is_some_and(Vec::is_empty) {
        bail!("the webhook secret is empty");
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "localhost".into());
        format!("{host}-{}", std::process::id())
    });
    let settings = crate::daemon::watch::Settings {
        repo: args.source.repo.clone(),
        branch: args.branch.clone(),
        cache_dir: cache_dir(&args.source),
        target: args.target.target.clone(),
        access: args.target.access(),
        poll_interval: args.poll_interval,
        drift_interval: args.drift_interval,
        shard: args.shard,
        identity,
        lease_ttl: args.lease_ttl,
        state_bucket: args.state_bucket.clone(),
        webhook_secret: secret,
        concurrency: args.target.concurrency,
        account_timeout: args.target.account_timeout,
        max_backoff: args.max_backoff,
        max_bake: None,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            %addr,
            repo = %settings.repo,
            branch = %settings.branch,
            identity = %settings.identity,
            shard = settings.shard.map(|s| s.to_string()).unwrap_or_default(),
            "watching"
        );
        let daemon = crate::daemon::watch::Daemon::new(settings);
        crate::daemon::watch::run(daemon, listener, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "up")]
pub fn up(args: UpArgs) -> Result<ExitCode> {
    let UpArgs {
        dir,
        port,
        max_bake,
        poll_interval: poll,
    } = args;
    // The guide goes to standard output; the log (warnings and up's own steps unless
    // FLEETGATE_LOG says otherwise) to standard error.
    init_logging_with("text", "warn,fleetgate::up=info");
    let settings = crate::up::UpSettings {
        dir,
        port,
        max_bake,
        poll,
        cache_dir: cache_dir(&GitArgs {
            repo: String::new(),
            cache_dir: None,
        }),
    };
    let rt = runtime()?;
    rt.block_on(async {
        let mut out = std::io::stdout();
        crate::up::run(settings, &mut out, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn init_logging(format: &str) {
    init_logging_with(format, "info");
}

/// Logging to stderr at FLEETGATE_LOG's levels, else `default`'s.
fn init_logging_with(format: &str, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(crate::redact::ScrubbedStderr);
    if format == "json" {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
}
