//! `fleetgate-gateway`: serves one account's bundle (`--source`), hot-reloading it, with the
//! admin endpoints on their own listener; `check` tells whether bundle files are runnable.
//!
//! It wires a bundle source (`fleetgate_gateway::source`: file or S3), the reload state
//! (`fleetgate_gateway::Gateway`) and `fleetgate_gateway::server::run` (the poll loop, the
//! status reporter, the admin and data listeners, the drain); `check` runs
//! `fleetgate_bundle::compile`, the check the reconciler runs too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fleetgate_bundle::{Bundle, Digest, compile};
use fleetgate_gateway::Gateway;
use fleetgate_gateway::client_addr::TrustedProxies;
use fleetgate_gateway::logging::{ClientAddressMode, HASH_KEY_ENV};
use fleetgate_gateway::runtime::Options;
use fleetgate_gateway::server;
use fleetgate_gateway::source::{BundleSource, FileSource};

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
    #[arg(long, default_value_t = fleetgate_gateway::runtime::DEFAULT_JWT_CACHE_SIZE)]
    jwt_cache_size: usize,
    /// Most client keys (addresses, subjects, API keys) one route's rate limit holds; past
    /// it, new keys share one overflow bucket until a key goes idle.
    #[arg(long, default_value_t = fleetgate_gateway::runtime::DEFAULT_RATE_LIMIT_KEYS)]
    rate_limit_keys: usize,
    /// Most upstream connections pinned to client connections at once: a client
    /// connection's requests reuse its own connection to each backend instead of the shared
    /// pool (faster; 0: always the pool).
    #[arg(long, env = "FLEETGATE_UPSTREAM_AFFINITY", default_value_t = fleetgate_gateway::runtime::DEFAULT_UPSTREAM_AFFINITY)]
    upstream_affinity: usize,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// On SIGTERM, how long to keep serving while /ready says 503, so load balancers stop
    /// sending new requests first.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// How long a client may take to send a request's head (request line and headers),
    /// from its first byte; slower connections are closed.
    #[arg(long, env = "FLEETGATE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// How long a client connection may stay open between requests. Keep it longer than the
    /// idle timeout of the load balancer in front (AWS ALB: 60s), so the load balancer
    /// closes idle connections first.
    #[arg(long, env = "FLEETGATE_KEEP_ALIVE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    keep_alive_timeout: Duration,
    /// Comma-separated CIDRs (or addresses) of the load balancers and proxies in front:
    /// when the peer is one of them, the client is the right-most X-Forwarded-For address
    /// outside them (rate limits, the IdP's per-IP limit, the access log). Default: none,
    /// the client is the TCP peer and X-Forwarded-For is not believed.
    #[arg(
        long,
        env = "FLEETGATE_TRUSTED_PROXIES",
        value_name = "CIDR,...",
        default_value = ""
    )]
    trusted_proxies: TrustedProxies,
    /// Read AWS Secrets Manager references (signing keys, client secret hashes) from
    /// DIR/<secret name> instead of the API: a Secrets Store CSI driver or External Secrets
    /// mount, or `fleetgate up`'s local secrets.
    #[arg(long, env = "FLEETGATE_SECRETS_DIR", value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// S3-compatible endpoint for an s3:// source, and Secrets Manager's (or
    /// AWS_ENDPOINT_URL).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// Log format: json (one object per line: timestamp, level, target and the event's
    /// fields) or text.
    #[arg(long, env = "FLEETGATE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// How log lines name the client's address (the access log, the identity provider's
    /// lines): off (not at all), truncate (IPv4 /24, IPv6 /48), hash (the first 16 hex
    /// digits of HMAC-SHA256 of the address under FLEETGATE_LOG_CLIENT_ADDRESS_KEY; without
    /// it, under a random key of this process, so other instances and restarts hash
    /// differently) or full.
    #[arg(
        long,
        env = "FLEETGATE_LOG_CLIENT_ADDRESS",
        value_name = "off|truncate|hash|full",
        default_value = "off"
    )]
    log_client_address: ClientAddressMode,
    /// Threads serving requests. 1 runs everything on one thread with tokio's
    /// current-thread scheduler (nginx's one-worker model: no work stealing, no wake-ups
    /// across threads; 13-20% more requests per second on one core than the multi-thread
    /// scheduler with one worker); more share the work on the multi-thread scheduler.
    /// Default: TOKIO_WORKER_THREADS when set, else one per core.
    #[arg(long, env = "FLEETGATE_WORKERS")]
    workers: Option<std::num::NonZeroUsize>,
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
            let workers = cli.serve.workers.map(usize::from).or_else(|| {
                std::env::var("TOKIO_WORKER_THREADS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .filter(|n| *n > 0)
            });
            let mut builder = match workers {
                Some(1) => tokio::runtime::Builder::new_current_thread(),
                Some(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
                None => tokio::runtime::Builder::new_multi_thread(),
            };
            let runtime = match builder.enable_all().build() {
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
    // Colours only for a person at a terminal: not in files or a log collector's input.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
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
            fleetgate_gateway::source::S3Source::connect(&source, args.endpoint_url.as_deref())
                .await?;
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
    let secrets = fleetgate_gateway::secrets::Secrets::new(
        args.secrets_dir.clone(),
        args.endpoint_url.clone(),
    );
    // The key from the environment only: a command line is visible to every local user.
    let key = std::env::var_os(HASH_KEY_ENV);
    let log_client_address = args
        .log_client_address
        .policy(key.as_ref().map(|k| k.as_encoded_bytes()))
        .map_err(|e| anyhow::anyhow!("--log-client-address: {e}"))?;
    let options = Options {
        log_client_address,
        jwks_refetch_interval: args.jwks_refetch_interval,
        jwt_cache_size: args.jwt_cache_size,
        upstream_affinity: args.upstream_affinity,
        rate_limit_keys: args.rate_limit_keys.max(1),
        secrets: Arc::new(secrets),
        trusted_proxies: args.trusted_proxies.clone(),
        ..Options::default()
    };
    let gateway = Arc::new(Gateway::with_options(options));
    let data = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", args.admin_listen))?;
    tracing::info!(
        trusted_proxies = %args.trusted_proxies,
        log_client_address = gateway.shared().options.log_client_address.name(),
        "client addresses"
    );
    let settings = server::Settings {
        poll: args.poll,
        status_every: args.status_every,
        instance: args.instance_id.clone().unwrap_or_else(default_instance_id),
        drain_timeout: args.drain_timeout,
        drain_delay: args.drain_delay,
        header_read_timeout: args.header_read_timeout,
        keep_alive_timeout: args.keep_alive_timeout,
    };
    server::run(gateway, source, data, admin, settings, shutdown_signal()).await
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
