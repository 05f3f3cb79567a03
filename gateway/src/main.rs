//! `fleetgate-gateway`: serves one account's bundle (`--source`), hot-reloading it, with the
//! admin endpoints on their own listener; `check` tells whether bundle files are runnable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fleetgate_gateway::dataplane::Options;
use fleetgate_gateway::reload::{BundleSource, FileSource, Gateway, admin_router};
use fleetgate_gateway::{Bundle, Digest, compile};

#[derive(Parser, Debug)]
#[command(
    name = "fleetgate-gateway",
    version,
    about = "fleetgate's API gateway runtime",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Where the account's bundles are: file://DIR/<account> or s3://bucket/prefix.
    #[arg(long, env = "FLEETGATE_SOURCE", required = true)]
    source: Option<String>,
    /// Customer traffic.
    #[arg(long, env = "FLEETGATE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// /health, /ready, /status and /metrics.
    #[arg(long, env = "FLEETGATE_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// How often the pointer is polled.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// How often status/<instance>.json is written next to the pointer (0s: never).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    status_every: Duration,
    /// This instance's name in status/ (default: host name and process id).
    #[arg(long, env = "FLEETGATE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Least time between two fetches of one JWKS URL, however many unknown key ids arrive.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    jwks_refetch_interval: Duration,
    /// How many verified tokens to remember per loaded bundle, so a client's token is
    /// signature-checked once, not on every request (0: check every request).
    #[arg(long, default_value_t = fleetgate_gateway::dataplane::DEFAULT_JWT_CACHE_SIZE)]
    jwt_cache_size: usize,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// On SIGTERM, how long to keep serving while /ready says 503, so load balancers stop
    /// sending new requests first.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// S3-compatible endpoint for an s3:// source (or AWS_ENDPOINT_URL).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Log format: json (one object per line) or text.
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load and compile bundle files and report whether each is runnable.
    Check {
        /// Bundle files (canonical JSON, e.g. from `fleetgate render --out`).
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
        /// The digest the single bundle must have (as in `current.json`).
        #[arg(long)]
        digest: Option<Digest>,
    },
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { bundles, digest }) => {
            let mut failed = false;
            for path in &bundles {
                match check(path, digest.as_ref()) {
                    Ok(line) => println!("{}: {line}", path.display()),
                    Err(e) => {
                        failed = true;
                        eprintln!("{}: {e:#}", path.display());
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        None => {
            init_logging(&cli.serve.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("fleetgate-gateway: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(cli.serve)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "fleetgate-gateway stopped");
                    eprintln!("fleetgate-gateway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
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

fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    let safe: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{}", std::process::id())
}

async fn serve(args: ServeArgs) -> Result<()> {
    let source = args.source.clone().context("--source is required")?;
    if source.starts_with("s3://") {
        let s3 =
            fleetgate_gateway::s3::S3Source::connect(&source, args.endpoint_url.as_deref()).await?;
        run(args, s3).await
    } else if source.starts_with("file://") || !source.contains("://") {
        run(args, FileSource::new(&source)).await
    } else {
        anyhow::bail!("--source {source:?}: give file://DIR/<account> or s3://bucket/prefix")
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn run<S: BundleSource + Clone + 'static>(args: ServeArgs, source: S) -> Result<()> {
    let options = Options {
        jwks_refetch_interval: args.jwks_refetch_interval,
        jwt_cache_size: args.jwt_cache_size,
        ..Options::default()
    };
    let gateway = Arc::new(Gateway::with_options(options));
    let instance = args.instance_id.clone().unwrap_or_else(default_instance_id);
    let described = source.describe();

    let data = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", args.admin_listen))?;
    tracing::info!(
        source = %described,
        listen = %data.local_addr()?,
        admin_listen = %admin.local_addr()?,
        instance = %instance,
        "fleetgate-gateway starting (not ready until a good bundle is loaded)"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let poller = tokio::spawn(fleetgate_gateway::reload::poll(
        gateway.clone(),
        source.clone(),
        args.poll,
        stopped(stop_rx.clone()),
    ));
    let reporter = (!args.status_every.is_zero()).then(|| {
        let (gateway, source, instance, every) = (
            gateway.clone(),
            source.clone(),
            instance.clone(),
            args.status_every,
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tick.tick() => {}
                }
                let report = gateway.report(&instance);
                match serde_json::to_vec_pretty(&report) {
                    Ok(body) => {
                        if let Err(e) = source.write_status(&instance, body).await {
                            tracing::warn!(error = %e, "cannot write the status report");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot encode the status report"),
                }
            }
        })
    });

    let admin_server = axum::serve(
        admin,
        admin_router(gateway.clone(), described.clone()).into_make_service(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let admin_task = tokio::spawn(async move { admin_server.await });

    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let data_server = axum::serve(
        data,
        fleetgate_gateway::dataplane::router(gateway.clone())
            .into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(drain_rx));
    let mut data_task = tokio::spawn(async move { data_server.await });

    tokio::select! {
        _ = shutdown_signal() => {}
        r = &mut data_task => {
            let _ = stop_tx.send(true);
            r??;
            anyhow::bail!("the listener stopped");
        }
    }
    tracing::info!(drain_delay = ?args.drain_delay, drain_timeout = ?args.drain_timeout, "draining");
    gateway.set_draining();
    tokio::time::sleep(args.drain_delay).await;
    let _ = drain_tx.send(true);
    match tokio::time::timeout(args.drain_timeout, &mut data_task).await {
        Ok(r) => r??,
        Err(_) => {
            tracing::warn!("requests still in flight after the drain timeout; stopping anyway");
            data_task.abort();
        }
    }
    let _ = stop_tx.send(true);
    let _ = poller.await;
    if let Some(r) = reporter {
        let _ = r.await;
    }
    // A last report, so the rollout sees this instance leave with its final counts.
    if !args.status_every.is_zero()
        && let Ok(body) = serde_json::to_vec_pretty(&gateway.report(&instance))
        && let Err(e) = source.write_status(&instance, body).await
    {
        tracing::warn!(error = %e, "cannot write the final status report");
    }
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

fn check(path: &std::path::Path, expected: Option<&Digest>) -> Result<String> {
    let bytes = std::fs::read(path).context("cannot read bundle")?;
    let digest = Digest::of(&bytes);
    let bundle = match expected {
        Some(d) => Bundle::from_stored(&bytes, d)?,
        None => serde_json::from_slice::<Bundle>(&bytes).context("not a bundle")?,
    };
    let compiled = compile(&bundle).map_err(|e| anyhow::anyhow!("bundle is not runnable:\n{e}"))?;
    Ok(format!(
        "ok {digest} account {} ({} routes)",
        compiled.bundle.account.name,
        compiled.routes.len()
    ))
}
